# The main job (`make demo`): DSANet-Conf trained from scratch on the embedded synthetic dataset, on CPU
# (its time: benchmarks/results/demo/make_demo.json). A narrow ResNet-18 (BN: no ImageNet weights to
# freeze), a 64-channel FPN and anchors scaled to 128x128 images (objects of 16-64 pixels).
#
# Why the demo trains DSANet-Conf: it is the paper's model, the one the paper measured best on COCO
# (Table 6, rows DSANet-Conf(50_x) and DSANet-Conf(101_x), the highest AP of each backbone; quoted in
# benchmarks/paper_coco.json). DSANet* with P3 at half resolution and 1x1 convolutions
# (dsanet_star_conf_synthetic_cpu.py) measured higher on this 128-pixel synthetic benchmark
# (projects/DSANet/docs/STUDIES.md, "DSANet*-Conf against DSANet-Conf"), but the paper measured it lower
# on COCO (Table 5, row DSANet*(3-7), kernel 1*1 against row DSANet(3-7), kernel 1*1), so the demo shows
# the paper's model.
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from fvcore.common.param_scheduler import CosineParamScheduler

from detectron2.solver import WarmupParamScheduler
from dsanet.modeling import make_resnet_stages
from dsanet.solver import SGDWithGradientClipping

from ..common.data.synthetic import dataloader
from ..common.models.dsanet_conf import model
from ..common.optim import SGD as optimizer
from ..common.train import train

# Model
model.backbone.bottom_up.stem.out_channels = 32
model.backbone.bottom_up.stem.norm = "BN"
model.backbone.bottom_up.stages = L(make_resnet_stages)(depth=18, stem_width=32, widths=[32, 64, 128, 256], norm="BN")
model.backbone.out_channels = 64
model.backbone.top_block.in_channels = 256
model.head.input_shape = [L(ShapeSpec)(channels=64)] * 5
model.head.conv_dims = [64, 64]
model.anchor_generator.sizes = [[x, x * 2 ** (1.0 / 3), x * 2 ** (2.0 / 3)] for x in [16, 32, 64, 128, 256]]
model.num_classes = 3
model.pixel_std = [57.375, 57.120, 58.395]  # trained from scratch: normalise to unit variance

# Schedule: 3000 iterations x 8 images = 40 epochs of the 600 training images
train.max_iter = 3000
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.02),
    warmup_length=100 / 3000,
    warmup_method="linear",
    warmup_factor=0.01,
)
optimizer._target_ = SGDWithGradientClipping  # from scratch at batch 8: clip, or it diverges
optimizer.max_grad_norm = 5.0
optimizer.lr = 0.02

train.device = "cpu"
train.output_dir = "output/demo"
train.eval_period = 3000  # evaluate once, at the end
train.checkpointer.period = 1000
train.log_period = 50
train.seed = 0
