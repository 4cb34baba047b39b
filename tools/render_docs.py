#!/usr/bin/env python
"""Render the docs' result tables from the kept JSON they come from, or check that they agree.

A page holds a table between two markers::

    <!-- render: NAME -->
    (generated: a markdown table and a caption naming the file, command, machine and date)
    <!-- /render -->

``python tools/render_docs.py`` rewrites every such block of every markdown page in place;
``--check`` rewrites nothing and exits 1 naming each table whose page and JSON disagree (a number
changed by hand on either side). NAME must be one of :data:`TABLES`.
"""
import argparse
import difflib
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "projects" / "DSANet"))

from dsanet.provenance import CPU_FLAGS, cpu_summary  # noqa: E402
from dsanet.study.report import setup_label  # noqa: E402

RESULTS = "benchmarks/results"
BLOCK = re.compile(r"(<!-- render: ([\w.-]+) -->\n)(.*?)(<!-- /render -->)", re.S)
SKIP_DIRS = {".git", ".venv", ".venv-d2src", "output", "node_modules", "build", "dist"}


# ---------------------------------------------------------------- formatting helpers
def num(value: Optional[float], digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def spread(median: float, low: float, high: float, digits: int = 3) -> str:
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def interval(stat: Dict[str, float], digits: int = 2) -> str:
    """``mean [low, high]`` of a paired t-interval record."""
    return f"{stat['mean']:.{digits}f} [{stat['ci_low']:.{digits}f}, {stat['ci_high']:.{digits}f}]"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def milliseconds(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}"


# ---------------------------------------------------------------- provenance captions
def machine_line(data: Dict[str, Any]) -> str:
    """The machine a JSON records, in one line: for a study whose runs record their setups, the setups
    the runs trained on (the invocation that wrote the report may run with other threads); else its
    provenance record, else its own ``machine``."""
    runs = {_machine_text(setup["machine"]) for setup in
            ((run.get("setup") or {}) for run in data.get("runs") or []) if setup.get("machine")}
    if len(runs) == 1:
        return "machine of every run: " + runs.pop()
    if runs:
        return f"runs on {len(runs)} setups (each run's in the file)"
    record = (data.get("provenance") or {}).get("machine") or data.get("machine")
    if not record:
        return "machine not recorded"
    return "machine: " + _machine_text(record)


def _machine_text(record: Dict[str, Any]) -> str:
    if "cpu" in record:  # dsanet.provenance.machine_record()
        parts = [cpu_summary(record["cpu"])]
        if record.get("gpu"):
            gpu = record["gpu"]
            parts.append(f"{gpu.get('count', 1)}x {gpu['name']} (CUDA {gpu.get('cuda')})")
        libraries = record.get("libraries") or {}
        parts += [f"{name} {libraries[name]}" for name in ("torch", "detectron2") if libraries.get(name)]
        parts.append(_threads(record.get("torch_threads")))
        return ", ".join(parts)
    # The benchmarks' own machine entry (model name, optional flags, torch, threads).
    flags = record.get("cpu_flags")
    if flags:
        cpu = cpu_summary({"model_name": record.get("cpu_model", "unknown"),
                           "flags": {name: flags.get(name) for name in CPU_FLAGS}})
    else:
        cpu = f"{record.get('cpu_model', 'unknown')} (CPU flags not recorded)"
    parts = [cpu, f"{record.get('cpu_count')} cores", f"torch {record.get('torch')}",
             _threads(record.get("torch_threads"))]
    if record.get("cuda_device"):
        parts.append(str(record["cuda_device"]))
    return ", ".join(parts)


def _threads(count: Any) -> str:
    return f"{count} torch thread" + ("" if count == 1 else "s")


def caption(sources: Sequence[Tuple[str, Dict[str, Any]]], page: Path, root: Path) -> str:
    """One line per source file: link, command, machine, date."""
    lines = []
    for path, data in sources:
        prov = data.get("provenance") or {}
        link = os.path.relpath(root / path, page.parent).replace(os.sep, "/")
        if data.get("quoted_from"):  # another work's numbers: where they are printed
            lines.append(f"Source: [`{path}`]({link}), quoted from {data['quoted_from']}.")
            continue
        command = f"`{prov['command']}`" if prov.get("command") else "command not recorded"
        date = prov.get("date") or "date not recorded"
        if prov.get("recorded_after_the_run"):
            date += " (commit date; provenance recorded after the run)"
        lines.append(f"Source: [`{path}`]({link}); command: {command}; {machine_line(data)}; "
                     f"date: {date}.")
    return "\n".join("_" + line + "_" + ("  " if i < len(lines) - 1 else "") for i, line in enumerate(lines))


# ---------------------------------------------------------------- tables: benchmarks
MODEL_NAMES = {"DSANet": "DSANet (P4-P7)", "DSANet-P3half": "DSANet, P3 half resolution",
               "DSANet-P3-P7": "DSANet, full-resolution P3-P7", "DSA-FCOS": "DSA-FCOS (P4-P7)"}


def model_name(name: str) -> str:
    return MODEL_NAMES.get(name, name)


def render_attention(attention: Dict[str, Any]) -> str:
    cells: Dict[Tuple[str, str], Dict[str, str]] = {}
    info: Dict[str, Dict[str, Any]] = {}
    for row in attention["rows"]:
        info.setdefault(row["level"], row)
        if row.get("skipped"):
            text = "skipped"
        else:
            text = f"{milliseconds(row['time_s'])} ({milliseconds(row['time_min_s'])}-{milliseconds(row['time_max_s'])})"
            if row.get("peak_extra_mib") is not None:
                text += f", {row['peak_extra_mib']:.1f} MiB"
        cells.setdefault((row["level"], row["mode"]), {"_flops": row["math_flops"]})[row["kind"]] = text
    rows = []
    for level, mode in sorted(cells, key=lambda key: (key[0], key[1] != "forward_backward")):
        first = mode == "forward_backward"
        row = info[level]
        rows.append([level.upper() if first else "", f"{row['height']}x{row['width']}" if first else "",
                     row["auto_path"] if first else "", "fwd+bwd" if first else "forward",
                     f"{cells[level, mode]['_flops'] / 1e9:.2f}",
                     *(cells[level, mode].get(kind, "—") for kind in ("dense", "sdpa_padded", "blockwise"))])
    return table(["level", "H x W", "auto", "pass", "math GFLOP", "dense", "SDPA-padded", "blockwise"], rows)


def render_p3_budget(attention: Dict[str, Any]) -> str:
    budget = attention["budget"]
    each = ", ".join(f"{value:.1f}" for value in budget["resident_mib_each"])
    return table(["measure", "value"], [
        ["level, positions", f"{budget['level'].upper()}, {budget['height']}x{budget['width']}"],
        [f"peak resident growth, largest of {len(budget['resident_mib_each'])} fresh processes",
         f"{budget['resident_mib']:.1f} MiB ({budget['resident_mb']:.1f} MB); each: {each} MiB"],
        ["budget", f"{budget['budget_mb']:.0f} MB"],
        ["verdict", "met" if budget["pass"] else "**missed**"],
        ["live tensors (glibc mmap threshold pinned)", f"{budget['live_mib']:.1f} MiB ({budget['live_mb']:.1f} MB)"],
    ])


def render_speed_fp32(speed: Dict[str, Any], cost: Dict[str, Any]) -> str:
    rows = []
    for name, run in speed["cpu"].items():
        model = cost["models"][name]
        is_base = run["baseline"] == name

        def ratio(key: str) -> str:
            return "1.000" if is_base else spread(run[key], run[key + "_min"], run[key + "_max"])

        rows.append([model_name(name), run["baseline"], f"{model['params'] / 1e6:.2f} M", f"{model['flops'] / 1e9:.1f}",
                     f"{run['flop_ratio']:.3f}", f"{run['train_s']:.2f} s", ratio("train_step_ratio"),
                     ratio("train_step_ratio_over_flop_ratio"), f"{run['inference_s']:.2f} s",
                     ratio("inference_ratio"), ratio("inference_ratio_over_flop_ratio")])
    return table(["model", "baseline", "params", "GFLOPs", "FLOP ratio", "train step", "train ratio", "train / FLOP",
                  "inference", "inference ratio", "inference / FLOP"], rows)


def render_speed_bf16(speed: Dict[str, Any]) -> str:
    bf16 = speed["cpu_bf16"]
    if not isinstance(bf16, dict):
        return f"bf16 not measured: {bf16}"
    rows = []
    for name, run in bf16.items():
        rows.append([model_name(name), f"{run['train_s']:.2f} s",
                     spread(run["train_step_ratio"], run["train_step_ratio_min"], run["train_step_ratio_max"]),
                     spread(run["train_speedup"], run["train_speedup_min"], run["train_speedup_max"], 2),
                     f"{run['inference_s']:.2f} s",
                     spread(run["inference_ratio"], run["inference_ratio_min"], run["inference_ratio_max"]),
                     spread(run["inference_speedup"], run["inference_speedup_min"], run["inference_speedup_max"], 2)])
    return table(["model", "bf16 train step", "train ratio vs fp32 baseline", "train speed-up", "bf16 inference",
                  "inference ratio vs fp32 baseline", "inference speed-up"], rows)


def render_goals(goals: List[Dict[str, Any]]) -> str:
    rows = [[goal["goal"], spread(goal["value"], goal["min"], goal["max"]), "met" if goal["pass"] else "**missed**"]
            for goal in goals]
    return table(["goal (judged on the fp32 median)", "median (min-max)", "verdict"], rows)


def render_speed_goals(speed: Dict[str, Any]) -> str:
    return render_goals(speed["goals"])


def render_make_bench_summary(summary: Dict[str, Any]) -> str:
    rows = []
    for name, model in summary["models"].items():
        def ratio(key: str) -> str:
            low, high = model[key + "_spread"]
            return spread(model[key], low, high)

        rows.append([model_name(name), f"{model['flop_ratio']:.3f}", ratio("train_step_ratio"),
                     ratio("train_step_ratio_over_flop_ratio"), ratio("inference_ratio"),
                     ratio("inference_ratio_over_flop_ratio")])
    return (table(["model", "FLOP ratio", "train ratio", "train / FLOP", "inference ratio", "inference / FLOP"], rows)
            + "\n\n" + render_goals(summary["goals"]))


def render_profile_step(profile: Dict[str, Any]) -> str:
    parts = []
    for run in profile["profiles"]:
        parts.append(table(["model", "image", "step under the profiler", "attention forward", "attention backward",
                            "attention share of the step"],
                           [[run["model"], "x".join(map(str, run["image_size"])), f"{run['wall_s']:.2f} s",
                             f"{run['attention_forward_s']:.2f} s", f"{run['attention_backward_s']:.2f} s",
                             f"{100 * run['attention_share']:.0f}%"]]))
        parts.append(table(["operator (top by self CPU time)", "self s", "calls"],
                           [[f"`{op['op']}`", f"{op['self_s']:.3f}", op["calls"]] for op in run["top_self_cpu"]]))
    return "\n\n".join(parts)


def render_eval_memory(memory: Dict[str, Any]) -> str:
    samples = dict((int(n), rss) for n, rss in memory["rss_samples_mib"])
    first, last = min(samples), max(samples)
    return table(["measure", "MiB"], [
        [f"RSS after {first} images", f"{samples[first]:.1f}"],
        [f"RSS after {last} images", f"{samples[last]:.1f}"],
        [f"growth from {first} to {last} images", f"{memory['growth_after_warmup_mib']:.1f}"],
        [f"pickled predictions the evaluator keeps ({memory['detections']} detections)",
         f"{memory['predictions_pickled_mib']:.1f}"],
        ["bound: 3 x pickled predictions + 64 MiB", f"{memory['bound_mib']:.1f}"],
        ["peak RSS, COCOeval included", f"{memory['peak_rss_mib']:.1f}"],
    ]) + f"\n\nGrowth within the bound: {'yes' if memory['growth_after_warmup_mib'] <= memory['bound_mib'] else 'no'}."


# ---------------------------------------------------------------- tables: sizing and pretraining
def render_sizing_validation(small: Dict[str, Any], large: Dict[str, Any]) -> str:
    by_size = {row["num_images"]: row for row in large["rows"]}
    rows = []
    for row in small["rows"]:
        other = by_size.get(row["num_images"])
        rows.append([row["num_images"], f"{row['AP']['value']:.1f} ± {row['AP']['std']:.2f}",
                     f"{other['AP']['value']:.1f} ± {other['AP']['std']:.2f}" if other else "—"])
    return table(["validation images (the first N)", "AP ± bootstrap std, model trained on 600 images",
                  "AP ± bootstrap std, model trained on 4000 images"], rows)


def render_sizing_training(sizing: Dict[str, Any]) -> str:
    rows = []
    for run in sizing["runs"]:
        own, val = run["train_split"]["AP"], run["val_4000_images"]["AP"]
        at = ", ".join(f"{run['val_4000_AP_at_iterations'][k]:.1f}" for k in sorted(run["val_4000_AP_at_iterations"], key=int))
        rows.append([run["train_images"], f"{run['epochs']:.0f}", f"{own:.1f} ({run['train_images_evaluated']} images)",
                     f"{val:.1f}", f"{own - val:.1f}", at])
    return table(["training images", "epochs", "AP on its training images", "AP on 4000 validation images", "gap",
                  "validation AP at iterations " + ", ".join(sorted(sizing["runs"][0]["val_4000_AP_at_iterations"], key=int))],
                 rows) + f"\n\nRecipe: {sizing['recipe']}."


def render_pretrain_accuracy(accuracy: Dict[str, Any], args: Dict[str, Any]) -> str:
    per_class = ", ".join(f"{name} {100 * value:.1f}%" for name, value in accuracy["per_class"].items())
    return table(["measure", "value"], [
        ["iterations x batch, lr, seed", f"{accuracy['iterations']} x {args['batch_size']}, {args['lr']}, {args['seed']}"],
        ["held-out images", accuracy["num_images"]],
        ["all labels right", f"{100 * accuracy['exact_match']:.1f}% (majority guess {100 * accuracy['majority_exact_match']:.1f}%)"],
        ["per label", f"{100 * accuracy['label_accuracy']:.1f}% (majority guess {100 * accuracy['majority_label_accuracy']:.1f}%)"],
        ["per class", per_class],
    ])


# ---------------------------------------------------------------- tables: studies (tools/compare_variants.py)
def per_seed_ap(study: Dict[str, Any], variant: str) -> str:
    values = [(run["seed"], run["metrics"]["AP"]) for run in study["runs"]
              if run["variant"] == variant and run.get("metrics")]
    return ", ".join(f"{ap:.2f}" for _, ap in sorted(values))


def per_seed_deltas(ap: Dict[str, Any]) -> str:
    """``+0.31, -0.12``: a paired difference record's per-seed values in seed order."""
    return ", ".join(signed(ap["per_seed"][k]) for k in sorted(ap["per_seed"], key=int))


def render_study_summary(study: Dict[str, Any]) -> str:
    spread_of = study.get("run_spread") or {}
    rows = []
    for name, metrics in study["summary"].items():
        cells = [name, metrics["AP"]["n"], per_seed_ap(study, name)]
        cells += [f"{num(metrics[key]['mean'], 1)} ± {num(metrics[key]['std'], 1)}" for key in ("AP", "AP50", "AP75", "AR")]
        cells.append(num(spread_of[name]["AP"]) if name in spread_of else "—")
        rows.append(cells)
    return table(["variant", "seeds", "AP per seed", "AP", "AP50", "AP75", "AR", "one run's bootstrap std of AP"], rows)


def render_study_differences(study: Dict[str, Any]) -> str:
    rows = []
    for diff in study["differences"]:
        ap = diff["AP"]
        seeds = per_seed_deltas(ap)
        boot = (diff.get("bootstrap") or {}).get("AP", {}).get("mean")
        dec = diff.get("decomposition")
        rows.append([f"{diff['variant']} - {diff['against']}", ap["n"], seeds, interval(ap),
                     f"[{boot['ci_low']:.2f}, {boot['ci_high']:.2f}]" if boot else "—",
                     f"[{dec['total_low']:.2f}, {dec['total_high']:.2f}], ±{dec['total_half']:.2f}" if dec else "—",
                     f"{dec['needed']['1.0']['seeds']} / {dec['needed']['0.5']['seeds']}" if dec else "—"])
    return table(["AP difference", "seeds", "per seed", "paired t-interval [95%]", "bootstrap over images [95%]",
                  "total [95%]", "seeds for ±1.0 / ±0.5 AP"], rows)


def render_study_differences_ap50_75(study: Dict[str, Any]) -> str:
    rows = [[f"{diff['variant']} - {diff['against']}", diff["AP"]["n"], interval(diff["AP"]), interval(diff["AP50"]),
             interval(diff["AP75"])] for diff in study["differences"]]
    return table(["difference", "seeds", "ΔAP [95% CI]", "ΔAP50 [95% CI]", "ΔAP75 [95% CI]"], rows)


def render_study(study: Dict[str, Any]) -> str:
    return render_study_summary(study) + "\n\n" + render_study_differences(study)


def render_study_first(study: Dict[str, Any]) -> str:
    return render_study_summary(study) + "\n\n" + render_study_differences_ap50_75(study)


def render_bf16_vs_fp32(pairs: Dict[str, Any]) -> str:
    rows = []
    for row in pairs["rows"]:
        ap = row["per_seed"]["AP"]
        seeds = sorted(ap["first"], key=int)
        rows.append([f"{row['first']} / {row['second']}", ", ".join(seeds),
                     ", ".join(f"{ap['first'][s]:.2f}" for s in seeds), ", ".join(f"{ap['second'][s]:.2f}" for s in seeds),
                     interval(row["differences"]["AP"])])
    return table(["first / second", "seeds", "AP, first study", "AP, second study", "ΔAP second - first [95% CI]"], rows)


def render_fp32_control(control: Dict[str, Any], stored: Dict[str, Any]) -> str:
    kept = {(run["variant"], run["seed"]): run["metrics"]["AP"] for run in stored["runs"] if run.get("metrics")}
    rows = []
    for run in control["runs"]:
        before = kept.get((run["variant"], run["seed"]))
        rows.append([run["variant"], run["seed"], repr(run["metrics"]["AP"]), repr(before) if before is not None else "—",
                     "yes" if before == run["metrics"]["AP"] else "no"])
    return table(["variant", "seed", "AP, trained again", "AP, kept study", "identical"], rows)


def render_study_small_custom(study: Dict[str, Any]) -> str:
    """One row per variant: AP per seed, mean ± std, the kept model's iteration and minutes per seed,
    and the AP difference against ``old_recipe`` (paired t-interval; the total interval when decomposed)."""
    against = {diff["variant"]: diff for diff in study["differences"] if diff["against"] == "old_recipe"}
    rows = []
    for variant in study["variants"]:
        name = variant["name"]
        runs = sorted((run for run in study["runs"] if run["variant"] == name and run.get("metrics")),
                      key=lambda run: run["seed"])
        ap = study["summary"][name]["AP"]
        kept = ", ".join(str((run.get("kept_model") or {}).get("iteration") or "last") for run in runs)
        minutes = ", ".join(num(run["seconds"] / 60, 0) if run.get("seconds") else "—" for run in runs)
        diff = against.get(name)
        if diff is None:
            delta = "—"
        elif diff["AP"]["n"] < 2:
            delta = f"{signed(diff['AP']['mean'])} (1 seed)"
        else:
            delta = interval(diff["AP"])
            dec = diff.get("decomposition")
            if dec:
                delta += f"; total [{dec['total_low']:.2f}, {dec['total_high']:.2f}]"
        std = num(ap["std"], 2) if ap["n"] > 1 else "—"
        rows.append([name, ", ".join(f"{run['metrics']['AP']:.2f}" for run in runs), f"{num(ap['mean'])} ± {std}",
                     kept, minutes, delta])
    return table(["variant", "AP per seed", "AP mean ± std", "iteration kept per seed", "minutes per run",
                  "ΔAP vs old_recipe [95% CI]"], rows)


# ---------------------------------------------------------------- tables: how far a setup moves a result
def render_study_setup(study: Dict[str, Any]) -> str:
    """Seed 0 of each model on every setup, each result's spread between setups, and the headline
    difference's interval with its setup part."""
    rows = []
    for run in study["runs"]:
        replicas = [r for r in study.get("setup_replicates", [])
                    if r["variant"] == run["variant"] and r["seed"] == run["seed"]]
        if not replicas:
            continue
        rows.append([run["variant"], run["seed"], f"kept study: {setup_label(run.get('setup'))}", num(run["metrics"]["AP"])])
        rows += [[run["variant"], run["seed"], f"{r['setup_name']}: {setup_label(r.get('setup'))}",
                  num(r["metrics"]["AP"])] for r in replicas]
    runs = table(["variant", "seed", "setup", "AP"], rows)
    spreads = [[f"{name} AP", len(s["setups"]), num(s["max_shift"]), f"±{num(s['half'])}"]
               for name, s in study["setup_spread"].items() if s]
    spreads += [[f"{d['variant']} - {d['against']} ΔAP", len(d["setup"]["setups"]), num(d["setup"]["max_shift"]),
                 f"±{num(d['setup']['half'])}"] for d in study["differences"] if d.get("setup")]
    moved = table(["result", "setups", "largest shift", "setup part (95%)"], spreads)
    parts = [[f"{d['variant']} - {d['against']}", d["AP"]["n"], signed(d["AP"]["mean"]),
              f"±{num(d['decomposition']['training_half'])}", f"±{num(d['decomposition']['validation_half'])}",
              f"±{num(d['decomposition']['setup_half'])}",
              f"[{num(d['decomposition']['total_low'])}, {num(d['decomposition']['total_high'])}]"]
             for d in study["differences"] if d.get("decomposition")]
    interval_table = table(["difference", "seeds", "ΔAP", "seeds part", "validation part", "setup part",
                            "total [95%]"], parts)
    return runs + "\n\n" + moved + "\n\n" + interval_table


def render_reproduction(study: Dict[str, Any]) -> str:
    """The sentence a user reads before rerunning: how close their numbers should land."""
    model = max((s for s in study["setup_spread"].values() if s), key=lambda s: s["half"])
    [difference] = [d for d in study["differences"] if d.get("setup")]
    dec = difference["decomposition"]
    return (f"Rerunning a study gives the same digits on the same processor model with the same thread count "
            f"(fp32; the bf16 study's fp32 control retrained a kept run to the same digits). On another processor or "
            f"thread count, expect one model's AP within ±{num(model['half'], 1)} AP of the kept one and the "
            f"{difference['variant']} - {difference['against']} difference within ±{num(difference['setup']['half'], 1)} "
            f"AP (95%, measured from {len(difference['setup']['setups'])} setups of seed 0: the largest shifts were "
            f"{num(model['max_shift'], 2)} and {num(difference['setup']['max_shift'], 2)} AP). With that setup part, the "
            f"headline difference is {signed(difference['AP']['mean'])} AP, 95% interval "
            f"[{num(dec['total_low'])}, {num(dec['total_high'])}].")


# ---------------------------------------------------------------- tables: the paper's design choices
PAPER_TABLES = "benchmarks/paper_coco.json"  # the paper's COCO numbers, quoted as printed
REPO_LINK = "<repo>/"  # a link target from the repository root; block_text makes it relative to its page
SAME_COST_AS_BASELINE = "authors_code_scale_init"  # DSANet's computation with another init and scale


def paper_ap(paper: Dict[str, Any], table_number: int, row: str) -> float:
    """The paper's AP (a fraction of 1) in row ``row`` of its Table ``table_number``."""
    return paper["tables"][str(table_number)][row]


def _paper_configs(group: str) -> Callable[[Dict[str, Any]], str]:
    """A renderer of the configs of ``group`` in benchmarks/paper_coco.json beside the paper's row and AP."""
    def render(paper: Dict[str, Any]) -> str:
        rows = []
        for entry in paper["configs"][group]:
            links = " / ".join(f"[{c.get('label') or Path(c['path']).stem}]({REPO_LINK}{c['path']})"
                               for c in entry["configs"])
            quoted = entry.get("rows") or []
            rows.append([links, " / ".join(f"Table {q['table']}, {q['row']}" for q in quoted) or entry["note"],
                         " / ".join(f"{100 * paper_ap(paper, q['table'], q['row']):.1f}" for q in quoted) or "—"])
        return table(["config", "paper row", "paper AP"], rows)
    return render


def _paper_difference(paper: Dict[str, Any], name: str) -> Tuple[str, Optional[float]]:
    """(where in the paper, its COCO ΔAP x 100 against DSANet or None) for variant ``name``."""
    row, baseline = paper["variants"][name], paper["baseline"]
    if "row" not in row:
        return row["note"], None
    return (f"Table {row['table']}, {row['row']}",
            100 * (paper_ap(paper, row["table"], row["row"]) - paper_ap(paper, baseline["table"], baseline["row"])))


def _paired_over_seeds(diff: Optional[Dict[str, Any]]) -> bool:
    """Whether a difference record has its paired interval: two seeds or more of both variants."""
    return bool(diff and diff.get("AP") and diff["AP"]["n"] >= 2)


def _sign_verdict(paper_delta: Optional[float], low: float, high: float) -> str:
    """Whether the embedded benchmark's interval agrees in sign with the paper's difference."""
    here = 1 if low > 0 else -1 if high < 0 else 0
    if paper_delta is None:
        return "no paper number"
    if here == 0:
        return "undecided here (interval holds 0)"
    return "yes" if here * paper_delta > 0 else "no"


def _minutes(study: Dict[str, Any], name: str) -> Optional[float]:
    """Mean minutes per finished run of variant ``name`` (training and evaluation, as the study timed it)."""
    seconds = [run["seconds"] for run in study["runs"] if run["variant"] == name and run.get("metrics") and run.get("seconds")]
    return sum(seconds) / len(seconds) / 60 if seconds else None


def render_study_paper(study: Dict[str, Any]) -> str:
    """Each design choice of the paper's Tables 1-5 (and full-resolution P3): the paper's COCO ΔAP
    against DSANet beside this study's ΔAP with its interval (seeds part, validation part, total),
    whether the signs agree, what a run costs, and one sentence per choice."""
    paper = json.loads((REPO / PAPER_TABLES).read_text())
    baseline = study["variants"][0]["name"]
    against = {d["variant"]: d for d in study["differences"] if d["against"] == baseline}
    base_minutes = _minutes(study, baseline)
    rows, sentences, wide = [], [], []
    for name in (variant["name"] for variant in study["variants"][1:]):
        place, paper_delta = _paper_difference(paper, name)
        diff, minutes = against.get(name), _minutes(study, name)
        cost = "—" if minutes is None else f"{minutes:.0f}" + (f" ({minutes / base_minutes:.2f}x)" if base_minutes else "")
        paper_cell = "—" if paper_delta is None else signed(paper_delta, 1)
        if not _paired_over_seeds(diff):  # no finished pair yet, or one seed
            seeds = f"{signed(diff['AP']['mean'])} (1 seed)" if (diff or {}).get("AP") else ""
            rows.append([name, place, paper_cell, seeds or "pending", "—", "—", "—", "—", cost])
            continue
        ap, dec = diff["AP"], diff.get("decomposition") or {}
        low, high = _total_interval(diff)
        half = dec.get("total_half", (ap["ci_high"] - ap["ci_low"]) / 2)
        parts = (f"±{num(dec['training_half'])} / ±{num(dec['validation_half'])}"
                 + (f" / ±{num(dec['setup_half'])}" if dec.get("setup_half") else "")) if dec else "—"
        verdict = _sign_verdict(paper_delta, low, high)
        rows.append([name, place, paper_cell, f"{signed(ap['mean'])} ({per_seed_deltas(ap)})", parts,
                     f"[{num(low)}, {num(high)}]", verdict,
                     str(dec["needed"]["1.0"]["seeds"]) if dec else "—", cost])
        if half > 1.0:
            wide.append(f"{name} (±{num(half)}; the tool estimates {dec['needed']['1.0']['seeds']} seeds for ±1.0)"
                        if dec else f"{name} (±{num(half)})")
        sentences.append(_paper_sentence(name, baseline, place, paper_delta, ap["mean"], low, high, ap["n"]))
    paper_baseline = f"{paper['baseline']['row']}, Table {paper['baseline']['table']}"
    header = ["variant", "paper row", f"paper ΔAP (COCO, vs {paper_baseline})", f"ΔAP vs {baseline} here (per seed)",
              "± seeds / validation [/ setup] part", "total [95%]", "same sign as the paper",
              "seeds for ±1.0", f"minutes per run (x {baseline})"]
    text = table(header, rows)
    # The study's other pairs (--compare), e.g. one difference between two variants isolated.
    sentences += [_pair_sentence(paper, d) for d in study["differences"]
                  if d["against"] != baseline and _paired_over_seeds(d)]
    if sentences:
        text += "\n\n" + "\n".join(f"- {sentence}" for sentence in sentences)
    if wide:
        text += "\n\nWider than ±1.0 AP on a side: " + "; ".join(wide) + "."
    same_cost = _minutes(study, SAME_COST_AS_BASELINE)
    if same_cost and base_minutes:
        ratio = same_cost / base_minutes
        text += (f"\n\nTiming noise: {SAME_COST_AS_BASELINE} computes exactly what {baseline} computes per step "
                 f"(only its initialisation and attention scale differ), and its runs took {ratio:.2f}x "
                 f"as long: cost ratios between {min(ratio, 1 / ratio):.2f}x and {max(ratio, 1 / ratio):.2f}x are "
                 f"within the timing noise of this study (runs shared two cores with each other and, at times, "
                 f"with other work).")
    return text + "\n\n" + _paper_defaults(study, against)


def _verdict(name: str, against: str, low: float, high: float) -> str:
    """What an interval says of ``name`` against ``against``, as a clause (a variant's name keeps its case)."""
    if low > 0:
        return f"on the embedded benchmark, {name} is better than {against}"
    if high < 0:
        return f"on the embedded benchmark, {name} is worse than {against}"
    return f"the embedded benchmark does not tell {name} from {against}"


def _capitalized(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]  # str.capitalize() would lower a variant's name


def _measured(mean: float, low: float, high: float, seeds: int) -> str:
    return f"({signed(mean)} AP, 95% interval [{num(low)}, {num(high)}], {seeds} seeds)"


def _total_interval(diff: Dict[str, Any]) -> Tuple[float, float]:
    """A difference's total 95% interval (seeds, validation and setup parts), else its paired t-interval."""
    dec = diff.get("decomposition") or {}
    return (dec["total_low"], dec["total_high"]) if dec else (diff["AP"]["ci_low"], diff["AP"]["ci_high"])


def _paper_sentence(name: str, baseline: str, place: str, paper_delta: Optional[float], mean: float,
                    low: float, high: float, seeds: int) -> str:
    """One plain sentence on what a row shows."""
    here, measured = _verdict(name, baseline, low, high), _measured(mean, low, high, seeds)
    if name == "self_p3_p7_full_resolution":
        answer = "yes" if low > 0 else "no, it hurts" if high < 0 else "not measurably"
        return f"Does attending P3 at full resolution help here? {answer.capitalize()}: {here} {measured}."
    theirs = "; the paper does not report it" if paper_delta is None else \
        f"; the paper's COCO difference is {signed(paper_delta, 1)} AP ({place})"
    return _capitalized(f"{here} {measured}{theirs}.")


def _pair_sentence(paper: Dict[str, Any], diff: Dict[str, Any]) -> str:
    """One sentence on a pair of variants (``--compare``), with the paper's difference between their rows
    where it prints both."""
    name, against = diff["variant"], diff["against"]
    (place, delta), (other_place, other_delta) = (_paper_difference(paper, v) for v in (name, against))
    theirs = "" if delta is None or other_delta is None else \
        f"; the paper's COCO difference is {signed(delta - other_delta, 1)} AP ({place} minus {other_place})"
    low, high = _total_interval(diff)
    return _capitalized(f"{_verdict(name, against, low, high)} {_measured(diff['AP']['mean'], low, high, diff['AP']['n'])}"
                        f"{theirs}.")


def _paper_defaults(study: Dict[str, Any], against: Dict[str, Dict[str, Any]]) -> str:
    """The defaults rule (STUDIES.md): a default changes only where the alternative's paired 95% interval
    against the current default (``against``: variant -> its difference record against the baseline) lies
    entirely above 0 (here the total interval too). RetinaNet is the reference row, not an alternative;
    the rule waits until every variant has two seeds."""
    pending = [v["name"] for v in study["variants"][1:] if not _paired_over_seeds(against.get(v["name"]))]
    if pending:
        return ("**The defaults, by the rule:** applied once every variant has two seeds; still without them: "
                + ", ".join(pending) + ".")
    above = [name for name, d in against.items() if name != "retinanet" and d["AP"]["ci_low"] > 0
             and _total_interval(d)[0] > 0]
    if not above:
        return "**The defaults, by the rule:** none changes (no alternative's interval lies entirely above 0)."
    # The rule compares with a config's current default: the Demo configs default to DSANet-Conf, which this
    # study (without confidence, as the paper's Tables 1-5) does not train; COCO is not measured here.
    return ("**The defaults, by the rule:** no default changes yet. The interval lies entirely above 0 for "
            + ", ".join(above) + ", but against DSANet without confidence, which no config of this benchmark "
            "has as its default: the Demo configs (`configs/Demo/`) build DSANet-Conf, so the difference the rule "
            "asks for is the same choice with confidence minus DSANet-Conf ([the rule's question]"
            "(#the-rules-question-dsanet-against-the-demo-default), below). "
            "The COCO configs keep the paper's choice: this benchmark does not measure COCO.")


DEMO_STAR_CONFIG = "configs/Demo/dsanet_star_conf_synthetic_cpu.py"  # what `make demo` trains when the rule moves it


def render_study_default(study: Dict[str, Any]) -> str:
    """The rule's own question on the embedded benchmark: the study's second variant against its first,
    the Demo configs' default; the table of :func:`render_study` and the rule's verdict."""
    default, alternative = (variant["name"] for variant in study["variants"][:2])
    diff = next((d for d in study["differences"] if (d["variant"], d["against"]) == (alternative, default)), None)
    text = render_study(study) + "\n\n**The defaults, by the rule:** "
    if not _paired_over_seeds(diff):
        return text + "applied once both models have two seeds."
    low, high = _total_interval(diff)
    measured = _measured(diff["AP"]["mean"], low, high, diff["AP"]["n"])
    if low <= 0:
        return text + (f"the Demo default stays {default}: the interval of {alternative} minus {default} {measured} "
                       "does not lie entirely above 0.")
    return text + (f"the interval of {alternative} minus {default} {measured} lies entirely above 0, so `make demo` "
                   f"trains {alternative} (`{DEMO_STAR_CONFIG}`). The study configs keep {default}, the model every "
                   "kept study on these pages is measured against, and the COCO configs keep the paper's choice: "
                   "this benchmark does not measure COCO.")


class Table(NamedTuple):
    sources: Tuple[str, ...]
    render: Callable[..., str]


TABLES: Dict[str, Table] = {
    "attention": Table(("attention.json",), render_attention),
    "p3_budget": Table(("attention.json",), render_p3_budget),
    "speed_fp32": Table(("speed.json", "model_cost.json"), render_speed_fp32),
    "speed_bf16": Table(("speed.json",), render_speed_bf16),
    "speed_goals": Table(("speed.json",), render_speed_goals),
    "make_bench_summary": Table(("summary.json",), render_make_bench_summary),
    "profile_step": Table(("profile_step.json",), render_profile_step),
    "eval_memory": Table(("eval_memory.json",), render_eval_memory),
    "sizing_validation": Table(("sizing/bootstrap_sizes_train600.json", "sizing/bootstrap_sizes_train4000.json"),
                               render_sizing_validation),
    "sizing_training": Table(("sizing/training_size.json",), render_sizing_training),
    "pretrain_accuracy": Table(("pretrain_backbone/accuracy.json", "pretrain_backbone/pretrain_args.json"),
                               render_pretrain_accuracy),
    "study_first": Table(("study/results.json",), render_study_first),
    "study_benchmark": Table(("study_benchmark/results.json",), render_study),
    "study_benchmark_3seeds": Table(("study_benchmark/retinanet_dsanet_conf_3seeds/results.json",), render_study),
    "study_bf16": Table(("study_bf16/results.json",), render_study),
    "study_bf16_vs_fp32": Table(("study_bf16/bf16_vs_fp32.json",), render_bf16_vs_fp32),
    "study_fp32_control": Table(("study_bf16/fp32_control/results.json",
                                 "study_benchmark/retinanet_dsanet_conf_3seeds/results.json"), render_fp32_control),
    "study_fcos": Table(("study_fcos/results.json",), render_study),
    "study_finetune": Table(("study_finetune/results.json",), render_study),
    "study_setup": Table(("study_setup/results.json",), render_study_setup),
    "reproduction": Table(("study_setup/results.json",), render_reproduction),
    "study_small_custom": Table(("study_small_custom/results.json",), render_study_small_custom),
    "study_paper": Table(("study_paper/results.json",), render_study_paper),
    "study_default": Table(("study_default/results.json",), render_study_default),
    "paper_coco_configs": Table((f"../{Path(PAPER_TABLES).name}",), _paper_configs("coco")),
    "paper_ablation_configs": Table((f"../{Path(PAPER_TABLES).name}",), _paper_configs("ablations")),
}


def source_path(relative: str) -> str:
    """A table source's path from the repository root (sources are named from benchmarks/results/)."""
    return os.path.normpath(f"{RESULTS}/{relative}").replace(os.sep, "/")


# ---------------------------------------------------------------- pages
def pages(root: Path) -> List[Path]:
    """Every markdown file under ``root`` outside virtual environments, outputs and .git."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS and not d.startswith(".venv"))
        found += [Path(directory) / name for name in sorted(files) if name.endswith(".md")]
    return found


def block_text(name: str, page: Path, root: Path) -> str:
    """The generated contents of block ``name`` on ``page`` (the lines between the markers)."""
    if name not in TABLES:
        raise SystemExit(f"error: {page}: unknown table '{name}' (known: {', '.join(sorted(TABLES))})")
    spec = TABLES[name]
    sources = []
    for relative in spec.sources:
        path = source_path(relative)
        try:
            sources.append((path, json.loads((root / path).read_text())))
        except (OSError, ValueError) as error:
            raise SystemExit(f"error: table '{name}' on {page}: cannot read {path}: {error}")
    to_root = os.path.relpath(root, page.parent).replace(os.sep, "/")
    rendered = spec.render(*(data for _, data in sources)).replace(
        f"]({REPO_LINK}", "](" + ("" if to_root == "." else to_root + "/"))
    return rendered + "\n\n" + caption(sources, page, root) + "\n"


def process(root: Path, check: bool) -> List[str]:
    """Render (or with ``check``, compare) every block; return one message per disagreeing table."""
    problems = []
    for page in pages(root):
        text = page.read_text()
        if "<!-- render:" not in text:
            continue

        def replace(match: "re.Match[str]") -> str:
            wanted = block_text(match.group(2), page, root)
            if match.group(3) != wanted:
                diff = next((line for line in difflib.unified_diff(match.group(3).splitlines(), wanted.splitlines(),
                                                                   lineterm="", n=0)
                             if line[:1] in "+-" and line[:3] not in ("+++", "---")), "")
                problems.append(f"{page.relative_to(root)}: table '{match.group(2)}' differs from "
                                f"{', '.join(source_path(s) for s in TABLES[match.group(2)].sources)} "
                                f"(first differing line: {diff.strip()[:160]})")
            return match.group(1) + wanted + match.group(4)

        new = BLOCK.sub(replace, text)
        if not check and new != text:
            page.write_text(new)
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming every table whose page and JSON disagree")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    problems = process(args.root.resolve(), args.check)
    if args.check:
        for problem in problems:
            print(problem)
        if problems:
            print(f"{len(problems)} table(s) out of date: run python tools/render_docs.py")
            return 1
        print("every rendered table agrees with its JSON")
    else:
        print(f"rendered; {len(problems)} table(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
