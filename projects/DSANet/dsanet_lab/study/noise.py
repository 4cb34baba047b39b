"""One model of a study's noise: a result on one setup from one run is the effect, plus the setup's part,
plus the run's; the components are estimated from runs on several setups, and the interval of the effect
comes from that model (not from a seed part and a setup part added in quadrature).

A result is one model's AP, or the paired difference ``d = variant - baseline`` of one seed (for a
difference the setup's part is the setup-by-variant effect). A setup is a processor and thread count:
the same seed on two setups rounds differently, so it is another run, not a replicate of the same one.
"""
import math
from typing import Dict, Mapping, Optional, Sequence

from .stats import t_quantile_975

__all__ = ["NOISE_METHOD", "noise_model", "rerun_half", "ap_by_setup", "difference_by_setup"]

NOISE_METHOD = (
    "one model of the noise: a result (one model's AP, or a seed's paired difference d = variant - baseline) "
    "on setup s (processor, thread count) from run r is effect + u_s + e_sr, u_s the setup's part (for a "
    "difference, setup-by-variant), e_sr the run's. One-way random-effects moments: run variance = the pooled "
    "within-setup variance MSW (N - S dof); setup variance = max(0, (MSB - MSW) / n0), MSB the between-setup "
    "mean square, n0 = (N - sum n_s^2 / N) / (S - 1). The effect is the mean of all N runs, variance "
    "MSW / N + setup variance x sum n_s^2 / N^2, Satterthwaite's dof (N - S when the setup variance is 0); "
    "interval mean +- t(0.975, dof) x sd. One setup: the t-interval over its runs, setup part not measured. "
    "A rerun of n seeds on another setup: mean +- t(0.975, dof) x sqrt(setup + run / n + var(mean))")


def noise_model(by_setup: Mapping[str, Mapping[int, float]]) -> Optional[Dict]:
    """The effect's interval and the noise components of one result measured on one or more setups.

    Args:
        by_setup: setup name -> seed -> value (NaN values do not count).

    Returns:
        ``{"mean", "low", "high", "half", "dof", "run_sd", "setup_sd", "runs", "setups": {name: {"n", "mean"}}}``;
        ``setup_sd`` is None with one setup (not measured). None when no setup has two runs (run noise and
        setup part cannot be told apart then).
    """
    groups = {name: [v for _, v in sorted(values.items()) if not math.isnan(v)]
              for name, values in sorted(by_setup.items())}
    groups = {name: values for name, values in groups.items() if values}
    n_runs, n_setups = sum(map(len, groups.values())), len(groups)
    if n_runs - n_setups < 1:
        return None
    means = {name: sum(values) / len(values) for name, values in groups.items()}
    mean = sum(sum(values) for values in groups.values()) / n_runs
    msw = sum((v - means[name]) ** 2 for name, values in groups.items() for v in values) / (n_runs - n_setups)
    setup_var, variance, dof = None, msw / n_runs, float(n_runs - n_setups)
    if n_setups > 1:
        sizes = [len(values) for values in groups.values()]
        msb = sum(len(groups[name]) * (m - mean) ** 2 for name, m in means.items()) / (n_setups - 1)
        n0 = (n_runs - sum(n * n for n in sizes) / n_runs) / (n_setups - 1)
        setup_var = max(0.0, (msb - msw) / n0)
        if setup_var > 0:
            a = sum(n * n for n in sizes) / (n_runs ** 2 * n0)  # variance = a * MSB + (1/N - a) * MSW
            b = 1 / n_runs - a
            variance = a * msb + b * msw
            dof = variance ** 2 / ((a * msb) ** 2 / (n_setups - 1) + (b * msw) ** 2 / (n_runs - n_setups))
    half = _t(dof) * math.sqrt(variance)
    return {"mean": mean, "low": mean - half, "high": mean + half, "half": half, "dof": dof,
            "run_sd": math.sqrt(msw), "setup_sd": None if setup_var is None else math.sqrt(setup_var),
            "runs": n_runs, "setups": {name: {"n": len(groups[name]), "mean": means[name]} for name in groups}}


def rerun_half(model: Dict, seeds: int = 1) -> float:
    """How far from ``model["mean"]`` the mean of ``seeds`` new runs on another setup may land (95%): the
    setup part, the new runs' noise and the uncertainty of the mean itself (the setup part counts as 0
    where only one setup was measured)."""
    variance = (model["setup_sd"] or 0.0) ** 2 + model["run_sd"] ** 2 / seeds + (model["half"] / _t(model["dof"])) ** 2
    return _t(model["dof"]) * math.sqrt(variance)


def setups_for_half(model: Dict, half: float, seeds_per_setup: int = 2, validation_half: float = 0.0,
                    most: int = 100) -> Optional[int]:
    """The fewest setups S >= 2, each with ``seeds_per_setup`` runs, that bring the interval of the effect to
    ``half`` together with ``validation_half`` (added in quadrature), taking the measured run and setup sd as
    true: t(0.975, S - 1) x sqrt(setup^2 / S + run^2 / (S x seeds)) <= sqrt(half^2 - validation^2) (a balanced
    design: the between-setup mean square has S - 1 dof). None when ``most`` setups do not suffice or the
    validation part alone is wider; needs a measured setup sd (several setups)."""
    if model.get("setup_sd") is None or validation_half >= half:
        return None
    budget = math.sqrt(half ** 2 - validation_half ** 2)
    for setups in range(2, most + 1):
        spread = math.sqrt(model["setup_sd"] ** 2 / setups + model["run_sd"] ** 2 / (setups * seeds_per_setup))
        if t_quantile_975(setups - 1) * spread <= budget:
            return setups
    return None


def _t(dof: float) -> float:
    """t(0.975) at ``dof`` rounded down (a fractional Satterthwaite dof errs wide)."""
    return t_quantile_975(max(1, int(math.floor(dof))))


def ap_by_setup(runs: Sequence[Dict], replicates: Sequence[Dict], this_setup: str) -> Dict[str, Dict[str, Dict[int, float]]]:
    """variant -> setup -> seed -> AP, from a study's finished runs (``results.json`` records, setup
    ``this_setup``) and its runs imported from other setups (``setup_replicates``)."""
    table: Dict[str, Dict[str, Dict[int, float]]] = {}
    for record, setup in [*((r, this_setup) for r in runs), *((r, r["setup_name"]) for r in replicates)]:
        ap = (record.get("metrics") or {}).get("AP")
        if ap is not None and not (isinstance(ap, float) and math.isnan(ap)) and not record.get("error"):
            table.setdefault(record["variant"], {}).setdefault(setup, {})[record["seed"]] = ap
    return table


def difference_by_setup(table: Dict[str, Dict[str, Dict[int, float]]], variant: str, against: str
                        ) -> Dict[str, Dict[int, float]]:
    """setup -> seed -> AP(variant) - AP(against), over the seeds both have on that setup."""
    a, b = table.get(variant, {}), table.get(against, {})
    return {setup: {s: a[setup][s] - b[setup][s] for s in sorted(a[setup].keys() & b[setup].keys())}
            for setup in sorted(a.keys() & b.keys())}
