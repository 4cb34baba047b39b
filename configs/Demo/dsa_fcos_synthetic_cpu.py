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

train.output_dir = "output/dsa_fcos_demo"
