# DSANet-Conf R101-FPN 1x (paper: 38.4 AP); otherwise as dsanet_conf_R_50_FPN_1x.
from .dsanet_conf_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
