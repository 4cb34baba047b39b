"""Attention alone at each FPN level of an 800x1333 image: time and peak extra memory of the
dense, SDPA-padded and blockwise paths, forward and forward+backward, with the FLOPs of the math;
then the P3 memory budget of one whole DSA branch (``DSABlock(SelfAttention2d(256))``).

Time: in this process, the paths interleaved (ABCABC...), median and min-max of the rounds.
Memory: on CPU the rise of peak RSS (VmHWM) over one call in a fresh subprocess (after a small
warm-up); on CUDA ``max_memory_allocated`` over one call, in this process.

    python -m benchmarks.attention --output output/bench [--quick]
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks import cli, machine, memory, timing
from benchmarks.models import FULL_IMAGE_SIZE, QUICK_IMAGE_SIZE
from dsanet.fileio import write_json
from dsanet.modeling import DSABlock, SelfAttention2d
from benchmarks.attention_reference import ATTENTION_IMPLS, attention_path

LEVEL_STRIDES: Dict[str, int] = {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
# Compared paths (keys of benchmarks.attention_reference.ATTENTION_IMPLS); "auto" is what models run.
KINDS = ("dense", "sdpa_padded", "blockwise")
MODES = ("forward", "forward_backward")
CHANNELS = 256
QK_DIM = CHANNELS // 8
BUDGET_MB = 200.0  # one branch's forward+backward peak resident growth at P3 of 800x1333, in MB (1e6 bytes)
DENSE_COPIES = 3  # the dense path holds about this many L x L fp32 matrices at its peak (scores, softmax, grad)
WARMUP_LENGTH = 256  # positions of the warm-up call that loads kernels and starts threads
WARMUP_SIZE = (16, 16)  # the branch's warm-up map
MB = 1e6
BUDGET_MEASUREMENTS = 3  # fresh-process repeats of the resident P3 measurement (default malloc)


def level_shape(image_size: Tuple[int, int], stride: int) -> Tuple[int, int]:
    """(H, W) of the FPN level of the given stride: ceil(image / stride)."""
    return math.ceil(image_size[0] / stride), math.ceil(image_size[1] / stride)


def make_qkv(length: int, device: str = "cpu", seed: int = 0) -> List[torch.Tensor]:
    """q, k (1, L, C/8) and v (1, L, C), as SelfAttention2d hands them to the attention."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, length, width, generator=generator).to(device)
            for width in (QK_DIM, QK_DIM, CHANNELS)]


def make_attention_call(kind: str, qkv: Sequence[torch.Tensor], mode: str) -> Callable[[], None]:
    """A zero-argument call of one attention path: "forward" (no_grad) or "forward_backward"
    (q, k, v require grad; the output gradient is a preallocated tensor of ones)."""
    attend, scale = ATTENTION_IMPLS[kind], 1.0 / math.sqrt(QK_DIM)
    if mode == "forward":
        def call() -> None:
            with torch.no_grad():
                attend(*qkv, scale)
        return call
    for tensor in qkv:
        tensor.requires_grad_(True)
    grad_out = torch.ones_like(qkv[2])

    def call() -> None:
        for tensor in qkv:
            tensor.grad = None
        attend(*qkv, scale).backward(grad_out)
    return call


def build_branch(impl: str = "auto", channels: int = CHANNELS, device: str = "cpu") -> DSABlock:
    """One DSA branch with the given attention implementation (seeded weights)."""
    torch.manual_seed(0)
    return DSABlock(SelfAttention2d(channels, impl=impl)).to(device)


def make_branch_call(branch: DSABlock, x: torch.Tensor, grad_out: torch.Tensor) -> Callable[[], None]:
    """Forward+backward of a branch on x (which requires grad), from a preallocated output gradient."""
    x.requires_grad_(True)

    def call() -> None:
        x.grad = None
        branch.zero_grad(set_to_none=True)
        branch(x).backward(grad_out)
    return call


def dense_estimate_bytes(length: int) -> int:
    """Rough peak of the dense path: a few L x L fp32 matrices."""
    return DENSE_COPIES * length * length * 4


def available_memory_bytes(device: str) -> int:
    """Memory a measurement may use: free GPU memory, or MemAvailable from /proc/meminfo."""
    if timing.is_cuda(device):
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not found in /proc/meminfo")


def measure_memory_here(kind: str, mode: str, length: int, device: str) -> int:
    """Peak extra bytes of one attention call, measured in this process (fresh on CPU: see measure_memory)."""
    make_attention_call(kind, make_qkv(WARMUP_LENGTH, device), mode)()  # warm-up
    call = make_attention_call(kind, make_qkv(length, device), mode)  # inputs exist before: not counted
    return memory.peak_extra_memory(call, device)


def measure_memory(kind: str, mode: str, length: int, device: str, pin_malloc: bool = False) -> int:
    """Peak extra bytes of one attention call: in a fresh subprocess on CPU, in this process on CUDA."""
    if timing.is_cuda(device):
        return measure_memory_here(kind, mode, length, device)
    return memory.call_in_fresh_process("benchmarks.attention", "measure_memory_here", kind, mode, length,
                                        "cpu", pin_malloc=pin_malloc)


def measure_branch_memory_here(shape: Tuple[int, int], device: str) -> int:
    """Peak extra bytes of one branch's forward+backward at ``shape``; input and output gradient
    are allocated before the peak mark is reset, so they are not counted."""
    branch = build_branch(device=device)
    warm = torch.randn(1, CHANNELS, *WARMUP_SIZE, device=device)
    make_branch_call(branch, warm, torch.ones_like(warm))()
    x = torch.randn(1, CHANNELS, *shape, device=device)
    return memory.peak_extra_memory(make_branch_call(branch, x, torch.ones_like(x)), device)


def measure_branch_memory(shape: Tuple[int, int], device: str, pin_malloc: bool) -> int:
    """:func:`measure_branch_memory_here` in a fresh subprocess on CPU, in this process on CUDA."""
    if timing.is_cuda(device):
        return measure_branch_memory_here(shape, device)
    return memory.call_in_fresh_process("benchmarks.attention", "measure_branch_memory_here", tuple(shape),
                                        "cpu", pin_malloc=pin_malloc)


def attention_flops(batch: int, length_q: int, length_k: int, qk_dim: int, v_dim: int) -> int:
    """Multiply-adds of softmax(Q K^T) V's two matrix products: N * Lq * Lk * (D + C)."""
    return batch * length_q * length_k * (qk_dim + v_dim)


def executed_flops(kind: str, mode: str, length: int) -> int:
    """Multiply-adds each path runs (matmuls only): forward L^2 (D + C), forward+backward 3x that for
    the math; blockwise's backward recomputes Q K^T (+ L^2 D); SDPA-padded runs Q K^T at width C and
    recomputes it in backward."""
    d, c = (CHANNELS if kind == "sdpa_padded" else QK_DIM), CHANNELS
    forward = attention_flops(1, length, length, d, c)
    if mode == "forward":
        return forward
    backward = 2 * forward + (length * length * d if kind != "dense" else 0)
    return forward + backward


def run(output: Path, quick: bool = False, device: str = "cpu", repeats: Optional[int] = None) -> Dict[str, Any]:
    """Measure all levels, print the table and budget check, write attention.json and the plot."""
    started = time.perf_counter()
    image_size = QUICK_IMAGE_SIZE if quick else FULL_IMAGE_SIZE
    repeats = repeats or (2 if quick else 3)
    busy = machine.warn_if_busy("attention")
    available = available_memory_bytes(device)
    print(f"\n== Attention alone (q, k: 1 x L x {QK_DIM}; v: 1 x L x {CHANNELS}) per FPN level of a "
          f"{image_size[0]}x{image_size[1]} image, {device}; median and min-max of {repeats} interleaved "
          f"rounds ==", flush=True)

    rows: List[Dict[str, Any]] = []
    for level, stride in LEVEL_STRIDES.items():
        shape = level_shape(image_size, stride)
        length = shape[0] * shape[1]
        dense_fits = dense_estimate_bytes(length) <= available
        kinds = [k for k in KINDS if k != "dense" or dense_fits]
        for mode in MODES:
            qkv = make_qkv(length, device)
            times = timing.interleaved_times({k: make_attention_call(k, qkv, mode) for k in kinds}, repeats, device)
            del qkv
            for kind in KINDS:
                kind_times = times.get(kind, [])
                row = {"level": level, "height": shape[0], "width": shape[1], "length": length,
                       "kind": kind, "mode": mode, "auto_path": attention_path(torch.device(device).type, 1,
                                                                               length, length),
                       "math_flops": executed_flops("dense", mode, length),
                       "executed_flops": executed_flops(kind, mode, length),
                       "times_s": kind_times, "time_s": timing.median(kind_times),
                       "time_min_s": min(kind_times, default=None), "time_max_s": max(kind_times, default=None),
                       "peak_extra_mib": None, "skipped": None}
                if kind not in kinds:
                    row["skipped"] = (f"dense estimate {dense_estimate_bytes(length) / memory.MiB:.0f} MiB "
                                      f"> available {available / memory.MiB:.0f} MiB")
                elif mode == "forward_backward":
                    row["peak_extra_mib"] = measure_memory(kind, mode, length, device) / memory.MiB
                rows.append(row)
        print(f"  {level} {shape[0]}x{shape[1]} done ({time.perf_counter() - started:.0f} s)", flush=True)

    budget = check_budget(device)
    print_table(rows)
    for row in rows:
        if row["skipped"]:
            print(f"SKIPPED {row['kind']} {row['level']} {row['mode']}: {row['skipped']}")
    for line in budget["lines"]:
        print(line)
    plot_path = plot_memory(rows, output / "attention_memory.png", image_size)
    result = {
        "image_size": list(image_size), "channels": CHANNELS, "qk_dim": QK_DIM, "batch": 1, "device": device,
        "repeats": repeats, "quick": quick, "memory_method": memory_method(device),
        "flop_unit": "multiply-add", "rows": rows, "budget": budget, "plot": str(plot_path), "warning": busy,
        "provenance": machine.record(device), "elapsed_s": time.perf_counter() - started,
    }
    write_json(output / "attention.json", result)
    print(f"wrote {output / 'attention.json'} and {plot_path} ({result['elapsed_s']:.0f} s)", flush=True)
    return result


def memory_method(device: str) -> str:
    """How peak extra memory was measured, for the JSON."""
    if timing.is_cuda(device):
        return "torch.cuda.max_memory_allocated over one call minus memory_allocated before it"
    return ("rise of peak RSS (VmHWM, reset by writing 5 to /proc/self/clear_refs just before the call) over "
            "one call, in a fresh process (forked from a forkserver that only imported the modules) after a "
            "small warm-up, with glibc's default malloc; inputs and output gradient allocated before the reset")


def check_budget(device: str, measurements: int = BUDGET_MEASUREMENTS) -> Dict[str, Any]:
    """The P3 memory goal: one branch (auto path) at P3 of 800x1333, forward+backward, peak
    resident growth under BUDGET_MB (always the full-size P3, also in quick mode).

    On CPU it is measured ``measurements`` times, each in a fresh process, with glibc's default
    malloc (what the OS sees; it varies with the allocator's history, so the goal is judged on the
    largest), and once with glibc's mmap threshold pinned at 128 KiB, so that every large freed
    tensor goes back to the OS at once and the peak follows the live tensors.
    """
    shape = level_shape(FULL_IMAGE_SIZE, LEVEL_STRIDES["p3"])
    runs = 1 if timing.is_cuda(device) else measurements
    resident = [measure_branch_memory(shape, device, pin_malloc=False) for _ in range(runs)]
    worst = max(resident)
    passed = worst < BUDGET_MB * MB
    where = f"P3 {shape[0]}x{shape[1]}, one branch (auto path), forward+backward ({device})"
    each = ", ".join(f"{r / memory.MiB:.1f}" for r in resident)
    budget = {"level": "p3", "height": shape[0], "width": shape[1], "budget_mb": BUDGET_MB,
              "resident_mib_each": [r / memory.MiB for r in resident],
              "resident_mib": worst / memory.MiB, "resident_mb": worst / MB, "pass": passed,
              "lines": [f"BUDGET {where}: peak resident growth, largest of {runs} fresh processes "
                        f"{worst / memory.MiB:.1f} MiB ({worst / MB:.1f} MB; each: {each} MiB) "
                        f"vs budget {BUDGET_MB:.0f} MB: {'PASS' if passed else 'FAIL'}"]}
    if not timing.is_cuda(device):
        live = measure_branch_memory(shape, device, pin_malloc=True)
        budget.update(live_mib=live / memory.MiB, live_mb=live / MB)
        budget["lines"].append(f"       live tensors (glibc mmap threshold pinned at {memory.MMAP_THRESHOLD} bytes): "
                               f"{live / memory.MiB:.1f} MiB ({live / MB:.1f} MB)")
    return budget


def print_table(rows: Sequence[Dict[str, Any]]) -> None:
    """Per level and mode: each path's median time (min-max), GFLOP/s of the math, peak memory."""
    table = []
    for row in rows:
        if row["skipped"]:
            continue
        seconds = row["time_s"]
        table.append([
            row["level"], f"{row['height']}x{row['width']}", row["mode"], row["kind"],
            cli.fmt(row["math_flops"] / 1e9, 2),
            f"{cli.fmt(_ms(seconds), 1)} ({cli.fmt(_ms(row['time_min_s']), 1)}-"
            f"{cli.fmt(_ms(row['time_max_s']), 1)})",
            cli.fmt(row["math_flops"] / seconds / 1e9 if seconds else None, 1),
            cli.fmt(row["executed_flops"] / row["math_flops"], 2),
            cli.fmt(row["peak_extra_mib"], 1), row["auto_path"],
        ])
    print(cli.format_table(["level", "HxW", "mode", "path", "math GFLOP", "ms median (min-max)",
                               "math GFLOP/s", "executed/math", "peak MiB", "auto picks"], table))


def _ms(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else seconds * 1e3


def plot_memory(rows: Sequence[Dict[str, Any]], path: Path, image_size: Tuple[int, int]) -> Path:
    """Log-log plot of forward+backward peak extra memory versus H*W, one line per path."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for kind, color in (("blockwise", "tab:blue"), ("sdpa_padded", "tab:green"), ("dense", "tab:red")):
        points = sorted((r["length"], r["peak_extra_mib"]) for r in rows
                        if r["kind"] == kind and r["mode"] == "forward_backward" and r["peak_extra_mib"])
        if points:
            ax.plot(*zip(*points), "-o", color=color, label=kind)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for length in sorted({r["length"] for r in rows}):
        level = next(r["level"] for r in rows if r["length"] == length)
        # x in data coordinates, y in axes fraction: the label sits at the bottom whatever the scale
        ax.annotate(level.upper(), (length, 0.02), xycoords=("data", "axes fraction"), ha="center",
                    fontsize=8, color="gray")
    ax.set_xlabel("H*W (positions of the level)")
    ax.set_ylabel("peak resident growth, forward+backward (MiB)")
    ax.set_title(f"Attention alone (D={QK_DIM}, C={CHANNELS}) per level of {image_size[0]}x{image_size[1]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed interleaved rounds (default 3, quick 2)")
    args = cli.parse_common_arguments(parser, argv)
    run(args.output, quick=args.quick, device=args.device, repeats=args.repeats)


if __name__ == "__main__":
    main()
