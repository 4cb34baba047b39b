"""What DSA adds to any detectron2 dense detector (RetinaNet, FCOS): fp32 post-processing under
autocast, a loss normaliser that counts the positives of every process, and one method that turns
the head's outputs into the per-anchor scores that eager inference and export both rank by.

Why a mixin and not a composed object: detectron2's ``DenseDetector`` is a template whose
``forward`` calls ``forward_training``, ``forward_inference`` and ``_ema_update`` on ``self``, and a
LazyConfig names one class to build. A helper object would still need each detector to override
those hooks only to delegate to it; a mixin first among the bases fills them in directly, and
``DSANet``/``DSAFCOS`` keep only what is truly theirs (which outputs the head gives, how they make
a score, extra losses).
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.distributed as dist
from detectron2.structures import ImageList, Instances
from detectron2.utils import comm

from ..precision import fp32_postprocessing

__all__ = ["DSADenseDetectorMixin"]


class DSADenseDetectorMixin:
    """DSA's training and inference behaviour for a ``DenseDetector`` subclass.

    Put it first among the bases (``class DSAFCOS(DSADenseDetectorMixin, FCOS)``). The detector
    says what its head returns (:attr:`head_outputs`) and how those become scores
    (:meth:`per_anchor_scores`); the mixin gives it:

    - ``forward_training``: transpose the head's outputs, label the anchors and call the
      detector's ``losses(anchors, logits, gt_labels, deltas, gt_boxes, *more_outputs)``, as
      RetinaNet and FCOS do, with everything after the head in fp32 under autocast.
    - ``forward_inference``: :meth:`per_anchor_scores`, then the detector's own
      ``inference_single_image`` (top-k, threshold, decoding, NMS), in fp32 under autocast.
    - ``_ema_update``: detectron2's loss-normaliser EMA fed the positives of all processes.

    With one process and without autocast the detector computes what its base computes.
    """

    @property
    def head_outputs(self) -> Tuple[Tuple[str, int], ...]:
        """Names and per-anchor widths of the head's outputs, in the order the head returns them;
        the first two are ``("cls_logits", K)`` and ``("box_deltas", 4)``."""
        raise NotImplementedError(f"{type(self).__name__} must say what its head returns")

    def per_anchor_scores(self, outputs: Sequence[List[torch.Tensor]]) -> List[torch.Tensor]:
        """The scores the detector ranks, thresholds and suppresses detections by.

        Args:
            outputs: per entry of :attr:`head_outputs`, per level (N, Hi*Wi*A, width), anchor-major
                (the order of detectron2's ``permute_to_N_HWA_K``).
        Returns:
            per level (N, Hi*Wi*A, K) scores in [0, 1]. May reuse ``outputs``' memory.
        """
        raise NotImplementedError(f"{type(self).__name__} must say how its head outputs become scores")

    def forward_training(self, images: ImageList, features: List[torch.Tensor],
                         predictions: List[List[torch.Tensor]],
                         gt_instances: List[Instances]) -> Dict[str, torch.Tensor]:
        """The detector's ``losses`` on its anchor-major head outputs (RetinaNet's and FCOS's
        ``forward_training``, for any number of outputs), in fp32 under autocast."""
        with fp32_postprocessing(predictions) as predictions:
            outputs = self._transpose_dense_predictions(predictions, [width for _, width in self.head_outputs])
            anchors = self.anchor_generator(features)
            gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
            return self.losses(anchors, outputs[0], gt_labels, outputs[1], gt_boxes, *outputs[2:])

    def forward_inference(self, images: ImageList, features: List[torch.Tensor],
                          predictions: List[List[torch.Tensor]]) -> List[Instances]:
        """Detections ranked by :meth:`per_anchor_scores`, in fp32 under autocast.

        Returns:
            per image Instances with pred_boxes, scores, pred_classes (in the padded image's frame).
        """
        with fp32_postprocessing(predictions) as predictions:
            outputs = self._transpose_dense_predictions(predictions, [width for _, width in self.head_outputs])
            scores = self.per_anchor_scores(outputs)  # per level (N, Hi*Wi*A, K)
            anchors = self.anchor_generator(features)
            return [self.inference_single_image(anchors, [s[i] for s in scores], [d[i] for d in outputs[1]], size)
                    for i, size in enumerate(images.image_sizes)]

    def _ema_update(self, name: str, value: float, initial_value: float, momentum: float = 0.9) -> float:
        """detectron2's normaliser EMA over the positives of all processes; returns this process's share.

        detectron2 keeps, per process, an EMA of that process's positive anchors and divides the
        losses by it, so W processes of B images train differently from one process of W*B images.
        Here the EMA (``self.loss_normalizer``, with the detector's own initial value and
        momentum) counts every process's positives, as one process with the whole batch would, and
        each process divides by 1/W of it: DDP's average of the W gradients is then the
        one-process gradient. A process without positives counts as one, as detectron2's
        ``max(num_pos, 1)`` has it. In one process this is detectron2's EMA itself.
        """
        world_size = comm.get_world_size()
        if name != "loss_normalizer" or world_size == 1 or not dist.is_initialized():
            return super()._ema_update(name, value, initial_value, momentum)
        total = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return super()._ema_update(name, total.item(), initial_value, momentum) / world_size

    @property
    def normalizer_per_process(self) -> float:
        """This process's share of the loss normaliser (all of it in one process): what detectron2's
        losses were just divided by, for extra losses to be normalised alike."""
        return self.loss_normalizer / comm.get_world_size()
