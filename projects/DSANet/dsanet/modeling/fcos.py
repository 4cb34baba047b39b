"""DSA on detectron2's FCOS: the anchor-free detector with centerness, the same DSA module as
DSANet's head (:class:`dsanet.modeling.head.DSAHeadMixin`) and the same detector behaviour as DSANet
(:class:`dsanet.modeling.dense_detector.DSADenseDetectorMixin`).

With ``dsa_levels`` empty, :class:`DSAFCOS` with :class:`DSAFCOSHead` is detectron2's FCOS: the
same parameters and state-dict keys, the same losses and detections on the same weights.
"""
from typing import List, Sequence, Tuple

import torch
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead

from .dense_detector import DSADenseDetectorMixin
from .head import DSAHeadMixin

__all__ = ["DSAFCOSHead", "DSAFCOS"]


class DSAFCOSHead(DSAHeadMixin, FCOSHead):
    """:class:`FCOSHead` with DSA on chosen levels (arguments: FCOSHead's and :class:`DSAHeadMixin`'s).

    DSA before the towers feeds the classification tower with its classification branch and the
    box tower, which also predicts centerness, with its box branch; DSA after the towers sits
    between each tower and its predictors (the box tower's branch feeds box and centerness).
    """

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor],
                                                             List[torch.Tensor]]:
        """
        Args:
            features: per level (N, C, Hi, Wi), in ``in_features`` order.
        Returns:
            logits: per level (N, K, Hi, Wi); bbox_reg: per level (N, 4, Hi, Wi);
            ctrness: per level (N, 1, Hi, Wi) centerness logits.
        """
        cls_feats, reg_feats = self.dsa_towers(features)
        logits = [self.cls_score(x) for x in cls_feats]
        bbox_reg = [self.bbox_pred(x) for x in reg_feats]
        ctrness = [self.ctrness(x) for x in reg_feats]
        return logits, bbox_reg, ctrness


class DSAFCOS(DSADenseDetectorMixin, FCOS):
    """detectron2's FCOS with :class:`DSADenseDetectorMixin`'s training and inference (arguments: FCOS's).

    What is FCOS's own: the head's third output, centerness, and the score it ranks by,
    ``sqrt(sigmoid(cls) * sigmoid(centerness))`` (eq. 4 of arXiv:2006.09214).
    """

    @property
    def head_outputs(self) -> Tuple[Tuple[str, int], ...]:
        """Class logits, box deltas (distances to the box sides) and one centerness logit per location."""
        return ("cls_logits", self.num_classes), ("box_deltas", 4), ("ctrness_logits", 1)

    def per_anchor_scores(self, outputs: Sequence[List[torch.Tensor]]) -> List[torch.Tensor]:
        """FCOS's score, ``sqrt(sigmoid(cls) * sigmoid(centerness))``, as ``FCOS.forward_inference`` computes it.

        Args:
            outputs: per entry of :attr:`head_outputs`, per level (N, Hi*Wi, K | 4 | 1).
        Returns:
            per level (N, Hi*Wi, K).
        """
        return [torch.sqrt(x.sigmoid() * c.sigmoid()) for x, c in zip(outputs[0], outputs[2])]
