"""The image-level bootstrap of COCO AP (dsanet_lab.study.bootstrap), against pycocotools on real
synthetic ground truth and detections derived from it."""
import contextlib
import copy
import os
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dsanet.data import ensure_synthetic_dataset
from dsanet_lab.study.bootstrap import (average_precision, bootstrap_metrics, match_detections, paired_bootstrap,
                                    resample_counts)


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    """The val split of a 400-image synthetic dataset: its COCO json path and content."""
    root = ensure_synthetic_dataset(tmp_path_factory.mktemp("data") / "shapes", num_train=0, num_val=400)
    path = root / "annotations" / "val.json"
    return path, json.loads(path.read_text())


def noisy_detections(gt: dict, seed: int = 0, image_ids=None) -> list:
    """A detector's output: most objects found with jittered boxes, some missed, false positives."""
    rng = np.random.default_rng(seed)
    image_ids = set(image_ids) if image_ids is not None else {im["id"] for im in gt["images"]}
    detections = []
    for a in gt["annotations"]:
        if a["image_id"] not in image_ids:
            continue
        x, y, w, h = a["bbox"]
        if rng.random() < 0.85:
            detections.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
                               "bbox": [x + rng.normal(0, 2), y + rng.normal(0, 2), w * (1 + rng.normal(0, 0.1)), h]})
        for _ in range(2):
            detections.append({"image_id": a["image_id"], "category_id": int(rng.integers(1, 4)),
                               "score": float(0.7 * rng.random()), "bbox": [*(rng.random(2) * 100).tolist(), 20.0, 24.0]})
    return detections


def coco_ap(gt: dict, detections: list) -> np.ndarray:
    """AP, AP50, AP75 from pycocotools' own evaluate, accumulate and summarize (percent)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats[:3] * 100


def test_every_image_once_gives_pycocotools_ap(ground_truth):
    path, gt = ground_truth
    detections = noisy_detections(gt)
    ours = average_precision(match_detections(str(path), detections))
    assert [ours[m][0] for m in ("AP", "AP50", "AP75")] == pytest.approx(coco_ap(gt, detections), abs=1e-9)


def test_an_image_drawn_twice_counts_as_two_images(ground_truth, tmp_path):
    """Weighted accumulation equals COCOeval on an image set where one image is repeated and one left out."""
    path, gt = ground_truth
    detections = noisy_detections(gt)
    table = match_detections(str(path), detections)
    counts = np.ones((1, table.num_images), dtype=np.int64)
    twice, never = 5, 9  # indices into the sorted image ids (ids 6 and 10)
    counts[0, twice], counts[0, never] = 2, 0
    repeated_id = max(im["id"] for im in gt["images"]) + 1
    source_id, dropped_id = int(table.image_ids[twice]), int(table.image_ids[never])
    resampled = copy.deepcopy(gt)
    resampled["images"] = [im for im in gt["images"] if im["id"] != dropped_id] + [
        {**next(im for im in gt["images"] if im["id"] == source_id), "id": repeated_id}]
    next_ann = max(a["id"] for a in gt["annotations"]) + 1
    copies = [{**a, "id": next_ann + i, "image_id": repeated_id}
              for i, a in enumerate(a for a in gt["annotations"] if a["image_id"] == source_id)]
    assert copies, "the repeated image should hold objects"
    resampled["annotations"] = [a for a in gt["annotations"] if a["image_id"] != dropped_id] + copies
    resampled_detections = [d for d in detections if d["image_id"] != dropped_id] + [
        {**d, "image_id": repeated_id} for d in detections if d["image_id"] == source_id]
    ours = average_precision(table, counts)
    assert [ours[m][0] for m in ("AP", "AP50", "AP75")] == pytest.approx(coco_ap(resampled, resampled_detections),
                                                                          abs=1e-9)


def test_the_paired_bootstrap_of_a_run_against_itself_is_exactly_zero(ground_truth):
    path, gt = ground_truth
    run = bootstrap_metrics(match_detections(str(path), noisy_detections(gt)))
    paired = paired_bootstrap({0: run}, {0: run})
    for m in ("AP", "AP50", "AP75"):
        for part in (paired[m]["mean"], paired[m]["per_seed"][0]):
            assert part["value"] == 0.0 and part["std"] == 0.0 and part["ci_low"] == part["ci_high"] == 0.0


def test_removing_one_images_correct_detections_moves_the_difference_below_zero(ground_truth):
    path, gt = ground_truth
    detections = noisy_detections(gt)
    crowded = max({a["image_id"] for a in gt["annotations"]},
                  key=lambda i: sum(a["image_id"] == i for a in gt["annotations"]))
    # that image's detections of its objects go; its false positives (20 x 24 boxes) stay
    worse = [d for d in detections if d["image_id"] != crowded or d["bbox"][2:] == [20.0, 24.0]]
    assert len(worse) < len(detections)
    runs = [bootstrap_metrics(match_detections(str(path), dets)) for dets in (worse, detections)]
    paired = paired_bootstrap({0: runs[0]}, {0: runs[1]})["AP"]["per_seed"][0]
    assert paired["value"] < 0
    assert paired["ci_low"] < 0 and paired["ci_high"] <= 0  # no replicate finds the worse run better


def test_the_spread_of_one_run_shrinks_on_a_larger_image_set(ground_truth, tmp_path):
    """The same detector on the first 50 images and on all 400: the bootstrap std falls (about 1/sqrt(8))."""
    path, gt = ground_truth
    detections = noisy_detections(gt)
    small_ids = {im["id"] for im in gt["images"][:50]}
    small = {**gt, "images": gt["images"][:50], "annotations": [a for a in gt["annotations"] if a["image_id"] in small_ids]}
    small_path = tmp_path / "small.json"
    small_path.write_text(json.dumps(small))
    small_spread = bootstrap_metrics(match_detections(str(small_path), [d for d in detections if d["image_id"] in small_ids]))[0]
    large_spread = bootstrap_metrics(match_detections(str(path), detections))[0]
    assert small_spread["num_images"] == 50 and large_spread["num_images"] == 400
    for m in ("AP", "AP50", "AP75"):
        assert 0 < large_spread[m]["std"] < small_spread[m]["std"] / 2


def test_the_draws_are_fixed_and_count_every_image_n_times():
    counts = resample_counts(30, replicates=7)
    assert counts.shape == (7, 30) and (counts.sum(axis=1) == 30).all()
    assert np.array_equal(counts, resample_counts(30, replicates=7))


def test_the_sizing_benchmark_prints_a_row_per_size_and_names_a_size_too_large(ground_truth, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path, gt = ground_truth
    detections = tmp_path / "detections.json"
    detections.write_text(json.dumps(noisy_detections(gt)))
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "benchmarks.bootstrap_sizes", "--ground-truth", str(path),
               "--detections", str(detections)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([*command, "--sizes", "50,400", "--output", str(tmp_path / "sizes.json")],
                            capture_output=True, text=True, env=env, timeout=600, cwd=root)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "sizes.json").read_text())["rows"]
    assert [r["num_images"] for r in rows] == [50, 400] and rows[1]["AP"]["std"] < rows[0]["AP"]["std"]
    assert result.stdout.splitlines()[0].startswith("images\tAP\tstd")
    too_large = subprocess.run([*command, "--sizes", "500"], capture_output=True, text=True, env=env, timeout=600,
                               cwd=root)
    assert too_large.returncode == 2
    assert too_large.stderr.strip().splitlines()[-1] == f"error: --sizes 500: {path} holds only 400 images"
