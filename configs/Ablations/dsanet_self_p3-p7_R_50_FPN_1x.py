# Beyond the paper: full-resolution self-attention on P3-P7 (P3 ran out of GPU memory in the paper; the fused kernel needs memory linear in H*W).
from detectron2.config import LazyConfig

dataloader, lr_multiplier, model, optimizer, train = LazyConfig.load_rel(
    "../COCO-Detection/dsanet_R_50_FPN_1x.py", ("dataloader", "lr_multiplier", "model", "optimizer", "train"))

model.head.dsa_levels = ["p3", "p4", "p5", "p6", "p7"]
