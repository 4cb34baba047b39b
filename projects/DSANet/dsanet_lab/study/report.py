"""The study's outputs: results.json and results.csv (every run), summary.md (tables), ap.png and
loss_curves.png."""
import contextlib
import csv
import io
import json
import math
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from dsanet.errors import UserInputError
from dsanet.fileio import atomic_write, write_json, write_text
from .bootstrap import BOOTSTRAP_METHOD, BOOTSTRAP_METRICS, Replicated, paired_bootstrap
from ..provenance import cpu_summary
from .runner import Run
from .noise import NOISE_METHOD, ap_by_setup, difference_by_setup, noise_model
from .stats import CI_METHOD, DECOMPOSITION_METHOD, decompose_interval, mean_std, paired_difference, summarize
from .variants import Variant

__all__ = ["write_report", "comparisons_for", "setup_label", "DIFF_METRICS", "THIS_STUDY"]

DIFF_METRICS = ("AP", "AP50", "AP75")
THIS_STUDY = "this study"  # the setup name of the study's own runs, beside imported setup replicates


def comparisons_for(variants: Sequence[Variant], extra: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Every variant against the baseline (the first), every evaluation-only variant against its
    source, then the ``extra`` pairs; each pair once."""
    pairs = [(v.name, variants[0].name) for v in variants[1:]]
    pairs += [(v.name, v.source) for v in variants if not v.trained]
    return list(dict.fromkeys([*pairs, *extra]))


def _fmt(x: float, digits: int = 1) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence]) -> List[str]:
    """A markdown table's lines: the header, its rule, then one line per row of cells."""
    lines = ["| " + " | ".join(str(cell) for cell in cells) + " |" for cells in [header, *rows]]
    return [lines[0], "|" + "---|" * len(header), *lines[1:]]


def _loss_curve(run: Run) -> Tuple[List[int], List[float]]:
    """(iterations, total_loss) from the run's metrics.json (detectron2 JSONWriter: one JSON per line)."""
    path = run.directory / "metrics.json"
    points = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
            if "total_loss" in record and "iteration" in record:
                points[record["iteration"]] = record["total_loss"]  # a resumed run rewrites some iterations
    its = sorted(points)
    return its, [points[i] for i in its]


def _summary_markdown(variants, summary, differences, metrics, runs, seeds, run_spread) -> List[str]:
    lines = [f"# Comparison of {len(variants)} variants over seeds {list(seeds)}", "",
             "Mean ± std over the seeds that finished (n); std with n-1.", "",
             *_table(["variant", "n", *metrics], ([v.name, summary[v.name]["AP"]["n"], *(
                 f"{_fmt(summary[v.name][m]['mean'])} ± {_fmt(summary[v.name][m]['std'])}" for m in metrics)]
                 for v in variants)),
             "", f"Paired differences, 95% confidence interval. Method: {CI_METHOD}.", ""]
    rows = []
    for d in differences:
        cells = [f"{_fmt(d[m]['mean'], 2)} [{_fmt(d[m]['ci_low'], 2)}, {_fmt(d[m]['ci_high'], 2)}]"
                 if d[m] else "—" for m in DIFF_METRICS]
        rows.append([d["variant"], d["against"], next((d[m]["n"] for m in DIFF_METRICS if d[m]), 0), *cells])
    lines += _table(["variant", "against", "n", *(f"Δ{m} [95% CI]" for m in DIFF_METRICS)], rows)
    lines += _bootstrap_markdown(variants, summary, run_spread, differences)
    kept = [r for r in runs if r.ok and r.kept_model]
    if kept:
        lines += ["", "Runs that kept their best evaluated model (model_best.pth; their numbers above are that "
                      "model's):", "", *_table(["run", "iteration kept", "metric", "value"], (
                          [r.label, r.kept_model["iteration"], r.kept_model["metric"], _fmt(r.kept_model["value"], 2)]
                          for r in kept))]
    lines += ["", "Variants:", ""]
    for v in variants:
        how = "trained" if v.trained else f"evaluates {v.source}'s checkpoints"
        lines.append(f"- `{v.name}` ({how}): `{' '.join(v.overrides) or '(base config)'}`")
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        lines += ["", "Failed runs:", ""] + [f"- {r.label}: {r.error.splitlines()[-1] if r.error else ''}"
                                             for r in failed]
    return lines


def _run_spread(finished: Sequence[Run]) -> Dict:
    """A variant's one-run bootstrap std of each metric, averaged over its finished runs, and its images."""
    measured = [r.bootstrap for r in finished if r.bootstrap]
    return {"n": len(measured), "num_images": measured[0]["num_images"] if measured else None,
            **{m: mean_std([b[m]["std"] for b in measured])["mean"] for m in BOOTSTRAP_METRICS}}


def _bootstrap_markdown(variants, summary, run_spread, differences) -> List[str]:
    noise = ([v.name, run_spread[v.name]["num_images"], _fmt(summary[v.name]["AP"]["std"], 2),
              *(_fmt(run_spread[v.name][m], 2) for m in BOOTSTRAP_METRICS)]
             for v in variants if run_spread[v.name]["n"])
    rows = []
    for d in differences:
        parts = d.get("decomposition")
        if parts:
            need, n, k = parts["needed"], d["AP"]["n"], parts.get("validation_seeds")
            fewer = f" (seeds: {k} of {n})" if k is not None and k != n else ""  # the validation part's seeds
            rows.append([d["variant"], d["against"], parts["runs"], _fmt(parts["mean"], 2), _fmt(parts["seed_sd"], 2),
                         _fmt(parts["training_half"], 2), _fmt(parts["validation_half"], 2) + fewer,
                         f"[{_fmt(parts['total_low'], 2)}, {_fmt(parts['total_high'], 2)}]",
                         need["1.0"]["seeds"] or "out of reach", need["0.5"]["seeds"] or "out of reach",
                         f"{need['0.5']['images']} ({need['0.5']['seeds_with_more_images']})"])
    return ["", f"Noise of the validation sample. Method: {BOOTSTRAP_METHOD}.", "",
            *_table(["variant", "images", "AP seed std", "AP bootstrap std of one run", "AP50", "AP75"], noise),
            "", f"The AP difference's interval, split into training and validation parts. {DECOMPOSITION_METHOD}.", "",
            *_table(["variant", "against", "runs", "ΔAP", "run sd", "training ±", "validation ±", "total [95%]",
                     "seeds for ±1.0", "seeds for ±0.5", "images for ±0.5 (then seeds)"], rows)]


def _replicated(finished: Sequence[Run]) -> Dict[int, Replicated]:
    """seed -> (bootstrap summary, replicates) of a variant's finished runs that saved replicates."""
    saved = {r.seed: (r.bootstrap, r.replicates()) for r in finished if r.bootstrap}
    return {seed: (summary, replicates) for seed, (summary, replicates) in saved.items() if replicates is not None}


@contextlib.contextmanager
def _figure(path: Path, figsize: Tuple[float, float]) -> Iterator[tuple]:
    """Axes and the tab10 colours for the block; then the legend (when anything is labelled: nothing
    may have finished yet), and the figure written to ``path`` and closed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield ax, plt.get_cmap("tab10")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    finally:
        plt.close(fig)


def _plot_ap(path: Path, per_seed: Dict[str, Dict[int, Dict[str, float]]], seeds: List[int]) -> None:
    """Each variant's AP per seed (``per_seed``: variant -> seed -> metrics) and its mean."""
    labelled = set()  # each legend entry once
    with _figure(path, (1.6 + 1.3 * len(per_seed), 4)) as (ax, colors):
        for x, metrics in enumerate(per_seed.values()):
            aps = {s: m["AP"] for s, m in metrics.items() if not math.isnan(m.get("AP", math.nan))}
            for s, ap in aps.items():
                label = f"seed {s}"
                ax.scatter(x + 0.06 * (seeds.index(s) - (len(seeds) - 1) / 2), ap, color=colors(seeds.index(s) % 10),
                           s=22, zorder=3, label=None if label in labelled else label)
                labelled.add(label)
            if aps:
                ax.hlines(sum(aps.values()) / len(aps), x - 0.3, x + 0.3, color="black", linewidth=2,
                          zorder=2, label=None if "mean" in labelled else "mean")
                labelled.add("mean")
        ax.set_xticks(range(len(per_seed)), list(per_seed), rotation=20, ha="right")
        ax.set_ylabel("COCO AP")
        ax.set_title("AP per variant (points: seeds, bar: mean)")
        ax.grid(axis="y", alpha=0.3)


def _plot_losses(path: Path, variants, finished: Dict[str, List[Run]]) -> None:
    with _figure(path, (7, 4)) as (ax, colors):
        for i, v in enumerate(x for x in variants if x.trained):  # evaluation-only variants share their source's
            for j, run in enumerate(finished[v.name]):
                its, losses = _loss_curve(run)
                if its:
                    ax.plot(its, losses, color=colors(i % 10), linewidth=1, alpha=0.7, label=v.name if j == 0 else None)
        ax.set_xlabel("iteration")
        ax.set_ylabel("total_loss")
        ax.set_yscale("log")
        ax.set_title("Training loss, one line per seed")
        ax.grid(alpha=0.3)


def setup_label(setup: Optional[Dict]) -> str:
    """A run's setup in words: processor and intra-op threads, or "machine not recorded"."""
    machine = (setup or {}).get("machine")
    if not machine:
        return "machine not recorded"
    threads = machine.get("torch_threads")
    return f"{cpu_summary(machine['cpu'])}, {threads} thread{'' if threads == 1 else 's'}"


def setup_key(setup: Optional[Dict]) -> Optional[str]:
    """What makes two runs' setups one: :func:`setup_label` where the processor and the torch thread count
    were recorded, None where they were not (such a setup cannot be told from another)."""
    machine = (setup or {}).get("machine") or {}
    return setup_label(setup) if machine.get("cpu") and machine.get("torch_threads") is not None else None


def check_distinct_setups(replicates: Sequence[Dict]) -> None:
    """Refuse two setup names (``StudyRunner.import_setup``'s ``setup_name``) whose runs all ran on one
    recorded setup: counted twice, its runs would pass for independent. (Asking for more threads than cores
    gives as many threads as cores, so such a study repeats another's digits.)"""
    keys: Dict[str, set] = {}
    for replicate in replicates:
        keys.setdefault(replicate["setup_name"], set()).add(setup_key(replicate.get("setup")))
    seen: Dict[str, str] = {}
    for name, found in keys.items():
        if len(found) != 1 or None in found:  # several setups under one name, or one not recorded: cannot tell
            continue
        [key] = found
        if key in seen:
            raise UserInputError(f"--import-setup {name} and --import-setup {seen[key]}: both ran on {key}; "
                                 "one setup imported twice would count its runs as independent")
        seen[key] = name


def _noise_markdown(runs, replicates, noise: Dict[str, Optional[Dict]], differences) -> List[str]:
    """With runs imported from other setups: each replicated run's AP on every setup, then each result's
    noise model (``noise``: variant -> :func:`.noise.noise_model`, and each difference's)."""
    if not replicates:
        return []
    rows = []
    for r in runs:
        theirs = [rep for rep in replicates if (rep["variant"], rep["seed"]) == (r.variant.name, r.seed)]
        if r.ok and theirs:
            rows.append([r.label, f"{THIS_STUDY}: {setup_label(r.setup)}", _fmt(r.metrics.get("AP"), 2)])
            rows += [[r.label, f"{rep['setup_name']}: {setup_label(rep['setup'])}", _fmt(rep["metrics"].get("AP"), 2)]
                     for rep in theirs]
    models = [(f"{name} AP", model) for name, model in noise.items() if model]
    models += [(f"{d['variant']} − {d['against']} ΔAP", d["noise"]) for d in differences if d.get("noise")]
    return ["", f"Runs on several setups. Method: {NOISE_METHOD}.", "",
            *_table(["run", "setup", "AP"], rows), "",
            *_table(["result", "runs", "setups", "mean", "run sd", "setup sd", "95% interval"], (
                [label, m["runs"], len(m["setups"]), _fmt(m["mean"], 2), _fmt(m["run_sd"], 2),
                 "—" if m["setup_sd"] is None else _fmt(m["setup_sd"], 2), f"[{_fmt(m['low'], 2)}, {_fmt(m['high'], 2)}]"]
                for label, m in models))]


def _differences(variants, finished, per_seed, ap_table, run_spread, extra_comparisons, imported_differences
                 ) -> List[Dict]:
    """Each compared pair's paired t-intervals, paired image bootstrap, noise model over setups and the AP
    interval split into its parts (see :func:`write_report`)."""
    replicated = {name: _replicated(done) for name, done in finished.items()}
    differences = []
    for name, against in comparisons_for(variants, extra_comparisons):
        a, b = per_seed[name], per_seed[against]
        difference = {"variant": name, "against": against, **{
            m: paired_difference({s: r[m] for s, r in a.items()}, {s: r[m] for s, r in b.items()})
            for m in DIFF_METRICS}}
        paired = paired_bootstrap(replicated[name], replicated[against])
        if paired is None and difference["AP"]:  # every run imported: the importing study's own bootstrap
            paired = next((d.get("bootstrap") for d in imported_differences if d.get("variant") == name and
                           d.get("against") == against and (d.get("AP") or {}).get("n") == difference["AP"]["n"]), None)
        difference["bootstrap"] = paired
        difference["noise"] = noise_model(difference_by_setup(ap_table, name, against))
        # Imported runs have no detections: the validation part may then cover fewer seeds (said in the table).
        if paired and difference["AP"]:
            parts = decompose_interval(difference["noise"], paired["AP"]["mean"], run_spread[name]["num_images"])
            difference["decomposition"] = parts and {**parts, "validation_seeds": paired["n"]}
        differences.append(difference)
    return differences


def write_report(output: Path, *, config_file: str, common_overrides: Sequence[str], variants: Sequence[Variant],
                 seeds: Sequence[int], runs: Sequence[Run], metrics: Sequence[str],
                 extra_comparisons: Sequence[Tuple[str, str]] = (), setup_replicates: Sequence[Dict] = (),
                 imported_differences: Sequence[Dict] = (), provenance: Optional[Dict] = None) -> Dict:
    """Write results.json, results.csv, summary.md, ap.png and loss_curves.png into ``output``, the folder
    of the ``runs`` (:func:`.runner.plan_runs`).

    ``setup_replicates`` (``StudyRunner.import_setup``) are runs made on other setups: with them each result's
    noise model (:mod:`.noise`) separates the setup part from run noise; ``imported_differences``
    (an imported study's ``differences``) give a pair whose runs were all imported (no detections here)
    that study's paired image bootstrap, when it was over the same seeds; ``provenance`` is the invocation's.

    Returns:
        the content of results.json.
    """
    finished = {v.name: [r for r in runs if r.variant.name == v.name and r.ok] for v in variants}
    per_seed = {name: {r.seed: r.metrics for r in done} for name, done in finished.items()}
    summary = {name: summarize(by_seed, metrics) for name, by_seed in per_seed.items()}
    run_spread = {name: _run_spread(done) for name, done in finished.items()}
    run_records = [{"variant": r.variant.name, "seed": r.seed, "status": r.status, "seconds": r.seconds,
                    "metrics": r.metrics, "bootstrap": r.bootstrap, "error": r.error, "kept_model": r.kept_model,
                    "setup": r.setup, "imported_from": r.imported_from,
                    "directory": str(r.directory.relative_to(output))} for r in runs]
    ap_table = ap_by_setup([record for record, r in zip(run_records, runs) if r.ok], setup_replicates, THIS_STUDY)
    differences = _differences(variants, finished, per_seed, ap_table, run_spread, extra_comparisons,
                               imported_differences)
    results = {
        "provenance": provenance,
        "config_file": config_file, "common_overrides": list(common_overrides), "seeds": list(seeds),
        "variants": [{"name": v.name, "overrides": list(v.overrides), "source": v.source} for v in variants],
        # each run's folder relative to the study folder, so results.json can be kept elsewhere (benchmarks/results/)
        "runs": run_records,
        "setup_replicates": list(setup_replicates),
        "noise": {v.name: noise_model(ap_table.get(v.name, {})) for v in variants},
        "noise_method": NOISE_METHOD,
        "summary": summary, "run_spread": run_spread,
        "differences": differences, "ci_method": CI_METHOD, "bootstrap_method": BOOTSTRAP_METHOD,
        "decomposition_method": DECOMPOSITION_METHOD,
    }
    # nan -> null, so results.json is strict JSON: json writes nan as the constant NaN, read back as None.
    write_json(output / "results.json", json.loads(json.dumps(results, default=str), parse_constant=lambda _: None))
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["variant", "seed", "status", *metrics, "AP_bootstrap_std", "seconds", "kept_iteration", "error"])
    writer.writerows([r.variant.name, r.seed, r.status, *(r.metrics.get(m, "") for m in metrics),
                      r.bootstrap["AP"]["std"] if r.bootstrap else "",
                      "" if math.isnan(r.seconds) else round(r.seconds, 1),
                      (r.kept_model or {}).get("iteration", ""),
                      r.error.splitlines()[-1] if r.error else ""] for r in runs)
    write_text(output / "results.csv", table.getvalue())
    write_text(output / "summary.md", "\n".join(
        _summary_markdown(variants, summary, differences, metrics, runs, seeds, run_spread)
        + _noise_markdown(runs, setup_replicates, results["noise"], differences)) + "\n")
    _plot_ap(output / "ap.png", per_seed, list(seeds))
    _plot_losses(output / "loss_curves.png", variants, finished)
    return results
