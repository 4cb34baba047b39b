"""Helpers shared by the benchmark scripts: the compared models, timing with medians, peak-memory
measurement (peak RSS in a fresh process on CPU, ``max_memory_allocated`` on CUDA), synthetic
inputs, tables, JSON and machine information.
"""
from __future__ import annotations

import dsanet  # noqa: F401  (applies the detectron2 compatibility shims before detectron2 imports)

import argparse
import ctypes
import importlib
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
import subprocess
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances
from tabulate import tabulate
from torch import nn

from dsanet.precision import cpu_has_native_bf16

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_ROOT = REPO_ROOT / "configs"

MiB = 2 ** 20
FULL_IMAGE_SIZE: Tuple[int, int] = (800, 1333)
QUICK_IMAGE_SIZE: Tuple[int, int] = (256, 416)  # --quick: about 10x fewer pixels than 800x1333

# The default baseline: a model's time and FLOP ratios are against its ModelSpec.baseline.
BASELINE = "RetinaNet"


@dataclass(frozen=True)
class ModelSpec:
    """A compared model: its config (relative to configs/) and the model its ratios are against.

    A baseline is itself a model of :data:`MODELS` whose baseline is its own name.
    """

    config: str
    baseline: str = BASELINE


# The compared models, by the names summary.json uses. A new family is two lines, its baseline
# (against itself) and its variant, as FCOS and DSA-FCOS below.
MODELS: Dict[str, ModelSpec] = {
    "RetinaNet": ModelSpec("COCO-Detection/retinanet_R_50_FPN_1x.py"),
    "RetinaNet-Conf": ModelSpec("COCO-Detection/retinanet_conf_R_50_FPN_1x.py"),
    "DSANet": ModelSpec("COCO-Detection/dsanet_R_50_FPN_1x.py"),
    "DSANet-Conf": ModelSpec("COCO-Detection/dsanet_conf_R_50_FPN_1x.py"),
    "DSANet-P3half": ModelSpec("Ablations/dsanet_p3half_k1_R_50_FPN_1x.py"),
    "DSANet-P3-P7": ModelSpec("Ablations/dsanet_self_p3-p7_R_50_FPN_1x.py"),
    "FCOS": ModelSpec("COCO-Detection/fcos_R_50_FPN_1x.py", baseline="FCOS"),
    "DSA-FCOS": ModelSpec("COCO-Detection/dsa_fcos_R_50_FPN_1x.py", baseline="FCOS"),
}

# glibc raises its mmap threshold after the first large free(), after which freed tensors stay
# cached in the heap and peak RSS depends on the allocation history (at P3 we saw 192-204 MiB
# against 165 MiB for the same computation). Pinning the threshold with mallopt (which also
# switches off its dynamic adjustment) hands every large freed tensor back to the OS, so peak RSS
# follows the bytes actually live. 128 KiB is glibc's initial threshold.
M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024




def check_models(models: Optional[Mapping[str, ModelSpec]] = None) -> Mapping[str, ModelSpec]:
    """``models`` (default :data:`MODELS`) after checking that every baseline is one of them and is
    its own baseline (ratios are one step from a baseline, never a chain); ValueError otherwise."""
    models = MODELS if models is None else models
    for name, spec in models.items():
        base = models.get(spec.baseline)
        if base is None:
            raise ValueError(f"{name}: baseline {spec.baseline!r} is not a compared model ({', '.join(models)})")
        if base.baseline != spec.baseline:
            raise ValueError(f"{name}: baseline {spec.baseline!r} is not its own baseline (it has {base.baseline!r})")
    return models


def baselines(models: Optional[Mapping[str, ModelSpec]] = None) -> List[str]:
    """The distinct baselines of ``models`` (default :data:`MODELS`), in model order."""
    models = check_models(models)
    return list(dict.fromkeys(spec.baseline for spec in models.values()))


def baseline_label(models: Optional[Mapping[str, ModelSpec]] = None) -> str:
    """"RetinaNet" when all models share one baseline, else "each model's baseline" (for titles)."""
    found = baselines(models)
    return found[0] if len(found) == 1 else "each model's baseline"


# --------------------------------------------------------------------------- devices and timing

def default_device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def is_cuda(device: Union[str, torch.device]) -> bool:
    """True for a CUDA device (string or torch.device)."""
    return torch.device(device).type == "cuda"


def synchronize(device: Union[str, torch.device]) -> None:
    """Wait for queued CUDA work, so that wall-clock time covers it; no-op on CPU."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: Union[str, torch.device]) -> float:
    """Seconds one call of ``fn`` takes, synchronised on CUDA before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_times(calls: Mapping[Hashable, Callable[[], Any]], repeats: Union[int, Mapping[Hashable, int]],
                      device: Union[str, torch.device], warmup: int = 1) -> Dict[Hashable, List[float]]:
    """Time several calls in rounds, ABAB... rather than AAA...BBB..., so that a slow drift of the
    machine (another job, thermal state, allocator growth) spreads over all of them alike.

    Args:
        calls: name (any hashable key) -> zero-argument callable, run in this order in each round.
        repeats: timed rounds, one count for all or per name; a name with fewer repeats than
            others sits out the later rounds (for slow calls).
        warmup: untimed calls of each before the first round (kernel loading, allocator growth).
    Returns:
        name -> list of seconds, in round order.
    """
    counts = {name: repeats if isinstance(repeats, int) else repeats[name] for name in calls}
    for _ in range(warmup):
        for fn in calls.values():
            fn()
            synchronize(device)
    times: Dict[Hashable, List[float]] = {name: [] for name in calls}
    for round_index in range(max(counts.values(), default=0)):
        for name, fn in calls.items():
            if round_index < counts[name]:
                times[name].append(time_call(fn, device))
    return times


def median(values: Sequence[float]) -> Optional[float]:
    """Median, or None for an empty sequence."""
    return statistics.median(values) if values else None


def ratio(value: Optional[float], reference: Optional[float]) -> Optional[float]:
    """value / reference, or None when either is missing or the reference is zero."""
    if value is None or not reference:
        return None
    return value / reference


# --------------------------------------------------------------------------- peak memory

def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark to its current RSS (Linux >= 4.0); False if unsupported.

    Without the reset, a warm-up whose peak exceeded the current RSS would hide part of the next peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's memory map so far, in bytes.

    On Linux this is VmHWM from /proc/self/status rather than ``getrusage``'s ru_maxrss: in a
    subprocess, ru_maxrss also keeps the high-water mark of the parent's memory image that was
    copied at fork and replaced at exec, which can hide the child's whole measurement (a child of
    a 1 GB parent reads at least 1 GB). VmHWM is the current map's mark, which clear_refs resets.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def peak_extra_memory(fn: Callable[[], Any], device: Union[str, torch.device]) -> int:
    """Bytes that one call of ``fn`` needs at its peak beyond what was resident before it.

    On CUDA: ``max_memory_allocated`` over the call minus ``memory_allocated`` before it. On CPU:
    the rise of peak RSS over the call; meaningful only in a fresh process after a small warm-up
    (see :func:`call_in_fresh_process`), since RSS also counts libraries and allocator caches.
    """
    if is_cuda(device):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    reset_peak_rss()
    before = peak_rss_bytes()
    fn()
    return peak_rss_bytes() - before


_forkserver_preloaded = False  # the preload list only counts before the forkserver starts


def pin_malloc_threshold() -> bool:
    """Pin glibc's mmap threshold in this process (see :data:`MMAP_THRESHOLD`); False off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def _fresh_process_entry(module: str, function: str, args: Tuple[Any, ...], pin_malloc: bool,
                         threads: int, conn: Connection) -> None:
    """Body of the fresh process: call ``module.function(*args)`` and send back the result."""
    try:
        torch.set_num_threads(threads)  # as many as the parent uses (--threads)
        if pin_malloc:
            pin_malloc_threshold()
        conn.send(("ok", getattr(importlib.import_module(module), function)(*args)))
    except BaseException:  # report any failure to the parent rather than dying silently
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def call_in_fresh_process(module: str, function: str, *args: Any, pin_malloc: bool = True) -> Any:
    """Run ``module.function(*args)`` in a fresh process and return its (picklable) result.

    Each call gets a new process, so that its peak RSS starts clean. The processes are forked from
    a multiprocessing forkserver that has only imported ``module`` (torch, detectron2, dsanet):
    fresh like a spawned process, without paying the imports again for every measurement. No
    parallel work ever ran in the server, so OpenMP in the children is safe. With ``pin_malloc``
    the child first pins glibc's mmap threshold (see :data:`MMAP_THRESHOLD`).
    """
    global _forkserver_preloaded
    context = multiprocessing.get_context("forkserver")
    if not _forkserver_preloaded:
        context.set_forkserver_preload([module])
        _forkserver_preloaded = True
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_fresh_process_entry,
                              args=(module, function, args, pin_malloc, torch.get_num_threads(), sender))
    process.start()
    sender.close()
    try:
        status, value = receiver.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"{module}.{function}{args} died with exit code {process.exitcode} "
                           f"(out of memory?)") from None
    process.join()
    if status != "ok":
        raise RuntimeError(f"{module}.{function}{args} failed in its process:\n{value}")
    return value


# --------------------------------------------------------------------------- models and inputs

def config_path(config: Union[str, Path]) -> Path:
    """A config path as given, or relative to configs/."""
    path = Path(config)
    return path if path.is_file() else CONFIG_ROOT / path


def load_config(config: Union[str, Path]):
    """The LazyConfig of a project config file (see :func:`config_path`)."""
    return LazyConfig.load(str(config_path(config)))


def build_model(config: Union[str, Path], device: Union[str, torch.device] = "cpu", seed: int = 0) -> nn.Module:
    """Instantiate ``cfg.model`` of a config with fresh weights (seeded; no checkpoint loaded)."""
    cfg = load_config(config)
    torch.manual_seed(seed)
    return instantiate(cfg.model).to(device)


def synthetic_image(image_size: Tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A fixed random (3, H, W) image with pixel values in [0, 255]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((3, *image_size), generator=generator) * 255


def synthetic_batch(image_size: Tuple[int, int], batch_size: int, num_classes: int = 80,
                    device: Union[str, torch.device] = "cpu", seed: int = 0) -> List[Dict[str, Any]]:
    """Images in detectron2's input format, each with three ground-truth boxes inside it."""
    height, width = image_size
    # Boxes as fractions of the image, of small, medium and large size, so all FPN levels get positives.
    fractions = torch.tensor([[0.10, 0.10, 0.25, 0.20], [0.30, 0.40, 0.60, 0.75], [0.05, 0.20, 0.95, 0.90]])
    boxes = fractions * torch.tensor([width, height, width, height])
    batch = []
    for index in range(batch_size):
        instances = Instances(image_size)
        instances.gt_boxes = Boxes(boxes.clone())
        instances.gt_classes = torch.tensor([0, 1, 2]) % num_classes
        batch.append({"image": synthetic_image(image_size, seed + index).to(device),
                      "instances": instances.to(device), "height": height, "width": width})
    return batch


# --------------------------------------------------------------------------- output

def write_json(path: Union[str, Path], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table; None shows as "-"."""
    return tabulate([["-" if v is None else v for v in row] for row in rows], headers=headers,
                    tablefmt="github", disable_numparse=True)


def fmt(value: Optional[float], digits: int = 2, suffix: str = "") -> str:
    """A number with fixed digits, or "-" for None."""
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# CPU flags that decide how fast fp32 and bf16 run (AVX-512, native bf16 dot products, AMX tiles).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def _flags_line(text: str, prefix: str) -> Optional[List[str]]:
    """The words after ``prefix:`` on the first such line of ``text`` (case-insensitive), or None."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == prefix:
            return value.split()
    return None


def cpu_flags(names: Sequence[str] = CPU_FLAGS) -> Dict[str, Any]:
    """Which of ``names`` the CPU reports, read from /proc/cpuinfo (else ``lscpu``'s Flags line).

    Returns {"source": "/proc/cpuinfo" | "lscpu" | None, flag: True/False for each name}; each flag
    is None when neither source could be read: a flag is never assumed.
    """
    flags, source = None, None
    try:
        flags, source = _flags_line(Path("/proc/cpuinfo").read_text(), "flags"), "/proc/cpuinfo"
    except OSError:
        pass
    if flags is None:
        try:
            output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
            flags, source = _flags_line(output, "flags"), "lscpu"
        except (OSError, subprocess.SubprocessError):
            pass
    if flags is None:
        return {"source": None, **{name: None for name in names}}
    present = set(flags)
    return {"source": source, **{name: name in present for name in names}}


def machine_info(device: Union[str, torch.device]) -> Dict[str, Any]:
    """What the numbers were measured on: CPU (model, flags, native bf16 as this project decides
    it), torch, threads, device, current load."""
    native_bf16, native_bf16_found = cpu_has_native_bf16()
    info = {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": native_bf16,
        "cpu_native_bf16_found": native_bf16_found,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
        "cuda_device": torch.cuda.get_device_name(device) if is_cuda(device) else None,
        "loadavg_1min": os.getloadavg()[0],
        "busy_cores_other_processes": busy_cores(),
    }
    return info


def busy_cores(interval: float = 0.5) -> Optional[float]:
    """How many cores other processes kept busy over ``interval`` seconds while this one slept
    (from /proc/stat), or None where /proc/stat is missing. Unlike the load average, it does not
    remember this run's own earlier stages."""
    def sample() -> Tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values[:8]) - idle, sum(values[:8])  # busy, total (guest time is inside user)
    try:
        busy0, total0 = sample()
        time.sleep(interval)
        busy1, total1 = sample()
    except (OSError, IndexError, ValueError):
        return None
    return (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1)


def warn_if_busy(label: str) -> Optional[str]:
    """A warning line when other processes are using the CPU right now, else None.

    Timings on a shared CPU are slower and noisier; ratios suffer less thanks to interleaving.
    """
    busy, cores = busy_cores(), os.cpu_count() or 1
    if busy is not None and busy > 0.25 * cores:
        message = (f"WARNING ({label}): other processes keep {busy:.1f} of {cores} cores busy: "
                   f"timings are slow and noisy")
        print(message, flush=True)
        return message
    return None


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--output, --quick, --device and --threads, shared by every benchmark script."""
    parser.add_argument("--output", type=Path, default=Path("output/bench"), help="folder for JSON and plots")
    parser.add_argument("--quick", action="store_true",
                        help=f"small image {QUICK_IMAGE_SIZE[0]}x{QUICK_IMAGE_SIZE[1]} and 1-2 repeats: a smoke run")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice, usually one per core)")
    return parser


def apply_threads(threads: Optional[int]) -> None:
    """Set torch's CPU thread count when one is given."""
    if threads:
        torch.set_num_threads(threads)


def main_from_command_line(run: Callable[..., Any], description: str, argv: Optional[Sequence[str]] = None) -> None:
    """Parse the shared options and call ``run(output, quick=..., device=...)``."""
    args = add_common_arguments(argparse.ArgumentParser(description=description)).parse_args(argv)
    apply_threads(args.threads)
    run(args.output, quick=args.quick, device=args.device)
