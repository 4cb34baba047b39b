"""One DSA branch (``DSABlock(SelfAttention2d(256))``) at each FPN level of an 800x1333 image:
time and peak extra memory, forward and forward+backward, fused versus dense attention.

Time: in this process, fused and dense interleaved (ABAB...), median of repeats.
Memory: on CPU the rise of peak RSS over one call in a fresh subprocess (after a small warm-up);
on CUDA ``max_memory_allocated`` over one call, in this process.

    python benchmarks/attention.py --output output/bench [--quick]
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import `benchmarks` from the repository root instead
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks import common
from dsanet.modeling import DSABlock, SelfAttention2d

LEVEL_STRIDES: Dict[str, int] = {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
KINDS = ("fused", "dense")
MODES = ("forward", "forward_backward")
CHANNELS = 256
BUDGET_MIB = 200.0  # fused forward+backward peak extra memory at P3 of 800x1333, on CPU
DENSE_COPIES = 3  # the dense path holds about this many L x L fp32 matrices at its peak (scores, softmax, grad)
WARMUP_SIZE = (16, 16)  # small map for the warm-up call that loads kernels and starts threads


def level_shape(image_size: Tuple[int, int], stride: int) -> Tuple[int, int]:
    """(H, W) of the FPN level of the given stride: ceil(image / stride)."""
    return math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride)


def build_branch(kind: str, channels: int = CHANNELS, device: str = "cpu") -> DSABlock:
    """One DSA branch with fused or dense self-attention (same seeded weights for both)."""
    torch.manual_seed(0)
    return DSABlock(SelfAttention2d(channels, fused=(kind == "fused"))).to(device)


def make_call(branch: DSABlock, x: torch.Tensor, mode: str) -> Callable[[], None]:
    """A zero-argument call of the branch on x: "forward" (no_grad, as at inference) or
    "forward_backward" (as in training: x requires grad, gradients start from None each call)."""
    if mode == "forward":
        def call() -> None:
            with torch.no_grad():
                branch(x)
        return call

    x.requires_grad_(True)

    def call() -> None:
        x.grad = None
        branch.zero_grad(set_to_none=True)
        branch(x).sum().backward()  # the gradient of sum() is an expanded scalar: no extra L x C tensor
    return call


def dense_estimate_bytes(length: int) -> int:
    """Rough peak of the dense path: a few L x L fp32 matrices."""
    return DENSE_COPIES * length * length * 4


def available_memory_bytes(device: str) -> int:
    """Memory a measurement may use: free GPU memory, or MemAvailable from /proc/meminfo."""
    if common.is_cuda(device):
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not found in /proc/meminfo")


def measure_memory_here(kind: str, mode: str, shape: Tuple[int, int], device: str) -> int:
    """Peak extra bytes of one call, measured in this process (a fresh one on CPU: see measure_memory)."""
    branch = build_branch(kind, device=device)
    make_call(branch, torch.randn(1, CHANNELS, *WARMUP_SIZE, device=device), mode)()  # warm-up
    x = torch.randn(1, CHANNELS, *shape, device=device)  # the input exists before the call: not counted
    if mode == "forward_backward":
        x.requires_grad_(True)
    return common.peak_extra_memory(make_call(branch, x, mode), device)


def measure_memory(kind: str, mode: str, shape: Tuple[int, int], device: str, pin_malloc: bool = True) -> int:
    """Peak extra bytes of one call: in a fresh subprocess on CPU, in this process on CUDA."""
    if common.is_cuda(device):
        return measure_memory_here(kind, mode, shape, device)
    return common.call_in_fresh_process("benchmarks.attention", "measure_memory_here", kind, mode, tuple(shape),
                                        "cpu", pin_malloc=pin_malloc)


def run(output: Path, quick: bool = False, device: str = "cpu", repeats: Optional[int] = None) -> Dict[str, Any]:
    """Measure all levels, print the table and budget check, write attention.json and the plot."""
    started = time.perf_counter()
    image_size = common.QUICK_IMAGE_SIZE if quick else common.FULL_IMAGE_SIZE
    repeats = repeats or (2 if quick else 5)
    busy = common.warn_if_busy("attention")
    available = available_memory_bytes(device)
    print(f"\n== One DSA branch per FPN level of a {image_size[0]}x{image_size[1]} image, C={CHANNELS}, "
          f"batch 1, {device}; median of {repeats} interleaved repeats ==", flush=True)

    rows: List[Dict[str, Any]] = []
    for level, stride in LEVEL_STRIDES.items():
        shape = level_shape(image_size, stride)
        length = shape[0] * shape[1]
        dense_fits = dense_estimate_bytes(length) <= available
        kinds = [k for k in KINDS if k == "fused" or dense_fits]
        for mode in MODES:
            branches = {kind: build_branch(kind, device=device) for kind in kinds}
            x = torch.randn(1, CHANNELS, *shape, device=device)
            times = common.interleaved_times({k: make_call(b, x, mode) for k, b in branches.items()},
                                             repeats, device)
            del branches, x
            for kind in KINDS:
                row = {"level": level, "height": shape[0], "width": shape[1], "length": length,
                       "kind": kind, "mode": mode, "times_s": times.get(kind, []),
                       "time_s": common.median(times.get(kind, [])), "peak_extra_mib": None, "skipped": None}
                if kind not in kinds:
                    row["skipped"] = (f"dense estimate {dense_estimate_bytes(length) / common.MiB:.0f} MiB "
                                      f"> available {available / common.MiB:.0f} MiB")
                else:
                    row["peak_extra_mib"] = measure_memory(kind, mode, shape, device) / common.MiB
                rows.append(row)
        print(f"  {level} {shape[0]}x{shape[1]} done ({time.perf_counter() - started:.0f} s)", flush=True)

    budget = check_budget(rows, quick, device)
    print_table(rows)
    for row in rows:
        if row["skipped"]:
            print(f"SKIPPED dense {row['level']} {row['mode']}: {row['skipped']}")
    print(budget["line"])
    if budget.get("default_malloc_line"):
        print(budget["default_malloc_line"])
    plot_path = plot_memory(rows, output / "attention_memory.png", image_size)
    result = {
        "image_size": list(image_size), "channels": CHANNELS, "batch": 1, "device": device,
        "repeats": repeats, "quick": quick, "memory_method": memory_method(device),
        "rows": rows, "budget": budget, "plot": str(plot_path), "warning": busy,
        "machine": common.machine_info(device), "elapsed_s": time.perf_counter() - started,
    }
    common.write_json(output / "attention.json", result)
    print(f"wrote {output / 'attention.json'} and {plot_path} ({result['elapsed_s']:.0f} s)", flush=True)
    return result


def memory_method(device: str) -> str:
    """How peak extra memory was measured, for the JSON."""
    if common.is_cuda(device):
        return "torch.cuda.max_memory_allocated over one call minus memory_allocated before it"
    return ("rise of peak RSS (VmHWM, mark reset via /proc/self/clear_refs) over one call, in a fresh process "
            f"(forked from a forkserver that only imported the modules) after a {WARMUP_SIZE[0]}x{WARMUP_SIZE[1]} "
            f"warm-up, with glibc's mmap threshold pinned at {common.MMAP_THRESHOLD} bytes")


def check_budget(rows: Sequence[Dict[str, Any]], quick: bool, device: str) -> Dict[str, Any]:
    """PASS/FAIL of the fused forward+backward peak at P3 of a full 800x1333 image against BUDGET_MIB.

    In quick mode the table's P3 is smaller, so the full-size P3 is measured once more here.
    On CPU the same measurement with glibc's default (dynamic) malloc is reported beside it.
    """
    shape = level_shape(common.FULL_IMAGE_SIZE, LEVEL_STRIDES["p3"])
    if quick:
        peak = measure_memory("fused", "forward_backward", shape, device) / common.MiB
    else:
        peak = next(r["peak_extra_mib"] for r in rows
                    if r["level"] == "p3" and r["kind"] == "fused" and r["mode"] == "forward_backward")
    passed = peak < BUDGET_MIB
    budget = {
        "level": "p3", "height": shape[0], "width": shape[1], "peak_extra_mib": peak, "budget_mib": BUDGET_MIB,
        "pass": passed,
        "line": (f"BUDGET P3 {shape[0]}x{shape[1]} fused forward+backward peak extra memory ({device}): "
                 f"{peak:.1f} MiB ({peak * common.MiB / 1e6:.1f} MB) vs budget {BUDGET_MIB:.0f} MiB: "
                 f"{'PASS' if passed else 'FAIL'}"),
    }
    if not common.is_cuda(device):
        default = measure_memory("fused", "forward_backward", shape, device, pin_malloc=False) / common.MiB
        budget["peak_extra_mib_default_malloc"] = default
        budget["default_malloc_line"] = (
            f"      same with glibc's default dynamic mmap threshold (allocator caching counted too): "
            f"{default:.1f} MiB ({default * common.MiB / 1e6:.1f} MB), "
            f"{'under' if default < BUDGET_MIB else 'over'} budget")
    return budget


def print_table(rows: Sequence[Dict[str, Any]]) -> None:
    """Per level and mode: fused and dense time and memory, and dense/fused ratios."""
    table = []
    for level in LEVEL_STRIDES:
        for mode in MODES:
            pick = {r["kind"]: r for r in rows if r["level"] == level and r["mode"] == mode}
            fused, dense = pick["fused"], pick["dense"]
            table.append([
                level, f"{fused['height']}x{fused['width']}", fused["length"], mode,
                common.fmt(_ms(fused["time_s"]), 1), common.fmt(_ms(dense["time_s"]), 1),
                common.fmt(common.ratio(dense["time_s"], fused["time_s"]), 2),
                common.fmt(fused["peak_extra_mib"], 1),
                "skipped" if dense["skipped"] else common.fmt(dense["peak_extra_mib"], 1),
                common.fmt(common.ratio(dense["peak_extra_mib"], fused["peak_extra_mib"]), 1),
            ])
    print(common.format_table(["level", "HxW", "L", "mode", "fused ms", "dense ms", "dense/fused time",
                               "fused MiB", "dense MiB", "dense/fused mem"], table))


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else seconds * 1e3


def plot_memory(rows: Sequence[Dict[str, Any]], path: Path, image_size: Tuple[int, int]) -> Path:
    """Log-log plot of peak extra memory versus H*W, fused and dense, both modes."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for kind, color in (("fused", "tab:blue"), ("dense", "tab:red")):
        for mode, style in (("forward_backward", "-o"), ("forward", "--s")):
            points = sorted((r["length"], r["peak_extra_mib"]) for r in rows
                            if r["kind"] == kind and r["mode"] == mode and r["peak_extra_mib"])
            if points:
                ax.plot(*zip(*points), style, color=color, label=f"{kind} {mode.replace('_', '+')}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for length in sorted({r["length"] for r in rows}):
        level = next(r["level"] for r in rows if r["length"] == length)
        # x in data coordinates, y in axes fraction: the label sits at the bottom whatever the scale
        ax.annotate(level.upper(), (length, 0.02), xycoords=("data", "axes fraction"), ha="center",
                    fontsize=8, color="gray")
    ax.set_xlabel("H*W (positions of the level)")
    ax.set_ylabel("peak extra memory (MiB)")
    ax.set_title(f"One DSA branch (C={CHANNELS}) per level of {image_size[0]}x{image_size[1]}: dense vs fused")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: run the benchmark."""
    parser = common.add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 2)")
    args = parser.parse_args(argv)
    common.apply_threads(args.threads)
    run(args.output, quick=args.quick, device=args.device, repeats=args.repeats)


if __name__ == "__main__":
    main()
