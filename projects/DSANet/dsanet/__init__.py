"""DSANet: Decoupled Self Attention for one-stage object detection, on Detectron2's RetinaNet."""
from . import compat

compat.apply()  # before anything imports detectron2.layers

__version__ = "0.1.0"
