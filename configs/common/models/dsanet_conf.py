# DSANet-Conf: DSANet plus the object-confidence output (RetinaNet-Conf) fused into the score.
from .dsanet import model

model.head.with_confidence = True
