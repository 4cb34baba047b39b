"""Wall-clock timing: calls timed in interleaved rounds, their medians and ratios."""
import statistics
import time
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Union

import torch


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
