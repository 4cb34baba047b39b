"""The paper's numbers beside the project: each config with the paper's row and COCO AP, and a study of
the paper's design choices with the paper's COCO difference beside each measured one. The paper's
numbers are read from ``benchmarks/paper_coco.json`` as quoted there; which variant maps to which row,
and which pairs are compared, come from that file and from the study's report."""
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .format import REPO_LINK, bracket, num, per_seed_deltas, signed, table
from .studies import paired_over_seeds, total_estimate

PAPER_TABLES = "benchmarks/paper_coco.json"  # the paper's COCO numbers, quoted as printed


def paper_ap(paper: Dict[str, Any], table_number: int, row: str) -> float:
    """The paper's AP (a fraction of 1) in row ``row`` of its Table ``table_number``."""
    return paper["tables"][str(table_number)][row]


# ---------------------------------------------------------------- configs beside the paper's rows
def _config_row(paper: Dict[str, Any], entry: Dict[str, Any]) -> List[str]:
    links = " / ".join(f"[{c.get('label') or Path(c['path']).stem}]({REPO_LINK}{c['path']})" for c in entry["configs"])
    quoted = entry.get("rows") or []
    return [links, " / ".join(f"Table {q['table']}, {q['row']}" for q in quoted) or entry["note"],
            " / ".join(f"{100 * paper_ap(paper, q['table'], q['row']):.1f}" for q in quoted) or "—"]


def paper_configs(group: str) -> Callable[[Dict[str, Any]], str]:
    """A renderer of the configs of ``group`` in the paper file beside the paper's row and AP."""
    def render(paper: Dict[str, Any]) -> str:
        return table(["config", "paper row", "paper AP"], [_config_row(paper, entry) for entry in paper["configs"][group]])
    render.__doc__ = f"The paper file's '{group}' configs beside the paper's row and AP."
    return render


# ---------------------------------------------------------------- a study beside the paper's differences
def paper_difference(paper: Dict[str, Any], name: str) -> Tuple[str, Optional[float]]:
    """(where in the paper, its COCO ΔAP x 100 against its baseline row, or None) for variant ``name``."""
    row, baseline = paper["variants"][name], paper["baseline"]
    if "row" not in row:
        return row["note"], None
    return (f"Table {row['table']}, {row['row']}",
            100 * (paper_ap(paper, row["table"], row["row"]) - paper_ap(paper, baseline["table"], baseline["row"])))


def sign_agreement(paper_delta: Optional[float], low: float, high: float) -> str:
    """Whether a measured interval has the sign of the paper's difference."""
    here = 1 if low > 0 else -1 if high < 0 else 0
    if paper_delta is None:
        return "no paper number"
    if here == 0:
        return "undecided here (interval holds 0)"
    return "yes" if here * paper_delta > 0 else "no"


def interval_clause(name: str, against: str, low: float, high: float) -> str:
    """What an interval of ``name`` minus ``against`` shows, as a clause (a variant's name keeps its case)."""
    if low > 0:
        return f"on the embedded benchmark, {name} is better than {against}"
    if high < 0:
        return f"on the embedded benchmark, {name} is worse than {against}"
    return f"the embedded benchmark does not tell {name} from {against}"


def _measured(mean: float, low: float, high: float, runs: int) -> str:
    return f"({signed(mean)} AP, 95% interval {bracket(low, high)}, {runs} runs)"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."  # str.capitalize() would lower a variant's name


def _paper_clause(paper: Dict[str, Any], name: str, against: str, baseline: str) -> str:
    """The paper's COCO difference between the rows of ``name`` and ``against`` ("" where it lacks one);
    against the study's baseline, the paper's difference against its own baseline row."""
    place, delta = paper_difference(paper, name)
    if against == baseline:
        return "; the paper does not report it" if delta is None else \
            f"; the paper's COCO difference is {signed(delta, 1)} AP ({place})"
    if delta is None or against not in paper["variants"]:
        return ""
    other_place, other_delta = paper_difference(paper, against)
    if other_delta is None:
        return ""
    return f"; the paper's COCO difference is {signed(delta - other_delta, 1)} AP ({place} minus {other_place})"


def difference_sentence(paper: Dict[str, Any], diff: Dict[str, Any], baseline: str) -> str:
    """One sentence on a measured difference and the paper's difference between the same rows."""
    name, against = diff["variant"], diff["against"]
    mean, low, high, runs = total_estimate(diff)
    return _sentence(f"{interval_clause(name, against, low, high)} "
                     f"{_measured(mean, low, high, runs)}"
                     f"{_paper_clause(paper, name, against, baseline)}")


def minutes(study: Dict[str, Any], name: str) -> Optional[float]:
    """Mean minutes per finished run of variant ``name`` (training and evaluation, as the study timed it)."""
    seconds = [run["seconds"] for run in study["runs"] if run["variant"] == name and run.get("metrics") and run.get("seconds")]
    return sum(seconds) / len(seconds) / 60 if seconds else None


def _cost(study: Dict[str, Any], name: str, base_minutes: Optional[float]) -> str:
    spent = minutes(study, name)
    if spent is None:
        return "—"
    return f"{spent:.0f}" + (f" ({spent / base_minutes:.2f}x)" if base_minutes else "")


def _choice_row(paper: Dict[str, Any], name: str, diff: Optional[Dict[str, Any]], cost: str) -> List[str]:
    """One design choice: the paper's row and difference, this study's difference, its parts and interval."""
    place, paper_delta = paper_difference(paper, name)
    paper_cell = "—" if paper_delta is None else signed(paper_delta, 1)
    if not paired_over_seeds(diff):  # no finished pair, or one seed
        seeds = f"{signed(diff['AP']['mean'])} (1 seed)" if (diff or {}).get("AP") else "pending"
        return [name, place, paper_cell, seeds, "—", "—", "—", "—", cost]
    ap, dec = diff["AP"], diff.get("decomposition") or {}
    mean, low, high, runs = total_estimate(diff)
    parts = f"±{num(dec['training_half'])} / ±{num(dec['validation_half'])}" if dec else "—"
    here = f"{signed(ap['mean'])} ({per_seed_deltas(ap)})" + (f"; {signed(mean)} over {runs} runs" if runs != ap["n"] else "")
    return [name, place, paper_cell, here, parts, bracket(low, high),
            sign_agreement(paper_delta, low, high), str(dec["needed"]["1.0"]["seeds"]) if dec else "—", cost]


def _wide(name: str, diff: Dict[str, Any]) -> Optional[str]:
    """A difference whose total interval is wider than ±1.0 AP on a side, with the seeds the tool estimates."""
    ap, dec = diff["AP"], diff.get("decomposition") or {}
    half = dec.get("total_half", (ap["ci_high"] - ap["ci_low"]) / 2)
    if half <= 1.0:
        return None
    return (f"{name} (±{num(half)}; the tool estimates {dec['needed']['1.0']['seeds']} seeds for ±1.0)"
            if dec else f"{name} (±{num(half)})")


def study_paper(study: Dict[str, Any], paper: Dict[str, Any]) -> str:
    """Each variant of the study against its first (the paper's baseline model): the paper's COCO ΔAP
    beside the measured ΔAP with its interval, whether the signs agree and what a run costs; then one
    sentence per measured difference, the study's own ``--compare`` pairs after those against the first."""
    baseline = study["variants"][0]["name"]
    against = {d["variant"]: d for d in study["differences"] if d["against"] == baseline}
    base_minutes = minutes(study, baseline)
    names = [variant["name"] for variant in study["variants"][1:]]
    rows = [_choice_row(paper, name, against.get(name), _cost(study, name, base_minutes)) for name in names]
    measured = [against[name] for name in names if paired_over_seeds(against.get(name))]
    pairs = [d for d in study["differences"] if d["against"] != baseline and paired_over_seeds(d)]
    wide = [text for text in (_wide(d["variant"], d) for d in measured) if text]
    paper_baseline = f"{paper['baseline']['row']}, Table {paper['baseline']['table']}"
    header = ["variant", "paper row", f"paper ΔAP (COCO, vs {paper_baseline})", f"ΔAP vs {baseline} here (per seed)",
              "± training / validation part", "total [95%]", "same sign as the paper",
              "seeds for ±1.0", f"minutes per run (x {baseline})"]
    text = table(header, rows)
    if measured or pairs:
        text += "\n\n" + "\n".join(f"- {difference_sentence(paper, d, baseline)}" for d in measured + pairs)
    if wide:
        text += "\n\nWider than ±1.0 AP on a side: " + "; ".join(wide) + "."
    return text
