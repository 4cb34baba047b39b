# DSA-FCOS R50-FPN 1x: FCOS with decoupled self-attention on P4-P7 before the towers (DSANet's
# module and defaults; not in the paper, which studies RetinaNet). Schedule as fcos_R_50_FPN_1x.py.
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.dsa_fcos import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
