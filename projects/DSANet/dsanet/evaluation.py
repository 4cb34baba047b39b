"""COCO evaluation that reports the paper's ten numbers and saves them as JSON."""
import contextlib
import io
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, List, Optional

from detectron2.evaluation import COCOEvaluator

from .compat import has_compiled_ops
from .data.custom import validation_report
from .data.mapper import UNREADABLE_KEY

__all__ = ["COCOEvaluatorWithRecall", "PAPER_METRICS", "format_paper_metrics"]

logger = logging.getLogger(__name__)

# COCOeval.stats indices: 0-5 the six APs, 8 AR@100, 9-11 AR small/medium/large @100.
_RECALL_STATS = {"AR": 8, "ARs": 9, "ARm": 10, "ARl": 11}
PAPER_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl")
RESULTS_FILE = "coco_eval_results.json"


def format_paper_metrics(bbox: Dict[str, float]) -> str:
    """One header line and one value line of the ten numbers, tab separated (paper tables' order)."""
    return "\t".join(PAPER_METRICS) + "\n" + "\t".join(f"{bbox.get(m, math.nan):.1f}" for m in PAPER_METRICS)


class COCOEvaluatorWithRecall(COCOEvaluator):
    """detectron2's COCOEvaluator, adding AR, ARs, ARm, ARl (at 100 detections) to the six APs and
    writing the results to ``<output_dir>/coco_eval_results.json``.

    ``use_fast_impl`` defaults to detectron2's compiled COCOeval only where the compiled ops exist.
    Annotations that validation dropped from a dataset (``dsanet.data.validate``) are dropped from
    the ground truth too. Images that ``RobustDatasetMapper`` could not read are left out of the
    metrics (their ground truth neither found nor missed), with a warning naming them.
    """

    def __init__(self, dataset_name: str, tasks=("bbox",), distributed: bool = True,
                 output_dir: Optional[str] = None, *, use_fast_impl: Optional[bool] = None, **kwargs):
        if use_fast_impl is None:
            use_fast_impl = has_compiled_ops()
        super().__init__(dataset_name, tasks, distributed, output_dir, use_fast_impl=use_fast_impl, **kwargs)
        report = validation_report(dataset_name)
        if report is not None and report.dropped_annotation_ids:
            dataset = self._coco_api.dataset
            dataset["annotations"] = [a for a in dataset["annotations"] if a["id"] not in report.dropped_annotation_ids]
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self._coco_api.createIndex()

    def process(self, inputs, outputs) -> None:
        readable = [(i, o) for i, o in zip(inputs, outputs) if UNREADABLE_KEY not in i]
        for record in inputs:
            if UNREADABLE_KEY in record:  # its outputs come from a blank stand-in: not predictions
                self._predictions.append({"image_id": record["image_id"], "instances": [],
                                          UNREADABLE_KEY: record["file_name"]})
        if readable:
            super().process([i for i, _ in readable], [o for _, o in readable])

    def _eval_predictions(self, predictions: List[dict], img_ids=None) -> None:
        unreadable = {p["image_id"]: p[UNREADABLE_KEY] for p in predictions if UNREADABLE_KEY in p}
        if unreadable:
            logger.warning("%d unreadable image(s) left out of the COCO metrics: %s", len(unreadable),
                           ", ".join(sorted(unreadable.values())))
            img_ids = [i for i in (self._coco_api.getImgIds() if img_ids is None else img_ids) if i not in unreadable]
        super()._eval_predictions(predictions, img_ids=img_ids)

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None) -> Dict[str, float]:
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if iou_type == "bbox":
            for name, index in _RECALL_STATS.items():
                value = coco_eval.stats[index] * 100 if coco_eval is not None and coco_eval.stats[index] >= 0 else math.nan
                results[name] = float(value)
        return results

    def evaluate(self, img_ids=None) -> "OrderedDict[str, Dict[str, float]]":
        results = super().evaluate(img_ids)
        if results and "bbox" in results:
            logger.info("The paper's ten numbers on %s:\n%s", self._metadata.name,
                        format_paper_metrics(results["bbox"]))
            if self._output_dir:
                with open(os.path.join(self._output_dir, RESULTS_FILE), "w") as f:
                    json.dump(results, f, indent=2)
        return results
