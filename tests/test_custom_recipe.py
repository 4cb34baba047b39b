"""The CPU recipe for a user's own COCO-format data: DSANet-Conf by default, RetinaNet by two
overrides, trained through train_net.py on a one-class dataset the test writes to disk."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "Custom" / "dsanet_conf_small_custom_cpu.py"
TEN_NUMBERS_HEADER = "AP\tAP50\tAP75\tAPs\tAPm\tAPl\tAR\tARs\tARm\tARl"
RETINANET = ["model.head.dsa_levels=[]", "model.head.with_confidence=False"]


def write_one_class_dataset(root: Path, num_images: int = 4, size=(150, 210)) -> Path:
    """PNG images of (H, W) = ``size`` (not the demo's 128x128) with one or two boxes of class "box"."""
    height, width = size
    images, annotations = [], []
    for i in range(num_images):
        image = Image.new("RGB", (width, height), (40 + 30 * i, 90, 120))
        draw = ImageDraw.Draw(image)
        boxes = [[10 + 7 * i, 20, 60, 48], [100, 30 + 5 * i, 70, 80]][: 1 + i % 2]  # x, y, w, h
        for x, y, w, h in boxes:
            draw.rectangle([x, y, x + w, y + h], fill=(230, 210, 30))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 7,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        image.save(root / f"img{i}.png")
        images.append({"id": i + 1, "file_name": f"img{i}.png", "height": height, "width": width})
    json_file = root / "instances.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                     "categories": [{"id": 7, "name": "box"}]}))
    return json_file


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one_class")
    write_one_class_dataset(root)
    return root


def train_on(dataset: Path, output: Path, *overrides: str) -> subprocess.CompletedProcess:
    json_file = dataset / "instances.json"
    command = [sys.executable, str(ROOT / "train_net.py"), "--config-file", str(RECIPE),
               f"datasets.custom_train.json_file={json_file}", f"datasets.custom_train.image_root={dataset}",
               f"datasets.custom_val.json_file={json_file}", f"datasets.custom_val.image_root={dataset}",
               # CUSTOM_DATA.md's size and anchor overrides, at values other than the recipe's defaults
               "dataloader.train.mapper.augmentations.0.short_edge_length=[160]",
               "dataloader.train.mapper.augmentations.0.max_size=256",
               "dataloader.test.mapper.augmentations.0.short_edge_length=160",
               "dataloader.test.mapper.augmentations.0.max_size=256",
               "dataloader.train.mapper.augmentations.1.crop_size=[0.9,0.9]",
               "model.anchor_generator.sizes.smallest=24",
               "train.epochs=null", "train.warmup_epochs=null", "train.max_iter=3",
               "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
               "dataloader.test.num_workers=0", "train.seed=0", f"train.output_dir={output}", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.parametrize("name,overrides", [("dsanet_conf", []), ("retinanet", RETINANET)])
def test_the_cpu_recipe_trains_and_evaluates_on_a_one_class_dataset(dataset, tmp_path, name, overrides):
    result = train_on(dataset, tmp_path, *overrides)
    assert result.stdout.count(TEN_NUMBERS_HEADER) == 1
    results = json.loads((tmp_path / "inference" / "coco_eval_results.json").read_text())["bbox"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl"} <= set(results)

    weights = torch.load(tmp_path / "model_final.pth")["model"]
    assert weights["head.cls_score.weight"].shape[0] == 9  # 9 anchors x 1 class
    has_dsa = any(key.startswith("head.dsa.") for key in weights)
    has_conf = any(key.startswith("head.object_confidence.") for key in weights)
    assert (has_dsa, has_conf) == ((True, True) if name == "dsanet_conf" else (False, False))
    saved = LazyConfig.load(str(tmp_path / "config.yaml"))  # the run's config keeps the overrides
    assert saved.model.anchor_generator.sizes.smallest == 24
    assert list(saved.dataloader.train.mapper.augmentations[0].short_edge_length) == [160]


def run_expecting_error(*args: str, env_extra: dict = None) -> str:
    """Run train_net.py, expect exit 2, return its last stderr line."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **(env_extra or {}))
    result = subprocess.run([sys.executable, str(ROOT / "train_net.py"), *args], capture_output=True, text=True,
                            env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-3000:]
    return result.stderr.strip().splitlines()[-1]


GPU_RECIPE = "configs/Custom/dsanet_conf_R_50_FPN_custom.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gives")
def test_the_gpu_recipe_on_a_cpu_machine_says_what_to_change(dataset):
    json_file = dataset / "instances.json"
    last_line = run_expecting_error(
        "--config-file", GPU_RECIPE, f"datasets.custom_train.json_file={json_file}",
        f"datasets.custom_train.image_root={dataset}", f"datasets.custom_val.json_file={json_file}",
        f"datasets.custom_val.image_root={dataset}", "model.num_classes=1")
    assert last_line.startswith("error: train.device=cuda, but this machine has no CUDA device: add train.device=cpu")
    assert "configs/Custom/dsanet_conf_small_custom_cpu.py" in last_line


def test_an_unreachable_checkpoint_url_is_one_line(dataset):
    json_file = dataset / "instances.json"
    url = "https://checkpoints.invalid/model.pkl"  # .invalid never resolves (RFC 2606)
    last_line = run_expecting_error(
        "--config-file", GPU_RECIPE, "--eval-only", "train.device=cpu", f"train.init_checkpoint={url}",
        f"datasets.custom_val.json_file={json_file}", f"datasets.custom_val.image_root={dataset}",
        f"datasets.custom_train.json_file={json_file}", f"datasets.custom_train.image_root={dataset}")
    assert last_line.startswith(f"error: train.init_checkpoint={url}: cannot be downloaded")


def test_eval_only_without_coco_names_the_missing_file(tmp_path):
    last_line = run_expecting_error("--config-file", "configs/COCO-Detection/dsanet_R_50_FPN_1x.py", "--eval-only",
                                    "train.device=cpu", env_extra={"DETECTRON2_DATASETS": str(tmp_path)})
    expected = f"reads json_file {tmp_path}/coco/annotations/instances_val2017.json, which does not exist"
    assert last_line.startswith("error: dataloader.test.dataset.names: dataset 'coco_2017_val'") and expected in last_line
