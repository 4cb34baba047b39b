# detectron2's FCOS R50-FPN (its configs/common/models/fcos.py): anchor-free, with centerness,
# built from the RetinaNet baseline. The plain-FCOS baseline of DSA-FCOS (common/models/dsa_fcos.py).
from detectron2.modeling.meta_arch.fcos import FCOSHead
from dsanet.modeling import DSAFCOS

from .retinanet import model

# detectron2's FCOS, with its losses and decoding kept fp32 under CPU bf16 autocast
# (train.amp.enabled=True): there detectron2's own class stops in fvcore's giou_loss (a bf16/fp32
# index_put). Without autocast DSAFCOS is FCOS unchanged (tests/test_fcos.py).
model._target_ = DSAFCOS

# FCOS places one anchor point per location (a box of the level's stride), decodes with a linear
# transform normalised by that stride, and matches by its own rule: none of these are arguments.
del model.anchor_generator
del model.box2box_transform
del model.anchor_matcher
del model.input_format  # FCOS does not take it; the data's format is the test mapper's image_format

# P6/P7 from P5 instead of C5 (Sec 2.2 of https://arxiv.org/abs/2006.09214)
model.backbone.top_block.in_feature = "p5"
model.backbone.top_block.in_channels = 256

# Threshold on the score sqrt(cls * centerness), not on cls alone
model.test_score_thresh = 0.2
model.test_nms_thresh = 0.6

model.head._target_ = FCOSHead
del model.head.num_anchors  # one per location
model.head.norm = "GN"  # group-normalised towers, as FCOS trains them
