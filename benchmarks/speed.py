"""Training-step time and inference latency of RetinaNet and the DSANet variants (R50), as ratios
to each model's baseline (RetinaNet; see benchmarks.models.MODELS), with each model's FLOP ratio beside them.

All models live in one process and are timed in interleaved rounds (every round runs each model
once, in turn), after one warm-up call each. Each time ratio is taken per round (model time over
its baseline's time in the same round), and its median and min-max over the rounds are reported;
goals are judged on the median, in fp32.
On CPU: batch 1, fp32, and where the CPU has native bf16 (dsanet.precision.cpu_has_native_bf16)
also bf16 autocast (weights and SGD in fp32, no grad scaler), each model's fp32 and bf16 calls
interleaved in the same rounds: bf16 times as ratios to the fp32 baseline, and each model's
bf16 speed-up (its fp32 time over its bf16 time, per round). Without native bf16 the bf16
columns are skipped with a one-line reason (emulated bf16 runs slower than fp32).
On CUDA: batch 2 and 16 per GPU, fp32 and AMP (fp16 autocast, GradScaler), with peak memory.

    python -m benchmarks.speed --output output/bench [--quick]
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.events import EventStorage
from torch import nn

from benchmarks import cli, machine, model_cost, timing
from benchmarks.memory import MiB, peak_extra_memory
from benchmarks.models import BASELINE, FULL_IMAGE_SIZE, QUICK_IMAGE_SIZE, ModelSpec, baseline_label, check_models, \
    synthetic_batch
from dsanet import model_zoo
from dsanet.fileio import write_json
from dsanet.precision import autocast, cpu_has_native_bf16
from dsanet_lab.provenance import cpu_record

# The optimizer is the configs' SGD (its parameter groups, momentum, weight decay), with a tiny lr:
# a step costs the same whatever the lr, and a randomly initialised detector trained at lr 0.01 can
# diverge within the few timed steps, turning later timings into NaN arithmetic.
LR = 1e-6
DSANET_GOAL = 1.08  # DSANet (P4-P7) train step and inference at most 1.08x RetinaNet
FLOP_GOAL = 1.15  # every time ratio at most 1.15x its FLOP ratio
MIN_ROUNDS = 3  # every time ratio comes from at least this many interleaved rounds (full runs)
GPU_BATCH_SIZES = (2, 16)
GPU_PRECISIONS = ("fp32", "amp")
CPU_BF16 = "bf16"  # the CPU's mixed precision: torch.autocast("cpu", dtype=torch.bfloat16)
# The autocast dtype of each precision: "amp" is fp16 autocast (with a GradScaler) on the device's type, "bf16"
# bf16 autocast on the device's type (no scaler), "fp32" no autocast.
AUTOCAST_DTYPES = {"fp32": None, "amp": torch.float16, CPU_BF16: torch.bfloat16}


@dataclass
class Runner:
    """One model with its optimizer and (for AMP) grad scaler."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Optional[Any] = None


def build_runner(name: str, config: str, device: str, overrides: Sequence[str] = ()) -> Runner:
    """Instantiate a config's model (fresh seeded weights) and its SGD optimizer on ``device``, after
    ``key=value`` ``overrides`` of the config."""
    cfg = LazyConfig.apply_overrides(model_zoo.get_config(config), list(overrides))
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device)
    cfg.optimizer.params.model = model
    cfg.optimizer.lr = LR
    return Runner(name, model, instantiate(cfg.optimizer))


def _autocast(device: str, precision: str):
    """The autocast context of a precision (see :data:`AUTOCAST_DTYPES`)."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"unknown precision {precision!r} ({', '.join(AUTOCAST_DTYPES)})")
    return autocast(device, AUTOCAST_DTYPES[precision])  # "amp": fp16 on the device's type (CUDA, or a CPU)


def train_step(runner: Runner, batch: List[Dict[str, Any]], device: str, precision: str = "fp32") -> None:
    """One SGD iteration: forward with losses (under ``precision``'s autocast), backward, optimizer
    step (train mode). Weights, gradients and the optimizer stay fp32 in every precision."""
    model, optimizer = runner.model, runner.optimizer
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with EventStorage(), _autocast(device, precision):  # detectron2's losses log to an event storage
        losses = model(batch)
    loss = sum(losses.values())
    if precision == "amp":
        runner.scaler.scale(loss).backward()
        runner.scaler.step(optimizer)
        runner.scaler.update()
    else:
        loss.backward()
        optimizer.step()


def inference(runner: Runner, images: List[Dict[str, Any]], device: str, precision: str = "fp32") -> None:
    """Detections for a batch of images (eval mode, no_grad, under ``precision``'s autocast),
    post-processing included."""
    runner.model.eval()
    with torch.no_grad(), _autocast(device, precision):
        runner.model(images)


def measure(runners: Sequence[Runner], batch: List[Dict[str, Any]], device: str, *,
            train_repeats: Mapping[str, int], inference_repeats: Mapping[str, int],
            precisions: Sequence[str] = ("fp32",), memory: bool = False,
            images: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Interleaved, warmed-up timings (and on CUDA peak memory) of every runner in every precision,
    train on ``batch`` and inference on ``images`` (default: the batch's images, without annotations).

    Each round runs every model once in each precision, a model's precisions one after another
    (RetinaNet fp32, RetinaNet bf16, RetinaNet-Conf fp32, ...), so that all of a round's times
    share the machine's conditions. The precisions of a model share its weights and optimizer.
    A model that runs out of memory in its warm-up is reported as "OOM" and left out of the rounds.
    Returns:
        precision -> name -> {"train_s", "train_times_s", "inference_s", "inference_times_s",
        ["train_peak_mib", "inference_peak_mib"] | "error"}.
    """
    images = [{"image": item["image"]} for item in batch] if images is None else images
    runners_by_name = {runner.name: runner for runner in runners}
    results = {precision: {r.name: {} for r in runners} for precision in precisions}
    train_calls: Dict[Tuple[str, str], Callable[[], None]] = {}
    inference_calls: Dict[Tuple[str, str], Callable[[], None]] = {}
    for runner in runners:
        for precision in precisions:
            if precision == "amp" and runner.scaler is None:
                runner.scaler = torch.amp.GradScaler(torch.device(device).type)
            train = functools.partial(train_step, runner, batch, device, precision)
            infer = functools.partial(inference, runner, images, device, precision)
            try:  # warm-up here (not in interleaved_times) so that an out-of-memory model is skipped alone
                train()
                infer()
                timing.synchronize(device)
                out_of_memory = False
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True
            if out_of_memory:  # outside the except block, whose traceback still holds the tensors
                results[precision][runner.name] = {"error": "OOM"}
                runner.optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                continue
            train_calls[runner.name, precision], inference_calls[runner.name, precision] = train, infer

    train_times = timing.interleaved_times(train_calls, {key: train_repeats[key[0]] for key in train_calls},
                                           device, warmup=0)
    inference_times = timing.interleaved_times(
        inference_calls, {key: inference_repeats[key[0]] for key in inference_calls}, device, warmup=0)
    for key in train_calls:
        name, precision = key
        row = results[precision][name]
        row.update(train_s=timing.median(train_times[key]), train_times_s=train_times[key],
                   inference_s=timing.median(inference_times[key]), inference_times_s=inference_times[key])
        if memory:
            # The last step's gradients are freed, so that the step's peak counts them rather than
            # what was allocated before it.
            runners_by_name[name].optimizer.zero_grad(set_to_none=True)
            row["train_peak_mib"] = peak_extra_memory(train_calls[key], device) / MiB
            row["inference_peak_mib"] = peak_extra_memory(inference_calls[key], device) / MiB
    if timing.is_cuda(device):
        torch.cuda.empty_cache()
    return results


def round_ratios(times: Sequence[float], base_times: Sequence[float]) -> List[float]:
    """Per-round time ratios: times[r] / base_times[r] for the rounds both took part in."""
    return [t / b for t, b in zip(times, base_times) if b]


def _add_spread(row: Dict[str, Any], key: str, values: List[float]) -> None:
    """row[key] = median of ``values``; key_rounds, key_min, key_max beside it (None when empty)."""
    row[f"{key}_rounds"] = values
    row[key] = timing.median(values)
    row[f"{key}_min"], row[f"{key}_max"] = (min(values), max(values)) if values else (None, None)


RATIO_KEYS = (("train", "train_step_ratio"), ("inference", "inference_ratio"))


def add_ratios(results: Dict[str, Dict[str, Any]], costs: Mapping[str, Mapping[str, Any]],
               reference: Optional[Mapping[str, Mapping[str, Any]]] = None,
               models: Optional[Mapping[str, ModelSpec]] = None) -> None:
    """Add per-round time ratios (median, min, max) against each model's baseline (its
    ModelSpec.baseline in ``models``, default benchmarks.models.MODELS), in place.

    With ``reference`` (e.g. the fp32 results of the same rounds, for bf16 results) the baseline's
    times are taken from it; without, from ``results`` itself, and then the FLOP ratio and time
    ratio / FLOP ratio (median, min, max) are added too (a FLOP ratio compares like with like only
    within one precision).
    """
    models = check_models(models)
    same_precision = reference is None
    reference = results if reference is None else reference
    for name, row in results.items():
        baseline = models[name].baseline
        base = reference.get(baseline, {})
        row["baseline"] = baseline
        if same_precision:
            row["flop_ratio"] = costs[name]["flop_ratio"]
        for kind, key in RATIO_KEYS:
            _add_spread(row, key, round_ratios(row.get(f"{kind}_times_s", []), base.get(f"{kind}_times_s", [])))
            if same_precision:
                for stat in ("", "_min", "_max"):
                    row[f"{key}_over_flop_ratio{stat}"] = timing.ratio(row[f"{key}{stat}"], row["flop_ratio"])


def add_speedups(results: Dict[str, Dict[str, Any]], reference: Mapping[str, Mapping[str, Any]]) -> None:
    """Add each model's per-round speed-up over ``reference`` (its own times there, e.g. fp32,
    over its times in ``results``, e.g. bf16, in the same rounds) as ``train_speedup`` and
    ``inference_speedup`` with median, min, max, in place."""
    for name, row in results.items():
        own = reference.get(name, {})
        for kind in ("train", "inference"):
            _add_spread(row, f"{kind}_speedup", round_ratios(own.get(f"{kind}_times_s", []),
                                                             row.get(f"{kind}_times_s", [])))


def evaluate_goals(results: Mapping[str, Mapping[str, Any]],
                   models: Optional[Mapping[str, ModelSpec]] = None) -> List[Dict[str, Any]]:
    """The PASS/FAIL goals, on the medians of the per-round ratios: DSANet at most DSANET_GOAL
    times its baseline (RetinaNet); every model that is not a baseline: each time ratio at most
    FLOP_GOAL times its FLOP ratio."""
    models = check_models(models)
    goals = []
    dsanet = results.get("DSANet", {})
    dsanet_baseline = models["DSANet"].baseline if "DSANet" in models else BASELINE
    for key, label in (("train_step_ratio", "training step"), ("inference_ratio", "inference")):
        value = dsanet.get(key)
        goals.append({"goal": f"DSANet {label} <= {DSANET_GOAL:.2f}x {dsanet_baseline}", "value": value,
                      "min": dsanet.get(f"{key}_min"), "max": dsanet.get(f"{key}_max"),
                      "pass": value is not None and value <= DSANET_GOAL})
    for name, row in results.items():
        if name == models[name].baseline:
            continue
        for key, label in (("train_step_ratio", "training step"), ("inference_ratio", "inference")):
            value = row.get(f"{key}_over_flop_ratio")
            goals.append({"goal": f"{name} {label} time ratio <= {FLOP_GOAL:.2f}x FLOP ratio", "value": value,
                          "min": row.get(f"{key}_over_flop_ratio_min"),
                          "max": row.get(f"{key}_over_flop_ratio_max"),
                          "pass": value is not None and value <= FLOP_GOAL})
    return goals


def _several_baselines(results: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when the rows' ratios are against more than one baseline (the tables then name it)."""
    return len({row.get("baseline") for row in results.values() if "baseline" in row}) > 1


def print_results(title: str, results: Mapping[str, Mapping[str, Any]], memory: bool) -> None:
    """One row per model: median seconds, per-round ratios to its baseline as median (min-max),
    FLOP ratio, time ratio / FLOP ratio (and memory); a baseline column when there are several."""
    columns = ["train s", "train ratio (min-max)", "infer s", "infer ratio (min-max)", "FLOP ratio",
               "train/FLOP", "infer/FLOP"] + (["train peak MiB", "infer peak MiB"] if memory else [])

    def cells(row: Mapping[str, Any]) -> List[Any]:
        line = [cli.fmt(row["train_s"], 3), _spread(row, "train_step_ratio"),
                cli.fmt(row["inference_s"], 3), _spread(row, "inference_ratio"),
                cli.fmt(row["flop_ratio"], 3), _spread(row, "train_step_ratio_over_flop_ratio"),
                _spread(row, "inference_ratio_over_flop_ratio")]
        if memory:
            line += [cli.fmt(row.get("train_peak_mib"), 0), cli.fmt(row.get("inference_peak_mib"), 0)]
        return line

    _print_model_table(title, results, columns, cells)


def print_bf16_results(title: str, results: Mapping[str, Mapping[str, Any]]) -> None:
    """One row per model in bf16: median seconds, per-round ratios to its fp32 baseline and
    per-round speed-ups over its own fp32 time, each as median (min-max)."""
    columns = ["bf16 train s", "train ratio (min-max)", "train speed-up (min-max)",
               "bf16 infer s", "infer ratio (min-max)", "infer speed-up (min-max)"]
    _print_model_table(title, results, columns, lambda row: [
        cli.fmt(row["train_s"], 3), _spread(row, "train_step_ratio"), _spread(row, "train_speedup"),
        cli.fmt(row["inference_s"], 3), _spread(row, "inference_ratio"), _spread(row, "inference_speedup")])


def _print_model_table(title: str, results: Mapping[str, Mapping[str, Any]], columns: Sequence[str],
                       cells: Callable[[Mapping[str, Any]], List[Any]]) -> None:
    """The title, then one row per model: its name, its baseline when there are several, and
    ``cells(row)`` under ``columns``; a model that failed shows its error instead."""
    print(f"\n{title}")
    several = _several_baselines(results)
    headers = ["model"] + (["baseline"] if several else []) + list(columns)
    rows = []
    for name, row in results.items():
        first = [name] + ([row.get("baseline")] if several else [])
        if "error" in row:
            rows.append(first + [row["error"]] + [None] * (len(headers) - len(first) - 1))
        else:
            rows.append(first + cells(row))
    print(cli.format_table(headers, rows))


def _spread(row: Mapping[str, Any], key: str) -> str:
    """"median (min-max)" of a ratio, three decimals."""
    return f"{cli.fmt(row.get(key), 3)} ({cli.fmt(row.get(key + '_min'), 3)}-{cli.fmt(row.get(key + '_max'), 3)})"


def default_repeats(quick: bool, device: str, names: Sequence[str]) -> Tuple[Dict[str, int], Dict[str, int]]:
    """(train, inference) timed repeats of each model in ``names`` (in each precision), after one
    warm-up call each.

    Quick: 2 each (a smoke run; its spreads mean little). Full on CPU: 5 rounds each (at least
    MIN_ROUNDS). CUDA: 10 training steps and 20 inferences.
    """
    train, inference = (2, 2) if quick else (10, 20) if timing.is_cuda(device) else (5, 5)
    return {n: train for n in names}, {n: inference for n in names}


def run(output: Path, quick: bool = False, device: str = "cpu",
        costs: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """Time all models (:func:`run_cuda` or :func:`run_cpu`), print tables and goals, write speed.json.

    Args:
        costs: model_cost results per model name (with "flop_ratio") at the same image size;
            computed here when not given.
    """
    started = time.perf_counter()
    image_size = QUICK_IMAGE_SIZE if quick else FULL_IMAGE_SIZE
    busy = machine.warn_if_busy("speed")
    if costs is None:
        costs = model_cost.run(output, quick=quick)["models"]
    models = check_models()
    train_repeats, inference_repeats = default_repeats(quick, device, list(models))
    runners = [build_runner(name, spec.config, device) for name, spec in models.items()]
    result: Dict[str, Any] = {"image_size": list(image_size), "quick": quick, "device": device, "lr": LR,
                              "train_repeats": train_repeats, "inference_repeats": inference_repeats,
                              "baselines": {name: spec.baseline for name, spec in models.items()},
                              "warning": busy}
    run_on_device = run_cuda if timing.is_cuda(device) else run_cpu
    main, main_label = run_on_device(result, runners, device, image_size, costs, models)
    goals = evaluate_goals(main, models)
    result.update(main=main_label, goals=goals, provenance=machine.record(device),
                  elapsed_s=time.perf_counter() - started)
    print(f"\nGoals ({main_label}):")
    for goal in goals:
        print(f"  {'PASS' if goal['pass'] else 'FAIL'}  {goal['goal']}: median {cli.fmt(goal['value'], 3)} "
              f"(min-max {cli.fmt(goal['min'], 3)}-{cli.fmt(goal['max'], 3)})")
    write_json(output / "speed.json", result)
    print(f"wrote {output / 'speed.json'} ({result['elapsed_s']:.0f} s)", flush=True)
    return result


def run_cuda(result: Dict[str, Any], runners: Sequence[Runner], device: str, image_size: Tuple[int, int],
             costs: Mapping[str, Mapping[str, Any]], models: Mapping[str, ModelSpec]) -> Tuple[Dict[str, Any], str]:
    """Batch 2 and 16 per GPU, fp32 and AMP, with peak memory, into ``result["gpu"]`` (the CPU columns
    are marked skipped); returns the rows the goals are judged on (batch 2, fp32) and their label."""
    result["cpu"] = result["cpu_bf16"] = "skipped: the CUDA device was measured instead"
    result["gpu"] = {}
    for batch_size in GPU_BATCH_SIZES:
        batch = synthetic_batch(image_size, batch_size, device=device)
        for precision in GPU_PRECISIONS:
            key = f"batch{batch_size}_{precision}"
            print(f"  measuring {key} ...", flush=True)
            results = measure(runners, batch, device, train_repeats=result["train_repeats"],
                              inference_repeats=result["inference_repeats"], precisions=(precision,),
                              memory=True)[precision]
            add_ratios(results, costs, models=models)
            result["gpu"][key] = results
            print_results(f"== {device} ({torch.cuda.get_device_name(device)}), batch {batch_size} per GPU, "
                          f"{precision}, {image_size[0]}x{image_size[1]}; peak = max_memory_allocated over "
                          f"one call beyond what was allocated before it ==", results, memory=True)
    return result["gpu"]["batch2_fp32"], "cuda batch 2 fp32"


def run_cpu(result: Dict[str, Any], runners: Sequence[Runner], device: str, image_size: Tuple[int, int],
            costs: Mapping[str, Mapping[str, Any]], models: Mapping[str, ModelSpec]) -> Tuple[Dict[str, Any], str]:
    """Batch 1, fp32 and (where the CPU has native bf16) bf16 autocast in the same rounds, into
    ``result["cpu"]`` and ``result["cpu_bf16"]`` (the GPU columns are marked skipped); returns the rows
    the goals are judged on (fp32) and their label."""
    native_bf16, found = cpu_has_native_bf16()
    precisions = ("fp32", CPU_BF16) if native_bf16 else ("fp32",)
    train_repeats, inference_repeats = result["train_repeats"], result["inference_repeats"]
    baseline = baseline_label(models)
    print(f"\n== Speed on CPU ({cpu_record()['model_name']}, {torch.get_num_threads()} threads), batch 1, "
          f"{'fp32 and bf16 autocast (' + found + ')' if native_bf16 else 'fp32'}, {image_size[0]}x{image_size[1]}; "
          f"train repeats {_repeats_text(train_repeats)}, inference repeats {_repeats_text(inference_repeats)} ==",
          flush=True)
    measured = measure(runners, synthetic_batch(image_size, 1, device=device), device, train_repeats=train_repeats,
                       inference_repeats=inference_repeats, precisions=precisions)
    main = result["cpu"] = measured["fp32"]
    add_ratios(main, costs, models=models)
    result["gpu"] = "skipped: no CUDA device (torch.cuda.is_available() is False)"
    print_results(f"fp32: median seconds; per-round ratios against {baseline}: median (min-max)", main, memory=False)
    if native_bf16:
        bf16 = result["cpu_bf16"] = measured[CPU_BF16]
        add_ratios(bf16, costs, reference=main, models=models)
        add_speedups(bf16, main)
        print_bf16_results(f"bf16 autocast ({found}; weights and SGD in fp32, no grad scaler), same rounds as "
                           f"fp32: median seconds; per-round ratios against fp32 {baseline} and speed-up "
                           f"(the model's fp32 time / its bf16 time): median (min-max)", bf16)
    else:
        result["cpu_bf16"] = (f"skipped: this CPU has no native bf16 ({found}); emulated bf16 runs slower than "
                              f"fp32 and would mislead")
        print(f"bf16 columns {result['cpu_bf16']}", flush=True)
    print("GPU measurements (batch 2 and 16, fp32 and AMP, max_memory_allocated): skipped, no CUDA device")
    return main, "cpu batch 1 fp32"


def _repeats_text(repeats: Mapping[str, int]) -> str:
    """"5" when all models share a count, else "5 (DSANet-P3-P7: 3)"."""
    common_count = max(set(repeats.values()), key=list(repeats.values()).count)
    others = [f"{name}: {count}" for name, count in repeats.items() if count != common_count]
    return f"{common_count}" + (f" ({', '.join(others)})" if others else "")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: time and print."""
    cli.main_from_command_line(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
