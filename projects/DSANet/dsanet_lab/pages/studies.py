"""Tables of a study's report (``tools/compare_variants.py``'s results.json): each variant over its
seeds, each difference with its intervals, and two studies paired seed by seed. Variant names and the
pairs compared come from the report itself."""
from typing import Any, Dict, List, Optional, Tuple

from .format import bracket, interval, num, per_seed_deltas, signed, table


def paired_over_seeds(diff: Optional[Dict[str, Any]]) -> bool:
    """Whether a difference record has its paired interval: two seeds or more of both variants."""
    return bool(diff and diff.get("AP") and diff["AP"]["n"] >= 2)


def total_estimate(diff: Dict[str, Any]) -> Tuple[float, float, float, int]:
    """A difference's (mean, total 95% interval low, high, runs): the noise model's over the runs of every
    setup with the validation part, else the paired t-interval over the study's own seeds."""
    ap, dec = diff["AP"], diff.get("decomposition") or {}
    if not dec:
        return ap["mean"], ap["ci_low"], ap["ci_high"], ap["n"]
    return dec.get("mean", ap["mean"]), dec["total_low"], dec["total_high"], dec.get("runs", ap["n"])


def finished_runs(study: Dict[str, Any], variant: str) -> List[Dict[str, Any]]:
    """The runs of ``variant`` that have metrics, in seed order."""
    return sorted((run for run in study["runs"] if run["variant"] == variant and run.get("metrics")),
                  key=lambda run: run["seed"])


def per_seed_ap(study: Dict[str, Any], variant: str) -> str:
    return ", ".join(f"{run['metrics']['AP']:.2f}" for run in finished_runs(study, variant))


def summary(study: Dict[str, Any]) -> str:
    """One row per variant: seeds, AP per seed, mean ± std of each metric, one run's bootstrap std."""
    spread_of = study.get("run_spread") or {}
    rows = []
    for name, metrics in study["summary"].items():
        cells = [name, metrics["AP"]["n"], per_seed_ap(study, name)]
        cells += [f"{num(metrics[key]['mean'], 1)} ± {num(metrics[key]['std'], 1)}" for key in ("AP", "AP50", "AP75", "AR")]
        cells.append(num(spread_of[name]["AP"]) if name in spread_of else "—")
        rows.append(cells)
    return table(["variant", "seeds", "AP per seed", "AP", "AP50", "AP75", "AR", "one run's bootstrap std of AP"], rows)


def _difference_row(diff: Dict[str, Any]) -> List[Any]:
    ap = diff["AP"]
    boot = (diff.get("bootstrap") or {}).get("AP", {}).get("mean")
    dec = diff.get("decomposition")
    # Imported runs carry no predictions, so the bootstrap may cover fewer seeds than the t-interval.
    boot_seeds = (diff.get("bootstrap") or {}).get("n", ap["n"])
    boot_cell = bracket(boot["ci_low"], boot["ci_high"]) if boot else "—"
    if boot and boot_seeds != ap["n"]:
        boot_cell += f" ({boot_seeds} of {ap['n']} seeds)"
    return [f"{diff['variant']} - {diff['against']}", ap["n"], per_seed_deltas(ap), interval(ap), boot_cell,
            f"{bracket(dec['total_low'], dec['total_high'])}, ±{dec['total_half']:.2f}" if dec else "—",
            f"{dec['needed']['1.0']['seeds']} / {dec['needed']['0.5']['seeds']}" if dec else "—"]


def differences(study: Dict[str, Any]) -> str:
    """One row per difference the report holds: per seed, paired t-interval, image bootstrap, total."""
    return table(["AP difference", "seeds", "per seed", "paired t-interval [95%]", "bootstrap over images [95%]",
                  "total [95%]", "seeds for ±1.0 / ±0.5 AP"], [_difference_row(diff) for diff in study["differences"]])


def differences_ap50_75(study: Dict[str, Any]) -> str:
    """One row per difference: the paired t-intervals of AP, AP50 and AP75."""
    rows = [[f"{diff['variant']} - {diff['against']}", diff["AP"]["n"], interval(diff["AP"]), interval(diff["AP50"]),
             interval(diff["AP75"])] for diff in study["differences"]]
    return table(["difference", "seeds", "ΔAP [95% CI]", "ΔAP50 [95% CI]", "ΔAP75 [95% CI]"], rows)


def setups_note(data: Dict[str, Any]) -> str:
    """Whether the study's intervals hold a setup part: the setups its differences' runs were made on."""
    counts = [len((d.get("noise") or {}).get("setups") or {}) for d in data["differences"]]
    if max(counts, default=0) > 1:
        return f"Runs on {max(counts)} setups: the total intervals hold a setup part (the noise model)."
    return "Runs on one setup: the intervals hold run noise and the validation sample; a setup part is not measured."


def study(data: Dict[str, Any]) -> str:
    """A study's variants, then its differences, then whether a setup part was measured."""
    return summary(data) + "\n\n" + differences(data) + "\n\n" + setups_note(data)


def study_ap50_75(data: Dict[str, Any]) -> str:
    """A study without an image bootstrap: its variants, then AP, AP50 and AP75 differences."""
    return summary(data) + "\n\n" + differences_ap50_75(data)


def _delta_against(diff: Optional[Dict[str, Any]]) -> str:
    """A difference as one cell: its paired interval (and total) from two seeds, its value from one."""
    if diff is None:
        return "—"
    if diff["AP"]["n"] < 2:
        return f"{signed(diff['AP']['mean'])} (1 seed)"
    dec = diff.get("decomposition")
    return interval(diff["AP"]) + (f"; total {bracket(dec['total_low'], dec['total_high'])}" if dec else "")


def study_recipes(data: Dict[str, Any]) -> str:
    """One row per variant of a study whose variants differ in their schedule: AP per seed, mean ± std,
    the kept model's iteration and minutes per run, and the difference against the study's first variant."""
    reference = data["variants"][0]["name"]
    against = {diff["variant"]: diff for diff in data["differences"] if diff["against"] == reference}
    rows = []
    for variant in data["variants"]:
        name = variant["name"]
        runs = finished_runs(data, name)
        ap = data["summary"][name]["AP"]
        kept = ", ".join(str((run.get("kept_model") or {}).get("iteration") or "last") for run in runs)
        minutes = ", ".join(num(run["seconds"] / 60, 0) if run.get("seconds") else "—" for run in runs)
        std = num(ap["std"], 2) if ap["n"] > 1 else "—"
        rows.append([name, ", ".join(f"{run['metrics']['AP']:.2f}" for run in runs), f"{num(ap['mean'])} ± {std}",
                     kept, minutes, _delta_against(against.get(name))])
    return table(["variant", "AP per seed", "AP mean ± std", "iteration kept per seed", "minutes per run",
                  f"ΔAP vs {reference} [95% CI]"], rows)


def paired_studies(pairs: Dict[str, Any]) -> str:
    """Two studies' runs of the same models paired seed by seed (``benchmarks/compare_studies.py``)."""
    rows = []
    for row in pairs["rows"]:
        ap = row["per_seed"]["AP"]
        seeds = sorted(ap["first"], key=int)
        rows.append([f"{row['first']} / {row['second']}", ", ".join(seeds),
                     ", ".join(f"{ap['first'][s]:.2f}" for s in seeds), ", ".join(f"{ap['second'][s]:.2f}" for s in seeds),
                     interval(row["differences"]["AP"])])
    return table(["first / second", "seeds", "AP, first study", "AP, second study", "ΔAP second - first [95% CI]"], rows)


def retrained(control: Dict[str, Any], stored: Dict[str, Any]) -> str:
    """Runs trained again beside the kept study's runs of the same variant and seed, digit for digit."""
    kept = {(run["variant"], run["seed"]): run["metrics"]["AP"] for run in stored["runs"] if run.get("metrics")}
    rows = []
    for run in control["runs"]:
        before = kept.get((run["variant"], run["seed"]))
        rows.append([run["variant"], run["seed"], repr(run["metrics"]["AP"]), repr(before) if before is not None else "—",
                     "yes" if before == run["metrics"]["AP"] else "no"])
    return table(["variant", "seed", "AP, trained again", "AP, kept study", "identical"], rows)
