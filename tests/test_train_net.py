"""train_net.py as a user runs it: train, resume, evaluate, bad input, and two CPU processes."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TRAIN_NET = ROOT / "train_net.py"
DEMO_CONFIG = ROOT / "configs" / "Demo" / "dsanet_conf_synthetic_cpu.py"
TEN_NUMBERS_HEADER = "AP\tAP50\tAP75\tAPs\tAPm\tAPl\tAR\tARs\tARm\tARl"
# A few iterations at a small batch keep each run to seconds on two cores.
LOW_THRESHOLD = ["+model.test_score_thresh=0.01"]
QUICK = ["train.log_period=1", "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
         "dataloader.test.num_workers=0", "train.seed=0"]


def subprocess_env(cache_dir: Path) -> dict:
    return dict(os.environ, DSANET_CACHE=str(cache_dir), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def run_train_net(*args, cache_dir: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """train_net.py in a subprocess; a failure shows the tail of its stdout and stderr. The timeout is
    generous: CI machines may be loaded, and no test asserts a duration."""
    result = subprocess.run([sys.executable, str(TRAIN_NET), *map(str, args)], capture_output=True, text=True,
                            env=subprocess_env(cache_dir), timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"train_net failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    """A run of 6 iterations with a checkpoint every 2, without evaluation (kill and resume: test_resume.py)."""
    out = tmp_path_factory.mktemp("run")
    result = run_train_net("--config-file", DEMO_CONFIG, *QUICK, f"train.output_dir={out}", "train.max_iter=6",
                           "train.checkpointer.period=2", "train.eval_period=0", cache_dir=cache_dir)
    (out / "stdout.txt").write_text(result.stdout + result.stderr)
    return out


def iterations_in(metrics_file: Path) -> list:
    """Iterations of the training-loss records in a metrics.json."""
    return [json.loads(line)["iteration"] for line in metrics_file.read_text().splitlines() if '"total_loss"' in line]


def test_training_writes_checkpoints_logs_and_config(trained):
    for name in ["config.yaml", "model_final.pth", "model_0000001.pth", "model_0000005.pth", "last_checkpoint",
                 "metrics.json", "log.txt"]:
        assert (trained / name).is_file(), name
    assert list(trained.glob("events.out.tfevents.*"))
    assert iterations_in(trained / "metrics.json") == list(range(6))
    log = (trained / "log.txt").read_text()
    assert "eta:" in log and "loss_conf" in log
    assert "Model:\nDSANet(" in log  # dsanet.engine's INFO line
    final = torch.load(trained / "model_final.pth", weights_only=True)
    assert final["iteration"] == 5 and "optimizer" in final["trainer"]
    assert (trained / "last_checkpoint").read_text() == "model_final.pth"


def test_training_records_what_its_results_depend_on(trained):
    (invocation,) = json.loads((trained / "provenance.json").read_text())["invocations"]
    assert "train_net.py" in invocation["command"] and "train.max_iter=6" in invocation["command"]
    assert invocation["machine"]["cpu"]["model_name"] and invocation["machine"]["libraries"]["detectron2"]
    assert invocation["machine"]["torch_threads"] >= 1
    assert invocation["world_size"] == 1 and invocation["eval_only"] is False
    for name in ("synthetic_shapes_train", "synthetic_shapes_val"):  # the data, by content
        assert invocation["data"][name]["content"].startswith("sha256:")
        assert invocation["data"][name]["covers"] == "images and annotations"


def test_eval_period_0_means_no_evaluation(trained):
    assert not (trained / "inference").exists()
    assert "ten numbers" not in (trained / "stdout.txt").read_text()


def test_eval_only_prints_the_ten_numbers_once_and_saves_predictions(trained, cache_dir, tmp_path):
    # After 6 iterations the fused scores lie just under the default 0.05 threshold: keep more boxes.
    result = run_train_net("--config-file", DEMO_CONFIG, "--eval-only", *QUICK, *LOW_THRESHOLD,
                           f"train.output_dir={tmp_path}", f"train.init_checkpoint={trained / 'model_final.pth'}",
                           cache_dir=cache_dir)
    assert result.stdout.count(TEN_NUMBERS_HEADER) == 1
    saved = json.loads((tmp_path / "inference" / "coco_eval_results.json").read_text())["bbox"]
    assert set(saved) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl"}
    assert all(math.isfinite(saved[k]) for k in ("AP", "AP50", "AR", "ARs"))
    assert saved["AR"] > 0 and saved["AP50"] > 0  # the checkpoint's detections hit objects
    assert json.loads((tmp_path / "inference" / "coco_instances_results.json").read_text())

    # The saved config.yaml reproduces the run's numbers.
    run_train_net("--config-file", trained / "config.yaml", "--eval-only", *QUICK, *LOW_THRESHOLD,
                          f"train.output_dir={tmp_path / 'yaml'}",
                          f"train.init_checkpoint={trained / 'model_final.pth'}", cache_dir=cache_dir)
    assert json.loads((tmp_path / "yaml" / "inference" / "coco_eval_results.json").read_text())["bbox"] == saved


def test_eval_only_with_resume_uses_the_last_checkpoint_of_the_output_folder(trained, cache_dir):
    result = run_train_net("--config-file", DEMO_CONFIG, "--eval-only", "--resume", *QUICK,
                           f"train.output_dir={trained}", cache_dir=cache_dir)
    assert "model_final.pth" in result.stdout + result.stderr
    assert result.stdout.count(TEN_NUMBERS_HEADER) == 1


def test_a_checkpoint_with_other_class_count_loads_what_fits(trained, cache_dir, tmp_path):
    result = run_train_net("--config-file", DEMO_CONFIG, "--eval-only", *QUICK, "model.num_classes=5",
                           f"train.output_dir={tmp_path}", f"train.init_checkpoint={trained / 'model_final.pth'}",
                           cache_dir=cache_dir)
    log = result.stdout + result.stderr
    assert "head.cls_score.weight" in log and "incompatible shapes" in log


@pytest.mark.parametrize("args,expected", [
    (["--config-file", "configs/nope.py"], "--config-file configs/nope.py: no such file"),
    (["--config-file", DEMO_CONFIG, "train.no_such_key=1"], "key 'train.no_such_key' does not exist"),
    (["--config-file", DEMO_CONFIG, "--eval-only", "train.init_checkpoint=/nonexistent/model.pth"],
     "train.init_checkpoint=/nonexistent/model.pth: no such file"),
    (["--config-file", DEMO_CONFIG, "dataloader.test.dataset.names=no_such_dataset"],
     "dataset 'no_such_dataset' is not registered"),
])
def test_bad_input_gives_one_clear_line_and_exit_2(args, expected, cache_dir):
    result = run_train_net(*args, cache_dir=cache_dir, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and expected in last_line


def test_a_corrupt_checkpoint_is_named(cache_dir, tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a checkpoint")
    result = run_train_net("--config-file", DEMO_CONFIG, "--eval-only", *QUICK, f"train.output_dir={tmp_path}",
                           f"train.init_checkpoint={corrupt}", cache_dir=cache_dir, check=False)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: checkpoint {corrupt} cannot be loaded")


def write_custom_coco_dataset(root: Path, source_json: Path, source_images: Path) -> Path:
    """A custom COCO-format split from synthetic images, with an unannotated image and a degenerate box."""
    data = json.loads(source_json.read_text())
    images = data["images"][:6]
    ids = {im["id"] for im in images}
    annotations = [a for a in data["annotations"] if a["image_id"] in ids and a["image_id"] != images[0]["id"]]
    annotations.append({"id": 10**6, "image_id": images[1]["id"], "category_id": 1, "bbox": [5.0, 5.0, 0.0, 10.0],
                        "area": 0.0, "iscrowd": 0})
    json_file = root / "custom.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": data["categories"]}))
    return json_file


def test_a_custom_coco_format_dataset_from_the_command_line(trained, cache_dir, tmp_path):
    synthetic = sorted((cache_dir / "synthetic_shapes").glob("train*-val*"))[0]  # any size the session made
    json_file = write_custom_coco_dataset(tmp_path, synthetic / "annotations" / "train.json", synthetic / "train")
    images = synthetic / "train"
    result = run_train_net(
        "--config-file", DEMO_CONFIG, *QUICK, f"train.output_dir={tmp_path / 'out'}", "train.max_iter=2",
        f"+datasets.mine_train.json_file={json_file}", f"+datasets.mine_train.image_root={images}",
        f"+datasets.mine_val.json_file={json_file}", f"+datasets.mine_val.image_root={images}",
        "dataloader.train.dataset.names=mine_train", "dataloader.test.dataset.names=mine_val",
        cache_dir=cache_dir)
    assert result.stdout.count(TEN_NUMBERS_HEADER) == 1
    assert (tmp_path / "out" / "model_final.pth").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) launch path")
def test_two_processes_over_gloo_train_a_few_iterations(cache_dir, tmp_path):
    # As the module docstring writes it: flags may follow the key=value overrides. No --dist-url:
    # the processes meet through a file, not detectron2's fixed default port.
    result = run_train_net("--config-file", DEMO_CONFIG, *QUICK, f"train.output_dir={tmp_path}", "train.max_iter=3",
                           "train.eval_period=0", "dataloader.train.total_batch_size=4", "--num-gpus", "2",
                           cache_dir=cache_dir)
    # Each rank's log: what both detectron2 versions write, whichever launch path ran (only ours logs "launching").
    assert "Rank of current process: 0. World size: 2" in (tmp_path / "log.txt").read_text()
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "log.txt.rank1").read_text()
    assert iterations_in(tmp_path / "metrics.json") == [0, 1, 2]
    assert torch.load(tmp_path / "model_final.pth")["iteration"] == 2
