"""What the benchmarks measure: the compared models (each a project config and the baseline its
ratios are against) and the synthetic images they run on."""
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from detectron2.structures import Boxes, Instances
from torch import nn

from dsanet import model_zoo

FULL_IMAGE_SIZE: Tuple[int, int] = (800, 1333)
QUICK_IMAGE_SIZE: Tuple[int, int] = (256, 416)  # --quick: about 10x fewer pixels than 800x1333

# The default baseline: a model's time and FLOP ratios are against its ModelSpec.baseline.
BASELINE = "RetinaNet"


@dataclass(frozen=True)
class ModelSpec:
    """A compared model: its config (a ``dsanet.model_zoo`` path, relative to configs/) and the model
    its ratios are against. A baseline is itself a model of :data:`MODELS` whose baseline is its own name."""

    config: str
    baseline: str = BASELINE


# The compared models, by the names summary.json uses. A new family is two lines, its baseline
# (against itself) and its variant, as FCOS and DSA-FCOS below.
MODELS: Dict[str, ModelSpec] = {
    "RetinaNet": ModelSpec("COCO-Detection/retinanet_R_50_FPN_1x.py"),
    "RetinaNet-Conf": ModelSpec("COCO-Detection/retinanet_conf_R_50_FPN_1x.py"),
    "DSANet": ModelSpec("COCO-Detection/dsanet_R_50_FPN_1x.py"),
    "DSANet-Conf": ModelSpec("COCO-Detection/dsanet_conf_R_50_FPN_1x.py"),
    "DSANet-P3half": ModelSpec("Ablations/dsanet_p3half_k1_R_50_FPN_1x.py"),
    "DSANet-P3-P7": ModelSpec("Ablations/dsanet_self_p3-p7_R_50_FPN_1x.py"),
    "FCOS": ModelSpec("COCO-Detection/fcos_R_50_FPN_1x.py", baseline="FCOS"),
    "DSA-FCOS": ModelSpec("COCO-Detection/dsa_fcos_R_50_FPN_1x.py", baseline="FCOS"),
}


def check_models(models: Optional[Mapping[str, ModelSpec]] = None) -> Mapping[str, ModelSpec]:
    """``models`` (default :data:`MODELS`) after checking that every baseline is one of them and is
    its own baseline (ratios are one step from a baseline, never a chain); ValueError otherwise."""
    models = MODELS if models is None else models
    for name, spec in models.items():
        base = models.get(spec.baseline)
        if base is None:
            raise ValueError(f"{name}: baseline {spec.baseline!r} is not a compared model ({', '.join(models)})")
        if base.baseline != spec.baseline:
            raise ValueError(f"{name}: baseline {spec.baseline!r} is not its own baseline (it has {base.baseline!r})")
    return models


def baselines(models: Optional[Mapping[str, ModelSpec]] = None) -> List[str]:
    """The distinct baselines of ``models`` (default :data:`MODELS`), in model order."""
    models = check_models(models)
    return list(dict.fromkeys(spec.baseline for spec in models.values()))


def baseline_label(models: Optional[Mapping[str, ModelSpec]] = None) -> str:
    """"RetinaNet" when all models share one baseline, else "each model's baseline" (for titles)."""
    found = baselines(models)
    return found[0] if len(found) == 1 else "each model's baseline"


def build_model(config: str, device: Union[str, torch.device] = "cpu", seed: int = 0) -> nn.Module:
    """``model_zoo.get(config)`` with fresh weights, seeded (no checkpoint is loaded)."""
    torch.manual_seed(seed)
    return model_zoo.get(config, device=str(device))


def synthetic_image(image_size: Tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A fixed random (3, H, W) image with pixel values in [0, 255]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((3, *image_size), generator=generator) * 255


def synthetic_batch(image_size: Tuple[int, int], batch_size: int, num_classes: int = 80,
                    device: Union[str, torch.device] = "cpu", seed: int = 0) -> List[Dict[str, Any]]:
    """Images in detectron2's input format, each with three ground-truth boxes inside it."""
    height, width = image_size
    # Boxes as fractions of the image, of small, medium and large size, so all FPN levels get positives.
    fractions = torch.tensor([[0.10, 0.10, 0.25, 0.20], [0.30, 0.40, 0.60, 0.75], [0.05, 0.20, 0.95, 0.90]])
    boxes = fractions * torch.tensor([width, height, width, height])
    batch = []
    for index in range(batch_size):
        instances = Instances(image_size)
        instances.gt_boxes = Boxes(boxes.clone())
        instances.gt_classes = torch.tensor([0, 1, 2]) % num_classes
        batch.append({"image": synthetic_image(image_size, seed + index).to(device),
                      "instances": instances.to(device), "height": height, "width": width})
    return batch
