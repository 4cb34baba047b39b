"""How much memory one training step of each COCO recipe needs per GPU, estimated on a CPU, and on which
card sizes 2 images per GPU fit.

    python -m benchmarks.gpu_memory            # -> benchmarks/results/gpu_memory.json (resumes: kept rows stay)

Each row is one training step (forward with losses, backward, SGD step) of a recipe's model at detectron2's
COCO training size (800x1333 after resizing), batch 2, in fp32 or under fp16 autocast with a grad scaler,
measured in a fresh process (:func:`benchmarks.memory.call_in_fresh_process`). After one warm-up step the
estimate is the second step's rise of the process's peak memory (activations, gradients, workspaces)
plus what training holds between steps (weights, buffers, SGD momentum: :func:`benchmarks.memory.state_bytes`).

How it relates to CUDA: on a GPU, ``torch.cuda.max_memory_allocated`` counts the same tensors. The CPU
estimate leaves out the CUDA context (about 0.3-0.5 GiB per process), cuDNN's convolution workspaces and
the caching allocator's rounding and fragmentation (``memory_reserved`` runs above ``memory_allocated``),
and CPU kernels may allocate temporaries that CUDA kernels do not (or the reverse). A card is listed as
fitting when the estimate plus :data:`CUDA_OVERHEAD_GIB` stays under :data:`USABLE_FRACTION` of it; the
JSON records both numbers with the verdicts. ``make gpu-check`` compares its measured CUDA peak with these
rows on the day it runs on a GPU.
"""
import argparse
import concurrent.futures
import copy
import json
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks import speed
from benchmarks.memory import MiB, call_in_fresh_process, peak_extra_memory, state_bytes
from benchmarks.models import FULL_IMAGE_SIZE, synthetic_batch
from dsanet.fileio import write_json
from dsanet_lab.provenance import provenance

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_memory.json"
# (label, config): the recipes a GPU user starts first; R101 rows override the backbone depth.
RECIPES = (
    ("RetinaNet", "COCO-Detection/retinanet_R_50_FPN_1x.py"),
    ("DSANet-Conf (P4-P7)", "COCO-Detection/dsanet_conf_R_50_FPN_1x.py"),
    ("DSANet, P3 half k1", "Ablations/dsanet_p3half_k1_R_50_FPN_1x.py"),
    ("DSANet, P3 half k3", "Ablations/dsanet_p3half_k3_R_50_FPN_1x.py"),
    ("DSANet, P3-P7 full resolution", "Ablations/dsanet_self_p3-p7_R_50_FPN_1x.py"),
    ("DSA-FCOS", "COCO-Detection/dsa_fcos_R_50_FPN_1x.py"),
)
DEPTHS = (50, 101)
PRECISIONS = ("fp32", "amp")  # "amp": fp16 autocast with a grad scaler, as train.amp.enabled on a GPU
# What each precision's row runs under on the CPU. This CPU has no fp16 arithmetic (emulated fp16 convolutions take
# many minutes a step at 800x1333), and CPU autocast casts the same ops to bf16 as to fp16, both 2-byte types:
# the fp16 rows run under bf16 autocast, and PROXY_CHECK_SIZE's rows compare the two on real fp16.
MEASURED_UNDER = {"fp32": "fp32", "amp": "bf16"}
PROXY_CHECK_SIZE = (320, 480)
PROXY_CHECK_CONFIGS = ("COCO-Detection/retinanet_R_50_FPN_1x.py", "COCO-Detection/dsanet_conf_R_50_FPN_1x.py")
IMAGES_PER_GPU = 2
CARDS_GIB = (16, 24, 32, 80)
CUDA_OVERHEAD_GIB = 1.0  # CUDA context and cuDNN workspaces, which a CPU process does not have
USABLE_FRACTION = 0.9  # the caching allocator's rounding and fragmentation


def measure_step(config: str, depth: int, precision: str, images: int,
                 image_size: Tuple[int, int] = FULL_IMAGE_SIZE) -> Dict[str, float]:
    """MiB of one training step's rise (after a warm-up step) and of the state training holds; call it in
    a fresh process (:func:`row` does), where the rise of peak memory is the step's own."""
    runner = speed.build_runner(config, config, "cpu", overrides=[f"model.backbone.bottom_up.stages.depth={depth}"])
    if precision == "amp":
        runner.scaler = torch.amp.GradScaler("cpu")
    batch = synthetic_batch(image_size, images)
    # Random weights, unlike pretrained ones, let activations grow with depth (R101's FPN outputs reach 1e7 at
    # 800x1333), and one SGD step on their gradients can leave non-finite weights that fail FCOS's GIoU check:
    # the measured step starts again from the initial weights (sizes, and so memory, do not depend on values).
    initial = copy.deepcopy(runner.model.state_dict())
    speed.train_step(runner, batch, "cpu", precision)  # warm-up: SGD momentum, lazily built buffers
    runner.model.load_state_dict(initial)
    del initial
    runner.optimizer.zero_grad(set_to_none=True)  # the measured step allocates its gradients itself
    rise = peak_extra_memory(lambda: speed.train_step(runner, batch, "cpu", precision), "cpu")
    return {"step_rise_mib": rise / MiB, "state_mib": state_bytes(runner.model, runner.optimizer) / MiB}


def fits(estimate_mib: float) -> Dict[str, bool]:
    """Card size (GiB) -> whether a step of ``estimate_mib`` fits it, by the module's rule."""
    return {str(card): estimate_mib / 1024 + CUDA_OVERHEAD_GIB <= USABLE_FRACTION * card for card in CARDS_GIB}


def row(label: str, config: str, depth: int, precision: str) -> Dict[str, Any]:
    measured = call_in_fresh_process("benchmarks.gpu_memory", "measure_step", config, depth,
                                     MEASURED_UNDER[precision], IMAGES_PER_GPU)
    estimate = measured["step_rise_mib"] + measured["state_mib"]
    # One image per GPU: the step's rise is mostly activations, which scale with the images; an estimate.
    one_image = measured["step_rise_mib"] / IMAGES_PER_GPU + measured["state_mib"]
    return {"model": label, "config": config, "depth": depth, "precision": precision,
            "measured_under": MEASURED_UNDER[precision], "images": IMAGES_PER_GPU,
            **{k: round(v, 1) for k, v in measured.items()}, "estimate_mib": round(estimate, 1),
            "fits": fits(estimate), "fits_with_1_image": fits(one_image)}


def run(output: Path, threads: Optional[int] = None, jobs: int = 1) -> Dict[str, Any]:
    """Measure every (recipe, depth, precision) not yet in ``output``, ``jobs`` fresh processes at a time,
    writing the file after each row (an interrupted run resumes from it)."""
    if threads:
        torch.set_num_threads(threads)
    kept_file = json.loads(output.read_text()) if output.is_file() else {}
    done: List[Dict[str, Any]] = kept_file.get("rows", [])
    kept = {(r["config"], r["depth"], r["precision"]) for r in done}
    todo = [(label, config, depth, precision) for depth in DEPTHS for precision in PRECISIONS
            for label, config in RECIPES if (config, depth, precision) not in kept]
    check = {"rows": kept_file.get("fp16_proxy_check")}
    lock = threading.Lock()

    def write() -> None:
        write_json(output, {"image_size": list(FULL_IMAGE_SIZE), "cards_gib": list(CARDS_GIB),
                            "cuda_overhead_gib": CUDA_OVERHEAD_GIB, "usable_fraction": USABLE_FRACTION,
                            "fp16_proxy_check": check["rows"], "rows": sorted(done, key=_order),
                            "provenance": provenance()})

    def measure_and_write(item) -> None:
        measured = row(*item)
        with lock:
            done.append(measured)
            print(json.dumps(measured), flush=True)
            write()

    def check_and_write() -> None:
        rows = proxy_check()
        with lock:
            check["rows"] = rows
            print(json.dumps({"fp16_proxy_check": rows}), flush=True)
            write()

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:  # each job waits on its own process
        tasks = ([] if check["rows"] else [pool.submit(check_and_write)]) + [pool.submit(measure_and_write, t) for t in todo]
        for task in tasks:
            task.result()
    return json.loads(output.read_text())


def proxy_check() -> List[Dict[str, Any]]:
    """The step's rise under fp16 autocast with a grad scaler and under bf16 autocast, at a size where CPU fp16
    runs in minutes: what backs measuring the fp16 rows under bf16."""
    checks = []
    for config in PROXY_CHECK_CONFIGS:
        rises = {p: call_in_fresh_process("benchmarks.gpu_memory", "measure_step", config, 50, p, IMAGES_PER_GPU,
                                          PROXY_CHECK_SIZE)["step_rise_mib"] for p in ("amp", "bf16")}
        checks.append({"config": config, "image_size": list(PROXY_CHECK_SIZE), "fp16_rise_mib": round(rises["amp"], 1),
                       "bf16_rise_mib": round(rises["bf16"], 1)})
    return checks


def _order(r: Dict[str, Any]) -> tuple:
    """Rows in the tables' order: depth, precision, recipe."""
    configs = [config for _, config in RECIPES]
    return DEPTHS.index(r["depth"]), PRECISIONS.index(r["precision"]), configs.index(r["config"])


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of each measurement")
    parser.add_argument("--jobs", type=int, default=1, help="measurements at a time, each in its own process")
    args = parser.parse_args(argv)
    run(args.output, args.threads, args.jobs)


if __name__ == "__main__":
    main()
