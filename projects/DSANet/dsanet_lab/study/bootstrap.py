"""How much the validation sample alone moves AP: the image-level bootstrap of one run's metrics and
the paired bootstrap of a difference between runs evaluated on the same images.

Method. pycocotools' ``COCOeval.evaluate`` matches every detection to the ground truth once (area
"all", 100 detections per image, as AP, AP50 and AP75 use). A replicate draws the validation images
with replacement; an image drawn k times counts k times. COCOeval's ``accumulate`` cannot take
repeated images (and takes seconds per call), so :func:`average_precision` accumulates with per-image
weights, vectorised over replicates: the same AP as COCOeval to float precision (tests check it with
every weight 1 and with an image repeated). All runs on one image set share the draws (one fixed
seed), so a difference between two runs is paired: both are evaluated on the same resampled images.
"""
import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["MatchTable", "match_detections", "average_precision", "resample_counts", "bootstrap_metrics",
           "paired_bootstrap", "BOOTSTRAP_METRICS", "REPLICATES", "BOOTSTRAP_METHOD"]

BOOTSTRAP_METRICS = ("AP", "AP50", "AP75")
_IOU_INDEX = {"AP50": 0, "AP75": 5}  # COCOeval's iouThrs are 0.50:0.05:0.95
REPLICATES = 400
RESAMPLE_SEED = 0
BOOTSTRAP_METHOD = (
    f"image-level bootstrap: the validation images drawn with replacement, {REPLICATES} replicates "
    f"(seed {RESAMPLE_SEED}, the same draws for every run on the same images, so differences are paired), "
    "pycocotools' matching with weighted accumulation; std of the replicates and their 2.5-97.5 percentiles")


@dataclass
class MatchTable:
    """COCOeval's matching of one detection set, per category, detections in COCOeval's order.

    Attributes:
        image_ids: (N,) the ground truth's image ids, the units a bootstrap draws.
        det_image: per category, (D_k,) index into ``image_ids`` of each detection, sorted by
            descending score as COCOeval's accumulate sorts them.
        true_pos: per category, (T, D_k) bool: matched a non-ignored ground truth at IoU threshold t.
        false_pos: per category, (T, D_k) bool: matched nothing and not ignored.
        gt_count: (K, N) non-ignored ground-truth boxes per category and image.
    """
    image_ids: np.ndarray
    det_image: List[np.ndarray]
    true_pos: List[np.ndarray]
    false_pos: List[np.ndarray]
    gt_count: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.image_ids)


def match_detections(gt_json: str, detections: Sequence[dict]) -> MatchTable:
    """Match ``detections`` (COCO results format, as detectron2 writes them) against ``gt_json``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO(str(gt_json))
        coco_dt = coco_gt.loadRes(list(detections)) if detections else COCO()
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")  # over the ground truth's image and category ids, sorted
        coco_eval.params.areaRng, coco_eval.params.areaRngLbl = [[0, 1e10]], ["all"]
        coco_eval.params.maxDets = [100]
        coco_eval.evaluate()
    image_ids, cat_ids = np.array(coco_eval.params.imgIds), coco_eval.params.catIds
    num_images, num_thresholds = len(image_ids), len(coco_eval.params.iouThrs)
    det_image, true_pos, false_pos = [], [], []
    gt_count = np.zeros((len(cat_ids), num_images), dtype=np.int64)
    for k in range(len(cat_ids)):
        records = coco_eval.evalImgs[k * num_images:(k + 1) * num_images]  # one area range: (k, image)
        # Each list starts empty-shaped, so a category without detections gives (T, 0) tables.
        images, scores = [np.zeros(0, dtype=np.int64)], [np.zeros(0)]
        matches, ignores = [np.zeros((num_thresholds, 0))], [np.zeros((num_thresholds, 0))]
        for i, e in enumerate(records):
            if e is None:
                continue
            gt_count[k, i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            images.append(np.full(len(e["dtScores"]), i, dtype=np.int64))
            scores.append(np.asarray(e["dtScores"], dtype=np.float64))
            matches.append(np.asarray(e["dtMatches"]).reshape(num_thresholds, -1))
            ignores.append(np.asarray(e["dtIgnore"]).reshape(num_thresholds, -1))
        order = np.argsort(-np.concatenate(scores), kind="mergesort")  # COCOeval's order, ties included
        matched, ignored = np.concatenate(matches, axis=1)[:, order] > 0, np.concatenate(ignores, axis=1)[:, order] > 0
        det_image.append(np.concatenate(images)[order])
        true_pos.append(matched & ~ignored)
        false_pos.append(~matched & ~ignored)
    return MatchTable(image_ids, det_image, true_pos, false_pos, gt_count)


_RECALL_POINTS = np.linspace(0.0, 1.00, 101)  # COCOeval's recThrs


def _mean_precision(true_pos: np.ndarray, false_pos: np.ndarray, images: np.ndarray, num_images: int,
                    counts: np.ndarray, gt_total: np.ndarray) -> np.ndarray:
    """COCOeval's precision at its 101 recall points, averaged, for one category and IoU threshold.

    Only the points at true positives matter: recall rises only there, and precision falls from one
    true positive to the next, so a false positive never sets the envelope that a recall point reads.
    The false positives between two true positives are therefore summed per image into one segment
    each, and a replicate's weighted false-positive counts are one matrix product.

    Args:
        true_pos, false_pos: (D,) bool in COCOeval's order; images: (D,) image index of each detection;
        counts: (B, N) draws; gt_total: (B,) weighted ground-truth boxes, all > 0.

    Returns:
        (B,)
    """
    tp_rank, fp_rank = np.flatnonzero(true_pos), np.flatnonzero(false_pos)
    num_tp = len(tp_rank)
    if num_tp == 0:
        return np.zeros(counts.shape[0])
    segment = np.searchsorted(tp_rank, fp_rank)  # the true positive each false positive comes before
    kept = segment < num_tp  # those after the last true positive change nothing
    per_image = np.bincount(images[fp_rank[kept]] * num_tp + segment[kept], minlength=num_images * num_tp)
    fp_sum = np.cumsum(counts @ per_image.reshape(num_images, num_tp).astype(np.float64), axis=1)  # (B, num_tp)
    tp_sum = np.cumsum(counts[:, images[tp_rank]], axis=1)
    recall = tp_sum / gt_total[:, None]
    precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # best precision at or after
    # One searchsorted for all replicates: each row's recall (<= 1) is shifted by 2 x its row number.
    row = np.arange(counts.shape[0])[:, None]  # (B, 1)
    at = np.searchsorted((recall + 2.0 * row).ravel(), (_RECALL_POINTS + 2.0 * row).ravel(),
                         side="left").reshape(len(row), -1) - row * num_tp
    reached = at < num_tp  # recall points past the last true positive's recall count as precision 0
    picked = np.take_along_axis(envelope, np.minimum(at, num_tp - 1), axis=1)
    return np.where(reached, picked, 0.0).mean(axis=1)


def average_precision(table: MatchTable, counts: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """AP, AP50 and AP75 (in percent) with each image weighted by how often a replicate drew it.

    Args:
        counts: (B, N) draws per replicate and image; None: every image once (B = 1).

    Returns:
        metric -> (B,) values; nan where no category has a ground-truth box in the replicate.
    """
    counts = np.ones((1, table.num_images)) if counts is None else np.asarray(counts, dtype=np.float64)
    num_thresholds = table.true_pos[0].shape[0] if table.true_pos else 10
    precision = np.full((counts.shape[0], num_thresholds, len(table.det_image)), np.nan)  # (B, T, K)
    for k, (images, tp, fp) in enumerate(zip(table.det_image, table.true_pos, table.false_pos)):
        gt_total = counts @ table.gt_count[k].astype(np.float64)  # (B,)
        has_gt = gt_total > 0  # COCOeval leaves a category without ground truth out of the mean
        if not has_gt.any():
            continue
        for t in range(num_thresholds):
            precision[has_gt, t, k] = _mean_precision(tp[t], fp[t], images, table.num_images, counts[has_gt],
                                                      gt_total[has_gt])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": nan is the answer
        return {"AP": 100 * np.nanmean(precision, axis=(1, 2)),
                **{name: 100 * np.nanmean(precision[:, t, :], axis=1) for name, t in _IOU_INDEX.items()}}


def resample_counts(num_images: int, replicates: int = REPLICATES, seed: int = RESAMPLE_SEED) -> np.ndarray:
    """(replicates, num_images): how often each image is drawn in each replicate (n draws with replacement)."""
    return np.random.default_rng(seed).multinomial(num_images, np.full(num_images, 1.0 / num_images), size=replicates)


def _spread(values: np.ndarray) -> Dict[str, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    return {"std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
            "ci_low": float(np.percentile(values, 2.5)), "ci_high": float(np.percentile(values, 97.5))}


def bootstrap_metrics(table: MatchTable, counts: Optional[np.ndarray] = None) -> Tuple[Dict, Dict[str, np.ndarray]]:
    """One run's metrics on its whole image set, and their bootstrap replicates.

    Returns:
        the summary ``{"num_images", "replicates", "AP": {"value", "std", "ci_low", "ci_high"}, "AP50": ...,
        "AP75": ...}`` and the replicates (metric -> (B,)).
    """
    counts = resample_counts(table.num_images) if counts is None else counts
    full, replicated = average_precision(table), average_precision(table, counts)
    summary = {"num_images": table.num_images, "replicates": int(counts.shape[0]),
               **{m: {"value": float(full[m][0]), **_spread(replicated[m])} for m in BOOTSTRAP_METRICS}}
    return summary, replicated


Replicated = Tuple[Dict, Dict[str, np.ndarray]]  # bootstrap_metrics() of a run: (its summary, metric -> (B,))


def paired_bootstrap(variant: Mapping[int, Replicated], baseline: Mapping[int, Replicated]) -> Optional[Dict]:
    """The bootstrap of ``variant - baseline`` over validation images, per seed and for the mean over seeds.

    Args:
        variant, baseline: seed -> a run's :func:`bootstrap_metrics` (its summary and replicates), every
            run's replicates drawn with the same counts (``resample_counts`` on the same images), so
            replicate b of every run saw the same images.

    Returns:
        None when no seed is shared; else ``{"n", "replicates", metric: {"mean": {"value", "std",
        "ci_low", "ci_high"}, "per_seed": {seed: {...}}}}``.
    """
    seeds = sorted(set(variant) & set(baseline))
    if not seeds:
        return None
    sizes = {len(side[s][1][m]) for side in (variant, baseline) for s in seeds for m in BOOTSTRAP_METRICS}
    if len(sizes) != 1:
        raise ValueError(f"the runs' bootstrap replicate counts differ ({sorted(sizes)}): not paired")
    result = {"n": len(seeds), "replicates": sizes.pop()}
    for m in BOOTSTRAP_METRICS:
        replicated = {s: variant[s][1][m] - baseline[s][1][m] for s in seeds}  # seed -> (B,)
        per_seed = {s: {"value": variant[s][0][m]["value"] - baseline[s][0][m]["value"], **_spread(replicated[s])}
                    for s in seeds}
        result[m] = {"mean": {"value": float(np.mean([p["value"] for p in per_seed.values()])),
                              **_spread(np.mean(list(replicated.values()), axis=0))}, "per_seed": per_seed}
    return result
