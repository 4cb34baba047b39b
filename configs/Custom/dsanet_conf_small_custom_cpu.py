# DSANet-Conf sized for a CPU, on any COCO-format dataset given on the command line: the demo's
# network (narrow ResNet-18 with BN, 64-channel FPN, trained from scratch) and optimizer, a schedule in
# epochs of your training set, the best evaluated model kept (model_best.pth), scale jitter and flips,
# with resizing and anchors that a few overrides adapt to your images (projects/DSANet/docs/CUSTOM_DATA.md#on-a-cpu).
# From torchvision's ImageNet ResNet-18 weights: dsanet_conf_small_custom_cpu_imagenet.py.
#
#   train_net.py --config-file configs/Custom/dsanet_conf_small_custom_cpu.py \
#       datasets.custom_train.json_file=/data/train.json datasets.custom_train.image_root=/data/train \
#       datasets.custom_val.json_file=/data/val.json datasets.custom_val.image_root=/data/val \
#       model.num_classes=5 train.output_dir=output/custom_dsanet_conf
#
# RetinaNet on the same data: add model.head.dsa_levels=[] model.head.with_confidence=False.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from dsanet.modeling import octave_anchor_sizes

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../Demo/dsanet_conf_synthetic_cpu.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train"))

# Data: declared here, set on the command line (class names come from the json's categories)
datasets = dict(
    custom_train=dict(json_file="", image_root=""),
    custom_val=dict(json_file="", image_root=""),
)
dataloader.train.dataset.names = "custom_train"
dataloader.test.dataset.names = "custom_val"
model.num_classes = 1  # set to the number of categories in your json

# Augmentation (small sets need it: 40 images are seen hundreds of times). Evaluation resizes the
# shorter side to 320 (the longer kept under 544); training resizes it to one of six sizes from 240 to
# 400 drawn at random (scale jitter, x0.75 to x1.25; [320]: none; sample_style="range" with [low, high]
# draws any size between), may crop a random fraction of the resized image (crop_size=[1.0, 1.0]: no
# crop), and flips left-right with probability 0.5. Up-down flips are off (prob=0.0): set
# augmentations.3.prob=0.5 for top-down imagery (aerial, microscopy), never for upright scenes.
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=[240, 272, 304, 336, 368, 400], max_size=680, sample_style="choice"),
    L(T.RandomCrop)(crop_type="relative_range", crop_size=[1.0, 1.0]),
    L(T.RandomFlip)(prob=0.5, horizontal=True, vertical=False),
    L(T.RandomFlip)(prob=0.0, horizontal=False, vertical=True),
]
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=320, max_size=544)]

# Anchors: the smallest (on P3) in pixels of the resized image, doubled per level up to P7
model.anchor_generator.sizes = L(octave_anchor_sizes)(smallest=16)

# Schedule, in epochs of your training set (dsanet.schedule, resolved and logged by train_net.py):
# train.max_iter = epochs x ceil(training images / batch 8), e.g. 42 images: 6 iterations per epoch,
# 1200 iterations. The cosine decay follows max_iter; the warm-up is train.warmup_epochs long.
# 200 epochs suit tens of images; a few hundred images need fewer (the demo: 40 epochs of 600).
# In iterations instead: train.epochs=null train.max_iter=N (and train.eval_epochs=null train.eval_period=N).
train.epochs = 200
train.max_iter = None  # computed
train.warmup_epochs = 5
train.eval_epochs = 20  # evaluate on the validation set (and checkpoint) every 20 epochs and at the end
train.eval_period = None  # computed

# The best evaluation's model is kept as model_best.pth (model_best.json: its iteration and score), the
# run's final results are that model's, and demo/export/visualize tools load it by default.
# null: keep only the last iteration's model.
train.best_metric = "bbox/AP"

train.output_dir = "output/custom"
