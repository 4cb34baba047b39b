"""A trained model ready to run on single images: detectron2's ``DefaultPredictor``, for LazyConfigs.

``DefaultPredictor`` takes a yacs config; this one takes the LazyConfig that ``train_net.py``
writes (``config.yaml``) or any project config, and applies the test loader's own
augmentations, so an image goes through exactly what evaluation does to it.
"""
import contextlib
import os
from typing import List, Optional

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import Instances

from .config import load_config
from .data import register_datasets_for
from .checkpoint import CheckedCheckpointer
from .errors import UserInputError
from .precision import cpu_autocast_dtype

__all__ = ["Predictor", "load_model", "input_format_of"]


def load_model(cfg, weights: str, device: Optional[str] = None) -> torch.nn.Module:
    """Instantiate ``cfg.model`` in eval mode with ``weights`` loaded; a missing file is a UserInputError."""
    if "://" not in weights and not os.path.isfile(weights):
        raise UserInputError(f"--weights {weights}: no such file")
    model = instantiate(cfg.model).to(device or cfg.train.device).eval()
    CheckedCheckpointer(model).load(weights)
    return model


def input_format_of(model: torch.nn.Module, cfg) -> str:
    """The channel order ("BGR" or "RGB") that ``model`` takes: its ``input_format`` (RetinaNet,
    DSANet), else that of the images the config's test loader feeds it (detectron2's FCOS keeps none)."""
    return getattr(model, "input_format", None) or cfg.dataloader.test.mapper.get("image_format", "BGR")


class Predictor:
    """Load a config and checkpoint once, then predict on BGR/RGB images of any size.

    Args:
        config_file: a LazyConfig (.py or the .yaml saved by train_net.py).
        weights: checkpoint path or URL.
        opts: ``key=value`` overrides of the config.
        device: overrides ``train.device``.
    Attributes:
        model, cfg, metadata (of the config's test dataset: class names), augmentations.
    """

    def __init__(self, config_file: str, weights: str, opts: List[str] = (), device: Optional[str] = None):
        self.cfg = load_config(config_file, list(opts))
        register_datasets_for(self.cfg)
        self.model = load_model(self.cfg, weights, device)
        dtype = cpu_autocast_dtype(self.cfg)  # train.amp.enabled: bf16 on a CPU that has it
        self.autocast = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype is not None else contextlib.nullcontext
        test_mapper = self.cfg.dataloader.test.mapper
        self.augmentations = T.AugmentationList([instantiate(a) for a in test_mapper.get("augmentations", [])])
        self.input_format = input_format_of(self.model, self.cfg)
        names = self.cfg.dataloader.test.dataset.names
        self.metadata = MetadataCatalog.get(names if isinstance(names, str) else names[0])

    def preprocess(self, image: np.ndarray) -> dict:
        """(H, W, 3) uint8 image in ``input_format`` -> the model's input dict (test augmentations applied).

        The dict also holds ``transform`` (the applied augmentations), to map points into the
        network's input frame.
        """
        aug_input = T.AugInput(image)
        transform = self.augmentations(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))).float()  # (3, h, w)
        return {"image": tensor, "height": image.shape[0], "width": image.shape[1], "transform": transform}

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Instances:
        """(H, W, 3) uint8 image in ``input_format`` -> Instances in the image's own coordinates, on CPU."""
        inputs = self.preprocess(image)
        with self.autocast():
            return self.model([inputs])[0]["instances"].to("cpu")
