"""Tables of the cost benchmarks (``benchmarks/``): attention per level, the P3 memory budget, speed in
fp32 and bf16, the ``make bench`` summary, the profiled step and evaluation memory. Goals are shown as
each file's own pass flag; nothing here judges a number."""
from typing import Any, Dict, List, Tuple

from .format import met, milliseconds, spread, table

# Display labels of the benchmarks' model keys where the key alone does not say which levels carry DSA.
LABELS = {"DSANet": "DSANet (P4-P7)", "DSANet-P3half": "DSANet, P3 half resolution",
          "DSANet-P3-P7": "DSANet, full-resolution P3-P7", "DSA-FCOS": "DSA-FCOS (P4-P7)"}
ATTENTION_KINDS = ("dense", "sdpa_padded", "blockwise")


def label(name: str) -> str:
    """A benchmark model's label on the pages."""
    return LABELS.get(name, name)


def _attention_cell(row: Dict[str, Any]) -> str:
    """``median (min-max)`` milliseconds, and the extra peak memory where measured."""
    if row.get("skipped"):
        return "skipped"
    text = f"{milliseconds(row['time_s'])} ({milliseconds(row['time_min_s'])}-{milliseconds(row['time_max_s'])})"
    if row.get("peak_extra_mib") is not None:
        text += f", {row['peak_extra_mib']:.1f} MiB"
    return text


def attention(data: Dict[str, Any]) -> str:
    """One row per level and pass (forward and backward first), one column per attention kind."""
    cells: Dict[Tuple[str, str], Dict[str, Any]] = {}
    info: Dict[str, Dict[str, Any]] = {}
    for row in data["rows"]:
        info.setdefault(row["level"], row)
        cells.setdefault((row["level"], row["mode"]), {"_flops": row["math_flops"]})[row["kind"]] = _attention_cell(row)
    rows = []
    for level, mode in sorted(cells, key=lambda key: (key[0], key[1] != "forward_backward")):
        first, row = mode == "forward_backward", info[level]
        rows.append([level.upper() if first else "", f"{row['height']}x{row['width']}" if first else "",
                     row["auto_path"] if first else "", "fwd+bwd" if first else "forward",
                     f"{cells[level, mode]['_flops'] / 1e9:.2f}",
                     *(cells[level, mode].get(kind, "—") for kind in ATTENTION_KINDS)])
    return table(["level", "H x W", "auto", "pass", "math GFLOP", "dense", "SDPA-padded", "blockwise"], rows)


def p3_budget(data: Dict[str, Any]) -> str:
    """The P3 attention's resident memory against its budget."""
    budget = data["budget"]
    each = ", ".join(f"{value:.1f}" for value in budget["resident_mib_each"])
    return table(["measure", "value"], [
        ["level, positions", f"{budget['level'].upper()}, {budget['height']}x{budget['width']}"],
        [f"peak resident growth, largest of {len(budget['resident_mib_each'])} fresh processes",
         f"{budget['resident_mib']:.1f} MiB ({budget['resident_mb']:.1f} MB); each: {each} MiB"],
        ["budget", f"{budget['budget_mb']:.0f} MB"],
        ["verdict", met(budget["pass"])],
        ["live tensors (glibc mmap threshold pinned)", f"{budget['live_mib']:.1f} MiB ({budget['live_mb']:.1f} MB)"],
    ])


def _fp32_row(name: str, run: Dict[str, Any], model: Dict[str, Any]) -> List[str]:
    is_base = run["baseline"] == name

    def ratio(key: str) -> str:
        return "1.000" if is_base else spread(run[key], run[key + "_min"], run[key + "_max"])

    return [label(name), run["baseline"], f"{model['params'] / 1e6:.2f} M", f"{model['flops'] / 1e9:.1f}",
            f"{run['flop_ratio']:.3f}", f"{run['train_s']:.2f} s", ratio("train_step_ratio"),
            ratio("train_step_ratio_over_flop_ratio"), f"{run['inference_s']:.2f} s",
            ratio("inference_ratio"), ratio("inference_ratio_over_flop_ratio")]


def speed_fp32(speed: Dict[str, Any], cost: Dict[str, Any]) -> str:
    """fp32 step times on CPU beside each model's size and FLOPs (``model_cost.json``)."""
    rows = [_fp32_row(name, run, cost["models"][name]) for name, run in speed["cpu"].items()]
    return table(["model", "baseline", "params", "GFLOPs", "FLOP ratio", "train step", "train ratio", "train / FLOP",
                  "inference", "inference ratio", "inference / FLOP"], rows)


def _range(run: Dict[str, Any], key: str, digits: int = 3) -> str:
    return spread(run[key], run[key + "_min"], run[key + "_max"], digits)


def speed_bf16(speed: Dict[str, Any]) -> str:
    """bf16 step times against the fp32 baseline, or the file's reason for not measuring them."""
    bf16 = speed["cpu_bf16"]
    if not isinstance(bf16, dict):
        return f"bf16 not measured: {bf16}"
    rows = [[label(name), f"{run['train_s']:.2f} s", _range(run, "train_step_ratio"), _range(run, "train_speedup", 2),
             f"{run['inference_s']:.2f} s", _range(run, "inference_ratio"), _range(run, "inference_speedup", 2)]
            for name, run in bf16.items()]
    return table(["model", "bf16 train step", "train ratio vs fp32 baseline", "train speed-up", "bf16 inference",
                  "inference ratio vs fp32 baseline", "inference speed-up"], rows)


def goals(entries: List[Dict[str, Any]]) -> str:
    """Each goal the benchmark states, its measured median and range, and the file's pass flag."""
    rows = [[goal["goal"], spread(goal["value"], goal["min"], goal["max"]), met(goal["pass"])] for goal in entries]
    return table(["goal (judged on the fp32 median)", "median (min-max)", "verdict"], rows)


def goal_line(entries: List[Dict[str, Any]]) -> str:
    """Each goal and the file's pass flag in one line, where a table above already shows its numbers."""
    return "Goals (judged on the fp32 median): " + "; ".join(f"{goal['goal']}: {met(goal['pass'])}"
                                                              for goal in entries) + "."


def speed_goals(speed: Dict[str, Any]) -> str:
    return goals(speed["goals"])


def make_bench_summary(summary: Dict[str, Any]) -> str:
    """``make bench``'s summary: ratios per model with their spread, then its goals' verdicts (each goal's
    number is one of the table's ratios)."""
    rows = []
    for name, model in summary["models"].items():
        def ratio(key: str) -> str:
            low, high = model[key + "_spread"]
            return spread(model[key], low, high)

        rows.append([label(name), f"{model['flop_ratio']:.3f}", ratio("train_step_ratio"),
                     ratio("train_step_ratio_over_flop_ratio"), ratio("inference_ratio"),
                     ratio("inference_ratio_over_flop_ratio")])
    return (table(["model", "FLOP ratio", "train ratio", "train / FLOP", "inference ratio", "inference / FLOP"], rows)
            + "\n\n" + goal_line(summary["goals"]))


def profile_step(profile: Dict[str, Any]) -> str:
    """Per profiled model: the step and the attention's share, then the top operators by self time."""
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


def eval_memory(memory: Dict[str, Any]) -> str:
    """Resident memory over a long COCO evaluation against the bound the benchmark states."""
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
    ]) + f"\n\nGrowth within the bound: {'yes' if memory['flat'] else 'no'}."
