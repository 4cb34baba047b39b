# Table 4, DSANet(gamma=1): gamma fixed to 1 instead of learned from 0. Paper: 35.5 AP.
from detectron2.config import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/dsanet_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train"))

model.head.dsa_learn_gamma = False
