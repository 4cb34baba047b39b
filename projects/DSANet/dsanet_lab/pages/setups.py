"""How far a study's results move between runs and between setups (processor, thread count), from the one
noise model of :mod:`dsanet_lab.study.noise` that the study's report holds: the runs made on several setups,
each result's run and setup parts, the headline difference in plain words, and what a rerun should expect."""
from typing import Any, Dict, List, Optional

from ..study.noise import rerun_half, setups_for_half
from ..study.report import setup_key, setup_label
from ..study.stats import chi2_cdf, mean_std
from .format import bracket, num, signed, table
from .paper import interval_clause
from .studies import total_estimate


def _replicated_runs(study: Dict[str, Any]) -> List[List[Any]]:
    """Every run that has replicates on other setups, then each replicate, with its setup and AP."""
    rows = []
    for run in study["runs"]:
        replicas = [r for r in study.get("setup_replicates", [])
                    if r["variant"] == run["variant"] and r["seed"] == run["seed"]]
        if not replicas or not run.get("metrics"):
            continue
        rows.append([run["variant"], run["seed"], f"this study: {setup_label(run.get('setup'))}",
                     num(run["metrics"]["AP"])])
        rows += [[run["variant"], run["seed"], f"{r['setup_name']}: {setup_label(r.get('setup'))}",
                  num(r["metrics"]["AP"])] for r in replicas]
    return rows


def _models(study: Dict[str, Any]) -> List[tuple]:
    """(label, noise model) of each variant's AP and each difference's ΔAP that has one."""
    models = [(f"{name} AP", model) for name, model in (study.get("noise") or {}).items() if model]
    return models + [(f"{d['variant']} - {d['against']} ΔAP", d["noise"]) for d in study["differences"] if d.get("noise")]


def _noise_rows(study: Dict[str, Any]) -> List[List[Any]]:
    return [[label, m["runs"], len(m["setups"]),
             "; ".join(f"{name} {num(g['mean'])} ({g['n']})" for name, g in m["setups"].items()), num(m["mean"]),
             num(m["run_sd"]), "not measured" if m["setup_sd"] is None else num(m["setup_sd"]),
             bracket(m["low"], m["high"])]
            for label, m in _models(study)]


def noise_components(study: Dict[str, Any]) -> str:
    """Each result's noise model: runs, setups, the mean on each setup (runs), the mean of all runs, run sd,
    setup sd and the 95% interval of the mean."""
    return table(["result", "runs", "setups", "mean per setup (runs)", "mean", "run sd", "setup sd",
                  "95% interval of the mean"], _noise_rows(study))


def study_setup(study: Dict[str, Any]) -> str:
    """The runs made on several setups, then each result's noise model."""
    return table(["variant", "seed", "setup", "AP"], _replicated_runs(study)) + "\n\n" + noise_components(study)


def _against_baseline(study: Dict[str, Any]) -> List[Dict[str, Any]]:
    baseline = study["variants"][0]["name"]
    return [d for d in study["differences"] if d["against"] == baseline and d.get("decomposition")]


def headline(study: Dict[str, Any]) -> str:
    """One plain sentence per variant against the study's baseline (whether the benchmark tells them apart,
    by how much), then the numbers: mean, total interval, runs and setups, the parts of the interval."""
    sentences = []
    for d in _against_baseline(study):
        mean, low, high, runs = total_estimate(d)
        dec, setups = d["decomposition"], len(d["noise"]["setups"])
        clause = interval_clause(d["variant"], d["against"], low, high)
        sentences.append(
            f"{clause[0].upper()}{clause[1:]}: {signed(mean)} AP, 95% interval {bracket(low, high)} "
            f"(±{num(dec['total_half'])}: runs and setups ±{num(dec['training_half'])}, validation images "
            f"±{num(dec['validation_half'])}), over {runs} paired runs on {setups} setup{'s' if setups > 1 else ''}."
            + _setups_needed(d))
    return " ".join(sentences)


def _setups_needed(diff: Dict[str, Any], half: float = 1.0, seeds: int = 2) -> str:
    """Where a setup part was measured and the total interval is wider than ±``half``: how many setups of
    ``seeds`` seeds would bring it to ±``half`` (more seeds on the same setups cannot)."""
    dec = diff["decomposition"]
    if diff["noise"].get("setup_sd") is None or dec["total_half"] <= half:
        return ""
    needed = setups_for_half(diff["noise"], half, seeds, dec["validation_half"])
    count = f"about {needed}" if needed else "more than 100"
    return (f" The setup part dominates: ±{half:.1f} AP would take {count} setups of {seeds} seeds each "
            f"(the measured run and setup sd taken as true).")


def _difference(study: Dict[str, Any], variant: str, against: str) -> Optional[Dict[str, Any]]:
    return next((d for d in study["differences"] if (d["variant"], d["against"]) == (variant, against)), None)


def reproduction(study: Dict[str, Any]) -> str:
    """What a user rerunning the study on another processor or thread count should expect, from the noise
    model: one model's AP of one run, and the headline difference of one seed and of the study's seeds."""
    models = {name: m for name, m in (study.get("noise") or {}).items() if m}
    worst = max(models, key=lambda name: rerun_half(models[name]))
    [first, *_] = _against_baseline(study)
    diff = first["noise"]
    seeds = max(s["n"] for s in diff["setups"].values())
    setup_part = ("a setup part of " + num(diff["setup_sd"]) + " AP sd" if diff["setup_sd"] is not None
                  else "no setup part measured")
    return (f"On another processor or thread count, expect one run's AP within ±{num(rerun_half(models[worst]), 1)} "
            f"AP of the mean here ({worst}, the widest), and the {first['variant']} - {first['against']} difference "
            f"within ±{num(rerun_half(diff), 1)} AP for one seed and ±{num(rerun_half(diff, seeds), 1)} AP for the "
            f"mean of {seeds} seeds (95%, from the noise model: a run sd of {num(diff['run_sd'])} AP and "
            f"{setup_part} in the difference, over {diff['runs']} runs on {len(diff['setups'])} setup{'s' if len(diff['setups']) > 1 else ''}).")


def seed_check(data: Dict[str, Any]) -> str:
    """Each checkout's and seed's initial-weights and first-batch hashes (benchmarks/seed_first_step.py),
    then whether two seeds differ in both and one seed agrees across the checkouts."""
    rows = [[row["commit"][:7], row["seed"], row["weights"], row["first_batch"], ", ".join(row["first_images"])]
            for row in data["rows"]]
    by_commit: Dict[str, Dict[int, tuple]] = {}
    for row in data["rows"]:
        by_commit.setdefault(row["commit"][:7], {})[row["seed"]] = (row["weights"], row["first_batch"])
    differ = all(len(set(w for w, _ in seeds.values())) == len(seeds) and len(set(b for _, b in seeds.values())) == len(seeds)
                 for seeds in by_commit.values())
    same = all(len({seeds.get(s) for seeds in by_commit.values()}) == 1 for s in {row["seed"] for row in data["rows"]})
    return (table(["commit", "seed", "initial weights (sha256)", "first batch (sha256)", "first images"], rows) + "\n\n"
            + f"Different seeds give different initial weights and first batches at every commit: "
              f"{'yes' if differ else 'no'}. The same seed gives the same at every commit: {'yes' if same else 'no'}.")


def earlier_seeds(earlier: Dict[str, Any], study: Dict[str, Any]) -> str:
    """Each model of an earlier study over its seeds against this study's run sd: the chance, under the noise
    model, that seeds of one setup spread as little as the earlier ones did (chi-squared, n - 1 dof)."""
    rows = []
    for name, model in (study.get("noise") or {}).items():
        values = [run["metrics"]["AP"] for run in earlier["runs"] if run["variant"] == name and run.get("metrics")]
        if not model or len(values) < 2:
            continue
        sd = mean_std(values)["std"]
        chance = chi2_cdf((len(values) - 1) * sd ** 2 / model["run_sd"] ** 2, len(values) - 1)
        rows.append([name, ", ".join(f"{v:.2f}" for v in values), num(sd), num(model["run_sd"]), f"{chance:.3f}"])
    return table(["variant", "AP per seed, first study", "their sd", "run sd here", "chance of a spread that small"],
                 rows)


def first_commit_rerun(earlier: Dict[str, Any], rerun: Dict[str, Any], study: Dict[str, Any]) -> str:
    """Each run of ``rerun`` (the earlier study's commit, retrained on this study's setup) beside the earlier
    study's kept run and this study's run of the same variant and seed, then whether the rerun gives this
    study's digits (the code) or the kept ones (how the kept runs were made)."""
    def ap(data: Dict[str, Any], variant: str, seed: int) -> Optional[float]:
        run = next((r for r in data["runs"] if (r["variant"], r["seed"]) == (variant, seed) and r.get("metrics")), None)
        return run["metrics"]["AP"] if run else None

    commit = (((rerun.get("provenance") or {}).get("code") or {}).get("commit") or "?")[:7]
    rows, same_as_here, same_as_kept = [], True, True
    for run in rerun["runs"]:
        if not run.get("metrics"):
            continue
        kept, here = ap(earlier, run["variant"], run["seed"]), ap(study, run["variant"], run["seed"])
        same_as_here &= here == run["metrics"]["AP"]
        same_as_kept &= kept == run["metrics"]["AP"]
        rows.append([run["variant"], run["seed"], num(kept) if kept is not None else "—", num(run["metrics"]["AP"]),
                     num(here) if here is not None else "—"])
    return (table(["variant", "seed", "AP kept, first study", f"AP retrained at {commit}", "AP in this study"], rows)
            + f"\n\nRetrained at {commit}, every run gives this study's AP to the last digit: "
              f"{'yes' if same_as_here else 'no'}; the kept AP: {'yes' if same_as_kept else 'no'}.")


def _same_setup(a: Optional[Dict[str, Any]], b: Optional[Dict[str, Any]]) -> bool:
    """Whether two runs' setups are one processor model with one thread count (their machine records)."""
    return setup_key(a) is not None and setup_key(a) == setup_key(b)


def imported_and_reproduced(study: Dict[str, Any], *kept: Dict[str, Any]) -> str:
    """Which runs a study read from kept studies (made on the same setup at earlier commits), then each run it
    made again that a kept study holds on the same setup: both APs and whether they are identical."""
    imported = [run for run in study["runs"] if run.get("imported_from")]
    rows = []
    for run in study["runs"]:
        if run.get("imported_from") or not run.get("metrics"):
            continue
        for other in kept:
            match = next((r for r in other["runs"] if (r["variant"], r["seed"]) == (run["variant"], run["seed"])
                          and r.get("metrics") and _same_setup(r.get("setup"), run.get("setup"))), None)
            if match:
                rows.append([run["variant"], run["seed"], repr(run["metrics"]["AP"]), repr(match["metrics"]["AP"]),
                             ((match.get("setup") or {}).get("code") or {}).get("commit", "—")[:7],
                             "yes" if match["metrics"]["AP"] == run["metrics"]["AP"] else "no"])
                break
    read = ", ".join(f"{run['variant']} {run['seed']}" for run in imported)
    return (f"Runs read from kept studies (same setup, other commits): {read or 'none'}.\n\n"
            + table(["variant", "seed", "AP made here", "AP kept", "kept run's commit", "identical"], rows))
