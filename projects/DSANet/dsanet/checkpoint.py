"""Checkpoints that are written atomically and cannot run code when loaded (unless the user opts in).

Writing: each checkpoint and the ``last_checkpoint`` tag are written with
:func:`dsanet.fileio.atomic_write` (a temporary file renamed over the real name), so a process
killed mid-write leaves at most a temporary file that no reader looks at; ``last_checkpoint``
always names a complete file.

Loading: ``.pth``/``.pyth`` files load with ``torch.load(weights_only=True)``. detectron2 unpickles
``.pkl`` files with plain pickle, which runs whatever the file says; here they go through an
unpickler that builds only what model-zoo weights contain (dicts of numpy arrays, as in
detectron2's and Detectron's ``.pkl`` files). A file that needs anything else is refused, with
the opt-in named: ``train.allow_unsafe_pickle=True`` (trusted files only).

Matching: a file none of whose weights matches a weight of the model (by detectron2's name matching,
and shape) is an error naming the file, not a model silently left at its initialisation.
"""
import os
import pickle
import re
from typing import Any, Dict

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

from .errors import UserInputError
from .fileio import atomic_write

__all__ = ["CheckedCheckpointer", "WeightsOnlyUnpickler", "UNSAFE_PICKLE_OPT_IN", "remove_stale_temporary_files"]

UNSAFE_PICKLE_OPT_IN = "train.allow_unsafe_pickle=True"
# How torch's weights-only unpickler and ours say that a file needs a global they do not build.
_REFUSED_GLOBAL = re.compile(r"unsupported global|is not allowed in a weights file", re.IGNORECASE)
_TEMPORARY_SUFFIX = re.compile(r"\.tmp\.\d+$")

# What a model-zoo .pkl needs to unpickle: numpy arrays, dtypes and scalars (numpy 1 and 2 paths).
_ALLOWED_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class WeightsOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")


def remove_stale_temporary_files(folder: str) -> list:
    """Delete what killed runs left half-written (``*.pth.tmp.<pid>``, ``last_checkpoint.tmp.<pid>``
    of another process than this one)."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in os.listdir(folder):
        base = _TEMPORARY_SUFFIX.sub("", name)
        if base != name and not name.endswith(f".tmp.{os.getpid()}") and (base.endswith(".pth") or base == "last_checkpoint"):
            os.remove(os.path.join(folder, name))
            removed.append(name)
    return removed


class CheckedCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that saves atomically, loads without running code by default, and turns
    an unreadable or refused file, or one that matches no weight of the model, into one UserInputError
    naming it.

    Args:
        allow_unsafe_pickle: load ``.pkl`` and ``.pth`` files with full pickle (trusted files only).
    """

    def __init__(self, *args, allow_unsafe_pickle: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.allow_unsafe_pickle = allow_unsafe_pickle
        self._loading = None  # the file being loaded

    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        """fvcore's ``load``; remembers ``path`` so that an error about its contents can name it."""
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None

    def _load_model(self, checkpoint: Dict[str, Any]):
        """DetectionCheckpointer's ``_load_model``; raises UserInputError when no weight of the file was loaded.

        The name-matching step (``matching_heuristics``, detectron2's model-zoo and converted weights) runs
        here rather than in the parent, so that the weights handed on are the ones loaded: fvcore drops
        those of another shape from that very dict.
        """
        # fvcore's extension point, private by name (listed in dsanet.compat.PRIVATE_DETECTRON2_NAMES).
        if checkpoint.get("matching_heuristics", False):
            _arrays_to_tensors(checkpoint["model"])
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(), checkpoint["model"], c2_conversion=checkpoint.get("__author__") == "Caffe2")
            checkpoint["matching_heuristics"] = False  # done: the parent must not match again
        weights = checkpoint["model"]
        file_keys = list(weights)
        incompatible = super()._load_model(checkpoint)
        model_keys = set(self.model.state_dict())
        if not (model_keys & set(weights)) - {"pixel_mean", "pixel_std"}:
            example = f", e.g. '{file_keys[0]}'" if file_keys else ""
            raise UserInputError(
                f"checkpoint {self._loading} matches no weight of the model (none of its {len(file_keys)} weights"
                f"{example}, has the name and shape of a model weight, e.g. '{min(model_keys)}')")
        return incompatible

    def _is_local(self) -> bool:
        return "://" not in self.save_dir

    def save(self, name: str, **kwargs: Any) -> None:
        """fvcore's ``Checkpointer.save``, written atomically (see the module docstring)."""
        if not self.save_dir or not self.save_to_disk or not self._is_local():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                      lambda f: f.write(last_filename_basename.encode()))

    def _load_file(self, filename: str) -> Dict[str, Any]:
        """The checkpoint dict of ``filename`` (``{"model": state dict, ...}``), read without running code
        unless ``allow_unsafe_pickle``; any failure is one UserInputError naming the file."""
        # fvcore's extension point, private by name (listed in dsanet.compat.PRIVATE_DETECTRON2_NAMES).
        try:
            if filename.endswith(".pkl") and not self.allow_unsafe_pickle:
                with open(filename, "rb") as f:
                    data = WeightsOnlyUnpickler(f, encoding="latin1").load()
                return self._from_pickled_weights(filename, data)
            if filename.endswith(".pkl"):
                return super()._load_file(filename)
            return self._load_torch_file(filename)
        except pickle.UnpicklingError as e:
            if not _REFUSED_GLOBAL.search(str(e)):
                raise UserInputError(f"checkpoint {filename} cannot be loaded: {type(e).__name__}: {_first_line(e)}") from e
            raise UserInputError(
                f"checkpoint {filename} was not loaded: {_refusal(e)}; unpickling it could run code. "
                f"Only if you trust this file, load it with {UNSAFE_PICKLE_OPT_IN}") from e
        except UserInputError:
            raise
        except Exception as e:  # torch.load and pickle raise many types for a corrupt file
            raise UserInputError(f"checkpoint {filename} cannot be loaded: {type(e).__name__}: {_first_line(e)}") from e

    def _load_torch_file(self, filename: str) -> Dict[str, Any]:
        """detectron2's .pth/.pyth handling, with ``weights_only`` set (torch < 2.6 defaults to False)."""
        data = torch.load(filename, map_location=torch.device("cpu"), weights_only=not self.allow_unsafe_pickle)
        if filename.endswith(".pyth"):  # pycls
            if "model_state" not in data:
                raise UserInputError(f"checkpoint {filename}: a pycls .pyth file must contain 'model_state'")
            model = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": model, "__author__": "pycls", "matching_heuristics": True}
        return data if "model" in data else {"model": data}

    def _from_pickled_weights(self, filename: str, data: Any) -> Dict[str, Any]:
        """What detectron2's ``_load_file`` returns for a .pkl: model-zoo format kept, Caffe2 converted."""
        if not isinstance(data, dict):
            raise UserInputError(f"checkpoint {filename} holds a {type(data).__name__}, not a dict of weights")
        if "model" in data and "__author__" in data:
            self.logger.info("Reading a file from '%s'", data["__author__"])
            return data
        data = data.get("blobs", data)  # Detectron (Caffe2) detection models keep weights in "blobs"
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


def _arrays_to_tensors(state_dict: Dict[str, Any]) -> None:
    """Turns each numpy array of ``state_dict`` into a tensor, in place (name matching compares shapes);
    a value that is neither is a ValueError, as fvcore's loader has it."""
    for name, value in list(state_dict.items()):
        if isinstance(value, np.ndarray):
            state_dict[name] = torch.from_numpy(value)
        elif not isinstance(value, torch.Tensor):
            raise ValueError(f"Unsupported type found in checkpoint! {name}: {type(value)}")


def _refusal(error: BaseException) -> str:
    """The one line of an unpickling error that names the refused global."""
    lines = [line.strip() for line in str(error).splitlines() if _REFUSED_GLOBAL.search(line)]
    return lines[0].rstrip(".") if lines else _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
