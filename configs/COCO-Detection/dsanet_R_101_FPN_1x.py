# DSANet R101-FPN 1x (paper: 37.5 AP); otherwise as dsanet_R_50_FPN_1x.
from .dsanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
