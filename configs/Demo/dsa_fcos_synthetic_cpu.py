# DSA-FCOS on the demo recipe (dsanet_conf_synthetic_cpu.py: data, schedule, optimizer, the narrow
# ResNet-18 and 64-channel FPN), trained from scratch on CPU. Plain FCOS: model.head.dsa_levels=[].
from ..common.models.dsa_fcos import model
from .dsanet_conf_synthetic_cpu import dataloader, lr_multiplier, optimizer, train
from .dsanet_conf_synthetic_cpu import model as _demo  # _: not a key of the loaded config

# Model: DSA-FCOS with the demo's backbone, head widths and classes
model.backbone.bottom_up = _demo.backbone.bottom_up
model.backbone.out_channels = _demo.backbone.out_channels
model.backbone.top_block.in_channels = _demo.backbone.out_channels  # P6/P7 from P5
model.head.input_shape = _demo.head.input_shape
model.head.conv_dims = _demo.head.conv_dims  # 64 channels: GN's 32 groups of 2
model.num_classes = _demo.num_classes
model.pixel_std = _demo.pixel_std
# DSA on P3-P7: FCOS puts every object of this dataset (16-64 px, so no box side further than 64 px
# from a location) on P3, which the COCO default P4-P7 leaves out; P3 of a 128-px image is 16x16,
# so full-resolution attention there costs little.
model.head.dsa_levels = ["p3", "p4", "p5", "p6", "p7"]

train.output_dir = "output/dsa_fcos_demo"
