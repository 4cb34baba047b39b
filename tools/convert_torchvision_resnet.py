#!/usr/bin/env python
"""Convert a torchvision ResNet state dict (e.g. ImageNet ResNet-50) to detectron2's names, for the GPU recipes.

On a machine that can download it:
    python -c "import torch, torchvision; torch.save(torchvision.models.resnet50(weights='DEFAULT').state_dict(), 'resnet50.pth')"
Here:
    tools/convert_torchvision_resnet.py resnet50.pth output/R-50-torchvision.pkl

The .pkl holds the backbone's weights as numpy arrays in detectron2's model-zoo format with name matching
(``{"model": ..., "__author__": "torchvision", "matching_heuristics": True}``); torchvision's classifier
(``fc``) and BN's ``num_batches_tracked`` are left out. torchvision's ResNet differs from the MSRA weights
the COCO recipes assume: stride in the 3x3 conv, RGB input and its own normalisation, so train with the
overrides the command prints at the end.
"""
import argparse
import pickle
import re
import sys
from typing import Dict

import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
import numpy as np
import torch

from dsanet.errors import UserInputError, exit_with_status_of
from dsanet.fileio import atomic_write

# torchvision trains on RGB in [0, 1] normalised by these; detectron2 feeds pixels in [0, 255].
TORCHVISION_OVERRIDES = ("model.backbone.bottom_up.stages.stride_in_1x1=False", "model.input_format=RGB",
                         "model.pixel_mean=[123.675,116.28,103.53]", "model.pixel_std=[58.395,57.12,57.375]")
_NORM = r"(weight|bias|running_mean|running_var)"


def detectron2_name(name: str) -> str:
    """detectron2's name of a torchvision ResNet weight (``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight``).

    Raises:
        UserInputError: ``name`` is not a weight of a torchvision ResNet backbone.
    """
    rules = [
        (r"conv1\.weight", lambda m: "stem.conv1.weight"),
        (rf"bn1\.{_NORM}", lambda m: f"stem.conv1.norm.{m[1]}"),
        (r"layer(\d)\.(\d+)\.conv(\d)\.weight", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight"),
        (rf"layer(\d)\.(\d+)\.bn(\d)\.{_NORM}", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}"),
        (r"layer(\d)\.(\d+)\.downsample\.0\.weight", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight"),
        (rf"layer(\d)\.(\d+)\.downsample\.1\.{_NORM}", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}"),
    ]
    for pattern, rename in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return rename(match)
    raise UserInputError(f"{name}: not a weight of a torchvision ResNet backbone")


def convert(state_dict: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    """detectron2-named numpy arrays of a torchvision ResNet state dict, without ``fc`` and ``num_batches_tracked``."""
    return {detectron2_name(name): value.detach().cpu().numpy() for name, value in state_dict.items()
            if not name.startswith("fc.") and not name.endswith("num_batches_tracked")}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="a torchvision ResNet state dict saved with torch.save (.pth)")
    parser.add_argument("output", help="the detectron2 weights to write (.pkl)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    if not args.output.endswith(".pkl"):
        raise UserInputError(f"{args.output}: the output must be a .pkl file (detectron2 reads its format from it)")
    try:
        state_dict = torch.load(args.input, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserInputError(f"{args.input}: no such file") from None
    except Exception as e:  # torch.load raises many types for what is not a weights file
        raise UserInputError(f"{args.input} cannot be loaded as a state dict: {type(e).__name__}: {e}") from e
    if isinstance(state_dict, dict) and "state_dict" in state_dict:
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UserInputError(f"{args.input}: not a state dict (a dict of tensors), as torch.save(model.state_dict()) writes")
    weights = convert(state_dict)
    data = {"model": weights, "__author__": "torchvision", "matching_heuristics": True}
    atomic_write(args.output, lambda f: pickle.dump(data, f))
    print(f"{args.output}: {len(weights)} weights; train from it with", file=sys.stderr)
    print(f"train.init_checkpoint={args.output} " + " ".join(f"'{o}'" for o in TORCHVISION_OVERRIDES))


if __name__ == "__main__":
    exit_with_status_of(lambda: main(parse_args()))
