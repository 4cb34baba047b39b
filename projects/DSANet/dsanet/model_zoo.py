"""Model-zoo style access to the project's configs, like ``detectron2.model_zoo``:

    from dsanet import model_zoo
    cfg = model_zoo.get_config("COCO-Detection/dsanet_conf_R_50_FPN_1x.py")
    model = model_zoo.get("COCO-Detection/dsanet_conf_R_50_FPN_1x.py")
"""
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from .errors import UserInputError

__all__ = ["get_config_file", "get_config", "get"]



def _configs_root() -> Path:
    """Where the configs are: inside the installed package (a wheel or ``pip install .`` copies the
    repository's configs/ to dsanet/configs, see setup.py), else the source tree's top-level
    configs/ (an editable install, or running from a checkout)."""
    packaged = Path(__file__).resolve().parent / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "configs"


CONFIGS_ROOT = _configs_root()

# Trained weights, by config path, once real COCO runs publish them (none yet: we list no
# numbers or weights we did not produce).
TRAINED_WEIGHTS: dict = {}


def get_config_file(config_path: str) -> str:
    """Absolute path of a config, e.g. ``"COCO-Detection/dsanet_R_50_FPN_1x.py"``."""
    path = CONFIGS_ROOT / config_path
    if not path.is_file():
        available = sorted(str(p.relative_to(CONFIGS_ROOT)) for p in CONFIGS_ROOT.glob("*/*.py")
                           if p.parent.name != "common")
        if not available:
            raise UserInputError(f"no configs found at {CONFIGS_ROOT}: reinstall the project "
                                 f"(`pip install .` ships configs/ inside the dsanet package)")
        raise UserInputError(f"{config_path} is not among the project's configs in {CONFIGS_ROOT}: "
                             f"choose one of {', '.join(available)}")
    return str(path)


def get_config(config_path: str, trained: bool = False):
    """Load a project config (a LazyConfig with model, dataloader, optimizer, lr_multiplier, train).

    Args:
        trained: point ``train.init_checkpoint`` at the config's trained weights.
    """
    cfg = LazyConfig.load(get_config_file(config_path))
    if trained:
        if config_path not in TRAINED_WEIGHTS:
            raise UserInputError(f"no trained weights are published for {config_path} yet; train it with "
                                 f"train_net.py or pass your own checkpoint as train.init_checkpoint")
        cfg.train.init_checkpoint = TRAINED_WEIGHTS[config_path]
    return cfg


def get(config_path: str, trained: bool = False, device: str = None) -> torch.nn.Module:
    """Build the model of a project config, with its trained weights when ``trained=True``.

    Args:
        device: defaults to "cuda" when available, else "cpu".
    Returns:
        the model, in eval mode when trained weights were loaded.
    """
    cfg = get_config(config_path, trained)
    model = instantiate(cfg.model).to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if trained:
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        model.eval()
    return model
