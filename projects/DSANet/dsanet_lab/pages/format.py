"""How a number, an interval and a table are written on the pages; nothing here reads a results file."""
import math
from typing import Any, Dict, Optional, Sequence

# A link target written from the repository root; the page renderer rewrites it relative to its page.
REPO_LINK = "<repo>/"


def num(value: Optional[float], digits: int = 2) -> str:
    """``value`` with ``digits`` decimals; a dash where it is missing (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def signed(value: float, digits: int = 2) -> str:
    """``value`` with its sign, so that a difference reads as one."""
    return f"{value:+.{digits}f}"


def spread(median: float, low: float, high: float, digits: int = 3) -> str:
    """``median (low-high)``: a repeated timing's median and range."""
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def interval(stat: Dict[str, float], digits: int = 2) -> str:
    """``mean [low, high]`` of a paired t-interval record."""
    return f"{stat['mean']:.{digits}f} [{stat['ci_low']:.{digits}f}, {stat['ci_high']:.{digits}f}]"


def bracket(low: float, high: float, digits: int = 2) -> str:
    """``[low, high]``: an interval's ends."""
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def per_seed_deltas(ap: Dict[str, Any]) -> str:
    """``+0.31, -0.12``: a paired difference record's per-seed values in seed order."""
    return ", ".join(signed(ap["per_seed"][k]) for k in sorted(ap["per_seed"], key=int))


def milliseconds(seconds: float) -> str:
    """Milliseconds, one decimal below 100 ms (where a tenth still shows)."""
    ms = seconds * 1000
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


def percent(fraction: float) -> str:
    """A fraction of 1 as a percentage with one decimal."""
    return f"{100 * fraction:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table: the header, the separator line, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def met(passed: bool) -> str:
    """A goal's own pass flag, as the file records it."""
    return "met" if passed else "**missed**"
