"""Everything that depends on which detectron2 (and which torch, numpy, Pillow, setuptools) is installed.

detectron2 is not on PyPI; where GitHub is out of reach, ``make setup`` installs the pure-Python
sources of v0.6 without their compiled ops (see ``tools/install_detectron2.py``). Those sources
predate today's numpy, Pillow, setuptools and torch. Each shim below fixes one such gap, says why
in one line, and does nothing where the installed detectron2 does not need it.
``apply()`` runs when ``dsanet`` is imported; import ``dsanet`` before ``detectron2.layers``.
:func:`applied_shims` lists what it changed, and it is logged once (logger ``dsanet.compat``).
"""
import importlib
import importlib.util
import logging
import random
import re
import sys
import types
import warnings
from pathlib import Path
from typing import Optional

import numpy
import torch

__all__ = ["apply", "applied_shims", "MissingCompiledOpError", "create_ddp_model", "has_compiled_ops", "tracing_adapter_class"]

FULL_BUILD_HINT = (
    "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git' "
    "on a machine that reaches GitHub, with a C++ compiler (and nvcc for the CUDA ops); "
    "see projects/DSANet/docs/GPU.md, 'The full detectron2 build'"
)

# detectron2 modules that run `from detectron2 import _C` at import time (none used by RetinaNet).
_MODULES_IMPORTING_C = (
    "detectron2.layers.deform_conv",
    "detectron2.layers.rotated_boxes",
    "detectron2.layers.roi_align_rotated",
    "detectron2.evaluation.fast_eval_api",
)
# detectron2 modules that use numpy aliases removed in numpy 1.24.
_MODULES_USING_NUMPY_ALIASES = (
    "detectron2.data.build",
    "detectron2.evaluation.sem_seg_evaluation",
    "detectron2.data.datasets.pascal_voc",
)
_NUMPY_ALIASES = {"int": int, "float": float, "str": str}


class MissingCompiledOpError(RuntimeError):
    """A compiled detectron2 op was called, but this detectron2 was installed without them."""


class _MissingCompiledOps(types.ModuleType):
    """Stands in for ``detectron2._C``: importing succeeds, calling any op raises a clear error."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise MissingCompiledOpError(
            f"detectron2 compiled op '_C.{name}' is not available: this detectron2 was installed "
            f"without its compiled C++/CUDA ops. For a full build: {FULL_BUILD_HINT}."
        )


def has_compiled_ops() -> bool:
    """True when ``detectron2._C`` is a real compiled extension."""
    return importlib.util.find_spec("detectron2._C") is not None


def _source_of(module_name: str) -> str:
    """Source text of a detectron2 module, read without importing it or its parents ('' if absent)."""
    top, *parts = module_name.split(".")
    spec = importlib.util.find_spec(top)  # a top-level lookup imports nothing
    if spec is None or not spec.submodule_search_locations:
        return ""
    package_dir = Path(list(spec.submodule_search_locations)[0])
    for candidate in (package_dir.joinpath(*parts).with_suffix(".py"),
                      package_dir.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return ""


def _import_modules_that_need_compiled_ops() -> bool:
    # Reason: four modules import detectron2._C at import time, so `import detectron2.layers` fails.
    if has_compiled_ops() or "detectron2._C" in sys.modules:
        return False
    import detectron2

    stand_in = _MissingCompiledOps("detectron2._C")
    sys.modules["detectron2._C"] = stand_in
    try:
        for name in _MODULES_IMPORTING_C:
            importlib.import_module(name)
    finally:
        # Only those modules keep the stand-in; `import detectron2._C` elsewhere still fails
        # honestly (detectron2's collect_env reports it as not built).
        del sys.modules["detectron2._C"]
        if getattr(detectron2, "_C", None) is stand_in:
            delattr(detectron2, "_C")
    return True


def _alias_pillow_linear() -> bool:
    # Reason: detectron2 v0.6 uses Image.LINEAR as a default argument; Pillow 10 removed that alias.
    from PIL import Image

    if hasattr(Image, "LINEAR") or "Image.LINEAR" not in _source_of("detectron2.data.transforms.transform"):
        return False
    Image.LINEAR = Image.BILINEAR
    return True


class _NumpyWithRemovedAliases(types.ModuleType):
    """numpy, plus the scalar aliases (np.int, np.float, np.str) that numpy 1.24 removed."""

    def __getattr__(self, name: str):
        if name in _NUMPY_ALIASES:
            return _NUMPY_ALIASES[name]
        return getattr(numpy, name)


def _restore_numpy_aliases() -> list:
    # Reason: v0.6 uses np.int/np.float/np.str; given only to the modules that need them, not numpy.
    if all(hasattr(numpy, alias) for alias in _NUMPY_ALIASES):
        return []
    patched = []
    pattern = re.compile(r"\bnp\.(%s)\b" % "|".join(_NUMPY_ALIASES))
    for name in _MODULES_USING_NUMPY_ALIASES:
        if pattern.search(_source_of(name)):
            module = importlib.import_module(name)
            module.np = _NumpyWithRemovedAliases("numpy")
            patched.append(name)
    return patched


def _import_model_zoo_without_pkg_resources() -> bool:
    # Reason: detectron2.model_zoo imports pkg_resources, which setuptools 82 removed.
    if "import pkg_resources" not in _source_of("detectron2.model_zoo.model_zoo"):
        return False
    try:
        import pkg_resources  # noqa: F401
        return False
    except ImportError:
        pass
    from importlib.resources import files

    shim = types.ModuleType("pkg_resources")
    shim.resource_filename = lambda package, resource: str(files(package) / resource)
    sys.modules["pkg_resources"] = shim
    try:
        importlib.import_module("detectron2.model_zoo")
    finally:
        del sys.modules["pkg_resources"]  # only detectron2.model_zoo keeps it
    return True


class _SetSamplingRandom(random.Random):
    """``random.Random`` whose ``sample`` takes a set (sorted first), as it did before Python 3.11,
    and says in one line that nothing is left when the population is empty."""

    def sample(self, population, k, **kwargs):
        if not population:
            from .errors import UserInputError

            raise UserInputError("the data loader found no element of the dataset that it could map "
                               "(every image it tried was skipped; see the warnings naming them)")
        if isinstance(population, (set, frozenset)):
            population = sorted(population)
        return super().sample(population, k, **kwargs)


def _map_dataset_retries_with_clear_sampling() -> bool:
    # Reason: v0.6's MapDataset retries a skipped element with random.sample of a set, which Python
    # 3.11 refuses (main samples a list); the same stand-in also names an empty pool in one line.
    if "self._rng.sample(self._fallback_candidates" not in _source_of("detectron2.data.common"):
        return False
    from detectron2.data import common

    original_init = common.MapDataset.__init__

    def __init__(self, dataset, map_func):
        original_init(self, dataset, map_func)
        self._rng = _SetSamplingRandom(42)

    common.MapDataset.__init__ = __init__
    return True


def _retinanet_head_norm_probe_for_group_norm() -> bool:
    # Reason: v0.6's RetinaNetHead names its norm by building one for 1 channel, and torch refuses
    # GroupNorm(32, 1), so norm="GN" (FCOS's head) fails; main probes with 32 channels, as here.
    if "get_norm(norm, 1)" not in _source_of("detectron2.modeling.meta_arch.retinanet"):
        return False
    from detectron2.layers import get_norm
    from detectron2.modeling.meta_arch import retinanet

    def get_norm_probing_with_32_channels(norm, out_channels: int):
        return get_norm(norm, 32 if out_channels == 1 else out_channels)

    retinanet.get_norm = get_norm_probing_with_32_channels
    return True


_applied: Optional[dict] = None


def apply() -> dict:
    """Apply every shim that the installed detectron2 needs (idempotent).

    The detectron2 modules a shim patches are imported with detectron2's, fvcore's and torch's
    import-time internal warnings quiet; the warning filters are left as they were.

    Returns:
        dict: shim name -> what it did (False / [] where it was a no-op).
    """
    global _applied
    if _applied is None:
        from .internal_warnings import quiet_internal_warnings

        with quiet_internal_warnings():
            # Order matters: the Pillow alias must exist before anything imports detectron2.data.
            _applied = {
                "pillow_linear_alias": _alias_pillow_linear(),
                "compiled_ops_stand_in": _import_modules_that_need_compiled_ops(),
                "numpy_aliases": _restore_numpy_aliases(),
                "model_zoo_pkg_resources": _import_model_zoo_without_pkg_resources(),
                "map_dataset_sampling": _map_dataset_retries_with_clear_sampling(),
                "retinanet_head_group_norm": _retinanet_head_norm_probe_for_group_norm(),
            }
        if applied_shims():
            logging.getLogger(__name__).info("detectron2 version shims applied: %s", ", ".join(applied_shims()))
    return _applied


def applied_shims() -> list:
    """Names of the shims that changed something in this process ([] where detectron2 needs none)."""
    return [name for name, did in apply().items() if did]


def create_ddp_model(model: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """``detectron2.engine.create_ddp_model``; on CPU, DDP needs ``device_ids=None``."""
    from detectron2.engine import create_ddp_model as d2_create_ddp_model

    if not torch.cuda.is_available():
        kwargs.setdefault("device_ids", None)
    return d2_create_ddp_model(model, **kwargs)


# ----------------------------------------------------------------------------------------------
# Export.


def tracing_adapter_class() -> type:
    """``detectron2.export.TracingAdapter``, also where ``import detectron2.export`` fails.

    Reason: v0.6's ``detectron2/export/__init__.py`` imports its caffe2 exporter, and caffe2 left
    torch in 2.0; the tracing adapter itself (``export/flatten.py``) needs none of it, so there
    it is loaded alone and ``detectron2.export`` stays unimportable, honestly.
    """
    try:
        from detectron2.export import TracingAdapter
        return TracingAdapter
    except ImportError as e:
        if "caffe2" not in str(e):
            raise
    if "detectron2.export.flatten" not in sys.modules:
        import detectron2

        package = types.ModuleType("detectron2.export")
        package.__path__ = [str(Path(detectron2.__file__).parent / "export")]
        sys.modules["detectron2.export"] = package
        try:
            importlib.import_module("detectron2.export.flatten")
        finally:
            del sys.modules["detectron2.export"]  # only flatten and torchscript_patch stay loaded
            if getattr(detectron2, "export", None) is package:
                delattr(detectron2, "export")
    return sys.modules["detectron2.export.flatten"].TracingAdapter


# ----------------------------------------------------------------------------------------------
# Private detectron2 names.

# Every private detectron2 (or fvcore) name that dsanet relies on, each used in one place:
# (owner's dotted path, attribute, what relies on it and what breaks without it).
# tests/test_detectron2_private_names.py checks that each exists on the installed detectron2.
PRIVATE_DETECTRON2_NAMES = (
    ("detectron2.modeling.meta_arch.dense_detector.DenseDetector", "_ema_update",
     "DSADenseDetectorMixin._ema_update feeds RetinaNet's and FCOS's loss-normaliser EMA the positives of all "
     "processes; without this hook each process would normalise by its own positives only"),
    ("detectron2.evaluation.COCOEvaluator", "_coco_api",
     "COCOEvaluatorWithRecall.ground_truth: the ground truth that validation-dropped annotations are removed "
     "from and unreadable images are left out of; without it the evaluator cannot be built"),
    ("detectron2.evaluation.COCOEvaluator", "_derive_coco_results",
     "COCOEvaluatorWithRecall adds AR, ARs, ARm, ARl from the COCOeval this hook receives; without it "
     "the paper's four recall numbers are missing (NaN)"),
    ("detectron2.data.DatasetMapper", "_transform_annotations",
     "RobustDatasetMapper (data/mapper.py) transforms a training record's boxes with it, as DatasetMapper "
     "does; without it every training image that could be read raises AttributeError"),
    ("detectron2.checkpoint.DetectionCheckpointer", "_load_file",
     "CheckedCheckpointer reads checkpoints without running code through this fvcore hook; without it "
     ".pkl files would be unpickled with plain pickle and unreadable files not named"),
    ("detectron2.checkpoint.DetectionCheckpointer", "_load_model",
     "CheckedCheckpointer matches weights by name and refuses a file that matches no weight through this "
     "fvcore hook; without it such a file would leave the model silently at its initialisation"),
)
