"""Pair the runs of two variant studies seed by seed: the same variant trained two ways (for example
fp32 and bf16, `train.amp.enabled=True`), each study made by `tools/compare_variants.py`.

For every pair of variants, per seed both studies have: AP of each, the difference (second - first)
and its paired t-interval over seeds (`dsanet_lab.study.stats.paired_difference`), and the median
seconds per run. The difference between two variants within each study (e.g. DSANet-Conf -
RetinaNet under fp32 and under bf16) is in each study's own report; this script answers whether
the second way of training moves a variant's AP, and what it saves in time.

    python -m benchmarks.compare_studies \\
        --first benchmarks/results/study_benchmark/retinanet_dsanet_conf_3seeds/results.json \\
        --second benchmarks/results/study_bf16/results.json \\
        --pair retinanet=retinanet_bf16 --pair dsanet_conf=dsanet_conf_bf16 [--output OUT.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from benchmarks.cli import format_table
from dsanet.errors import UserInputError, exit_with_status_of
from dsanet.fileio import write_json
from dsanet_lab.provenance import provenance
from dsanet_lab.study.stats import CI_METHOD, paired_difference

METRICS = ("AP", "AP50", "AP75")


def load_runs(path: Path) -> Dict[str, Dict[int, dict]]:
    """variant -> seed -> run (``metrics``, ``seconds``) of one study's results.json, finished runs only."""
    try:
        runs = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError) as e:
        raise UserInputError(f"{path}: not a study's results.json ({e})") from e
    by_variant: Dict[str, Dict[int, dict]] = {}
    for run in runs:
        if run.get("metrics") and not run.get("error"):
            by_variant.setdefault(run["variant"], {})[int(run["seed"])] = run
    return by_variant


def parse_pair(spec: str) -> Tuple[str, str]:
    first, sep, second = spec.partition("=")
    if not sep or not first or not second:
        raise UserInputError(f"--pair {spec!r}: expected FIRST_VARIANT=SECOND_VARIANT")
    return first, second


def compare(first: Dict[str, Dict[int, dict]], second: Dict[str, Dict[int, dict]],
            pairs: Sequence[Tuple[str, str]]) -> List[dict]:
    """One row per pair: per-seed metrics of both, the paired differences (second - first), seconds."""
    rows = []
    for a, b in pairs:
        for name, runs, study in ((a, first, "--first"), (b, second, "--second")):
            if name not in runs:
                raise UserInputError(f"variant {name!r} has no finished run in the {study} study "
                                     f"(it has: {', '.join(sorted(runs)) or 'none'})")
        seeds = sorted(set(first[a]) & set(second[b]))
        row = {"first": a, "second": b, "seeds": seeds, "differences": {}, "per_seed": {}}
        for metric in METRICS:
            x = {s: first[a][s]["metrics"][metric] for s in seeds}
            y = {s: second[b][s]["metrics"][metric] for s in seeds}
            row["per_seed"][metric] = {"first": x, "second": y}
            row["differences"][metric] = paired_difference(y, x)
        row["seconds"] = {"first": statistics.median(first[a][s]["seconds"] for s in seeds) if seeds else None,
                          "second": statistics.median(second[b][s]["seconds"] for s in seeds) if seeds else None}
        rows.append(row)
    return rows


def _interval(d: Optional[dict]) -> str:
    if not d:
        return "—"
    return f"{d['mean']:+.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}]"


def print_rows(rows: Sequence[dict]) -> None:
    table = []
    for row in rows:
        ap = row["per_seed"]["AP"]
        table.append([f"{row['second']} - {row['first']}", len(row["seeds"]),
                      ", ".join(f"{ap['first'][s]:.2f}" for s in row["seeds"]),
                      ", ".join(f"{ap['second'][s]:.2f}" for s in row["seeds"]),
                      *(_interval(row["differences"][m]) for m in METRICS),
                      f"{row['seconds']['first']:.0f} / {row['seconds']['second']:.0f}"])
    print(format_table(["pair", "n", "AP first (per seed)", "AP second (per seed)",
                               *(f"Δ{m} [95% CI]" for m in METRICS), "median s per run (first / second)"], table))
    print(f"Method: {CI_METHOD}.")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--first", required=True, type=Path, help="results.json of the first study")
    parser.add_argument("--second", required=True, type=Path, help="results.json of the second study")
    parser.add_argument("--pair", action="append", required=True, metavar="FIRST=SECOND",
                        help="a variant of the first study and its counterpart in the second (repeat)")
    parser.add_argument("--output", type=Path, help="also write the rows here as JSON")
    args = parser.parse_args(argv)
    rows = compare(load_runs(args.first), load_runs(args.second), [parse_pair(p) for p in args.pair])
    print_rows(rows)
    if args.output:
        write_json(args.output, {"first": str(args.first), "second": str(args.second), "ci_method": CI_METHOD,
                                 "rows": rows, "provenance": provenance()})
        print(f"wrote {args.output}")


if __name__ == "__main__":
    exit_with_status_of(main)
