"""DSANet: detectron2's RetinaNet plus an object-confidence loss and confidence-fused inference.

The DSA module itself lives in the head (:class:`dsanet.modeling.head.DSARetinaNetHead`); what any
dense detector with DSA shares (fp32 post-processing, the world-wide loss normaliser, inference
from per-anchor scores) is :class:`dsanet.modeling.dense_detector.DSADenseDetectorMixin`. This
module adds only the head's optional third output, the per-anchor confidence.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou

from .dense_detector import DSADenseDetectorMixin

__all__ = ["DSANet", "fuse_scores"]


def fuse_scores(cls_logits: torch.Tensor, conf_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """Fused detection score ``sigmoid(cls)^(1-alpha) * sigmoid(conf)^alpha``.

    alpha = 0 is the classification score alone; alpha = 0.5 is the square root of cls * conf,
    which ranks exactly like the plain product.

    Args:
        cls_logits: (..., K) classification logits.
        conf_logits: (..., 1) object-confidence logits, broadcast over the K classes.
    Returns:
        (..., K) scores in [0, 1].
    """
    scores = torch.sigmoid(cls_logits)
    if alpha == 0:
        return scores
    # In place on the (anchors x classes) tensor: at P3 it holds millions of entries.
    return scores.pow_(1 - alpha).mul_(torch.sigmoid(conf_logits).pow_(alpha))


class DSANet(DSADenseDetectorMixin, RetinaNet):
    """RetinaNet whose head may add DSA and an object-confidence output (RetinaNet-Conf).

    Args (beyond RetinaNet's):
        conf_loss_weight: weight of ``loss_conf``.
        score_fusion_alpha: alpha in ``score = cls^(1-alpha) * sigmoid(conf)^alpha`` at inference;
            0 ranks by classification alone; 0.5 ranks like the product cls * conf, which is what
            the paper's Table 6 ("x" rows) describes. The authors' released inference code
            (chenzuge1/DSANet at 70ade58, ``AnchorHead._get_bboxes_single``) uses alpha = 0.7.
            The default 0.4 is this project's own choice; projects/DSANet/docs/STUDIES.md
            ("The study on the embedded benchmark") has how 0.4, 0.5 and 0.7 compare.
    """

    def __init__(self, *, conf_loss_weight: float = 1.0, score_fusion_alpha: float = 0.4, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= score_fusion_alpha <= 1.0:
            raise ValueError(f"score_fusion_alpha={score_fusion_alpha} must lie in [0, 1]")
        self.conf_loss_weight = conf_loss_weight
        self.score_fusion_alpha = score_fusion_alpha

    @property
    def with_confidence(self) -> bool:
        """Whether the head predicts object confidence (RetinaNet-Conf)."""
        return getattr(self.head, "object_confidence", None) is not None

    @property
    def head_outputs(self) -> Tuple[Tuple[str, int], ...]:
        """Class logits, box deltas and, with confidence, one confidence logit per anchor."""
        outputs = (("cls_logits", self.num_classes), ("box_deltas", 4))
        return (*outputs, ("conf_logits", 1)) if self.with_confidence else outputs

    def per_anchor_scores(self, outputs: Sequence[List[torch.Tensor]]) -> List[torch.Tensor]:
        """``sigmoid(cls)``, or with confidence the fused score (:func:`fuse_scores`).

        Args:
            outputs: per entry of :attr:`head_outputs`, per level (N, Hi*Wi*A, K | 4 | 1).
        Returns:
            per level (N, Hi*Wi*A, K).
        """
        if not self.with_confidence:
            return [x.sigmoid() for x in outputs[0]]
        return [fuse_scores(x, c, self.score_fusion_alpha) for x, c in zip(outputs[0], outputs[2])]

    def losses(self, anchors: List[Boxes], pred_logits: List[torch.Tensor], gt_labels: List[torch.Tensor],
               pred_anchor_deltas: List[torch.Tensor], gt_boxes: List[torch.Tensor],
               pred_conf: Optional[List[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """RetinaNet's losses, plus ``loss_conf`` when the head predicts confidence.

        Args:
            pred_conf: per level (N, Hi*Wi*A, 1) confidence logits, or None; the rest as in
                ``RetinaNet.losses``.
        """
        losses = super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        if pred_conf is not None:
            losses["loss_conf"] = self.confidence_loss(anchors, pred_anchor_deltas, pred_conf, gt_labels, gt_boxes)
        return losses

    @torch.no_grad()
    def confidence_targets(self, anchors: List[Boxes], pred_anchor_deltas: List[torch.Tensor],
                           gt_labels: List[torch.Tensor], gt_boxes: List[torch.Tensor]):
        """Positive anchors and their confidence target: the IoU between the decoded predicted box
        and the matched ground-truth box.

        Args:
            anchors: per level Boxes of (Hi*Wi*A, 4).
            pred_anchor_deltas: per level (N, Hi*Wi*A, 4).
            gt_labels: per image (R,), R anchors over all levels; K is background, -1 ignored.
            gt_boxes: per image (R, 4) matched ground-truth boxes (see ``label_anchors``).
        Returns:
            pos_mask: (N, R) bool; iou: (P,) targets in [0, 1] for the P positive anchors.
        """
        gt_labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = (gt_labels >= 0) & (gt_labels != self.num_classes)
        all_anchors = Boxes.cat(anchors).tensor  # (R, 4)
        anchors_pos = all_anchors.unsqueeze(0).expand(len(gt_labels), -1, -1)[pos_mask]  # (P, 4)
        deltas_pos = cat(pred_anchor_deltas, dim=1)[pos_mask].float()  # (P, 4)
        pred_boxes = self.box2box_transform.apply_deltas(deltas_pos, anchors_pos)
        iou = matched_pairwise_iou(Boxes(pred_boxes), Boxes(torch.stack(gt_boxes)[pos_mask]))  # (P,)
        return pos_mask, iou

    def confidence_loss(self, anchors: List[Boxes], pred_anchor_deltas: List[torch.Tensor],
                        pred_conf: List[torch.Tensor], gt_labels: List[torch.Tensor],
                        gt_boxes: List[torch.Tensor]) -> torch.Tensor:
        """Binary cross-entropy of the confidence on positive anchors against their IoU target,
        normalised like RetinaNet's losses (by the normaliser they were just divided by).

        Args:
            pred_conf: per level (N, Hi*Wi*A, 1) confidence logits; the rest as in
                :meth:`confidence_targets`.
        Returns:
            scalar ``loss_conf``.
        """
        pos_mask, iou = self.confidence_targets(anchors, pred_anchor_deltas, gt_labels, gt_boxes)
        conf = cat(pred_conf, dim=1)[pos_mask].squeeze(-1)  # (P,)
        loss = F.binary_cross_entropy_with_logits(conf, iou.to(conf.dtype), reduction="sum")
        return self.conf_loss_weight * loss / self.normalizer_per_process
