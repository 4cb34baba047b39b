"""What a variant is: a name and config overrides of the study's base config, trained per seed, or
evaluated on another variant's checkpoints (``source``) with extra overrides (e.g. an inference alpha)."""
import re
import shlex
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from dsanet.errors import UserInputError

__all__ = ["Variant", "parse_variant", "parse_eval_variant", "parse_comparison", "check_variants"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # a folder name on every filesystem


@dataclass(frozen=True)
class Variant:
    """One arm of the study.

    Attributes:
        name: folder and table name.
        overrides: ``key=value`` config overrides, applied after the study's common overrides.
        source: for an evaluation-only variant, the trained variant whose checkpoints it evaluates
            (its overrides come first, then these); None for a trained variant.
    """
    name: str
    overrides: Tuple[str, ...] = ()
    source: Optional[str] = None

    @property
    def trained(self) -> bool:
        return self.source is None


def _split(spec: str, flag: str) -> Tuple[str, Tuple[str, ...]]:
    head, sep, tail = spec.partition(":")
    if not sep:
        raise UserInputError(f"{flag} {spec!r}: expected 'NAME: key=value ...'")
    overrides = tuple(shlex.split(tail))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserInputError(f"{flag} {spec!r}: override {bad[0]!r} is not key=value")
    return head.strip(), overrides


def _check_name(name: str, flag: str, spec: str) -> str:
    if not _NAME.match(name):
        raise UserInputError(f"{flag} {spec!r}: name {name!r} must be letters, digits and _.+- only")
    return name


def parse_variant(spec: str) -> Variant:
    """``'retinanet: model.head.dsa_levels=[] model.head.with_confidence=False'`` -> Variant.

    The overrides may be empty (``'dsanet_conf:'``: the base config as it is).
    """
    name, overrides = _split(spec, "--variant")
    return Variant(_check_name(name, "--variant", spec), overrides)


def parse_eval_variant(spec: str) -> Variant:
    """``'alpha0.7=dsanet_conf: model.score_fusion_alpha=0.7'`` -> an evaluation-only Variant."""
    head, overrides = _split(spec, "--eval-variant")
    name, sep, source = head.partition("=")
    if not sep or not source.strip():
        raise UserInputError(f"--eval-variant {spec!r}: expected 'NAME=SOURCE: key=value ...'")
    return Variant(_check_name(name.strip(), "--eval-variant", spec), overrides, source.strip())


def parse_comparison(spec: str) -> Tuple[str, str]:
    """``'dsanet_conf_sqrtc:dsanet_conf'`` -> (variant, against)."""
    variant, sep, against = spec.partition(":")
    if not sep or not variant.strip() or not against.strip():
        raise UserInputError(f"--compare {spec!r}: expected 'VARIANT:AGAINST'")
    return variant.strip(), against.strip()


def check_variants(variants: Sequence[Variant], comparisons: Sequence[Tuple[str, str]]) -> List[Variant]:
    """Unique names, at least one trained variant first (the baseline), sources and compared names known."""
    if not variants or not variants[0].trained:
        raise UserInputError("give at least one --variant; the first is the baseline")
    names = [v.name for v in variants]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UserInputError(f"variant name {duplicate!r} is given twice")
    trained = {v.name for v in variants if v.trained}
    for v in variants:
        if not v.trained and v.source not in trained:
            raise UserInputError(f"--eval-variant {v.name}={v.source}: no --variant named {v.source!r}")
    for a, b in comparisons:
        for name in (a, b):
            if name not in names:
                raise UserInputError(f"--compare {a}:{b}: no variant named {name!r}")
    return list(variants)
