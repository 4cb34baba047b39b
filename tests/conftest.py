"""Shared helpers for the test suite: tiny CPU models and inputs built from the real stack."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import dsanet  # noqa: F401  (applies the detectron2 compatibility shims before detectron2 imports)
import pytest
import torch
from detectron2.structures import Boxes, Instances

TINY_IMAGE_SIZES = ((64, 96), (80, 72))  # odd (H, W) sizes: padding to the FPN stride must work


def make_inputs(num_classes: int = 3, with_gt: bool = True, seed: int = 0) -> list:
    """Two images in detectron2's input format, with boxes that lie inside them."""
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for height, width in TINY_IMAGE_SIZES:
        image = torch.randint(0, 256, (3, height, width), generator=generator).float()
        instances = Instances((height, width))
        if with_gt:
            instances.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 60.0, 40.0]]))
            instances.gt_classes = torch.tensor([0, num_classes - 1])
        else:
            instances.gt_boxes = Boxes(torch.zeros((0, 4)))
            instances.gt_classes = torch.zeros((0,), dtype=torch.int64)
        inputs.append({"image": image, "instances": instances, "height": height, "width": width})
    return inputs


@pytest.fixture
def tiny_inputs() -> list:
    return make_inputs()
