"""DSANet model pieces: attention kinds, the DSA module, the heads, the meta-architectures (RetinaNet's and FCOS's)."""
from .anchors import octave_anchor_sizes
from .attention import (
    SelfAttention2d, SpatialAttention2d, attention_path, auto_attention, build_attention, dense_attention,
    sdpa_attention,
)
from .blockwise import blockwise_attention
from .backbone import FPNWithoutTopDown, make_resnet_stages
from .dsa import DecoupledSelfAttention, DSABlock
from .head import DSAHeadMixin, DSARetinaNetHead
from .dense_detector import DSADenseDetectorMixin
from .meta_arch import DSANet, fuse_scores
from .fcos import DSAFCOS, DSAFCOSHead

__all__ = [
    "SelfAttention2d", "SpatialAttention2d", "attention_path", "auto_attention", "blockwise_attention",
    "build_attention", "dense_attention", "sdpa_attention",
    "FPNWithoutTopDown", "make_resnet_stages", "DecoupledSelfAttention", "DSABlock",
    "DSAHeadMixin", "DSARetinaNetHead", "DSADenseDetectorMixin", "DSANet", "fuse_scores", "DSAFCOS", "DSAFCOSHead",
    "octave_anchor_sizes",
]
