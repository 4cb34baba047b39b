"""train_net.py as a user runs it: train, resume, evaluate, bad input, and two CPU processes."""
import json
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
QUICK = ["train.log_period=1", "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
         "dataloader.test.num_workers=0", "train.seed=0"]


def run_train_net(*args, cache_dir: Path, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, DSANET_CACHE=str(cache_dir), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, str(TRAIN_NET), *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"train_net failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dsanet_cache")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    """A run of 4 iterations with a checkpoint every 2, then resumed up to 6."""
    out = tmp_path_factory.mktemp("run")
    overrides = [*QUICK, f"train.output_dir={out}", "train.checkpointer.period=2", "train.eval_period=0"]
    run_train_net("--config-file", DEMO_CONFIG, *overrides, "train.max_iter=4", cache_dir=cache_dir)
    (out / "first_run_metrics.json").write_text((out / "metrics.json").read_text())
    resumed = run_train_net("--config-file", DEMO_CONFIG, "--resume", *overrides, "train.max_iter=6",
                            cache_dir=cache_dir)
    (out / "resume_stdout.txt").write_text(resumed.stdout + resumed.stderr)
    return out


def iterations_in(metrics_file: Path) -> list:
    """Iterations of the training-loss records in a metrics.json."""
    return [json.loads(line)["iteration"] for line in metrics_file.read_text().splitlines() if '"total_loss"' in line]


def test_training_writes_checkpoints_logs_and_config(trained):
    for name in ["config.yaml", "model_final.pth", "model_0000001.pth", "last_checkpoint", "metrics.json", "log.txt"]:
        assert (trained / name).is_file(), name
    assert list(trained.glob("events.out.tfevents.*"))
    first_run = iterations_in(trained / "first_run_metrics.json")
    assert first_run[0] == 0 and first_run[-1] == 3
    log = (trained / "log.txt").read_text()
    assert "eta:" in log and "loss_conf" in log


def test_resume_continues_iteration_optimizer_and_loss_normalizer(trained):
    assert "Starting training from iteration 4" in (trained / "resume_stdout.txt").read_text()
    iterations = iterations_in(trained / "metrics.json")
    assert iterations[-1] == 5 and 4 in iterations
    final = torch.load(trained / "model_final.pth")  # torch's default, weights_only loading
    assert final["iteration"] == 5
    assert "optimizer" in final["trainer"] and "LRScheduler" in final["trainer"]["hooks"]
    checkpoint_4 = torch.load(trained / "model_0000003.pth")
    normaliser_4 = checkpoint_4["trainer"]["hooks"]["LossNormalizerState"]["loss_normalizer"]
    assert isinstance(normaliser_4, float) and normaliser_4 != 100.0  # moved from its initial value


def test_eval_only_prints_the_ten_numbers_once_and_saves_predictions(trained, cache_dir, tmp_path):
    result = run_train_net("--config-file", DEMO_CONFIG, "--eval-only", *QUICK, f"train.output_dir={tmp_path}",
                           f"train.init_checkpoint={trained / 'model_final.pth'}", cache_dir=cache_dir)
    assert result.stdout.count(TEN_NUMBERS_HEADER) == 1
    saved = json.loads((tmp_path / "inference" / "coco_eval_results.json").read_text())["bbox"]
    assert set(saved) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl"}
    assert (tmp_path / "inference" / "coco_instances_results.json").is_file()

    # The saved config.yaml reproduces the run's numbers.
    again = run_train_net("--config-file", trained / "config.yaml", "--eval-only", *QUICK,
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
    assert result.stderr.strip().splitlines()[-1] == f"error: {expected}" or expected in result.stderr.strip().splitlines()[-1]


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
    synthetic = cache_dir / "synthetic_shapes"
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
    result = run_train_net("--config-file", DEMO_CONFIG, "--num-gpus", "2", *QUICK, f"train.output_dir={tmp_path}",
                           "train.max_iter=3", "train.eval_period=0", "dataloader.train.total_batch_size=4",
                           cache_dir=cache_dir)
    assert "launching 2 processes" in (result.stdout + result.stderr) or (tmp_path / "model_final.pth").is_file()
    assert iterations_in(tmp_path / "metrics.json")[-1] == 2
    assert torch.load(tmp_path / "model_final.pth")["iteration"] == 2
