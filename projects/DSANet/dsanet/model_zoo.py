"""Model-zoo style access to the project's configs and trained models, like ``detectron2.model_zoo``:

    from dsanet import model_zoo
    cfg = model_zoo.get_config("COCO-Detection/dsanet_conf_R_50_FPN_1x.py")
    model = model_zoo.get("Demo/dsanet_conf_synthetic_cpu.py", trained=True)  # shipped, offline

A trained model ships inside the package as ``trained/<config path without .py>/model_final_<hash>.pth``
(fp16 weights; the hash is the first 8 hex digits of the file's sha256, checked on load) beside its
``metrics.json`` (the ten COCO numbers on the config's validation split, the command, machine and date).
"""
import hashlib
import json
from pathlib import Path
from typing import Optional, Union

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from .errors import UserInputError

__all__ = ["get_config_file", "get_config", "get", "trained_weights", "trained_metrics"]


def _configs_root() -> Path:
    """Where the configs are: inside the installed package (a wheel or ``pip install .`` copies the
    repository's configs/ to dsanet/configs, see setup.py), else the source tree's top-level
    configs/ (an editable install, or running from a checkout)."""
    packaged = Path(__file__).resolve().parent / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "configs"


CONFIGS_ROOT = _configs_root()

TRAINED_ROOT = Path(__file__).resolve().parent / "trained"
WEIGHTS_PREFIX = "model_final_"


def _config_name(config: Union[str, Path]) -> Optional[str]:
    """``"Demo/x.py"`` for a zoo name or for a path to one of the project's configs; None otherwise."""
    path = Path(config)
    if path.is_absolute() or path.exists():
        try:
            return path.resolve().relative_to(CONFIGS_ROOT.resolve()).as_posix()
        except ValueError:
            return None
    return path.as_posix()


def trained_folder(config: Union[str, Path]) -> Optional[Path]:
    """Where a config's trained model ships (``trained/<config path without .py>``, present or not); None
    for a file that is not one of the project's configs."""
    name = _config_name(config)
    return None if name is None else TRAINED_ROOT / Path(name).with_suffix("")


def _trained_folder(config: Union[str, Path]) -> Optional[Path]:
    folder = trained_folder(config)
    return folder if folder is not None and folder.is_dir() else None


def trained_weights(config: Union[str, Path]) -> Optional[str]:
    """The shipped trained weights of a config (zoo name or path), hash-checked; None if none ship.

    Raises:
        UserInputError: the file's sha256 does not start with the hash in its name (a damaged copy).
    """
    folder = _trained_folder(config)
    files = sorted(folder.glob(f"{WEIGHTS_PREFIX}*.pth")) if folder else []
    if not files:
        return None
    path = files[-1]
    expected = path.stem[len(WEIGHTS_PREFIX):]
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if not actual.startswith(expected):
        raise UserInputError(f"{path}: sha256 {actual[:8]} does not match the {expected} in its name; "
                             f"the file is damaged: reinstall the project")
    return str(path)


def trained_metrics(config: Union[str, Path]) -> Optional[dict]:
    """The ``metrics.json`` beside a config's shipped weights (see the module docstring), or None."""
    folder = _trained_folder(config)
    if folder is None or not (folder / "metrics.json").is_file():
        return None
    return json.loads((folder / "metrics.json").read_text())


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
        trained: point ``train.init_checkpoint`` at the config's shipped trained weights.
    Raises:
        UserInputError: ``trained=True`` for a config that ships no trained weights (every COCO config:
            the project trains none where it is built; train one with train_net.py).
    """
    cfg = LazyConfig.load(get_config_file(config_path))
    if trained:
        weights = trained_weights(config_path)
        if weights is None:
            shipped = sorted(p.parent.relative_to(TRAINED_ROOT).as_posix() + ".py"
                             for p in TRAINED_ROOT.glob(f"*/*/{WEIGHTS_PREFIX}*.pth"))
            raise UserInputError(f"no trained weights ship for {config_path} (trained models ship for: "
                                 f"{', '.join(shipped) or 'none'}); train it with train_net.py, or pass your "
                                 f"own checkpoint as train.init_checkpoint")
        cfg.train.init_checkpoint = weights
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
