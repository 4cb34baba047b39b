# Table 1, DSANet_b(4-7): self-attention on P4-P7, the default DSANet. Paper: 35.7 AP.
from detectron2.config import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/dsanet_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train"))

model.head.dsa_levels = ["p4", "p5", "p6", "p7"]
