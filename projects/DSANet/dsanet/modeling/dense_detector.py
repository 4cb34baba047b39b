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
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.structures import ImageList, Instances
from detectron2.utils import comm

from ..precision import fp32_postprocessing

__all__ = ["DSADenseDetectorMixin", "batch_images", "transpose_dense_predictions"]


def batch_images(images: Sequence[torch.Tensor], size_divisibility: int,
                 padding_constraints: Optional[Mapping[str, int]] = None) -> ImageList:
    """detectron2's ``ImageList.from_tensors`` (zeros at the bottom and right up to one padded size),
    with that size computed in Python ints.

    Reason: ``from_tensors`` computes it as tensors, which torch.export takes for data and stops on
    ("Could not guard on data-dependent expression"); ints of a symbolic shape stay symbolic, and
    ``torch.jit.trace`` records them as traced sizes.

    Args:
        images: per image (C, Hi, Wi).
        size_divisibility: the padded height and width are rounded up to a multiple of it (if > 1).
        padding_constraints: the backbone's (detectron2 main): ``square_size`` pads to that square,
            ``size_divisibility`` replaces the argument.
    Returns:
        ImageList of (N, C, H, W), H x W the largest Hi x Wi (or the square) rounded up, and the (Hi, Wi).
    """
    constraints = padding_constraints or {}
    divisibility = constraints.get("size_divisibility", size_divisibility)
    square = constraints.get("square_size", 0)
    image_sizes = [(image.shape[-2], image.shape[-1]) for image in images]
    height, width = max(h for h, _ in image_sizes), max(w for _, w in image_sizes)
    if square > 0:
        height = width = square
    if divisibility > 1:
        height = (height + divisibility - 1) // divisibility * divisibility
        width = (width + divisibility - 1) // divisibility * divisibility
    if len(images) == 1:  # one pad op: the only case export and tracing see
        (image_height, image_width), = image_sizes
        batched = F.pad(images[0], (0, width - image_width, 0, height - image_height)).unsqueeze(0)
    else:
        batched = images[0].new_zeros(len(images), *images[0].shape[:-2], height, width)
        for image, slot in zip(images, batched):
            slot[..., :image.shape[-2], :image.shape[-1]].copy_(image)
    return ImageList(batched, image_sizes)


def transpose_dense_predictions(predictions: Sequence[List[torch.Tensor]],
                                widths: Sequence[int]) -> List[List[torch.Tensor]]:
    """A dense head's outputs made anchor-major, as detectron2's detectors consume them.

    Args:
        predictions: per output kind, per level (N, Ai*K, Hi, Wi), K that kind's width.
        widths: per output kind its K (e.g. num_classes for the logits, 4 for the box deltas).
    Returns:
        per output kind, per level (N, Hi*Wi*Ai, K), in detectron2's ``permute_to_N_HWA_K`` order.
    """
    if len(predictions) != len(widths):
        raise ValueError(f"{len(predictions)} kinds of head outputs but {len(widths)} widths")
    # A channels_last copy first makes permute_to_N_HWA_K's reshape a view for every map size;
    # from the head's layout torch.export would turn its view-or-copy choice into an assertion
    # that no level map is 1x1. The copy is the one that reshape makes anyway when A > 1.
    return [[permute_to_N_HWA_K(x.clone(memory_format=torch.channels_last), width) for x in per_level]
            for per_level, width in zip(predictions, widths)]


class DSADenseDetectorMixin:
    """DSA's training and inference behaviour for a ``DenseDetector`` subclass.

    Put it first among the bases (``class DSAFCOS(DSADenseDetectorMixin, FCOS)``). The detector
    says what its head returns (:attr:`head_outputs`) and how those become scores
    (:meth:`per_anchor_scores`); the mixin gives it:

    - ``preprocess_image``: detectron2's normalising and padding, by :func:`batch_images`, which
      torch.export takes (the exporter calls this method too).
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

    def preprocess_image(self, batched_inputs: Sequence[Dict[str, torch.Tensor]]) -> ImageList:
        """Normalise, pad and batch the input images, as detectron2's ``DenseDetector.preprocess_image``.

        Args:
            batched_inputs: per image a dict whose ``"image"`` is (C, Hi, Wi) in the model's input format.
        Returns:
            ImageList of (N, C, H, W), see :func:`batch_images`.
        """
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        constraints = getattr(self.backbone, "padding_constraints", None)  # detectron2 main's backbones have them
        return batch_images(images, self.backbone.size_divisibility, constraints)

    def forward_training(self, images: ImageList, features: List[torch.Tensor],
                         predictions: List[List[torch.Tensor]],
                         gt_instances: List[Instances]) -> Dict[str, torch.Tensor]:
        """The detector's ``losses`` on its anchor-major head outputs (RetinaNet's and FCOS's
        ``forward_training``, for any number of outputs), in fp32 under autocast."""
        with fp32_postprocessing(predictions) as predictions:
            outputs = transpose_dense_predictions(predictions, [width for _, width in self.head_outputs])
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
            outputs = transpose_dense_predictions(predictions, [width for _, width in self.head_outputs])
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
        # detectron2's private hook, called by RetinaNet.losses and FCOS.losses (listed in
        # dsanet.compat.PRIVATE_DETECTRON2_NAMES, whose test fails if detectron2 drops it).
        world_size = comm.get_world_size() if name == "loss_normalizer" else 1
        if world_size > 1:
            value = self._summed_over_processes(value)
        return super()._ema_update(name, value, initial_value, momentum) / world_size

    def _summed_over_processes(self, value: float) -> float:
        """``value`` (a count, here positive anchors) summed over all processes, in float64."""
        total = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.item()

    @property
    def normalizer_per_process(self) -> float:
        """This process's share of the loss normaliser (all of it in one process): what detectron2's
        losses were just divided by, for extra losses to be normalised alike."""
        return self.loss_normalizer / comm.get_world_size()
