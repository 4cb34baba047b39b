"""COCO evaluation that reports the paper's ten numbers and saves them as JSON."""
import contextlib
import io
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Optional, Set

from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from pycocotools.coco import COCO

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
        self.dataset_name, self.distributed, self.output_dir = dataset_name, distributed, output_dir
        self.unreadable: Dict[int, str] = {}  # this process's unreadable images: image_id -> file_name
        report = validation_report(dataset_name)
        if report is not None and report.dropped_annotation_ids:
            _drop_annotations(self.ground_truth, report.dropped_annotation_ids)

    @property
    def ground_truth(self) -> COCO:
        """The pycocotools ``COCO`` object that the predictions are scored against."""
        # detectron2 keeps it private (listed in dsanet.compat.PRIVATE_DETECTRON2_NAMES).
        return self._coco_api

    def reset(self) -> None:
        super().reset()
        self.unreadable = {}

    def process(self, inputs, outputs) -> None:
        """COCOEvaluator's ``process`` for readable images; an unreadable one (its outputs come from a
        blank stand-in, so they are no predictions) is only remembered."""
        readable = [(i, o) for i, o in zip(inputs, outputs) if UNREADABLE_KEY not in i]
        self.unreadable.update({i["image_id"]: i["file_name"] for i in inputs if UNREADABLE_KEY in i})
        if readable:
            super().process([i for i, _ in readable], [o for _, o in readable])

    def _all_unreadable(self) -> Dict[int, str]:
        """The unreadable images of every process (on the main process; {} elsewhere when distributed)."""
        if not self.distributed:
            return self.unreadable
        return {image_id: name for part in comm.gather(self.unreadable, dst=0) for image_id, name in part.items()}

    def evaluate(self, img_ids=None) -> "OrderedDict[str, Dict[str, float]]":
        """COCOEvaluator's ``evaluate`` on ``img_ids`` (default: every ground-truth image) less the
        unreadable ones; logs the paper's ten numbers and saves the results as JSON."""
        unreadable = self._all_unreadable()
        if unreadable:
            logger.warning("%d unreadable image(s) left out of the COCO metrics: %s", len(unreadable),
                           ", ".join(sorted(unreadable.values())))
            img_ids = [i for i in (self.ground_truth.getImgIds() if img_ids is None else img_ids) if i not in unreadable]
        results = super().evaluate(img_ids)
        if results and "bbox" in results:
            logger.info("The paper's ten numbers on %s:\n%s", self.dataset_name, format_paper_metrics(results["bbox"]))
            if self.output_dir:
                with open(os.path.join(self.output_dir, RESULTS_FILE), "w") as f:
                    json.dump(results, f, indent=2)
        return results

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None) -> Dict[str, float]:
        """COCOEvaluator's metrics of ``coco_eval`` (a summarized COCOeval, or None without predictions),
        plus for "bbox" the four recalls, in percent (NaN where COCOeval gives -1)."""
        # The only place detectron2 hands out its COCOeval, so that its recall stats need no second
        # evaluation (listed in dsanet.compat.PRIVATE_DETECTRON2_NAMES).
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if iou_type == "bbox":
            for name, index in _RECALL_STATS.items():
                value = coco_eval.stats[index] * 100 if coco_eval is not None and coco_eval.stats[index] >= 0 else math.nan
                results[name] = float(value)
        return results


def _drop_annotations(coco: COCO, annotation_ids: Set[int]) -> None:
    """Removes the annotations of ``annotation_ids`` from ``coco``, in place, and rebuilds its index."""
    coco.dataset["annotations"] = [a for a in coco.dataset["annotations"] if a["id"] not in annotation_ids]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
