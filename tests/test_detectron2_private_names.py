"""The private detectron2 and fvcore names that dsanet relies on are the ones listed in
``dsanet.compat.PRIVATE_DETECTRON2_NAMES``, and each exists on the installed detectron2: a detectron2
that drops or renames one fails here, naming it and what breaks, not deep inside a training run."""
import importlib
import inspect
import pkgutil
import re
from typing import Iterator, Set

import detectron2
import pytest

import dsanet
from dsanet.compat import PRIVATE_DETECTRON2_NAMES

EXTERNAL_PACKAGES = ("detectron2", "fvcore")


def resolve(dotted: str) -> type:
    """The object at ``dotted`` ("package.module.Class"), imported from its longest importable module."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            found = getattr(found, name)
        return found
    raise ImportError(f"no module of {dotted} can be imported")


def source(cls: type) -> str:
    """``cls``'s source text ('' for builtins and classes without a source file)."""
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return ""


def assigned_in(text: str, attribute: str) -> bool:
    """Whether ``text`` assigns ``self.<attribute>`` (an instance attribute set in a method)."""
    return re.search(rf"\bself\.{re.escape(attribute)}\s*(:[^=\n]+)?=(?!=)", text) is not None


def defines(owner: type, attribute: str) -> bool:
    """Whether ``owner`` has ``attribute``: a method or class attribute, or an instance attribute that
    a method of ``owner`` or of one of its bases assigns."""
    return hasattr(owner, attribute) or any(assigned_in(source(cls), attribute) for cls in owner.__mro__)


@pytest.mark.parametrize("owner,attribute,why", PRIVATE_DETECTRON2_NAMES,
                         ids=[f"{owner}.{attribute}" for owner, attribute, _ in PRIVATE_DETECTRON2_NAMES])
def test_each_listed_private_name_exists_on_the_installed_detectron2(owner, attribute, why):
    where = f"the installed detectron2 {detectron2.__version__} ({detectron2.__file__})"
    try:
        found = defines(resolve(owner), attribute)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"{owner}.{attribute}: {owner} is not in {where} ({e}); what relies on it: {why}")
    assert found, f"{owner}.{attribute} is not in {where}; what breaks: {why}"


def dsanet_classes() -> Iterator[type]:
    """Every class defined in the dsanet package (all its modules imported)."""
    for module_info in pkgutil.walk_packages(dsanet.__path__, prefix="dsanet."):
        module = importlib.import_module(module_info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                yield cls


def private_names_of(cls: type) -> Set[str]:
    """Single-underscore names that ``cls`` defines: class attributes, methods, assigned instance attributes."""
    text = source(cls)
    names = {n for n in vars(cls) if n.startswith("_") and not n.startswith("__")}
    return names | {n for n in re.findall(r"\bself\.(_[a-z]\w*)", text) if assigned_in(text, n)}


def test_dsanet_uses_no_private_detectron2_name_that_is_not_listed():
    """A dsanet class (with the dsanet mixins among its bases) that overrides, calls or reads a private
    name of one of its detectron2 or fvcore bases uses a listed name."""
    listed = {attribute for _, attribute, _ in PRIVATE_DETECTRON2_NAMES}
    unlisted = set()
    for cls in dsanet_classes():
        external = [b for b in cls.__mro__ if b.__module__.split(".")[0] in EXTERNAL_PACKAGES]
        theirs = set().union(*(private_names_of(b) for b in external))
        ours = "\n".join(source(b) for b in cls.__mro__ if b.__module__.split(".")[0] == "dsanet")
        used = set(re.findall(r"\b(?:self|super\(\))\.(_[a-z]\w*)", ours)) | set(re.findall(r"\bdef (_[a-z]\w*)", ours))
        unlisted |= {f"{cls.__module__}.{cls.__qualname__} uses {name}" for name in (used & theirs) - listed}
    assert not unlisted, ("private detectron2/fvcore names used but not listed in "
                          f"dsanet.compat.PRIVATE_DETECTRON2_NAMES: {sorted(unlisted)}")
