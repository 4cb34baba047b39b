"""Reading images that real datasets hold: odd modes converted correctly, unreadable files skipped.

detectron2's ``read_image`` (v0.6 and later) already applies EXIF orientation and converts CMYK,
grayscale, palette and RGBA images to RGB/BGR through PIL, but it clips a 16-bit PNG (mode
``I;16``) to 0-255 instead of scaling it, so most of such an image turns white; and one 0-byte or
truncated file raises in the middle of training. Here:

- ``read_image`` scales 16-bit images to 8 bits and decodes the whole file at once, so a broken
  file fails here, naming itself;
- ``RobustDatasetMapper`` is detectron2's ``DatasetMapper`` with that reader. A file that cannot
  be read, or whose size (after EXIF rotation) differs from the json's ``width``/``height``, gets
  one warning naming it and is skipped: in training the mapper returns None and detectron2's loader
  takes another image instead; in evaluation the image goes on flagged ``UNREADABLE_KEY``, with a
  small blank placeholder, and ``COCOEvaluatorWithRecall`` leaves it out of the COCO metrics.
"""
import copy
import logging
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageOps

from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils.file_io import PathManager

__all__ = ["read_image", "RobustDatasetMapper", "UNREADABLE_ERRORS", "UNREADABLE_KEY"]

logger = logging.getLogger(__name__)

UNREADABLE_KEY = "dsanet_unreadable"  # in a mapped record: why its image could not be used
# What PIL (and detectron2's size check, a ValueError) raise for a file that is not a usable image.
UNREADABLE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_PLACEHOLDER_SIZE = 32
_EXIF_ORIENTATION = 0x0112
_warned = set()


def _to_8_bit(image: Image.Image) -> Image.Image:
    """A 16-bit (``I;16*``) or 32-bit integer (``I``) grayscale image scaled to 8-bit ``L``."""
    pixels = np.asarray(image)
    if image.mode.startswith("I;16") or pixels.max(initial=0) > 255:
        pixels = np.rint(pixels.astype(np.float64) * (255.0 / 65535.0)).clip(0, 255)
    return Image.fromarray(pixels.astype(np.uint8), "L")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """The image turned upright by its EXIF orientation tag (as detectron2 does; broken EXIF is ignored)."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # PIL raises assorted errors for malformed EXIF blocks; the pixels are still fine
        return image
    return ImageOps.exif_transpose(image) if orientation != 1 else image


def read_image(file_name: str, format: Optional[str] = None) -> np.ndarray:
    """detectron2's ``read_image`` (EXIF orientation, PIL mode conversion), scaling 16-bit images.

    Args:
        file_name: image path (any path PathManager opens).
        format: "BGR", "RGB", "L" or another PIL mode, as in detectron2.

    Returns:
        (H, W, C) uint8 array.

    Raises:
        one of ``UNREADABLE_ERRORS`` for a file that is empty, truncated or not an image.
    """
    with PathManager.open(file_name, "rb") as f:
        image = Image.open(f)
        image.load()  # decode all of it now: a truncated file raises here
    image = _apply_exif_orientation(image)
    if image.mode.startswith("I"):
        image = _to_8_bit(image)
    return utils.convert_PIL_to_numpy(image, format)


def warn_unreadable(file_name: str, error: BaseException) -> None:
    """One warning per file and process: the file, and why it is skipped."""
    if file_name not in _warned:
        _warned.add(file_name)
        logger.warning("skipped image %s: %s: %s", file_name, type(error).__name__, error)


class RobustDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that converts 16-bit images correctly and skips unreadable files with a warning.

    Takes the same arguments as ``DatasetMapper``. For detection records (no semantic
    segmentation) it maps exactly as ``DatasetMapper.__call__`` does once the image is read.
    """

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        dataset_dict = copy.deepcopy(dataset_dict)  # it is modified below
        file_name = dataset_dict["file_name"]
        try:
            image = read_image(file_name, format=self.image_format)
            utils.check_image_size(dataset_dict, image)
            sem_seg = (read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
                       if "sem_seg_file_name" in dataset_dict else None)
        except UNREADABLE_ERRORS as e:
            warn_unreadable(file_name, e)
            if self.is_train:
                return None  # detectron2's MapDataset tries another image
            return self._placeholder(dataset_dict, f"{type(e).__name__}: {e}")

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]  # h, w
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict

    @staticmethod
    def _placeholder(dataset_dict: dict, reason: str) -> dict:
        """An evaluation record whose image could not be read: flagged, with a blank stand-in image."""
        dataset_dict.pop("annotations", None)
        dataset_dict[UNREADABLE_KEY] = reason
        dataset_dict["image"] = torch.zeros((3, _PLACEHOLDER_SIZE, _PLACEHOLDER_SIZE), dtype=torch.uint8)
        return dataset_dict
