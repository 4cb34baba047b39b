"""Memory of COCO evaluation over many images: the process's RSS must stay flat.

Evaluates the demo model (narrow ResNet-18, 64-channel FPN; random weights, with the class bias
raised so that every image yields the full 100 detections, the evaluator's worst case) on N
synthetic 64x64 images written to disk, through the real stack: a custom COCO-format dataset
(validated on registration), ``RobustDatasetMapper``, detectron2's test loader (no workers, so all
memory is this process's), ``inference_on_dataset`` and ``COCOEvaluatorWithRecall``.

It prints the RSS after the first ``--warmup`` images, at every tenth of the run, and after
``evaluate()`` (COCOeval), and the size of the predictions the evaluator keeps by design (one
json-ready dict per detection, until ``evaluate``). Flat means: RSS growth from the warm-up point
to the last image is not much more than those predictions. The verdict line checks the bound
``growth <= predictions + 64 MiB``.

    python -m benchmarks.eval_memory --output output/bench [--num-images 1000]
"""
from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
from detectron2.config import instantiate
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset

from benchmarks import machine
from benchmarks.memory import MiB, rss_bytes
from dsanet import model_zoo
from dsanet.data import ensure_synthetic_dataset, register_coco_format_datasets
from dsanet.fileio import write_json

DEMO_CONFIG = "Demo/dsanet_conf_synthetic_cpu.py"
SLACK_MIB = 64  # allowed growth beyond the evaluator's own predictions (allocator, caches, logs)


class RSSProbe(DatasetEvaluator):
    """Records (images seen, RSS) at ``every`` images; evaluates nothing."""

    def __init__(self, every: int):
        self.every, self.seen, self.samples = every, 0, []

    def reset(self) -> None:
        self.seen, self.samples = 0, []

    def process(self, inputs, outputs) -> None:
        self.seen += len(inputs)
        if self.seen % self.every == 0:
            self.samples.append((self.seen, rss_bytes()))

    def evaluate(self):
        return {}


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="output/bench")
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_synthetic_dataset(Path(tmp) / "shapes", num_train=0, num_val=args.num_images, image_size=64)
        register_coco_format_datasets({"eval_memory": {"json_file": str(root / "annotations" / "val.json"),
                                                       "image_root": str(root / "val")}})
        cfg = model_zoo.get_config(DEMO_CONFIG)
        cfg.dataloader.test.dataset.names = "eval_memory"
        cfg.dataloader.test.num_workers = 0
        cfg.dataloader.evaluator.output_dir = tmp
        torch.manual_seed(0)
        model = instantiate(cfg.model).eval()
        with torch.no_grad():
            model.head.cls_score.bias.fill_(0.0)  # score 0.5 everywhere: 100 detections per image
        loader = instantiate(cfg.dataloader.test)
        coco_evaluator = instantiate(cfg.dataloader.evaluator)
        probe = RSSProbe(every=max(1, args.num_images // 10))
        warm = RSSProbe(every=args.warmup)

        start = rss_bytes()
        inference_on_dataset(model, loader, DatasetEvaluators([coco_evaluator, probe, warm]))
        # inference_on_dataset evaluates at the end: its RSS is after COCOeval, its peak below.
        after_evaluate, peak = rss_bytes(), rss_bytes("VmHWM")
        predictions = sum(len(p["instances"]) for p in coco_evaluator._predictions)
        predictions_bytes = len(pickle.dumps(coco_evaluator._predictions))

    at_warmup = warm.samples[0][1]
    at_end = probe.samples[-1][1]
    growth = at_end - at_warmup
    bound = predictions_bytes * 3 + SLACK_MIB * MiB  # a pickled dict is ~3x smaller than in memory
    result = {
        "num_images": args.num_images,
        "detections": predictions,
        "rss_start_mib": start / MiB,
        "rss_after_warmup_mib": at_warmup / MiB,
        "rss_samples_mib": [(n, rss / MiB) for n, rss in probe.samples],
        "rss_after_evaluate_mib": after_evaluate / MiB,
        "peak_rss_mib": peak / MiB,
        "growth_after_warmup_mib": growth / MiB,
        "predictions_pickled_mib": predictions_bytes / MiB,
        "bound_mib": bound / MiB,
        "flat": growth <= bound,
    }
    print(f"RSS over {args.num_images} images ({predictions} detections kept by the evaluator):")
    for n, rss in probe.samples:
        print(f"  after {n:5d} images: {rss / MiB:8.1f} MiB")
    print(f"  after evaluate():   {after_evaluate / MiB:8.1f} MiB (peak {peak / MiB:.1f} MiB)")
    print(f"growth from image {args.warmup} to image {args.num_images}: {growth / MiB:.1f} MiB; "
          f"predictions held by the evaluator: {predictions_bytes / MiB:.1f} MiB pickled")
    print(f"{'PASS' if result['flat'] else 'FAIL'}: growth {growth / MiB:.1f} MiB <= bound {bound / MiB:.1f} MiB "
          f"(3 x pickled predictions + {SLACK_MIB} MiB)")
    result["provenance"] = machine.record("cpu")
    write_json(Path(args.output) / "eval_memory.json", result)
    return result


if __name__ == "__main__":
    main()
