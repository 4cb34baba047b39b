"""Peak memory of one call: ``max_memory_allocated`` on CUDA; on CPU the rise of peak RSS, in a
fresh process forked from a forkserver so that nothing measured before counts."""
import ctypes
import importlib
import multiprocessing
import resource
import sys
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Tuple, Union

import torch

from benchmarks.timing import is_cuda, synchronize

MiB = 2 ** 20

# glibc raises its mmap threshold after the first large free(), after which freed tensors stay
# cached in the heap and peak RSS depends on the allocation history (at P3 we saw 192-204 MiB
# against 165 MiB for the same computation). Pinning the threshold with mallopt (which also
# switches off its dynamic adjustment) hands every large freed tensor back to the OS, so peak RSS
# follows the bytes actually live. 128 KiB is glibc's initial threshold.
M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024


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


def rss_bytes(field: str = "VmRSS") -> int:
    """Resident set size (or ``VmHWM``, its peak) of this process, from /proc/self/status (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process's memory map so far, in bytes.

    On Linux this is VmHWM from /proc/self/status rather than ``getrusage``'s ru_maxrss: in a
    subprocess, ru_maxrss also keeps the high-water mark of the parent's memory image that was
    copied at fork and replaced at exec, which can hide the child's whole measurement (a child of
    a 1 GB parent reads at least 1 GB). VmHWM is the current map's mark, which clear_refs resets.
    """
    try:
        return rss_bytes("VmHWM")
    except (OSError, RuntimeError):
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


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of a model's weights and buffers and its optimizer's state tensors (SGD's momentum):
    what training holds between steps, beside a step's own peak."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def pin_malloc_threshold() -> bool:
    """Pin glibc's mmap threshold in this process (see :data:`MMAP_THRESHOLD`); False off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


_forkserver_preloaded = False  # the preload list only counts before the forkserver starts


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
        main_spec = getattr(sys.modules["__main__"], "__spec__", None)
        # A child re-runs a `python -m` main module itself, and runpy warns when it was preloaded: then
        # only the model's imports (torch, detectron2, dsanet) are preloaded.
        is_main = main_spec is not None and main_spec.name == module
        context.set_forkserver_preload(["dsanet.modeling"] if is_main else [module])
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
