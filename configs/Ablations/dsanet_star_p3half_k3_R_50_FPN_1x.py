# Table 5, DSANet*(3-7) 3x3: as dsanet_p3half_k3 on a backbone without FPN's top-down path. Paper: 32.7 AP.
from detectron2.config import LazyConfig

from dsanet.modeling import FPNWithoutTopDown

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/dsanet_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train"))

model.backbone._target_ = FPNWithoutTopDown
model.head.dsa_levels = {"p3": "self_half_k3", "p4": "self", "p5": "self", "p6": "self", "p7": "self"}
