"""Profile one training step (forward + backward + SGD step) of a model with torch.profiler and
print where its time goes: the step's wall time, the attention's forward and backward time and
share, and the operators with the most self time.

    python -m benchmarks.profile_step [--model DSANet-P3-P7] [--quick] [--output output/bench]

One untimed warm-up step runs first. The attention is recognised by its operators on each path:
the blockwise Function (``_BlockwiseAttention`` and its backward node), PyTorch's
``scaled_dot_product_attention`` (SDPA-padded) and its backward, and the dense path's ``bmm`` and
``softmax`` (which nothing else in these models calls) with their backward nodes. Profiling adds
overhead, so the step here is slower than in speed.py; the shares are what it is for.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import cli, machine, speed, timing
from benchmarks.models import FULL_IMAGE_SIZE, MODELS, QUICK_IMAGE_SIZE, synthetic_batch
from dsanet.fileio import write_json

# Profiler event names of the attention, per pass. Backward nodes appear as autograd engine events.
ATTENTION_FORWARD = ("_BlockwiseAttention", "aten::scaled_dot_product_attention", "aten::bmm", "aten::softmax")
ATTENTION_BACKWARD = ("_BlockwiseAttentionBackward", "ScaledDotProductFlashAttentionForCpuBackward0",
                      "ScaledDotProductEfficientAttentionBackward0", "BmmBackward0", "SoftmaxBackward0")
ENGINE_PREFIX = "autograd::engine::evaluate_function: "


def attention_seconds(events) -> Tuple[float, float]:
    """(forward, backward) seconds of the attention: outermost attention events only, so that the
    dense path's bmm inside the blockwise Function or inside a backward node is not counted twice."""
    forward = backward = 0.0
    for event in events:
        name = event.name
        if name.startswith(ENGINE_PREFIX) and name[len(ENGINE_PREFIX):] in ATTENTION_BACKWARD:
            backward += event.cpu_time_total / 1e6
        elif name in ATTENTION_FORWARD and not _inside_attention_or_backward(event):
            forward += event.cpu_time_total / 1e6
    return forward, backward


def _inside_attention_or_backward(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in ATTENTION_FORWARD or parent.name.startswith(ENGINE_PREFIX):
            return True
        parent = parent.cpu_parent
    return False


def profile_train_step(name: str, image_size, device: str = "cpu") -> Dict[str, Any]:
    """Warm up, then profile one training step of ``name`` (a key of benchmarks.models.MODELS)."""
    runner = speed.build_runner(name, MODELS[name].config, device)
    batch = synthetic_batch(image_size, 1, device=device)
    speed.train_step(runner, batch, device)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if timing.is_cuda(device) else [])
    with profile(activities=activities) as prof:
        wall = timing.time_call(lambda: speed.train_step(runner, batch, device), device)
    events = prof.key_averages()
    forward, backward = attention_seconds(prof.events())
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    return {
        "model": name, "image_size": list(image_size), "device": device, "wall_s": wall,
        "attention_forward_s": forward, "attention_backward_s": backward,
        "attention_share": (forward + backward) / wall,
        "top_self_cpu": [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in top],
    }


def print_profile(result: Dict[str, Any]) -> None:
    """The summary line and the top operators by self CPU time."""
    print(f"\n== {result['model']}: one training step, {result['image_size'][0]}x{result['image_size'][1]}, "
          f"{result['device']}, {torch.get_num_threads()} threads, under torch.profiler ==")
    print(f"step {result['wall_s']:.2f} s; attention forward {result['attention_forward_s']:.2f} s, "
          f"backward {result['attention_backward_s']:.2f} s: {100 * result['attention_share']:.0f}% of the step")
    rows = [[op["op"][:70], cli.fmt(op["self_s"], 3), op["calls"]] for op in result["top_self_cpu"]]
    print(cli.format_table(["operator (top 12 by self CPU time)", "self s", "calls"], rows))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: profile one step of each given model, print, write profile_step.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=sorted(MODELS),
                        help="model to profile (repeatable; default DSANet-P3-P7)")
    args = cli.parse_common_arguments(parser, argv)
    image_size = QUICK_IMAGE_SIZE if args.quick else FULL_IMAGE_SIZE
    results = []
    for name in args.model or ["DSANet-P3-P7"]:
        results.append(profile_train_step(name, image_size, args.device))
        print_profile(results[-1])
    write_json(args.output / "profile_step.json", {"profiles": results, "provenance": machine.record(args.device)})


if __name__ == "__main__":
    main()
