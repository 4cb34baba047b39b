# DSANet*-Conf on the Demo recipe (dsanet_conf_synthetic_cpu.py): DSA on each ResNet stage's own features
# (FPN without its top-down path, the paper's Table 5), P3 at half resolution (1x1 convs). What it measures
# against DSANet-Conf on the embedded benchmark: projects/DSANet/docs/STUDIES.md, "DSANet*-Conf against
# DSANet-Conf". `make demo` trains the paper's DSANet-Conf; why is written in dsanet_conf_synthetic_cpu.py.
from dsanet.modeling import FPNWithoutTopDown

from .dsanet_conf_synthetic_cpu import dataloader, lr_multiplier, model, optimizer, train

model.backbone._target_ = FPNWithoutTopDown
model.head.dsa_levels = {"p3": "self_half_k1", "p4": "self", "p5": "self", "p6": "self", "p7": "self"}
