# DSANet-Conf R101-FPN 2x: 180k iterations at batch 16 (~24 COCO epochs).
from ..common.coco_schedule import lr_multiplier_2x as lr_multiplier
from .dsanet_conf_R_101_FPN_1x import dataloader, model, optimizer, train

train.max_iter = 180000
