# DSA-FCOS: FCOS with DSANet's decoupled self-attention on P4-P7 before the head towers, the same
# module and the same defaults as common/models/dsanet.py. With dsa_levels=[] this is exactly FCOS
# (same weights, same outputs). FCOS's centerness takes the place of DSANet's object confidence.
from dsanet.modeling import DSAFCOS, DSAFCOSHead

from .dsanet import model as _dsanet  # _: not a key of the loaded config
from .fcos import model

model._target_ = DSAFCOS  # FCOS, with losses and decoding kept fp32 under CPU bf16 autocast

model.head._target_ = DSAFCOSHead
model.head.in_features = "${..head_in_features}"
# Every DSA setting (dsa_levels, dsa_shared, dsa_location, dsa_learn_gamma, ...) as DSANet's, so
# that one override names the same variant on both detectors.
for key in [k for k in _dsanet.head if k.startswith("dsa_")]:
    model.head[key] = _dsanet.head[key]
