#!/usr/bin/env python
"""Does the project work on this CUDA machine, and what does it cost? One command, about 5 minutes.

    python tools/gpu_check.py [--output output/gpu_check/gpu_check.json] [--time-limit 300]
    python tools/gpu_check.py --cpu-smoke      # the same steps on the CPU at tiny sizes (the suite's test)

Steps, in order, each recorded in the JSON (with ``dsanet.provenance``) and printed as a table:

1. ``environment``: GPU name and memory, driver, torch, CUDA, cuDNN, detectron2 (and whether its
   compiled ops ``detectron2._C`` are present), dsanet.
2. ``cuda_tests``: the suite's tests that skip without CUDA, run through pytest and counted.
3. ``attention``: the path the model's attention takes at each level (``attention_path``) at
   800x1333 for batch 2 and 16, whether CUDA's memory-efficient SDPA kernel accepts its inputs,
   and per dtype (fp32, fp16, bf16) the output and input gradients against an fp64 reference.
4. ``training``: a few iterations of ``train_net.py`` on the embedded synthetic data (fp16 AMP on
   CUDA), then ``--eval-only`` on the checkpoint: losses finite, checkpoint written, ten numbers.
5. ``benchmark``: RetinaNet, DSANet-Conf (P4-P7) and full-resolution DSANet P3-P7 (R50-FPN) at
   800x1333, batch 2 and 16, fp32 / fp16 AMP (grad scaler) / bf16 autocast: training step time,
   images/s, inference latency (batch 1) and peak memory, in interleaved rounds with each ratio
   taken against RetinaNet in the same round. It runs last, within what is left of
   ``--time-limit``; a configuration it has no time for is recorded as skipped.

The goals (issue 26) are judged at the end: DSANet-Conf's step <= 1.08x and peak memory <= 1.10x
RetinaNet's at batch 16 under AMP (fp16 and bf16), full-resolution P3-P7 at batch 16 within 32 GiB,
attention within its dtype's tolerance of fp64. The timing loop is this tool's own (a few lines),
so that it depends on nothing in benchmarks/.

Without a CUDA device the command prints one line and exits with status 3.
"""
import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA_STATUS = 3
GIB = 2 ** 30

FULL_IMAGE_SIZE = (800, 1333)
# FPN levels and strides of the project's R50-FPN models; the map of level l is ceil(size / stride).
LEVEL_STRIDES = {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
MODELS = {  # name -> config under configs/; the first is the baseline of every ratio
    "RetinaNet": "COCO-Detection/retinanet_R_50_FPN_1x.py",
    "DSANet-Conf": "COCO-Detection/dsanet_conf_R_50_FPN_1x.py",
    "DSANet-P3-P7": "Ablations/dsanet_self_p3-p7_R_50_FPN_1x.py",
}
BASELINE = "RetinaNet"
PRECISIONS = ("fp32", "fp16", "bf16")  # fp16: autocast with a GradScaler (detectron2's AMP); bf16: autocast alone
# Largest error allowed, relative to the fp64 reference's largest magnitude, per dtype: fp32 keeps
# about 7 digits (sums over thousands of keys lose a few), fp16 has a 10-bit mantissa, bf16 7 bits.
ATTENTION_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
GOALS = {"step_ratio": 1.08, "memory_ratio": 1.10, "full_resolution_gib": 32.0}
ATTENTION_QK_DIM, ATTENTION_CHANNELS = 32, 256  # DSANet's query/key width C/8 and value width C


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


class Settings:
    """What a run measures: the full check on CUDA, or tiny sizes on the CPU (``--cpu-smoke``)."""

    def __init__(self, args: argparse.Namespace):
        self.smoke = args.cpu_smoke
        self.device = "cpu" if self.smoke else "cuda"
        self.image_size = (64, 96) if self.smoke else FULL_IMAGE_SIZE
        self.batch_sizes = (1, 2) if self.smoke else (2, 16)
        # fp16 convolutions on a CPU take a minute a step even at 64x96: the smoke run times fp32
        # (its attention step still checks all three dtypes).
        self.precisions = ("fp32",) if self.smoke else PRECISIONS
        self.rounds = args.rounds or (1 if self.smoke else 3)
        self.train_iterations = args.train_iterations or (2 if self.smoke else 20)
        self.time_limit = args.time_limit

    def as_dict(self) -> Dict[str, Any]:
        return {"device": self.device, "image_size": list(self.image_size), "batch_sizes": list(self.batch_sizes),
                "precisions": list(self.precisions), "rounds": self.rounds, "train_iterations": self.train_iterations,
                "time_limit_s": self.time_limit, "models": MODELS, "attention_tolerance": ATTENTION_TOLERANCE,
                "goals": GOALS}


# ---------------------------------------------------------------------------------------------- steps

def environment() -> Dict[str, Any]:
    """GPU, driver, torch/CUDA/cuDNN, detectron2 and its compiled ops, dsanet."""
    import torch

    import detectron2
    import dsanet
    from dsanet import compat
    from dsanet.provenance import gpu_record

    gpu = gpu_record()  # name, memory, capability, count (None without CUDA)
    return {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "detectron2": detectron2.__version__, "detectron2_compiled_ops": compat.has_compiled_ops(),
        "dsanet": dsanet.__version__, "python": sys.version.split()[0], "gpu": gpu,
        "driver": _driver_version() if gpu else None,
    }


def _driver_version() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return out.splitlines()[0] if out else None
    except (OSError, subprocess.SubprocessError):
        return None


def cuda_tests() -> Dict[str, Any]:
    """The suite's tests that skip without CUDA (files with ``skipif(not torch.cuda.is_available()``,
    tests named ``cuda``), through pytest; counts from its JUnit XML."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "skipif(not torch.cuda.is_available()" in p.read_text())
    if not files:
        return {"files": [], "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "returncode": None}
    with tempfile.TemporaryDirectory() as folder:
        xml = Path(folder) / "junit.xml"
        result = subprocess.run([sys.executable, "-m", "pytest", *files, "-k", "cuda", "-q", "-p", "no:cacheprovider",
                                 f"--junitxml={xml}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        if not xml.is_file():
            raise RuntimeError(f"pytest wrote no report (exit {result.returncode}): {result.stdout[-500:]}{result.stderr[-500:]}")
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    return {"files": files, "selection": "-k cuda", "collected": counts["tests"], "failed": counts["failures"],
            "errors": counts["errors"], "skipped": counts["skipped"],
            "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "returncode": result.returncode, "summary": result.stdout.strip().splitlines()[-1:]}


def level_sizes(image_size) -> Dict[str, tuple]:
    """(h, w) of each FPN level's map for an image of ``image_size`` (padded to stride 32 first)."""
    height, width = (math.ceil(x / 32) * 32 for x in image_size)
    return {level: (math.ceil(height / s), math.ceil(width / s)) for level, s in LEVEL_STRIDES.items()}


def attention(settings: Settings) -> Dict[str, Any]:
    """The model's attention path per level and batch, the SDPA kernel check, and accuracy vs fp64."""
    import torch

    from dsanet.modeling.attention import ATTENTION_IMPLS, attention_path, dense_attention

    sizes = level_sizes(settings.image_size)
    paths = [{"level": level, "map": list(hw), "batch": batch,
              "path": attention_path(settings.device, batch, hw[0] * hw[1], hw[0] * hw[1])}
             for batch in settings.batch_sizes for level, hw in sizes.items()]
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    scale = 1.0 / math.sqrt(ATTENTION_QK_DIM)
    accuracy = []
    for level, (h, w) in sizes.items():
        length = h * w
        generator = torch.Generator().manual_seed(0)
        q, k = (torch.randn(1, length, ATTENTION_QK_DIM, generator=generator, dtype=torch.float64) for _ in range(2))
        v = torch.randn(1, length, ATTENTION_CHANNELS, generator=generator, dtype=torch.float64)
        grad = torch.randn(1, length, ATTENTION_CHANNELS, generator=generator, dtype=torch.float64)
        q, k, v, grad = (t.to(settings.device) for t in (q, k, v, grad))
        reference = _output_and_grads(dense_attention, q, k, v, grad, scale)
        for name, dtype in dtypes.items():
            row = {"level": level, "length": length, "dtype": name,
                   "path": attention_path(settings.device, 1, length, length),
                   "efficient_kernel": _efficient_kernel_accepts(q.to(dtype), k.to(dtype), v.to(dtype), scale)}
            got = _output_and_grads(ATTENTION_IMPLS["auto"], q.to(dtype), k.to(dtype), v.to(dtype), grad.to(dtype), scale)
            for key in ("out", "grad_q", "grad_k", "grad_v"):
                ref = reference[key]
                row[key] = float((got[key].double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            row["tolerance"] = ATTENTION_TOLERANCE[name]
            row["within"] = all(row[key] <= row["tolerance"] for key in ("out", "grad_q", "grad_k", "grad_v"))
            accuracy.append(row)
        del q, k, v, grad, reference
    return {"paths": paths, "accuracy": accuracy,
            "error": "max |x - x_fp64| / max |x_fp64| over the output and the gradients of q, k, v"}


def _output_and_grads(fn: Callable, q, k, v, grad, scale: float) -> Dict[str, Any]:
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v, scale)
    out.backward(grad)
    return {"out": out.detach(), "grad_q": q.grad, "grad_k": k.grad, "grad_v": v.grad}


def _efficient_kernel_accepts(q, k, v, scale: float) -> Optional[bool]:
    """Whether CUDA's memory-efficient SDPA kernel runs these inputs (q/k narrower than v); None on CPU."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from dsanet.modeling.attention import sdpa_attention

    if q.device.type != "cuda":
        return None
    try:
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            sdpa_attention(q[:, :64], k[:, :64], v[:, :64], scale)
        return True
    except RuntimeError:
        return False
    finally:
        torch.cuda.synchronize()


def training(settings: Settings, folder: Path) -> Dict[str, Any]:
    """train_net.py for a few iterations on the embedded data, then --eval-only on its checkpoint."""
    config = ROOT / "configs" / "Demo" / "dsanet_conf_synthetic_cpu.py"
    out = folder / "train"
    common = [f"train.device={settings.device}", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
              "train.seed=0"]
    if settings.smoke:
        common.append("dataloader.train.total_batch_size=2")
    else:
        common.append("train.amp.enabled=True")  # detectron2's AMPTrainer: fp16 with its grad scaler
    n = settings.train_iterations
    started = time.perf_counter()
    _run([sys.executable, str(ROOT / "train_net.py"), "--config-file", str(config), *common,
          f"train.output_dir={out}", f"train.max_iter={n}", "train.eval_period=0", "train.log_period=1",
          f"train.checkpointer.period={n}"])
    train_s = time.perf_counter() - started
    losses = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines() if '"total_loss"' in line]
    checkpoint = out / "model_final.pth"
    evaluated = folder / "eval"
    started = time.perf_counter()
    stdout = _run([sys.executable, str(ROOT / "train_net.py"), "--config-file", str(config), "--eval-only", *common,
                   "+model.test_score_thresh=0.01", f"train.output_dir={evaluated}", f"train.init_checkpoint={checkpoint}"])
    ten = json.loads((evaluated / "inference" / "coco_eval_results.json").read_text())["bbox"]
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl")
    return {
        "iterations": len(losses), "expected_iterations": n,
        "losses_finite": bool(losses) and all(math.isfinite(r["total_loss"]) for r in losses),
        "last_total_loss": losses[-1]["total_loss"] if losses else None,
        "checkpoint_written": checkpoint.is_file(), "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - started, 1),
        "ten_numbers": {k: ten.get(k) for k in keys},
        "ten_numbers_printed": "AP\tAP50\tAP75" in stdout,
        "ok": bool(losses) and len(losses) == n and checkpoint.is_file() and all(k in ten for k in keys)
        and all(math.isfinite(r["total_loss"]) for r in losses),
    }


def _run(command: List[str]) -> str:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[1]).name} exited {result.returncode}: {result.stderr[-1500:]}")
    return result.stdout


# ---------------------------------------------------------------------------------------------- benchmark

class _Runner:
    """One model with its SGD optimizer (fp32 weights) and a grad scaler for fp16."""

    def __init__(self, name: str, device: str):
        import torch
        from detectron2.config import LazyConfig, instantiate

        cfg = LazyConfig.load(str(ROOT / "configs" / MODELS[name]))
        torch.manual_seed(0)
        self.name = name
        self.model = instantiate(cfg.model).to(device)
        # A tiny learning rate: the weights barely move, so every round times the same computation.
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-6, momentum=0.9)
        self.scaler = torch.amp.GradScaler(device)

    def state_bytes(self) -> int:
        """Weights and optimizer state: what this model holds between steps."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        tensors += [t for state in self.optimizer.state.values() for t in state.values() if hasattr(t, "numel")]
        return sum(t.numel() * t.element_size() for t in tensors)


def _autocast(device: str, precision: str):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


def _train_step(runner: _Runner, batch: list, device: str, precision: str) -> None:
    from detectron2.utils.events import EventStorage

    runner.model.train()
    runner.optimizer.zero_grad(set_to_none=True)
    with EventStorage(), _autocast(device, precision):  # detectron2's losses log to an event storage
        loss = sum(runner.model(batch).values())
    if precision == "fp16":
        runner.scaler.scale(loss).backward()
        runner.scaler.step(runner.optimizer)
        runner.scaler.update()
    else:
        loss.backward()
        runner.optimizer.step()


def _inference(runner: _Runner, images: list, device: str, precision: str) -> None:
    import torch

    runner.model.eval()
    with torch.no_grad(), _autocast(device, precision):
        runner.model(images)


def _timed(fn: Callable[[], None], device: str) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _peak_bytes(runner: _Runner, fn: Callable[[], None], device: str) -> Optional[int]:
    """One training step's peak as if this model were alone on the GPU: the step's
    ``max_memory_allocated`` above what was allocated before it, plus this model's weights and
    optimizer state (the other models' weights are in ``memory_allocated`` too). None on CPU."""
    import torch

    if device != "cuda":
        fn()
        return None
    runner.optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before + runner.state_bytes()


def make_batch(image_size, batch_size: int, device: str) -> list:
    """Images of ``image_size`` in detectron2's input format, each with three boxes (small to large)."""
    import torch
    from detectron2.structures import Boxes, Instances

    height, width = image_size
    boxes = torch.tensor([[0.10, 0.10, 0.25, 0.20], [0.30, 0.40, 0.60, 0.75], [0.05, 0.20, 0.95, 0.90]])
    boxes = boxes * torch.tensor([width, height, width, height])
    generator = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(batch_size):
        instances = Instances(image_size, gt_boxes=Boxes(boxes.clone()), gt_classes=torch.tensor([0, 1, 2]))
        image = torch.rand((3, height, width), generator=generator) * 255
        batch.append({"image": image.to(device), "instances": instances.to(device), "height": height, "width": width})
    return batch


def benchmark(settings: Settings, deadline: float) -> Dict[str, Any]:
    """Every (batch, precision), the goals' configurations first, within ``deadline``."""
    import torch

    runners = [_Runner(name, settings.device) for name in MODELS]
    order = sorted(((b, p) for b in settings.batch_sizes for p in settings.precisions),
                   key=lambda bp: (bp[1] == "fp32", -bp[0]))  # batch 16 under AMP first: the goals
    configs, last_cost = [], 0.0
    for batch_size, precision in order:
        if time.monotonic() + last_cost > deadline:
            configs.append({"batch": batch_size, "precision": precision, "skipped": "time limit"})
            continue
        started = time.monotonic()
        configs.append(_benchmark_config(runners, settings, batch_size, precision))
        last_cost = time.monotonic() - started
        if settings.device == "cuda":
            torch.cuda.empty_cache()
    return {"configs": configs, "baseline": BASELINE,
            "peak_memory": "the step's max_memory_allocated above what was allocated before it, plus the "
                           "model's weights and optimizer state"}


def _benchmark_config(runners: List[_Runner], settings: Settings, batch_size: int, precision: str) -> Dict[str, Any]:
    import torch

    device = settings.device
    batch = make_batch(settings.image_size, batch_size, device)
    single = [{k: v for k, v in batch[0].items() if k != "instances"}]
    models: Dict[str, Dict[str, Any]] = {r.name: {"train_s": [], "inference_s": [], "oom": False} for r in runners}
    live = []
    for runner in runners:  # warm-up (kernel selection, allocator) and the memory step
        try:
            _train_step(runner, batch, device, precision)
            _inference(runner, single, device, precision)
            peak = _peak_bytes(runner, lambda r=runner: _train_step(r, batch, device, precision), device)
            models[runner.name]["peak_gib"] = None if peak is None else round(peak / GIB, 3)
            live.append(runner)
        except torch.cuda.OutOfMemoryError:
            models[runner.name].update(oom=True, peak_gib=None)
            runner.optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
    for _ in range(settings.rounds):  # interleaved: every round runs each model once, in turn
        for runner in live:
            models[runner.name]["train_s"].append(_timed(lambda r=runner: _train_step(r, batch, device, precision), device))
            models[runner.name]["inference_s"].append(_timed(lambda r=runner: _inference(r, single, device, precision), device))
    base = models[BASELINE]
    for name, row in models.items():
        for key in ("train_s", "inference_s"):
            row[key] = [round(t, 5) for t in row[key]]
            ratios = [t / b for t, b in zip(row[key], base[key])] if not row["oom"] and not base["oom"] else []
            row[key.replace("_s", "_ratio")] = _median(ratios)
            row[key.replace("_s", "_ratio") + "_range"] = [min(ratios), max(ratios)] if ratios else None
        row["train_step_s"] = _median(row["train_s"])
        row["images_per_s"] = None if row["train_step_s"] is None else batch_size / row["train_step_s"]
        row["inference_latency_s"] = _median(row["inference_s"])
        row["memory_ratio"] = (row["peak_gib"] / base["peak_gib"]
                               if row.get("peak_gib") is not None and base.get("peak_gib") else None)
    return {"batch": batch_size, "precision": precision, "models": models}


def _median(values: List[float]) -> Optional[float]:
    values = sorted(values)
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


# ---------------------------------------------------------------------------------------------- goals

def judge(result: Dict[str, Any], smoke: bool) -> Dict[str, Any]:
    """The issue's goals from the measured numbers; on the CPU smoke run computed but not judged."""
    goals: Dict[str, Any] = {}
    configs = {(c["batch"], c["precision"]): c for c in result.get("benchmark", {}).get("configs", [])}
    big = max((b for b, _ in configs), default=None)
    for precision in ("fp16", "bf16"):
        models = configs.get((big, precision), {}).get("models")
        conf, full = (models or {}).get("DSANet-Conf", {}), (models or {}).get("DSANet-P3-P7", {})
        goals[f"dsanet_conf_step_{precision}"] = _goal(conf.get("train_ratio"), GOALS["step_ratio"], smoke)
        goals[f"dsanet_conf_memory_{precision}"] = _goal(conf.get("memory_ratio"), GOALS["memory_ratio"], smoke)
        goals[f"full_resolution_p3_p7_gib_{precision}"] = _goal(full.get("peak_gib"), GOALS["full_resolution_gib"], smoke)
    accuracy = result.get("attention", {}).get("accuracy")
    goals["attention_within_tolerance"] = {
        "value": None if accuracy is None else all(r["within"] for r in accuracy),
        "met": None if accuracy is None else all(r["within"] for r in accuracy)}
    return goals


def _goal(value: Optional[float], limit: float, smoke: bool) -> Dict[str, Any]:
    met = None if value is None or smoke else value <= limit
    return {"value": value, "limit": limit, "met": met}


# ---------------------------------------------------------------------------------------------- output

def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def print_table(result: Dict[str, Any]) -> None:
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
        print(f"  {'level':<6}{'dtype':<6}{'path':<10}{'eff.kernel':<11}{'out':>10}{'grad_q':>10}{'grad_k':>10}{'grad_v':>10}{'tol':>8}  ok")
        for r in att["accuracy"]:
            print(f"  {r['level']:<6}{r['dtype']:<6}{r['path']:<10}{_fmt(r['efficient_kernel']):<11}"
                  + "".join(f"{r[k]:>10.2e}" for k in ("out", "grad_q", "grad_k", "grad_v"))
                  + f"{r['tolerance']:>8.0e}  {'yes' if r['within'] else 'NO'}")
    train = result.get("training")
    if train:
        print(f"train_net.py: {train['iterations']}/{train['expected_iterations']} iterations, losses finite "
              f"{train['losses_finite']}, checkpoint {train['checkpoint_written']}, ten numbers: "
              + " ".join(f"{k}={_fmt(v)}" for k, v in train["ten_numbers"].items()))
    bench = result.get("benchmark")
    if bench:
        print(f"  {'batch':>5} {'prec':<5} {'model':<13}{'step s':>9}{'img/s':>8}{'ratio':>7}{'infer s':>9}{'ratio':>7}{'peak GiB':>10}{'ratio':>7}")
        for config in bench["configs"]:
            if "skipped" in config:
                print(f"  {config['batch']:>5} {config['precision']:<5} skipped ({config['skipped']})")
                continue
            for name, m in config["models"].items():
                if m["oom"]:
                    print(f"  {config['batch']:>5} {config['precision']:<5} {name:<13} out of memory")
                    continue
                print(f"  {config['batch']:>5} {config['precision']:<5} {name:<13}{_fmt(m['train_step_s']):>9}"
                      f"{_fmt(m['images_per_s']):>8}{_fmt(m['train_ratio']):>7}{_fmt(m['inference_latency_s']):>9}"
                      f"{_fmt(m['inference_ratio']):>7}{_fmt(m['peak_gib']):>10}{_fmt(m['memory_ratio']):>7}")
    for name, goal in result.get("goals", {}).items():
        verdict = {True: "met", False: "NOT met", None: "not judged"}[goal["met"]]
        print(f"goal {name}: {_fmt(goal['value'])}" + (f" (limit {goal['limit']})" if "limit" in goal else "") + f": {verdict}")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to torch "
              f"{torch.__version__} (CUDA {torch.version.cuda}); nothing to check (--cpu-smoke tests the tool on the CPU)",
              file=sys.stderr)
        return NO_CUDA_STATUS
    try:
        import dsanet  # noqa: F401  (the detectron2 compatibility shims, before detectron2 is used)
    except ImportError as e:
        print(f"gpu_check: {e}: install the project first (projects/DSANet/docs/GPU.md), or run with PYTHONPATH=projects/DSANet",
              file=sys.stderr)
        return 2
    from dsanet.provenance import provenance

    settings = Settings(args)
    start = time.monotonic()
    deadline = start + settings.time_limit
    result: Dict[str, Any] = {"smoke": settings.smoke, "settings": settings.as_dict(), "steps": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        steps = [("environment", environment), ("cuda_tests", cuda_tests), ("attention", lambda: attention(settings)),
                 ("training", lambda: training(settings, Path(folder))),
                 ("benchmark", lambda: benchmark(settings, deadline))]
        for name, step in steps:
            started = time.monotonic()
            try:
                result[name] = step()
                status = {"status": "ok"}
            except Exception as e:  # a failed step is recorded, and the others still run
                status = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            result["steps"][name] = {**status, "seconds": round(time.monotonic() - started, 1)}
    result["goals"] = judge(result, settings.smoke)
    result["total_s"] = round(time.monotonic() - start, 1)
    result["provenance"] = provenance()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_table(result)
    print(f"wrote {output}")
    failed = [n for n, s in result["steps"].items() if s["status"] != "ok"]
    checks = [result.get("training", {}).get("ok", False), result["goals"]["attention_within_tolerance"]["met"],
              result.get("cuda_tests", {}).get("failed", 1) == 0 and result.get("cuda_tests", {}).get("errors", 1) == 0]
    return 1 if failed or not all(checks) else 0


if __name__ == "__main__":
    sys.exit(main())
