"""The one place where warnings that torch, fvcore and detectron2 raise about their own internals
are silenced, so that every command of the project prints only what its user can act on.

Each entry matches one warning by category, message and the module Python attributes it to
(the ``module`` of :func:`warnings.filterwarnings`), never a whole category: a warning that a
user's input, config or own code causes elsewhere still shows. ``DSANET_ALL_WARNINGS=1`` in the
environment keeps every warning. Importing :mod:`dsanet` installs none of these filters.
"""
import contextlib
import logging
import os
import re
import warnings
from typing import Tuple, Type

import torch

__all__ = ["INTERNAL_WARNINGS", "INTERNAL_LOG_WARNINGS", "silence_internal_warnings", "quiet_internal_warnings"]

# (category, message regex, module regex), each with where it comes from.
INTERNAL_WARNINGS: Tuple[Tuple[Type[Warning], str, str], ...] = (
    # fvcore scripts its focal losses at import (detectron2 v0.6 imports fvcore); torch 2.14 deprecates scripting.
    (FutureWarning, r"`torch\.jit\.script` is deprecated", r"torch\.jit\._script"),
    # tools/export_model.py's TorchScript format, kept for detectron2's deploy tools.
    (FutureWarning, r"`torch\.jit\.(trace|trace_method)` is deprecated", r"torch\.jit\._trace"),
    (FutureWarning, r"`torch\.jit\.load` is deprecated", r"torch\.jit\._serialization"),
    # detectron2's anchor generator calls torch.meshgrid without ``indexing`` (its "ij" default is what it wants).
    (UserWarning, r"torch\.meshgrid: in an upcoming release", r"torch\.functional"),
    # torch.jit.trace on shape checks inside detectron2 and this project; the export tool then proves
    # the traced graph equal to eager on images of other sizes.
    (torch.jit.TracerWarning, r"Converting a tensor to a Python (boolean|index|integer)",
     r"(detectron2|dsanet)\.|torch\.nn\.functional"),  # torch's own: batch/group norm's one-value check
    # Raised only where several processes train (so no single-process command met them):
    # detectron2 v0.6's comm.all_gather pickles through torch.ByteStorage (torch deprecates TypedStorage);
    (UserWarning, r"TypedStorage is deprecated", r"detectron2\.utils\.comm"),
    # detectron2's create_ddp_model passes train.ddp's broadcast_buffers=False to DDP, which deprecates the
    # name in torch 2.14 but itself says to keep it until its replacement can skip the sync at start-up.
    (FutureWarning, r"`broadcast_buffers` is deprecated", r"detectron2\.engine\.defaults"),
)

# (logger name, message regex) of log records of the same kind.
INTERNAL_LOG_WARNINGS: Tuple[Tuple[str, str], ...] = (
    # detectron2's environment report imports torch.utils.cpp_extension, which looks for CUDA at import.
    ("torch.utils.cpp_extension", r"No CUDA runtime is found"),
)


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def _ignore_internal_warnings() -> None:
    for category, message, module in INTERNAL_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


@contextlib.contextmanager
def quiet_internal_warnings():
    """Within the block, :data:`INTERNAL_WARNINGS` are ignored. After it exactly the filters it added
    are taken out again, so the filters are as before (and any that an import inside added stay)."""
    added = []
    if os.environ.get("DSANET_ALL_WARNINGS") != "1":
        for category, message, module in INTERNAL_WARNINGS:
            before = list(warnings.filters)
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
            added += [entry for entry in warnings.filters if entry not in before]
    try:
        yield
    finally:
        for entry in added:
            if entry in warnings.filters:
                warnings.filters.remove(entry)


def silence_internal_warnings() -> None:
    """Install the filters of :data:`INTERNAL_WARNINGS` and :data:`INTERNAL_LOG_WARNINGS` for the rest
    of the process (unless ``DSANET_ALL_WARNINGS=1``); idempotent. The project's commands call it first."""
    if os.environ.get("DSANET_ALL_WARNINGS") == "1":
        return
    _ignore_internal_warnings()
    for name, message in INTERNAL_LOG_WARNINGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.pattern.pattern == message for f in logger.filters):
            logger.addFilter(_DropMessages(message))
