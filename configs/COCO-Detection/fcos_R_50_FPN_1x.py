# FCOS R50-FPN 1x: detectron2's FCOS recipe, the baseline of DSA-FCOS. 90k iterations at batch 16,
# 8 GPUs x 2, lr 0.01 (common/optim.py), no masks loaded (common/data/coco.py).
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.fcos import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
