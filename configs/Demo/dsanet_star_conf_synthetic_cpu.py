# What `make demo` trains: the Demo recipe (dsanet_conf_synthetic_cpu.py) with the model the defaults rule
# picked on the embedded benchmark (projects/DSANet/docs/STUDIES.md, "The rule's question"): DSANet*-Conf,
# DSA on each ResNet stage's own features (FPN without its top-down path), P3 at half resolution (1x1 convs).
# The study configs keep DSANet-Conf, the model every kept study is measured against.
from dsanet.modeling import FPNWithoutTopDown

from .dsanet_conf_synthetic_cpu import dataloader, lr_multiplier, model, optimizer, train

model.backbone._target_ = FPNWithoutTopDown
model.head.dsa_levels = {"p3": "self_half_k1", "p4": "self", "p5": "self", "p6": "self", "p7": "self"}
