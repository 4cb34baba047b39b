# DSANet-Conf sized for a CPU, on any COCO-format dataset given on the command line: the demo's
# network (narrow ResNet-18 with BN, 64-channel FPN, trained from scratch) and schedule, with
# resizing and anchors that a few overrides adapt to your images (projects/DSANet/README.md).
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

# Image size: the shorter side is resized to short_edge_length (the longer kept under max_size).
# Training may crop a random fraction of the resized image (crop_size=[1.0, 1.0]: no crop).
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=[320], max_size=544, sample_style="choice"),
    L(T.RandomCrop)(crop_type="relative_range", crop_size=[1.0, 1.0]),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=320, max_size=544)]

# Anchors: the smallest (on P3) in pixels of the resized image, doubled per level up to P7
model.anchor_generator.sizes = L(octave_anchor_sizes)(smallest=16)

train.output_dir = "output/custom"
