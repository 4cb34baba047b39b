"""DSA on detectron2's FCOS: the anchor-free detector with centerness, and the same DSA module as
DSANet's head (:class:`dsanet.modeling.head.DSAHeadMixin`).

With ``dsa_levels`` empty, :class:`DSAFCOS` with :class:`DSAFCOSHead` is detectron2's FCOS: the
same parameters and state-dict keys, the same losses and detections on the same weights.
"""
from typing import Dict, List, Tuple

import torch
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from detectron2.structures import ImageList, Instances

from .head import DSAHeadMixin
from .meta_arch import _distributed, _fp32, normalise_over_processes

__all__ = ["DSAFCOSHead", "DSAFCOS"]

# FCOS's loss-normaliser EMA starts at 300 (detectron2's FCOS.losses).
_FCOS_EMA_INITIAL = 300


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


class DSAFCOS(FCOS):
    """detectron2's FCOS whose losses and decoding stay fp32 under CPU bf16 autocast.

    Same arguments as FCOS. Reason: under ``train.amp.enabled`` on a CPU the network runs in bf16,
    whose 8-bit mantissa would round decoded box coordinates to several pixels; as in
    :class:`dsanet.modeling.DSANet`, everything after the head runs in fp32. Its losses are
    normalised by the positives of all processes, so that W processes train like one with the
    whole batch. In one process without autocast this is FCOS unchanged.
    """

    def forward_training(self, images: ImageList, features: List[torch.Tensor],
                         predictions: List[List[torch.Tensor]],
                         gt_instances: List[Instances]) -> Dict[str, torch.Tensor]:
        with _fp32(predictions) as predictions:
            return super().forward_training(images, features, predictions, gt_instances)

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes,
               pred_centerness) -> Dict[str, torch.Tensor]:
        """FCOS's losses, normalised alike in every process of a distributed run (see
        :meth:`dsanet.modeling.DSANet.losses`); in one process exactly FCOS's."""
        args = (anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, pred_centerness)
        if not _distributed():
            return super().losses(*args)
        previous = getattr(self, "loss_normalizer", _FCOS_EMA_INITIAL)
        return normalise_over_processes(self, super().losses(*args), gt_labels, previous)

    def forward_inference(self, images: ImageList, features: List[torch.Tensor],
                          predictions: List[List[torch.Tensor]]) -> List[Instances]:
        with _fp32(predictions) as predictions:
            return super().forward_inference(images, features, predictions)
