"""Loading a LazyConfig with ``key=value`` overrides, failing with a clear message on bad input."""
from pathlib import Path
from typing import List

import torch
from detectron2.config import LazyConfig
from omegaconf import OmegaConf
from omegaconf.errors import ConfigTypeError

from .errors import UserInputError

__all__ = ["load_config", "check_device"]

_ABSENT = object()


def _check_override_keys(cfg, overrides: List[str], config_file: str) -> None:
    """Every plain ``key=value`` override must name a key the config has (``+key=value`` adds one)."""
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep:
            raise UserInputError(f"override {override!r} is not of the form key=value")
        if key.startswith(("+", "~")):
            continue
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise UserInputError(f"override {override!r}: key '{key}' does not exist in {config_file} "
                                 f"(prefix it with '+' to add a new key)")


def load_config(config_file: str, overrides: List[str] = ()):
    """Load a LazyConfig (.py or a saved .yaml) and apply command-line overrides.

    Raises:
        UserInputError: the file does not exist, or an override names a key it does not have.
    """
    if not Path(config_file).is_file():
        raise UserInputError(f"--config-file {config_file}: no such file")
    cfg = LazyConfig.load(config_file)
    overrides = list(overrides)
    _check_override_keys(cfg, overrides, config_file)
    for override in overrides:
        _apply_override(cfg, override.lstrip("+"))
    return cfg


def _apply_override(cfg, override: str) -> None:
    """One ``key=value`` through detectron2's ``LazyConfig.apply_overrides``; a dict given for a list
    (``model.head.dsa_levels={p3:self_half_k1,p4:self}`` over ``["p4", ...]``), or a list for a dict,
    replaces the node, which detectron2's merging update refuses ("Cannot merge DictConfig with ListConfig")."""
    try:
        LazyConfig.apply_overrides(cfg, [override])
    except ConfigTypeError:
        key = override.partition("=")[0]
        if not OmegaConf.is_config(OmegaConf.select(cfg, key, default=None)):
            raise
        OmegaConf.update(cfg, key, None, merge=False)
        LazyConfig.apply_overrides(cfg, [override])


def check_device(cfg) -> None:
    """A CUDA config on a machine without CUDA fails here, in one line, not deep inside torch.

    Raises:
        UserInputError: ``train.device`` names CUDA and no CUDA device is available.
    """
    device = str(cfg.train.get("device", "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"train.device={device}, but this machine has no CUDA device: add train.device=cpu "
                             f"(configs/Custom/dsanet_conf_small_custom_cpu.py is the CPU recipe for your own data)")
