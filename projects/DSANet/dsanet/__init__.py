"""DSANet: Decoupled Self Attention for one-stage object detection, on Detectron2's RetinaNet.

Importing it changes nothing in the process beyond the version shims that the installed detectron2
needs (:func:`dsanet.compat.applied_shims` lists them; none on detectron2 main) and installs no
warning filter. Commands quiet torch's, fvcore's and detectron2's internal warnings with
:func:`silence_internal_warnings`, which a user's own script may call too.
"""
from . import compat
from .internal_warnings import silence_internal_warnings

compat.apply()  # before anything imports detectron2.layers

__version__ = "0.1.0"
__all__ = ["silence_internal_warnings", "__version__"]
