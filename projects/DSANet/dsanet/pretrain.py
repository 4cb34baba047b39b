"""Classification pretraining of a detector's backbone, the CPU stand-in for ImageNet pretraining.

The task: multi-label "which shape classes does this image hold", on images of the synthetic shapes
generator (:func:`dsanet.data.shapes.draw_synthetic_image`): each image holds one to four shapes
on clutter, and its label is a 0/1 vector over (circle, square, triangle). The classifier is
detectron2's bottom-up ResNet exactly as a detector config builds it, then a global average pool over
its coarsest feature map and one linear layer; the loss is binary cross-entropy per class. The pool
throws position away, so what is learnt is which shapes are present, not where: features made for
classification, as ImageNet's are, not for localisation.

Images are drawn on the fly from their index (a stream that never repeats), so a run is determined by
its arguments and a resumed run sees exactly the images the uninterrupted one would have. Training
images are stream 0 of ``seed``, held-out images stream 1; detection datasets use other seeds.

What a detector loads (:func:`save_backbone`) is the bottom-up's own state dict, without the
classifier and without BN's ``num_batches_tracked``, in detectron2's format for converted ImageNet
weights: ``{"model": ..., "__author__": ..., "matching_heuristics": True}``, so that
``DetectionCheckpointer`` matches ``res2.0.conv1.weight`` to ``backbone.bottom_up.res2.0.conv1.weight``.
"""
import io
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .data.shapes import CLASS_NAMES, JPEG_QUALITY, draw_synthetic_image
from .fileio import atomic_write

__all__ = ["ShapePresenceImages", "IndexStream", "BackboneClassifier", "backbone_state_dict", "save_backbone",
           "evaluate_classifier", "TRAIN_STREAM", "HELD_OUT_STREAM", "AUTHOR"]

TRAIN_STREAM, HELD_OUT_STREAM = 0, 1
AUTHOR = "dsanet tools/pretrain_backbone.py"


class ShapePresenceImages(torch.utils.data.Dataset):
    """Image ``i`` of one stream of the synthetic generator, with its shape-presence labels.

    Items are ``(image, labels)``: image (3, H, W) uint8 in ``input_format`` channel order, as
    detectron2's mapper gives a detector after reading the dataset's JPEG (the image goes through the
    same JPEG encoding); labels (K,) float, 1 where a shape of that class is in the image.

    Args:
        seed: the generator seed (the detection dataset's seed must differ).
        stream: ``TRAIN_STREAM`` or ``HELD_OUT_STREAM``.
        image_size: height and width in pixels.
        input_format: "BGR" or "RGB", the detector's ``input_format``.
        flip: flip each image horizontally with probability 1/2 (decided by its index).
    """

    def __init__(self, *, seed: int, stream: int, image_size: int = 128, input_format: str = "BGR",
                 flip: bool = False):
        self.seed, self.stream, self.image_size = int(seed), int(stream), int(image_size)
        self.input_format, self.flip = input_format, flip

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image, objects = draw_synthetic_image(self.seed, self.stream, int(index), self.image_size)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        pixels = np.asarray(Image.open(buffer).convert("RGB"))  # (H, W, 3) RGB
        if self.input_format == "BGR":
            pixels = pixels[:, :, ::-1]
        if self.flip and np.random.default_rng([self.seed, self.stream, 2, int(index)]).random() < 0.5:
            pixels = pixels[:, ::-1]
        labels = torch.zeros(len(CLASS_NAMES))
        for category_id, _, _ in objects:
            labels[category_id - 1] = 1.0
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), labels


class IndexStream(torch.utils.data.Sampler):
    """Indices ``start, start + 1, ...`` without end; set ``start`` before iterating (on resume)."""

    def __init__(self, start: int = 0):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        index = self.start
        while True:
            yield index
            index += 1


class BackboneClassifier(nn.Module):
    """A bottom-up backbone, global average pooling over its coarsest output, and a linear classifier.

    Args:
        bottom_up: the detector's bottom-up network (a detectron2 ``Backbone``).
        num_classes: number of labels.
        pixel_mean, pixel_std: the detector's input normalisation (its config's values).
    """

    def __init__(self, bottom_up: nn.Module, *, num_classes: int, pixel_mean: Sequence[float],
                 pixel_std: Sequence[float]):
        super().__init__()
        self.bottom_up = bottom_up
        shapes = bottom_up.output_shape()
        self.feature = max(shapes, key=lambda name: shapes[name].stride)
        self.classifier = nn.Linear(shapes[self.feature].channels, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.constant_(self.classifier.bias, 0.0)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """images: (N, 3, H, W) uint8 or float pixels -> (N, K) logits."""
        x = (images.float() - self.pixel_mean) / self.pixel_std
        features = self.bottom_up(x)[self.feature]  # (N, C, H/32, W/32)
        return self.classifier(features.mean(dim=(2, 3)))

    def forward(self, batch: Tuple[torch.Tensor, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """batch: images (N, 3, H, W), labels (N, K) -> {"loss_cls": mean binary cross-entropy}."""
        images, labels = batch
        return {"loss_cls": F.binary_cross_entropy_with_logits(self.logits(images), labels)}


def backbone_state_dict(bottom_up: nn.Module) -> Dict[str, torch.Tensor]:
    """The bottom-up's weights under its own names, without BN's ``num_batches_tracked`` (which a
    detector's FrozenBN has no place for, as converted ImageNet weights have none)."""
    return {name: value.detach().cpu().clone() for name, value in bottom_up.state_dict().items()
            if not name.endswith("num_batches_tracked")}


def save_backbone(bottom_up: nn.Module, path: str) -> None:
    """Write what ``train.init_checkpoint`` loads into a detector's ``backbone.bottom_up`` (atomically)."""
    data = {"model": backbone_state_dict(bottom_up), "__author__": AUTHOR, "matching_heuristics": True}
    atomic_write(path, lambda f: torch.save(data, f))


@torch.no_grad()
def evaluate_classifier(model: BackboneClassifier, images: ShapePresenceImages, *, num_images: int,
                        batch_size: int = 32) -> Dict:
    """Accuracy of ``model`` on images ``0 .. num_images - 1`` of ``images`` (a label is predicted
    present where its logit is > 0).

    Returns:
        {"num_images", "exact_match": all labels of an image right, "label_accuracy": mean over labels,
        "per_class": {name: accuracy}, "majority_exact_match" and "majority_label_accuracy": the same for
        always predicting each label's more frequent value on these images (what no learning gets)}.
    """
    was_training = model.training
    model.eval()
    predicted: List[torch.Tensor] = []
    truth: List[torch.Tensor] = []
    for start in range(0, num_images, batch_size):
        batch = [images[i] for i in range(start, min(start + batch_size, num_images))]
        predicted.append(model.logits(torch.stack([image for image, _ in batch])) > 0)
        truth.append(torch.stack([labels for _, labels in batch]) > 0.5)
    model.train(was_training)
    predicted_all, truth_all = torch.cat(predicted), torch.cat(truth)  # (N, K) bool
    majority = (truth_all.float().mean(dim=0) > 0.5).expand_as(truth_all)
    right, majority_right = predicted_all == truth_all, majority == truth_all
    return {
        "num_images": num_images,
        "exact_match": right.all(dim=1).float().mean().item(),
        "label_accuracy": right.float().mean().item(),
        "per_class": {name: right[:, k].float().mean().item() for k, name in enumerate(CLASS_NAMES)},
        "majority_exact_match": majority_right.all(dim=1).float().mean().item(),
        "majority_label_accuracy": majority_right.float().mean().item(),
    }
