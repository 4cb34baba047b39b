# Table 5, DSANet(3-7) 1x1: P3 at half resolution (stride-2 1x1 convs for Q/K/V), P4-P7 full. Paper: 35.5 AP.
from detectron2.config import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/dsanet_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train"))

model.head.dsa_levels = {"p3": "self_half_k1", "p4": "self", "p5": "self", "p6": "self", "p7": "self"}
