"""``launch``: detectron2's ``launch``, which also runs N processes over gloo where CUDA is absent
(detectron2 v0.6 asserts CUDA and uses NCCL), with a ``file://`` rendezvous on one machine."""
import atexit
import functools
import logging
import os
import sys
import tempfile
from datetime import timedelta
from typing import Callable, Optional

import torch

from .compat import _source_of

__all__ = ["launch"]

logger = logging.getLogger(__name__)


def _launcher_supports_cpu() -> bool:
    # detectron2 after v0.6 picks GLOO itself where CUDA is absent; v0.6 asserts CUDA and uses NCCL.
    return "GLOO" in _source_of("detectron2.engine.launch")


def _cpu_distributed_worker(local_rank: int, main_func: Callable, world_size: int,
                            num_workers_per_machine: int, machine_rank: int, dist_url: str,
                            args: tuple, timeout: timedelta) -> None:
    """detectron2 v0.6's ``_distributed_worker`` with gloo and without CUDA."""
    import torch.distributed as dist
    from detectron2.utils import comm

    global_rank = machine_rank * num_workers_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                            rank=global_rank, timeout=timeout)
    num_machines = world_size // num_workers_per_machine
    for i in range(num_machines):
        ranks_on_i = list(range(i * num_workers_per_machine, (i + 1) * num_workers_per_machine))
        group = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    comm.synchronize()
    main_func(*args)


def _run_then_leave_process_group(main_func: Callable, *args) -> None:
    """Runs ``main_func`` in a launched process, waits for every rank, leaves the group, runs the
    exit handlers (log files are closed there) and ends the process without the interpreter's teardown.

    Reason: gloo's worker threads can still hold the last collective's tensors when the interpreter
    finalises; releasing them then takes the GIL of a dying interpreter, which aborts the process
    ("terminate called without an active exception", SIGABRT) after its work is done. Leaving the
    group is not enough: DDP and detectron2's ``comm`` keep references that outlive it.
    """
    import torch.distributed as dist
    from detectron2.utils import comm

    main_func(*args)
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(main_func: Callable, num_gpus_per_machine: int, num_machines: int = 1,
           machine_rank: int = 0, dist_url: Optional[str] = None, args: tuple = (),
           timeout: timedelta = timedelta(minutes=30)) -> None:
    """``detectron2.engine.launch``, which also runs N processes over gloo where CUDA is absent.

    On one machine, ``dist_url`` None or ``"auto"`` means a ``file://`` rendezvous in a fresh
    temporary folder: no TCP port to find free (detectron2's "auto" binds port 0, closes it and
    hopes it stays free; its command-line default is a fixed port), so nothing else can hold it.
    """
    world_size = num_machines * num_gpus_per_machine
    if world_size > 1 and num_machines == 1 and dist_url in (None, "auto"):
        with tempfile.TemporaryDirectory(prefix="dsanet_rendezvous_") as folder:
            launch(main_func, num_gpus_per_machine, dist_url=f"file://{folder}/store", args=args, timeout=timeout)
        return
    from detectron2.engine import launch as d2_launch

    if world_size > 1:
        main_func = functools.partial(_run_then_leave_process_group, main_func)
    if world_size == 1 or torch.cuda.is_available() or _launcher_supports_cpu():
        d2_launch(main_func, num_gpus_per_machine, num_machines=num_machines,
                  machine_rank=machine_rank, dist_url=dist_url, args=args, timeout=timeout)
        return
    logger.info("CUDA is absent: launching %d processes per machine over gloo", num_gpus_per_machine)
    torch.multiprocessing.spawn(
        _cpu_distributed_worker, nprocs=num_gpus_per_machine, daemon=False,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
    )
