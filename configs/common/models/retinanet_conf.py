# RetinaNet-Conf: RetinaNet plus the object-confidence output, no DSA.
from .dsanet_conf import model

model.head.dsa_levels = []
