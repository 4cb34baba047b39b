"""RetinaNet's head plus the DSA module and the object-confidence output; the DSA part, shared with
the FCOS head (:mod:`dsanet.modeling.fcos`), is :class:`DSAHeadMixin`."""
from typing import List, Sequence, Tuple

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from torch import nn

from .dsa import DecoupledSelfAttention, LevelSpec, normalize_levels

__all__ = ["DSAHeadMixin", "DSARetinaNetHead"]

DSA_LOCATIONS = ("before", "after")


class DSAHeadMixin:
    """DSA for a head built like :class:`RetinaNetHead` (``cls_subnet`` and ``bbox_subnet`` towers).

    Put it first among the bases (``class H(DSAHeadMixin, RetinaNetHead)``): it takes the DSA
    arguments, passes the rest on to the head, then builds ``self.dsa`` (None without DSA levels,
    so the head's parameters are exactly its base's). The head's ``forward`` calls
    :meth:`dsa_towers` in place of its two towers.

    Args (beyond the head's):
        input_shape: per level the shape of the head's input features (passed on to the head);
            their channel count is DSA's before the towers.
        conv_dims: the towers' conv widths (passed on); the last is DSA's after the towers.
        in_features: level names of the features the head receives, in order.
        dsa_levels: levels that get DSA and their attention kind (``["p4", ...]`` means "self").
        dsa_shared: one DSA branch for both tasks instead of one per task (paper Table 2).
        dsa_location: "before" the towers (default), or "after" them, right before the predictors
            (paper Table 3).
        dsa_learn_gamma: learned gamma initialised to 0 (default), or gamma fixed to 1 (Table 4).
        dsa_reduction: query/key channels are C // dsa_reduction.
        dsa_qk_scale: factor on Q K^T, ``"query_dim"`` (1/sqrt(C // dsa_reduction), paper eq. 5,
            default) or ``"channels"`` (1/sqrt(C), as the authors' released code computes it).
        dsa_conv_init: ``"pytorch"`` (PyTorch's default init of the attention convs, default) or
            ``"xavier"`` (xavier-uniform, zero bias, as the authors' code initialises them).
    """

    def __init__(self, *, input_shape: List[ShapeSpec], conv_dims: List[int],
                 in_features: Sequence[str] = ("p3", "p4", "p5", "p6", "p7"),
                 dsa_levels: LevelSpec = (), dsa_shared: bool = False, dsa_location: str = "before",
                 dsa_learn_gamma: bool = True, dsa_reduction: int = 8, dsa_qk_scale: str = "query_dim",
                 dsa_conv_init: str = "pytorch", **kwargs):
        super().__init__(input_shape=input_shape, conv_dims=conv_dims, **kwargs)
        if dsa_location not in DSA_LOCATIONS:
            raise ValueError(f"dsa_location={dsa_location!r}; choose one of {DSA_LOCATIONS}")
        if len(in_features) != len(input_shape):
            raise ValueError(f"in_features={list(in_features)} but input_shape has {len(input_shape)} levels")
        self.dsa_location = dsa_location
        self.num_levels = len(input_shape)
        self.dsa = None
        if normalize_levels(dsa_levels):
            channels = input_shape[0].channels if dsa_location == "before" else conv_dims[-1]
            self.dsa = DecoupledSelfAttention(in_features=in_features, levels=dsa_levels, channels=channels,
                                              shared=dsa_shared, learn_gamma=dsa_learn_gamma,
                                              reduction=dsa_reduction, qk_scale=dsa_qk_scale,
                                              conv_init=dsa_conv_init)

    def dsa_towers(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """The classification and box towers, with DSA before or after them.

        Before: DSA's classification branch feeds the classification tower and its box branch the
        box tower. After: each tower's output goes through its branch on its way to the predictors.

        Args:
            features: per level (N, C, Hi, Wi), in ``in_features`` order.
        Returns:
            (cls_feats, reg_feats): per level (N, conv_dims[-1], Hi, Wi), what the predictors see.
        """
        assert len(features) == self.num_levels
        cls_in, reg_in = features, features
        if self.dsa is not None and self.dsa_location == "before":
            cls_in, reg_in = self.dsa(features, features)
        cls_feats = [self.cls_subnet(x) for x in cls_in]
        reg_feats = [self.bbox_subnet(x) for x in reg_in]
        if self.dsa is not None and self.dsa_location == "after":
            cls_feats, reg_feats = self.dsa(cls_feats, reg_feats)
        return cls_feats, reg_feats


class DSARetinaNetHead(DSAHeadMixin, RetinaNetHead):
    """:class:`RetinaNetHead` with DSA on chosen levels and an optional object-confidence output.

    With ``dsa_levels`` empty and ``with_confidence=False`` it is RetinaNetHead: same parameters,
    same outputs.

    Args (beyond RetinaNetHead's and :class:`DSAHeadMixin`'s):
        conv_dims: as RetinaNetHead's; the confidence conv reads the classification tower's last width.
        num_anchors: as RetinaNetHead's; one confidence logit per anchor.
        with_confidence: add a 3x3 conv on the classification tower giving one object-confidence
            logit per anchor (RetinaNet-Conf).
    """

    def __init__(self, *, conv_dims: List[int], num_anchors: int, with_confidence: bool = False, **kwargs):
        super().__init__(conv_dims=conv_dims, num_anchors=num_anchors, **kwargs)
        self.object_confidence = None
        if with_confidence:
            self.object_confidence = nn.Conv2d(conv_dims[-1], num_anchors, kernel_size=3, padding=1)
            nn.init.normal_(self.object_confidence.weight, std=0.01)
            nn.init.constant_(self.object_confidence.bias, 0.0)

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], ...]:
        """
        Args:
            features: per level (N, C, Hi, Wi), in ``in_features`` order.
        Returns:
            logits: per level (N, A*K, Hi, Wi); bbox_reg: per level (N, A*4, Hi, Wi);
            and, with confidence, conf: per level (N, A, Hi, Wi) object-confidence logits.
        """
        cls_feats, reg_feats = self.dsa_towers(features)
        logits = [self.cls_score(x) for x in cls_feats]
        bbox_reg = [self.bbox_pred(x) for x in reg_feats]
        if self.object_confidence is None:
            return logits, bbox_reg
        return logits, bbox_reg, [self.object_confidence(x) for x in cls_feats]
