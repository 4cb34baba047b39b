"""What a benchmark result was measured on: ``dsanet_lab.provenance`` (command, date, processor and its
flags, GPU, library versions, threads) and what only a timing needs beside it: the device measured
and how busy the machine was."""
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from dsanet_lab.provenance import provenance


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


def record(device: Union[str, torch.device]) -> Dict[str, Any]:
    """:func:`dsanet_lab.provenance.provenance` of this run, plus the device measured, the 1-minute load
    average and the cores other processes keep busy now (for the ``"provenance"`` of a result)."""
    return {**provenance(), "device": str(device), "loadavg_1min": os.getloadavg()[0],
            "busy_cores_other_processes": busy_cores()}
