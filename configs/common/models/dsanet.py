# DSANet: RetinaNet with decoupled self-attention on P4-P7 before the head towers (paper Fig. 1).
# With dsa_levels=[] and with_confidence=False this is exactly RetinaNet (same weights, outputs).
from dsanet.modeling import DSARetinaNetHead

from .retinanet import model

model.conf_loss_weight = 1.0
model.score_fusion_alpha = 0.4  # cls^(1-a) * conf^a ranks boxes; used only with confidence

model.head._target_ = DSARetinaNetHead
model.head.in_features = "${..head_in_features}"
model.head.dsa_levels = ["p4", "p5", "p6", "p7"]  # paper Table 1: P3 ran out of GPU memory
model.head.dsa_shared = False  # decoupled: one branch per task (Table 2)
model.head.dsa_location = "before"  # between FPN and the towers (Table 3)
model.head.dsa_learn_gamma = True  # gamma learned from 0 (Table 4)
model.head.dsa_reduction = 8  # query/key channels C/8
model.head.dsa_qk_scale = "query_dim"  # Q K^T / sqrt(C/8), paper eq. 5; "channels": / sqrt(C), the authors' code
model.head.dsa_conv_init = "pytorch"  # attention convs: PyTorch's default; "xavier": the authors' code
model.head.with_confidence = False
