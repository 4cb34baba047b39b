"""The measuring of the GPU self-check (``tools/gpu_check.py``, ``make gpu-check``; its steps and
goals are listed in projects/DSANet/docs/GPU.md). :func:`run` runs the steps in order, each a
function returning a JSON-able dict: ``environment``, ``cuda_tests``, ``attention`` (paths per FPN
level, accuracy against fp64), ``training`` (train_net.py and --eval-only) and ``benchmark``, which
times the models through :func:`benchmarks.speed.measure` (its train step, warm-up and interleaved
rounds) within what the other steps leave of the time limit. :func:`judge` then judges
:data:`GOALS` and :data:`ATTENTION_TOLERANCE`.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

import detectron2
import dsanet
from benchmarks import speed, timing
from benchmarks.memory import MiB, state_bytes
from benchmarks.models import BASELINE, FULL_IMAGE_SIZE, MODELS, synthetic_batch
from dsanet import compat
from dsanet.modeling.attention import ATTENTION_IMPLS, attention_path, dense_attention, sdpa_attention
from dsanet_lab.provenance import gpu_record, provenance

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30
SMOKE_IMAGE_SIZE = (64, 96)
# FPN levels and strides of the project's R50-FPN models; the map of level l is ceil(size / stride).
LEVEL_STRIDES = {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
CHECKED_MODELS = ("RetinaNet", "DSANet-Conf", "DSANet-P3-P7")  # names in benchmarks.models.MODELS
# The check's precision names -> benchmarks.speed's: fp16 is autocast with a GradScaler
# (detectron2's AMP), bf16 autocast alone.
PRECISIONS = {"fp32": "fp32", "fp16": "amp", "bf16": "bf16"}
# Largest error allowed, relative to the fp64 reference's largest magnitude, per dtype: fp32 keeps
# about 7 digits (sums over thousands of keys lose a few), fp16 has a 10-bit mantissa, bf16 7 bits.
ATTENTION_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
GOALS = {"step_ratio": 1.08, "memory_ratio": 1.10, "full_resolution_gib": 32.0}
ATTENTION_QK_DIM, ATTENTION_CHANNELS = 32, 256  # DSANet's query/key width C/8 and value width C
GRADIENT_KEYS = ("out", "grad_q", "grad_k", "grad_v")


@dataclass
class Settings:
    """What a run measures: the full check on CUDA, or tiny sizes on the CPU (``smoke``)."""

    smoke: bool = False
    time_limit: float = 300.0  # seconds for the whole check; the benchmark takes what the others leave
    rounds: Optional[int] = None  # interleaved timing rounds (default 3; smoke 1)
    train_iterations: Optional[int] = None  # train_net.py iterations (default 20; smoke 2)

    def __post_init__(self):
        self.rounds = self.rounds or (1 if self.smoke else 3)
        self.train_iterations = self.train_iterations or (2 if self.smoke else 20)
        self.device = "cpu" if self.smoke else "cuda"
        self.image_size = SMOKE_IMAGE_SIZE if self.smoke else FULL_IMAGE_SIZE
        self.batch_sizes = (1, 2) if self.smoke else (2, 16)
        # fp16 convolutions on a CPU take a minute a step even at 64x96: the smoke run times fp32
        # (its attention step still checks all three dtypes).
        self.precisions = ("fp32",) if self.smoke else tuple(PRECISIONS)

    def as_dict(self) -> Dict[str, Any]:
        return {"device": self.device, "image_size": list(self.image_size), "batch_sizes": list(self.batch_sizes),
                "precisions": list(self.precisions), "rounds": self.rounds, "train_iterations": self.train_iterations,
                "time_limit_s": self.time_limit, "models": {name: MODELS[name].config for name in CHECKED_MODELS},
                "attention_tolerance": ATTENTION_TOLERANCE, "goals": GOALS}


# ---------------------------------------------------------------------------------------------- steps

def environment() -> Dict[str, Any]:
    """GPU, driver, torch/CUDA/cuDNN, detectron2 and its compiled ops, dsanet."""
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
            for key in GRADIENT_KEYS:
                ref = reference[key]
                row[key] = float((got[key].double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            row["tolerance"] = ATTENTION_TOLERANCE[name]
            row["within"] = all(row[key] <= row["tolerance"] for key in GRADIENT_KEYS)
            accuracy.append(row)
        del q, k, v, grad, reference
    return {"paths": paths, "accuracy": accuracy,
            "error": "max |x - x_fp64| / max |x_fp64| over the output and the gradients of q, k, v"}


def _output_and_grads(fn: Callable, q, k, v, grad, scale: float) -> Dict[str, Any]:
    """``fn``'s output (N, L, C) and the gradients of q, k (N, L, D) and v (N, L, C) for ``grad``."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v, scale)
    out.backward(grad)
    return {"out": out.detach(), "grad_q": q.grad, "grad_k": k.grad, "grad_v": v.grad}


def _efficient_kernel_accepts(q, k, v, scale: float) -> Optional[bool]:
    """Whether CUDA's memory-efficient SDPA kernel runs these inputs (q/k narrower than v); None on CPU."""
    if q.device.type != "cuda":
        return None
    from torch.nn.attention import SDPBackend, sdpa_kernel  # torch >= 2.3: imported only where a CUDA kernel is checked

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
        common.append("train.amp.enabled=True")  # the trainer's fp16 autocast with a grad scaler
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
    finite = bool(losses) and all(math.isfinite(r["total_loss"]) for r in losses)
    return {
        "iterations": len(losses), "expected_iterations": n, "losses_finite": finite,
        "last_total_loss": losses[-1]["total_loss"] if losses else None,
        "checkpoint_written": checkpoint.is_file(), "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - started, 1),
        "ten_numbers": {k: ten.get(k) for k in keys},
        "ten_numbers_printed": "AP\tAP50\tAP75" in stdout,
        "ok": finite and len(losses) == n and checkpoint.is_file() and all(k in ten for k in keys),
    }


def _run(command: List[str]) -> str:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[1]).name} exited {result.returncode}: {result.stderr[-1500:]}")
    return result.stdout


# ---------------------------------------------------------------------------------------------- benchmark

def benchmark(settings: Settings, deadline: float) -> Dict[str, Any]:
    """Every (batch, precision), the goals' configurations first; one is skipped when the last one's
    cost would run past ``deadline`` (a ``time.monotonic()``)."""
    runners = [speed.build_runner(name, MODELS[name].config, settings.device) for name in CHECKED_MODELS]
    order = sorted(((b, p) for b in settings.batch_sizes for p in settings.precisions),
                   key=lambda bp: (bp[1] == "fp32", -bp[0]))  # batch 16 under AMP first: the goals
    configs, last_cost = [], 0.0
    for batch_size, precision in order:
        config = {"batch": batch_size, "precision": precision}
        if time.monotonic() + last_cost > deadline:
            configs.append({**config, "skipped": "time limit"})
            continue
        started = time.monotonic()
        configs.append({**config, "models": _measure_config(runners, settings, batch_size, precision)})
        last_cost = time.monotonic() - started
    return {"configs": configs, "baseline": BASELINE,
            "peak_memory": "the step's max_memory_allocated above what was allocated before it, plus the "
                           "model's weights and optimizer state"}


def _measure_config(runners: List[speed.Runner], settings: Settings, batch_size: int,
                    precision: str) -> Dict[str, Dict[str, Any]]:
    """Per model, one (batch, precision): :func:`benchmarks.speed.measure`'s training steps on
    ``batch_size`` images and inferences on one, as the check's columns."""
    device = settings.device
    batch = synthetic_batch(settings.image_size, batch_size, device=device)
    rounds = {runner.name: settings.rounds for runner in runners}
    measured = speed.measure(runners, batch, device, train_repeats=rounds, inference_repeats=rounds,
                             precisions=(PRECISIONS[precision],), memory=timing.is_cuda(device),
                             images=[{"image": batch[0]["image"]}])[PRECISIONS[precision]]
    rows = {r.name: _model_row(measured[r.name], measured[BASELINE], r, batch_size) for r in runners}
    for row in rows.values():
        row["memory_ratio"] = timing.ratio(row["peak_gib"], rows[BASELINE]["peak_gib"])
    return rows


def _model_row(row: Dict[str, Any], base: Dict[str, Any], runner: speed.Runner, batch_size: int) -> Dict[str, Any]:
    """One model's columns from its ``speed.measure`` row and its baseline's (the same rounds):
    times per round, medians, per-round ratios (median and range), images/s, peak GiB."""
    out: Dict[str, Any] = {"oom": row.get("error") == "OOM"}
    for kind in ("train", "inference"):
        times = row.get(f"{kind}_times_s", [])
        ratios = speed.round_ratios(times, base.get(f"{kind}_times_s", []))
        out[f"{kind}_s"] = [round(t, 5) for t in times]
        out[f"{kind}_ratio"] = timing.median(ratios)
        out[f"{kind}_ratio_range"] = [min(ratios), max(ratios)] if ratios else None
    out["train_step_s"], out["inference_latency_s"] = row.get("train_s"), row.get("inference_s")
    out["images_per_s"] = timing.ratio(batch_size, out["train_step_s"])
    # As if the model were alone on the GPU: the step's rise above what was allocated before it
    # (every model's weights), plus this model's own weights and optimizer state.
    peak = row.get("train_peak_mib")
    own = state_bytes(runner.model, runner.optimizer)
    out["peak_gib"] = None if peak is None else round((peak * MiB + own) / GIB, 3)
    return out


def against_cpu_estimate(result: Dict[str, Any], estimates: Path = ROOT / "benchmarks" / "results" / "gpu_memory.json"
                         ) -> List[Dict[str, Any]]:
    """The measured peak of each model at 2 images per GPU beside the CPU's estimate of the same step
    (``benchmarks/gpu_memory.py``, same config, R50, same precision), with their ratio."""
    if not estimates.is_file():
        return []
    rows = {(r["config"], r["depth"], r["precision"]): r for r in json.loads(estimates.read_text())["rows"]
            if r["images"] == 2}
    compared = []
    for config in result.get("benchmark", {}).get("configs", []):
        if config.get("batch") != 2:
            continue
        for name, measured in (config.get("models") or {}).items():
            estimate = rows.get((MODELS[name].config, 50, PRECISIONS[config["precision"]]))
            if estimate is None or measured.get("peak_gib") is None:
                continue
            estimate_gib = estimate["estimate_mib"] * MiB / GIB
            compared.append({"model": name, "precision": config["precision"], "cuda_peak_gib": measured["peak_gib"],
                             "cpu_estimate_gib": round(estimate_gib, 3),
                             "ratio": timing.ratio(measured["peak_gib"], estimate_gib)})
    return compared


# ---------------------------------------------------------------------------------------------- goals

def judge(result: Dict[str, Any], smoke: bool) -> Dict[str, Any]:
    """The goals from the measured numbers; on the CPU smoke run computed but not judged."""
    goals: Dict[str, Any] = {}
    configs = {(c["batch"], c["precision"]): c for c in result.get("benchmark", {}).get("configs", [])}
    big = max((b for b, _ in configs), default=None)
    for precision in ("fp16", "bf16"):
        models = configs.get((big, precision), {}).get("models") or {}
        conf, full = models.get("DSANet-Conf", {}), models.get("DSANet-P3-P7", {})
        goals[f"dsanet_conf_step_{precision}"] = _goal(conf.get("train_ratio"), GOALS["step_ratio"], smoke)
        goals[f"dsanet_conf_memory_{precision}"] = _goal(conf.get("memory_ratio"), GOALS["memory_ratio"], smoke)
        goals[f"full_resolution_p3_p7_gib_{precision}"] = _goal(full.get("peak_gib"), GOALS["full_resolution_gib"], smoke)
    accuracy = result.get("attention", {}).get("accuracy")
    within = None if accuracy is None else all(r["within"] for r in accuracy)
    goals["attention_within_tolerance"] = {"value": within, "met": within}
    return goals


def _goal(value: Optional[float], limit: float, smoke: bool) -> Dict[str, Any]:
    met = None if value is None or smoke else value <= limit
    return {"value": value, "limit": limit, "met": met}


def passed(result: Dict[str, Any]) -> bool:
    """Every step ran, train_net.py trained and evaluated, attention was within tolerance and no
    CUDA test failed (the speed and memory goals are reported, not required)."""
    tests = result.get("cuda_tests", {})
    return (all(step["status"] == "ok" for step in result["steps"].values())
            and result.get("training", {}).get("ok", False)
            and bool(result["goals"]["attention_within_tolerance"]["met"])
            and tests.get("failed", 1) == 0 and tests.get("errors", 1) == 0)


def run(settings: Settings) -> Dict[str, Any]:
    """Every step in order (a failed step is recorded with its error, and the others still run),
    then the goals and the provenance: the check's JSON."""
    start = time.monotonic()
    result: Dict[str, Any] = {"smoke": settings.smoke, "settings": settings.as_dict(), "steps": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        steps = [("environment", environment), ("cuda_tests", cuda_tests), ("attention", lambda: attention(settings)),
                 ("training", lambda: training(settings, Path(folder))),
                 ("benchmark", lambda: benchmark(settings, start + settings.time_limit))]
        for name, step in steps:
            started = time.monotonic()
            try:
                result[name] = step()
                status = {"status": "ok"}
            except Exception as e:  # a failed step is recorded, and the others still run
                status = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            result["steps"][name] = {**status, "seconds": round(time.monotonic() - started, 1)}
    result["goals"] = judge(result, settings.smoke)
    result["memory_against_cpu_estimate"] = against_cpu_estimate(result)
    result["total_s"] = round(time.monotonic() - start, 1)
    result["provenance"] = provenance()
    return result
