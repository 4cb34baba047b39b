"""Run every benchmark in order (attention, model_cost, speed) and write summary.json.

    python -m benchmarks.run_all --output output/bench [--quick]

summary.json maps each model name to its baseline, params, flops, flop_ratio, and train_step_ratio
and inference_ratio (against its baseline, RetinaNet R50 for every model today: the median of
per-round ratios, with their min-max spread and the ratio over the FLOP ratio), fp32; on a CPU
with native bf16 also its "bf16" entry (bf16 autocast time ratios against the fp32 baseline and
its bf16 speed-up over its own fp32 time, per round); plus the goals (fp32), the P3 memory
budget and the provenance (command, date, machine record with CPU model and flags, load).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from benchmarks import attention, cli, machine, model_cost, speed
from benchmarks.models import BASELINE, check_models
from dsanet.fileio import write_json


def build_summary(costs: Mapping[str, Any], speed_result: Mapping[str, Any], device: str,
                  settings: Mapping[str, Any]) -> Dict[str, Any]:
    """summary.json: per model params/flops/ratios, the goals, and the provenance."""
    main = speed_result["cpu"] if isinstance(speed_result["cpu"], dict) else speed_result["gpu"]["batch2_fp32"]
    bf16 = speed_result.get("cpu_bf16")
    models = {}
    for name, spec in check_models().items():
        cost, timing = costs["models"][name], main.get(name, {})
        models[name] = {"baseline": spec.baseline, "params": cost["params"], "flops": cost["flops"],
                        "flop_ratio": cost["flop_ratio"]}
        for key in ("train_step_ratio", "inference_ratio"):
            models[name].update(_spread(timing, key))
            models[name].update({
                f"{key}_over_flop_ratio": timing.get(f"{key}_over_flop_ratio"),
                f"{key}_over_flop_ratio_spread": [timing.get(f"{key}_over_flop_ratio_min"),
                                                  timing.get(f"{key}_over_flop_ratio_max")]})
        if isinstance(bf16, dict):
            row = bf16.get(name, {})
            models[name]["bf16"] = {"train_s": row.get("train_s"), "inference_s": row.get("inference_s")}
            for key in ("train_step_ratio", "inference_ratio", "train_speedup", "inference_speedup"):
                models[name]["bf16"].update(_spread(row, key))
    return {"models": models, "baseline": BASELINE, "flop_unit": costs["flop_unit"],
            "image_size": costs["image_size"], "timing": speed_result["main"],
            "bf16": _bf16_note(bf16), "goals": speed_result["goals"],
            "provenance": machine.record(device), **settings}


def _spread(row: Mapping[str, Any], key: str) -> Dict[str, Any]:
    """key (the median), key_spread [min, max] and key_rounds (how many rounds) of a speed row."""
    return {key: row.get(key), f"{key}_spread": [row.get(f"{key}_min"), row.get(f"{key}_max")],
            f"{key}_rounds": len(row.get(f"{key}_rounds", []))}


def _bf16_note(bf16: Any) -> str:
    """What the models' "bf16" entries are, or why there are none (the speed run's skip reason)."""
    if isinstance(bf16, dict):
        return ("measured: CPU bf16 autocast in the fp32 rounds; per model, train_step_ratio and inference_ratio "
                "against its fp32 baseline, train_speedup and inference_speedup = its fp32 time / its bf16 time")
    return bf16 or "not measured"


def run(output: Path, quick: bool = False, device: str = "cpu") -> Dict[str, Any]:
    """All three benchmarks, then summary.json; returns the summary."""
    started = time.perf_counter()
    elapsed: Dict[str, float] = {}
    stage = time.perf_counter()
    attention_result = attention.run(output, quick=quick, device=device)
    elapsed["attention"] = time.perf_counter() - stage
    stage = time.perf_counter()
    costs = model_cost.run(output, quick=quick, device=device)
    elapsed["model_cost"] = time.perf_counter() - stage
    stage = time.perf_counter()
    speed_result = speed.run(output, quick=quick, device=device, costs=costs["models"])
    elapsed["speed"] = time.perf_counter() - stage
    elapsed["total"] = time.perf_counter() - started
    summary = build_summary(costs, speed_result, device, {
        "quick": quick, "elapsed_s": elapsed,
        "attention_budget": {k: v for k, v in attention_result["budget"].items() if k != "lines"},
    })
    path = write_json(output / "summary.json", summary)
    print(f"\nwrote {path}; elapsed: " + ", ".join(f"{k} {v:.0f} s" for k, v in elapsed.items()), flush=True)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: run everything."""
    cli.main_from_command_line(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
