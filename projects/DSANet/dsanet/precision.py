"""Mixed precision: which autocast dtype a run uses on its device, and whether it scales gradients.

``train.amp.enabled=True`` turns mixed precision on; ``train.amp.precision`` picks the dtype:

- ``"auto"`` (the default): fp16 with a gradient scaler on CUDA (what detectron2's ``AMPTrainer``
  does); on a CPU, bf16 where the processor multiplies bf16 in hardware (AVX512-BF16 or AMX). On a
  CPU without it, bf16 would be emulated and slower than fp32, so the run stays fp32 and says so in
  one line: a config written on one machine still runs, unchanged, on another.
- ``"float16"``: fp16 autocast with a gradient scaler, on CUDA or on a CPU (where it is slow, but
  runs the GPU recipe's numerics, scaler included, on a machine without a GPU).
- ``"bfloat16"``: bf16 autocast, no scaler (bf16 has fp32's exponent range), on either device.

Every case trains through one trainer (``dsanet.engine.CheckedSimpleTrainer``).
"""
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch

from .errors import UserInputError

__all__ = [
    "FORCE_NO_BF16_ENV", "PRECISIONS", "MixedPrecision", "cpu_has_native_bf16", "amp_precision",
    "cpu_autocast_dtype", "autocast", "inference_autocast", "fp32_postprocessing",
]

logger = logging.getLogger(__name__)

# Set to 1 to act as if the CPU had no native bf16 (tests; comparing against fp32 on one machine).
FORCE_NO_BF16_ENV = "DSANET_ASSUME_NO_NATIVE_BF16"

# Values of train.amp.precision, and the dtype each names ("auto" depends on the device).
PRECISIONS = {"auto": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SHORT_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class MixedPrecision:
    """How a training run computes on ``device_type``: under autocast to ``dtype`` (None: fp32, no
    autocast), with gradients scaled where that dtype is fp16 (its range loses small gradients)."""

    device_type: str = "cpu"
    dtype: Optional[torch.dtype] = None

    @property
    def scales_gradients(self) -> bool:
        """True for fp16: the loss is scaled before backward and the gradients unscaled before the step."""
        return self.dtype == torch.float16

    def autocast(self):
        """The context the forward pass runs under (none for fp32)."""
        return autocast(self.device_type, self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A new gradient scaler for this device, enabled only for fp16 (disabled, it passes everything through)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scales_gradients)


def cpu_has_native_bf16() -> Tuple[bool, str]:
    """Whether this CPU multiplies bf16 in hardware, and what was found, in words."""
    if os.environ.get(FORCE_NO_BF16_ENV) == "1":
        return False, f"{FORCE_NO_BF16_ENV}=1"
    found = [name for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_tile", "_is_amx_tile_supported"))
             if getattr(torch.cpu, probe, lambda: False)()]
    if not found:
        return False, "neither avx512_bf16 nor amx_tile"
    return True, " and ".join(found)


def amp_precision(cfg) -> MixedPrecision:
    """The :class:`MixedPrecision` that ``cfg.train.amp`` asks for on ``cfg.train.device``.

    Logs one line when mixed precision is asked for. A config without ``train.amp.precision`` (one
    saved before the key existed) counts as ``"auto"``.

    Raises:
        UserInputError: ``train.amp.precision`` is not one of :data:`PRECISIONS`.
    """
    device_type = torch.device(str(cfg.train.device)).type
    if not cfg.train.amp.enabled:
        return MixedPrecision(device_type)
    choice = cfg.train.amp.get("precision", None) or "auto"
    if choice not in PRECISIONS:
        raise UserInputError(f"train.amp.precision={choice!r}: choose one of {', '.join(map(repr, PRECISIONS))}")
    if choice == "auto" and device_type == "cpu":
        return MixedPrecision(device_type, _cpu_default_dtype())
    dtype = PRECISIONS[choice] or torch.float16  # "auto" off the CPU: CUDA's fp16
    scaler = " with a gradient scaler" if dtype == torch.float16 else ""
    logger.info("train.amp.enabled=True: %s autocast on %s%s (train.amp.precision=%s)",
                _SHORT_NAMES[dtype], device_type.upper(), scaler, choice)
    return MixedPrecision(device_type, dtype)


def _cpu_default_dtype() -> Optional[torch.dtype]:
    """bf16 on a CPU with native bf16, else None (fp32), with one line saying which and why."""
    native, found = cpu_has_native_bf16()
    if not native:
        logger.warning("train.amp.enabled=True: this CPU has no native bf16 (%s), where bf16 is emulated "
                       "and slower than fp32; running in fp32", found)
        return None
    logger.info("train.amp.enabled=True: bf16 autocast on CPU (%s)", found)
    return torch.bfloat16


def cpu_autocast_dtype(cfg) -> "torch.dtype | None":
    """The autocast dtype of a CPU run of ``cfg`` (:func:`amp_precision`), or None (fp32, or a CUDA run)."""
    precision = amp_precision(cfg)
    return precision.dtype if precision.device_type == "cpu" else None


def autocast(device: "str | torch.device", dtype: "torch.dtype | None"):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or no context at all for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def inference_autocast(cfg):
    """The autocast context evaluation and prediction run under for ``cfg``: a CPU run's training
    dtype, or nothing (fp32; on CUDA, as detectron2 evaluates after AMP training)."""
    return autocast("cpu", cpu_autocast_dtype(cfg))


@contextlib.contextmanager
def fp32_postprocessing(predictions: List[List[torch.Tensor]]) -> Iterator[List[List[torch.Tensor]]]:
    """A dense head's outputs in fp32, with autocast off, for what follows the network.

    Under autocast (``train.amp.enabled``) the network runs in bf16 or fp16. bf16's 8-bit mantissa
    would round decoded box coordinates to several pixels; fp16's range (65504) would overflow the
    focal and confidence losses' sums and box areas, and NMS in fp16 is known to misbehave. Inside
    this context the losses, the loss normaliser, box decoding and NMS run in fp32. Without
    autocast it changes nothing (``float()`` of an fp32 tensor is the tensor itself).

    Args:
        predictions: per output kind, per level (N, Ci, Hi, Wi), as a dense head returns them.
    Yields:
        the same nested lists, each tensor in fp32.
    """
    device_type = predictions[0][0].device.type
    with torch.autocast(device_type, enabled=False):
        yield [[x.float() for x in per_level] for per_level in predictions]
