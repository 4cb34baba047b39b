"""DSANet: Decoupled Self Attention for one-stage object detection, on Detectron2's RetinaNet."""
from .internal_warnings import silence_internal_warnings

silence_internal_warnings()  # before detectron2 imports fvcore, which warns at import
from . import compat  # noqa: E402

compat.apply()  # before anything imports detectron2.layers

__version__ = "0.1.0"
