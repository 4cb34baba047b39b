# Table 2, DSANet: one DSA branch per task (the default). Paper: 35.7 AP.
from detectron2.config import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/dsanet_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train"))

model.head.dsa_shared = False
