# Table 1, DSANet_a(3-7): CBAM spatial attention (paper Fig. 2a) on P3-P7. Paper: 35.6 AP.
from detectron2.config import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/dsanet_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train"))

model.head.dsa_levels = {level: "cbam" for level in ["p3", "p4", "p5", "p6", "p7"]}
