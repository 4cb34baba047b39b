#!/usr/bin/env python
"""Does the project work on this CUDA machine, and what does it cost? One command, about 5 minutes.

    python tools/gpu_check.py [--output output/gpu_check/gpu_check.json] [--time-limit 300]
    python tools/gpu_check.py --cpu-smoke      # the same steps on the CPU at tiny sizes (the suite's test)

It runs the steps of ``benchmarks.gpu_check`` (environment, the suite's CUDA tests, attention paths
and accuracy, train_net.py, the benchmark), records each in a JSON with ``dsanet_lab.provenance``,
prints them as tables and judges the goals (projects/DSANet/docs/GPU.md). Its exit status is 0 when
every step ran and its checks passed. Without a CUDA device it prints one line and exits with status 3.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA_STATUS = 3


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/gpu_check/gpu_check.json", help="the JSON to write")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every step on the CPU at tiny sizes (tests the tool, measures nothing)")
    parser.add_argument("--time-limit", type=float, default=300.0,
                        help="seconds for the whole check; the benchmark takes what the other steps leave")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 3; smoke 1)")
    parser.add_argument("--train-iterations", type=int, default=None, help="train_net.py iterations (default 20; smoke 2)")
    return parser.parse_args(argv)


def _fmt(value: Any, digits: int = 3) -> str:
    """A float to ``digits`` significant digits, None as "-", anything else as itself."""
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def print_table(result: Dict[str, Any]) -> None:
    """The environment, each step's status, then the attention, training and benchmark tables and the goals."""
    from benchmarks.cli import format_table

    env = result.get("environment") or {}
    gpu = env.get("gpu") or {}
    print(f"GPU check{' (CPU smoke: tiny sizes, nothing measured)' if result['smoke'] else ''}")
    print(f"  GPU {gpu.get('name', '-')} ({gpu.get('memory_gib', '-')} GiB), driver {env.get('driver')}, "
          f"torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}")
    print(f"  detectron2 {env.get('detectron2')} (compiled ops {'present' if env.get('detectron2_compiled_ops') else 'absent'}),"
          f" dsanet {env.get('dsanet')}")
    for name, step in result["steps"].items():
        print(f"  step {name:<12} {step['status']:<8} {step['seconds']:>7.1f} s  {step.get('error', '')[:200]}")
    tests = result.get("cuda_tests")
    if tests:
        print(f"CUDA tests ({', '.join(tests['files'])}): {tests['passed']} passed, {tests['failed']} failed, "
              f"{tests['errors']} errors, {tests['skipped']} skipped")
    att = result.get("attention")
    if att:
        print("Attention path per level (batch: path): " + "; ".join(
            f"{p['level']} {p['map'][0]}x{p['map'][1]} b{p['batch']}: {p['path']}" for p in att["paths"]))
        keys = ("out", "grad_q", "grad_k", "grad_v")
        print(format_table(["level", "dtype", "path", "eff. kernel", *keys, "tol", "ok"], [
            [r["level"], r["dtype"], r["path"], r["efficient_kernel"], *(f"{r[k]:.2e}" for k in keys),
             f"{r['tolerance']:.0e}", "yes" if r["within"] else "NO"] for r in att["accuracy"]]))
    train = result.get("training")
    if train:
        print(f"train_net.py: {train['iterations']}/{train['expected_iterations']} iterations, losses finite "
              f"{train['losses_finite']}, checkpoint {train['checkpoint_written']}, ten numbers: "
              + " ".join(f"{k}={_fmt(v)}" for k, v in train["ten_numbers"].items()))
    if result.get("benchmark"):
        print(format_table(["batch", "prec", "model", "step s", "img/s", "ratio", "infer s", "ratio", "peak GiB",
                            "ratio"], _benchmark_rows(result["benchmark"]["configs"])))
    if result.get("memory_against_cpu_estimate"):
        print("Peak memory at 2 images per GPU against the CPU's estimate (benchmarks/results/gpu_memory.json):")
        print(format_table(["model", "prec", "CUDA peak GiB", "CPU estimate GiB", "ratio"],
                           [[r["model"], r["precision"], r["cuda_peak_gib"], r["cpu_estimate_gib"], _fmt(r["ratio"])]
                            for r in result["memory_against_cpu_estimate"]]))
    for name, goal in result.get("goals", {}).items():
        verdict = {True: "met", False: "NOT met", None: "not judged"}[goal["met"]]
        limit = f" (limit {goal['limit']})" if "limit" in goal else ""
        print(f"goal {name}: {_fmt(goal['value'])}{limit}: {verdict}")


def _benchmark_rows(configs: List[Dict[str, Any]]) -> List[List[Any]]:
    """One row per (batch, precision, model); a skipped configuration or an out-of-memory model says so."""
    rows = []
    for config in configs:
        first = [config["batch"], config["precision"]]
        if "skipped" in config:
            rows.append(first + [f"skipped ({config['skipped']})"] + [None] * 7)
            continue
        for name, m in config["models"].items():
            columns = ["out of memory"] + [None] * 6 if m["oom"] else [_fmt(m[k]) for k in (
                "train_step_s", "images_per_s", "train_ratio", "inference_latency_s", "inference_ratio",
                "peak_gib", "memory_ratio")]
            rows.append(first + [name] + columns)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to torch "
              f"{torch.__version__} (CUDA {torch.version.cuda}); nothing to check (--cpu-smoke tests the tool on the CPU)",
              file=sys.stderr)
        return NO_CUDA_STATUS
    sys.path.insert(0, str(ROOT))  # the measuring is the lab's, in benchmarks/ at the repository root
    try:
        from benchmarks import gpu_check  # imports dsanet first (the detectron2 compatibility shims)
    except ImportError as e:
        print(f"gpu_check: {e}: install the project first (projects/DSANet/docs/GPU.md), or run with PYTHONPATH=projects/DSANet",
              file=sys.stderr)
        return 2
    result = gpu_check.run(gpu_check.Settings(args.cpu_smoke, args.time_limit, args.rounds, args.train_iterations))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_table(result)
    print(f"wrote {output}")
    return 0 if gpu_check.passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())
