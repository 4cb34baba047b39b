"""Mixed precision on CPUs: bf16 autocast where the processor multiplies bf16 in hardware.

``train.amp.enabled=True`` means CUDA's fp16 AMP (detectron2's ``AMPTrainer``) on a GPU, and
``torch.autocast("cpu", dtype=torch.bfloat16)`` on a CPU with native bf16 (AVX512-BF16 or AMX).
On a CPU without it, bf16 would be emulated and slower than fp32, so the run stays fp32 and says
so in one line: a config written on one machine still runs, unchanged, on another.
"""
import contextlib
import logging
import os
from typing import Iterator, List, Tuple

import torch

__all__ = [
    "FORCE_NO_BF16_ENV", "cpu_has_native_bf16", "cpu_autocast_dtype", "autocast", "inference_autocast",
    "fp32_postprocessing",
]

logger = logging.getLogger(__name__)

# Set to 1 to act as if the CPU had no native bf16 (tests; comparing against fp32 on one machine).
FORCE_NO_BF16_ENV = "DSANET_ASSUME_NO_NATIVE_BF16"


def cpu_has_native_bf16() -> Tuple[bool, str]:
    """Whether this CPU multiplies bf16 in hardware, and what was found, in words."""
    if os.environ.get(FORCE_NO_BF16_ENV) == "1":
        return False, f"{FORCE_NO_BF16_ENV}=1"
    found = [name for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_tile", "_is_amx_tile_supported"))
             if getattr(torch.cpu, probe, lambda: False)()]
    if not found:
        return False, "neither avx512_bf16 nor amx_tile"
    return True, " and ".join(found)


def cpu_autocast_dtype(cfg) -> "torch.dtype | None":
    """bf16 where ``cfg.train.amp.enabled`` asks for mixed precision on a CPU that has it, else None.

    Logs one line either way when mixed precision is asked for on a CPU.
    """
    if not cfg.train.amp.enabled or str(cfg.train.device).startswith("cuda"):
        return None
    native, found = cpu_has_native_bf16()
    if not native:
        logger.warning("train.amp.enabled=True: this CPU has no native bf16 (%s), where bf16 is emulated "
                       "and slower than fp32; running in fp32", found)
        return None
    logger.info("train.amp.enabled=True: bf16 autocast on CPU (%s)", found)
    return torch.bfloat16


def autocast(device: "str | torch.device", dtype: "torch.dtype | None"):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or no context at all for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def inference_autocast(cfg):
    """The autocast context evaluation and prediction run under for ``cfg`` (CPU bf16 or nothing)."""
    return autocast("cpu", cpu_autocast_dtype(cfg))


@contextlib.contextmanager
def fp32_postprocessing(predictions: List[List[torch.Tensor]]) -> Iterator[List[List[torch.Tensor]]]:
    """A dense head's outputs in fp32, with autocast off, for what follows the network.

    Under bf16 autocast (``train.amp.enabled`` on a CPU) the network runs in bf16, whose 8-bit
    mantissa would round decoded box coordinates to several pixels; inside this context the losses,
    the loss normaliser, box decoding and NMS run in fp32. Without autocast it changes nothing
    (``float()`` of an fp32 tensor is the tensor itself).

    Args:
        predictions: per output kind, per level (N, Ci, Hi, Wi), as a dense head returns them.
    Yields:
        the same nested lists, each tensor in fp32.
    """
    device_type = predictions[0][0].device.type
    with torch.autocast(device_type, enabled=False):
        yield [[x.float() for x in per_level] for per_level in predictions]
