#!/usr/bin/env python
"""Ship a trained checkpoint with the package, in the model zoo's form, and record what it measures.

    python tools/ship_trained_model.py --config-file configs/Demo/dsanet_conf_synthetic_cpu.py \\
        --weights output/demo/model_final.pth

Writes ``projects/DSANet/dsanet/trained/<config path without .py>/``:
- ``model_final_<hash>.pth``: the model's weights in fp16 (floating tensors; the rest as they are), the
  smallest form that loads exactly: what is evaluated below is the fp16 copy, widened to fp32 on load;
  ``<hash>`` is the first 8 hex digits of the file's sha256, checked by ``dsanet.model_zoo`` on load;
- ``metrics.json``: the ten COCO numbers of that copy on the config's whole validation split (through
  ``train_net.py --eval-only``), the accuracy-test slice (:func:`accuracy_on_first_images`, pinned by
  ``tests/test_trained_model.py``), the file's size, how the checkpoint was trained (train_net.py's record in
  its output folder) and the command, machine and date.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
import torch  # noqa: E402
from detectron2.config import instantiate  # noqa: E402

from dsanet import model_zoo  # noqa: E402
from dsanet.checkpoint import CheckedCheckpointer  # noqa: E402
from dsanet.data import register_datasets_for  # noqa: E402
from dsanet.errors import UserInputError, exit_with_status_of  # noqa: E402
from dsanet.evaluation import PAPER_METRICS, RESULTS_FILE  # noqa: E402
from dsanet.fileio import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The accuracy test's slice of the validation split, and the images whose detections it pins one by one.
SLICE_IMAGES = 20
PINNED_IMAGES = 2
PINNED_DETECTIONS = 5


def fp16_state_dict(checkpoint_file: str) -> Dict[str, torch.Tensor]:
    """The ``model`` weights of a train_net.py checkpoint, floating tensors in fp16 (others unchanged)."""
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    weights = checkpoint.get("model", checkpoint)
    return {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}


def write_hashed(weights: Dict[str, torch.Tensor], folder: Path) -> Path:
    """Save ``{"model": weights}`` as ``folder/model_final_<sha256[:8]>.pth``, replacing earlier copies."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as f:
        torch.save({"model": weights}, f)
        temporary = Path(f.name)
    digest = hashlib.sha256(temporary.read_bytes()).hexdigest()[:8]
    for old in folder.glob(f"{model_zoo.WEIGHTS_PREFIX}*.pth"):
        old.unlink()
    target = folder / f"{model_zoo.WEIGHTS_PREFIX}{digest}.pth"
    os.replace(temporary, target)
    os.chmod(target, 0o644)  # a temporary file is private to its owner; the shipped one is read by all
    return target


def evaluate_whole_split(config_file: str, weights: Path) -> Dict[str, float]:
    """The ten COCO numbers of ``weights`` on the config's validation split, via ``train_net.py --eval-only``."""
    with tempfile.TemporaryDirectory() as output:
        subprocess.run([sys.executable, str(ROOT / "train_net.py"), "--config-file", config_file, "--eval-only",
                        f"train.init_checkpoint={weights}", f"train.output_dir={output}"], check=True)
        results = json.loads(next(Path(output).rglob(RESULTS_FILE)).read_text())
    bbox = results.get("bbox", results)
    return {m: round(float(bbox[m]), 4) for m in PAPER_METRICS}


@torch.no_grad()
def accuracy_on_first_images(config_name: str, num_images: int = SLICE_IMAGES,
                             weights: Optional[str] = None) -> dict:
    """COCO AP of a shipped model on the first ``num_images`` images of its validation split, at one
    intra-op thread, plus the top detections of the first images (boxes and scores, rounded).

    Returns:
        {"images", "threads", "AP", "AP50", "AP75", "detections": [[[x0, y0, x1, y1, score, class], ...], ...]}
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU fp32 inference is deterministic at a fixed thread count
    try:
        cfg = model_zoo.get_config(config_name, trained=weights is None)
        register_datasets_for(cfg, splits=("test",))
        cfg.dataloader.test.num_workers = 0
        model = instantiate(cfg.model).to("cpu").eval()
        CheckedCheckpointer(model).load(weights or cfg.train.init_checkpoint)
        cfg.dataloader.evaluator.distributed = False
        evaluator = instantiate(cfg.dataloader.evaluator)
        evaluator.reset()
        image_ids: List[int] = []
        detections = []
        for inputs in instantiate(cfg.dataloader.test):
            if len(image_ids) == num_images:
                break
            outputs = model(inputs)
            evaluator.process(inputs, outputs)
            image_ids += [i["image_id"] for i in inputs]
            if len(detections) < PINNED_IMAGES:
                detections.append(_top_detections(outputs[0]["instances"]))
        bbox = evaluator.evaluate(img_ids=image_ids)["bbox"]
    finally:
        torch.set_num_threads(threads)
    return {"images": num_images, "threads": 1, **{m: round(float(bbox[m]), 4) for m in ("AP", "AP50", "AP75")},
            "detections": detections}


def _top_detections(instances) -> list:
    """The first PINNED_DETECTIONS detections (already sorted by score) as rounded lists."""
    boxes = instances.pred_boxes.tensor[:PINNED_DETECTIONS].tolist()
    scores = instances.scores[:PINNED_DETECTIONS].tolist()
    classes = instances.pred_classes[:PINNED_DETECTIONS].tolist()
    return [[round(v, 3) for v in box] + [round(s, 5), c] for box, s, c in zip(boxes, scores, classes)]


def ship(config_file: str, checkpoint_file: str) -> Path:
    """Write the fp16 weights and metrics.json of ``checkpoint_file`` for ``config_file``; returns the folder."""
    from dsanet_lab.provenance import provenance, read_invocations  # where a kept result came from

    folder = model_zoo.trained_folder(config_file)
    if folder is None:
        raise UserInputError(f"--config-file {config_file}: not one of the project's configs ({model_zoo.CONFIGS_ROOT})")
    config_name = folder.relative_to(model_zoo.TRAINED_ROOT).as_posix() + ".py"
    weights = write_hashed(fp16_state_dict(checkpoint_file), folder)
    record = {
        "config": config_name,
        "weights": weights.name,
        "size_bytes": weights.stat().st_size,
        "dtype": "float16",
        "metrics": evaluate_whole_split(config_file, weights),
        "accuracy_test": accuracy_on_first_images(config_name),
        # how the checkpoint was trained: train_net.py's record in its output folder (command, machine, threads)
        "trained_by": read_invocations(Path(checkpoint_file).parent),
        "provenance": provenance(),
    }
    write_json(folder / "metrics.json", record)
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="one of the project's configs")
    parser.add_argument("--weights", required=True, help="a train_net.py checkpoint (model_final.pth)")
    args = parser.parse_args(argv)
    folder = ship(args.config_file, args.weights)
    print(json.dumps(json.loads((folder / "metrics.json").read_text())["metrics"]))
    print(f"shipped: {folder}")


if __name__ == "__main__":
    exit_with_status_of(main)
