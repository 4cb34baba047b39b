# The own-data CPU recipe (dsanet_conf_small_custom_cpu.py) started from torchvision's ImageNet ResNet-18:
# the full-width ResNet-18 those weights fit (64..512 channels instead of the recipe's 32..256), with what
# the weights need: RGB input normalised as torchvision normalises it (in 0-255 pixels), BN frozen to the
# pretrained statistics (FrozenBN) and the stem and res2 frozen, as detectron2's COCO recipes treat
# ImageNet weights. FPN, head, DSA and confidence start from their usual initialisation.
#
#   # where torchvision can download (once):
#   python -c "import torch, torchvision; torch.save(torchvision.models.resnet18(weights='DEFAULT').state_dict(), 'resnet18.pth')"
#   .venv/bin/python tools/convert_torchvision_resnet.py resnet18.pth output/R-18-torchvision.pkl
#   .venv/bin/python train_net.py --config-file configs/Custom/dsanet_conf_small_custom_cpu_imagenet.py \
#       datasets.custom_train.json_file=/data/train.json datasets.custom_train.image_root=/data/train \
#       datasets.custom_val.json_file=/data/val.json datasets.custom_val.image_root=/data/val \
#       model.num_classes=5 train.output_dir=output/custom_imagenet
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from dsanet.modeling import make_resnet_stages

from .dsanet_conf_small_custom_cpu import dataloader, datasets, lr_multiplier, model, optimizer, train

# Backbone: torchvision's ResNet-18 (BasicBlocks, so no stride_in_1x1 to set), frozen as for ImageNet weights
model.backbone.bottom_up.stem.out_channels = 64
model.backbone.bottom_up.stem.norm = "FrozenBN"
model.backbone.bottom_up.stages = L(make_resnet_stages)(depth=18, stem_width=64, widths=[64, 128, 256, 512],
                                                        norm="FrozenBN")
model.backbone.bottom_up.freeze_at = 2  # the stem and res2
model.backbone.top_block.in_channels = 512  # P6 from res5
model.head.input_shape = [L(ShapeSpec)(channels=64)] * 5
train.init_checkpoint = "output/R-18-torchvision.pkl"  # tools/convert_torchvision_resnet.py's output above

# Input: what torchvision's weights were trained on (RGB in [0, 1], normalised by ImageNet's mean and std)
model.input_format = "RGB"
dataloader.train.mapper.image_format = "RGB"
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]

# Optimizer: lr 0.01, half the from-scratch 0.02, which would wash out the pretrained features (as the
# synthetic fine-tune recipe, configs/Demo/dsanet_conf_synthetic_finetune_cpu.py)
optimizer.lr = 0.01

train.output_dir = "output/custom_imagenet"
