#!/usr/bin/env python
"""Export a trained DSANet or DSA-FCOS (torch.export, TorchScript, ONNX) and prove the exports equal eager PyTorch.

    tools/export_model.py --config-file output/demo/config.yaml --weights output/demo/model_final.pth \
        --output output/demo/export [--format export onnx-dynamo torchscript onnx] [--input a.jpg b.jpg | --num-images 8]

Formats, each written to --output and loaded back before it is checked:
    export       ``torch.export`` program, ``model.pt2`` (run with ``torch.export.load(...).module()``)
    onnx-dynamo  ONNX from that program by torch's dynamo-based exporter, ``model_dynamo.onnx``
    torchscript  ``torch.jit.trace`` through detectron2's TracingAdapter, ``model.ts`` (for detectron2's deploy tools)
    onnx         ONNX by torch's TorchScript-based exporter, ``model.onnx``
All keep the image's height and width dynamic. In the graph: normalisation, padding, backbone,
FPN, DSA, head and the score (fused with the confidence; on FCOS, with centerness); after it, in
Python and shared with eager (see ``dsanet.export``): anchors (FCOS's anchor points), threshold,
top-k, box decoding, NMS. On each test image (the config's test set, or --input) it compares each runtime's raw outputs with eager PyTorch
(tolerance 1e-4) and the final boxes and scores after post-processing (tolerance 1e-3), and
times each runtime on CPU. A format that cannot be exported or run is reported in one line
naming the format and the part, and the others still run. Writes ``parity.json``. Exit status
1 when a tolerance is exceeded or a requested format failed.
"""
import argparse
import json
import os
import time
import traceback
from typing import Callable, Dict, List, Sequence

import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import Instances

from dsanet import export
from dsanet.best_checkpoint import WEIGHTS_HELP, weights_for_tool
from dsanet.errors import UserInputError, exit_with_status_of
from dsanet.media import read_image_or_problem
from dsanet.predictor import Predictor

RAW_TOLERANCE = 1e-4
FINAL_TOLERANCE = 1e-3
# --format name: (file written, name of its runtime in the report)
FORMATS = {"export": ("model.pt2", "exported_program"), "onnx-dynamo": ("model_dynamo.onnx", "onnxruntime_dynamo"),
           "torchscript": ("model.ts", "torchscript"), "onnx": ("model.onnx", "onnxruntime")}


def where_it_failed(error: BaseException) -> str:
    """The innermost frame of the error's traceback in this project or detectron2, as "file:line (function)"."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if "/dsanet/" in f.filename or "/detectron2/" in f.filename or "/tools/" in f.filename]
    if not frames:
        return "torch"
    frame = frames[-1]
    short = frame.filename.split("/projects/DSANet/")[-1].split("site-packages/")[-1]
    return f"{short}:{frame.lineno} ({frame.name})"


def one_line(error: BaseException) -> str:
    """The first non-empty line of an error's message, with its type."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def max_abs_difference(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """Largest absolute elementwise difference between two equally long lists of same-shape tensors."""
    assert len(a) == len(b), f"{len(a)} outputs against {len(b)}"
    for x, y in zip(a, b):
        assert x.shape == y.shape, f"shapes {tuple(x.shape)} and {tuple(y.shape)} differ"
    return max(((x.float() - y.float()).abs().max().item() if x.numel() else 0.0) for x, y in zip(a, b))


def compare_detections(reference: Instances, other: Instances) -> Dict[str, float]:
    """How far two detection sets are apart, each reference detection matched to the closest box of
    the same class in ``other`` (greedy, in score order).

    Matching, not position, pairs detections: scores that differ by 1e-6 may swap two
    detections' places in the sorted output without changing the set.

    Returns:
        {"count": reference count, "count_other", "unmatched" (reference detections with no
        same-class partner left), "max_box_diff", "max_score_diff" (over matched pairs)}.
    """
    ref_boxes, other_boxes = reference.pred_boxes.tensor.float(), other.pred_boxes.tensor.float()
    free = torch.ones(len(other), dtype=torch.bool)
    box_diff, score_diff, unmatched = 0.0, 0.0, 0
    for i in range(len(reference)):
        candidates = free & (other.pred_classes == reference.pred_classes[i])
        if not candidates.any():
            unmatched += 1
            continue
        distance = (other_boxes - ref_boxes[i]).abs().amax(dim=1).masked_fill(~candidates, float("inf"))
        j = int(distance.argmin())
        free[j] = False
        box_diff = max(box_diff, float(distance[j]))
        score_diff = max(score_diff, abs(float(reference.scores[i]) - float(other.scores[j])))
    return {"count": len(reference), "count_other": len(other), "unmatched": unmatched,
            "max_box_diff": box_diff, "max_score_diff": score_diff}


def median_time(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def export_format(name: str, model, sample, path: str, programs: dict) -> Callable:
    """Write one format to ``path`` and return its runtime (image -> flat outputs), loaded back from disk."""
    if name == "export":
        programs["export"] = export.export_program(model, sample, path)
        return export.load_program(path)
    if name == "onnx-dynamo":
        program = programs.get("export") or export.export_program(
            model, sample, os.path.join(os.path.dirname(path), FORMATS["export"][0]))
        export.export_onnx_dynamo(program, model, path)
        return export.OnnxRunner(path, num_threads=torch.get_num_threads())
    if name == "torchscript":
        export.export_torchscript(model, sample, path)
        return torch.jit.load(path)
    export.export_onnx(model, sample, path)
    return export.OnnxRunner(path, num_threads=torch.get_num_threads())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    parser.add_argument("--output", required=True, help="folder for the exported models and parity.json")
    parser.add_argument("--format", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    parser.add_argument("--input", nargs="*", default=None, help="test images (default: the config's test set)")
    parser.add_argument("--num-images", type=int, default=8, help="test-set images to check when --input is absent")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per runtime (median reported)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="key=value config overrides")
    return parser.parse_args(argv)


def load_images(predictor: Predictor, args: argparse.Namespace) -> List[dict]:
    """Model inputs of the test images: {"file_name", "image" (3, H, W), "height", "width"}."""
    if args.input:
        files = list(args.input)
    else:
        names = predictor.cfg.dataloader.test.dataset.names
        files = [r["file_name"] for r in DatasetCatalog.get(names if isinstance(names, str) else names[0])]
        files = files[: args.num_images]
    if not files:
        raise UserInputError("no test images: give --input")
    inputs = []
    for path in files:
        image, problem = read_image_or_problem(path, predictor.input_format)
        if problem:
            raise UserInputError(f"--input {path}: {problem}")
        record = predictor.preprocess(image)
        del record["transform"]
        inputs.append(dict(record, file_name=path))
    return inputs


def check_parity(model, runtimes: Dict[str, callable], inputs: List[dict],
                 failures: Dict[str, str]) -> Dict[str, Dict[str, float]]:
    """Worst raw-output and final-detection differences of each runtime against eager, over all images.

    A runtime that raises on an image is dropped from ``runtimes`` and its one-line reason put in ``failures``.
    """
    worst = {name: {"raw_max_abs": 0.0, "box_max_abs": 0.0, "score_max_abs": 0.0, "mismatched_images": 0,
                    "detections": 0} for name in runtimes}
    for record in inputs:
        image = record["image"]
        with torch.no_grad():
            eager_raw = torch.utils._pytree.tree_leaves(export.raw_head_outputs(model, image))
            eager = model([{k: record[k] for k in ("image", "height", "width")}])[0]["instances"]
        for name, run in list(runtimes.items()):
            try:
                flat = run(image)
            except Exception as e:  # noqa: BLE001  (reported in one line; the other runtimes go on)
                part = where_it_failed(e)
                if name == FORMATS["export"][1] and "Runtime assertion failed" in str(e):
                    part = "; ".join(export.program_limits(model)) or "a shape assertion of the program"
                failures[name] = f"fails on {record['file_name']} {tuple(image.shape[-2:])}: {part} ({one_line(e)[:120]})"
                del runtimes[name], worst[name]
                continue
            w = worst[name]
            w["raw_max_abs"] = max(w["raw_max_abs"], max_abs_difference(eager_raw, flat))
            final = export.postprocess(model, flat, tuple(image.shape[-2:]), (record["height"], record["width"]))
            diff = compare_detections(eager, final)
            w["detections"] += diff["count"]
            w["mismatched_images"] += int(diff["count"] != diff["count_other"] or diff["unmatched"] > 0)
            w["box_max_abs"] = max(w["box_max_abs"], diff["max_box_diff"])
            w["score_max_abs"] = max(w["score_max_abs"], diff["max_score_diff"])
    return worst


def time_runtimes(model, runtimes: Dict[str, callable], record: dict, repeats: int) -> Dict[str, float]:
    """Median seconds per image: eager model(...) end to end, and each export's graph plus post-processing."""
    image, size = record["image"], (record["height"], record["width"])
    timings = {}
    with torch.no_grad():
        timings["eager"] = median_time(lambda: model([{"image": image, "height": size[0], "width": size[1]}]), repeats)
    for name, run in runtimes.items():
        timings[name] = median_time(
            lambda: export.postprocess(model, run(image), tuple(image.shape[-2:]), size), repeats)
        timings[name + "_graph_only"] = median_time(lambda: run(image), repeats)
    return timings


def main(args: argparse.Namespace) -> int:
    """Export, check, time; returns the exit status (1 when a tolerance is exceeded or a format failed)."""
    weights = weights_for_tool(args.weights, args.config_file, args.opts)
    predictor = Predictor(args.config_file, weights, args.opts, device="cpu")
    model = predictor.model
    inputs = load_images(predictor, args)
    os.makedirs(args.output, exist_ok=True)
    sample = inputs[0]["image"]
    runtimes, failures, programs = {}, {}, {}
    for name in args.format:
        filename, runtime = FORMATS[name]
        path = os.path.join(args.output, filename)
        try:
            runtimes[runtime] = export_format(name, model, sample, path, programs)
        except Exception as e:  # noqa: BLE001  (reported in one line; the other formats go on)
            failures[runtime] = f"cannot export ({where_it_failed(e)}): {one_line(e)}"
            continue
        print(f"wrote {path}")

    parity = check_parity(model, runtimes, inputs, failures)
    timings = time_runtimes(model, runtimes, inputs[0], args.repeats)
    sizes = sorted({tuple(r["image"].shape[-2:]) for r in inputs})
    print(f"parity against eager PyTorch on {len(inputs)} images of sizes {sizes}:")
    failed = False
    for name, w in parity.items():
        ok = (w["raw_max_abs"] <= RAW_TOLERANCE and w["mismatched_images"] == 0
              and w["box_max_abs"] <= FINAL_TOLERANCE and w["score_max_abs"] <= FINAL_TOLERANCE)
        failed |= not ok
        print(f"  {name:18s} raw outputs max |diff| {w['raw_max_abs']:.2e} (tol {RAW_TOLERANCE:g}); "
              f"{w['detections']} detections: boxes {w['box_max_abs']:.2e}, scores {w['score_max_abs']:.2e} "
              f"(tol {FINAL_TOLERANCE:g}); images with other detections: {w['mismatched_images']}  "
              f"{'OK' if ok else 'FAILED'}")
    for runtime, reason in failures.items():
        failed = True
        print(f"  {runtime:18s} {reason}")
    print(f"CPU time per image ({torch.get_num_threads()} threads, median of {args.repeats}, "
          f"{tuple(inputs[0]['image'].shape[-2:])}):")
    for name, seconds in timings.items():
        print(f"  {name:30s} {seconds * 1000:8.2f} ms")
    with open(os.path.join(args.output, "parity.json"), "w") as f:
        json.dump({"images": [r["file_name"] for r in inputs], "tolerances": {"raw": RAW_TOLERANCE,
                   "final": FINAL_TOLERANCE}, "parity": parity, "seconds_per_image": timings,
                   "failures": failures, "threads": torch.get_num_threads(),
                   "outputs": export.output_names(model)}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    exit_with_status_of(lambda: main(parse_args()))
