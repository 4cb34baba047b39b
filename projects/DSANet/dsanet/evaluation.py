"""COCO evaluation that reports the paper's ten numbers and saves them as JSON."""
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Optional

from detectron2.evaluation import COCOEvaluator

from .compat import has_compiled_ops

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
    """

    def __init__(self, dataset_name: str, tasks=("bbox",), distributed: bool = True,
                 output_dir: Optional[str] = None, *, use_fast_impl: Optional[bool] = None, **kwargs):
        if use_fast_impl is None:
            use_fast_impl = has_compiled_ops()
        super().__init__(dataset_name, tasks, distributed, output_dir, use_fast_impl=use_fast_impl, **kwargs)

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
