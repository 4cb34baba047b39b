"""DSANet: detectron2's RetinaNet plus an object-confidence loss and confidence-fused inference.

The DSA module itself lives in the head (:class:`dsanet.modeling.head.DSARetinaNetHead`); this
meta-architecture only handles the head's optional third output, the per-anchor confidence.
"""
import contextlib
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.utils import comm
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.structures.boxes import matched_pairwise_iou

__all__ = ["DSANet", "fuse_scores"]

# RetinaNet's loss-normaliser EMA (detectron2's DenseDetector._ema_update defaults).
_EMA_MOMENTUM = 0.9
_EMA_INITIAL = 100


@contextlib.contextmanager
def _fp32(predictions: List[List[torch.Tensor]]):
    """The head's outputs in fp32, with autocast off, for what follows the network.

    Under bf16 autocast (``train.amp.enabled`` on a CPU) the network runs in bf16; the losses, the
    loss normaliser, the confidence target IoU, box decoding and NMS then run in fp32. Without
    autocast this changes nothing (``float()`` of an fp32 tensor is the tensor itself).
    """
    device_type = predictions[0][0].device.type
    with torch.autocast(device_type, enabled=False):
        yield [[x.float() for x in per_level] for per_level in predictions]


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


def _distributed() -> bool:
    return comm.get_world_size() > 1 and dist.is_initialized()


def normalise_over_processes(detector: torch.nn.Module, losses: Dict[str, torch.Tensor],
                             gt_labels: List[torch.Tensor], previous: float) -> Dict[str, torch.Tensor]:
    """A dense detector's losses, just divided by its own process's loss-normaliser EMA, rescaled
    to 1/W of the EMA of all W processes' positives (what one process with the whole batch would
    count); sets ``detector.loss_normalizer`` to that world-wide EMA.

    Shared by RetinaNet's and FCOS's subclasses: both divide by ``loss_normalizer``, an EMA
    (momentum 0.9) of the positives, ``previous`` before this step. Call only where
    :func:`_distributed`; the all-reduce of the count is collective.

    Args:
        losses: name -> scalar loss, divided by ``detector.loss_normalizer`` (this process's EMA).
        gt_labels: per image (R,) labels; ``num_classes`` marks background, -1 ignored.
    """
    local = detector.loss_normalizer  # what detectron2 just divided by
    num_pos = torch.stack(gt_labels)
    num_pos = ((num_pos >= 0) & (num_pos != detector.num_classes)).sum().to(torch.float64)
    dist.all_reduce(num_pos)
    detector.loss_normalizer = _EMA_MOMENTUM * previous + (1 - _EMA_MOMENTUM) * max(num_pos.item(), 1)
    per_process = detector.loss_normalizer / comm.get_world_size()
    return {k: v * (local / per_process) for k, v in losses.items()}


class DSANet(RetinaNet):
    """RetinaNet whose head may add DSA and an object-confidence output (RetinaNet-Conf).

    Args (beyond RetinaNet's):
        conf_loss_weight: weight of ``loss_conf``.
        score_fusion_alpha: alpha in ``score = cls^(1-alpha) * sigmoid(conf)^alpha`` at inference;
            0 ranks by classification alone; 0.5 ranks like the product cls * conf, which is what
            the paper's Table 6 ("x" rows) describes. The authors' released inference code
            (chenzuge1/DSANet at 70ade58, ``AnchorHead._get_bboxes_single``) uses alpha = 0.7.
            The default 0.4 is this project's own choice; see the README's study for how
            0.4, 0.5 and 0.7 compare.
    """

    def __init__(self, *, conf_loss_weight: float = 1.0, score_fusion_alpha: float = 0.4, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= score_fusion_alpha <= 1.0:
            raise ValueError(f"score_fusion_alpha={score_fusion_alpha} must lie in [0, 1]")
        self.conf_loss_weight = conf_loss_weight
        self.score_fusion_alpha = score_fusion_alpha

    @property
    def with_confidence(self) -> bool:
        return getattr(self.head, "object_confidence", None) is not None

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes) -> Dict[str, torch.Tensor]:
        """RetinaNet's losses, normalised alike in every process of a distributed run.

        detectron2 normalises each process's loss by an EMA of that process's positive anchors,
        so W processes of B images train differently from one process of W*B images. Here the
        EMA counts the positives of all processes (as one process with the whole batch would),
        and each process divides by 1/W of it, so that DDP's gradient average equals the
        one-process gradient. In one process this is exactly RetinaNet's normaliser.
        """
        if not _distributed():
            return super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        previous = getattr(self, "loss_normalizer", _EMA_INITIAL)
        losses = super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        return normalise_over_processes(self, losses, gt_labels, previous)

    @property
    def normalizer_per_process(self) -> float:
        """This process's share of the loss normaliser (all of it in one process)."""
        return self.loss_normalizer / comm.get_world_size()

    def forward_training(self, images: ImageList, features: List[torch.Tensor],
                         predictions: List[List[torch.Tensor]],
                         gt_instances: List[Instances]) -> Dict[str, torch.Tensor]:
        with _fp32(predictions) as predictions:
            return self._forward_training(images, features, predictions, gt_instances)

    def _forward_training(self, images, features, predictions, gt_instances) -> Dict[str, torch.Tensor]:
        if not self.with_confidence:
            return super().forward_training(images, features, predictions, gt_instances)
        pred_logits, pred_anchor_deltas, pred_conf = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1])
        anchors = self.anchor_generator(features)
        gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
        losses = self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
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
        normalised like RetinaNet's losses (by the normaliser :meth:`losses` just updated).

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

    def forward_inference(self, images: ImageList, features: List[torch.Tensor],
                          predictions: List[List[torch.Tensor]]) -> List[Instances]:
        """RetinaNet's inference with the fused score ranking, thresholding and driving NMS."""
        with _fp32(predictions) as predictions:
            return self._forward_inference(images, features, predictions)

    def _forward_inference(self, images, features, predictions) -> List[Instances]:
        if not self.with_confidence:
            return super().forward_inference(images, features, predictions)
        pred_logits, pred_anchor_deltas, pred_conf = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4, 1])  # per level (N, Hi*Wi*A, K | 4 | 1)
        anchors = self.anchor_generator(features)
        results: List[Instances] = []
        for img_idx, image_size in enumerate(images.image_sizes):
            scores = [fuse_scores(x[img_idx], c[img_idx], self.score_fusion_alpha)
                      for x, c in zip(pred_logits, pred_conf)]
            deltas = [x[img_idx] for x in pred_anchor_deltas]
            results.append(self.inference_single_image(anchors, scores, deltas, image_size))
        return results
