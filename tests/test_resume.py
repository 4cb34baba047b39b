"""Kill -9, then --resume: the run ends as if it had never stopped.

Training runs on one image with no augmentation, so every batch is the same and an uninterrupted
run is reproducible: after a resume, the learning rate and loss normaliser of every iteration
must equal those of the uninterrupted run, and the final weights and momentum buffers must equal
them to float rounding (measured: 1e-6 absolute on batch-norm running variances; a lost momentum
buffer or normaliser changes the weights by orders of magnitude more).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from test_train_net import DEMO_CONFIG, ROOT, TRAIN_NET, run_train_net, subprocess_env

MAX_ITER = 8
RTOL, ATOL = 1e-4, 1e-5
DEADLINE_S = 600  # generous: CI machines may be loaded; no test asserts a duration


def write_one_image_dataset(root: Path) -> Path:
    """A COCO-format dataset of one 128x128 image with a square and a disc."""
    root.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (128, 128), (90, 110, 100))
    draw = ImageDraw.Draw(image)
    draw.rectangle([20, 24, 60, 64], fill=(230, 40, 40))
    draw.ellipse([70, 60, 118, 108], fill=(40, 40, 230))
    image.save(root / "one.png")
    json_file = root / "one.json"
    json_file.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "one.png", "height": 128, "width": 128}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [20, 24, 40, 40], "area": 1600, "iscrowd": 0},
                        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [70, 60, 48, 48], "area": 2304, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}],
    }))
    return json_file


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("one_image")
    json_file = write_one_image_dataset(root)
    return [f"+datasets.one.json_file={json_file}", f"+datasets.one.image_root={root}",
            "dataloader.train.dataset.names=one", "dataloader.test.dataset.names=one",
            "dataloader.train.mapper.augmentations=[]", "dataloader.train.total_batch_size=2",
            "dataloader.train.num_workers=0", "train.seed=0", "train.log_period=1", "train.eval_period=0",
            f"train.max_iter={MAX_ITER}"]


def train_args(output_dir: Path, one_image: list, period: int, *extra) -> list:
    return ["--config-file", DEMO_CONFIG, *extra, *one_image, f"train.output_dir={output_dir}",
            f"train.checkpointer.period={period}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, one_image, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run_train_net(*train_args(out, one_image, 2), cache_dir=cache_dir, timeout=DEADLINE_S)
    return out


def start_train_net(args: list, cache_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN_NET), *map(str, args)], cwd=ROOT, env=subprocess_env(cache_dir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def records(metrics_file: Path) -> dict:
    """iteration -> the last training record written for it (a resumed run rewrites a few)."""
    by_iteration = {}
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        if "lr" in record:
            by_iteration[record["iteration"]] = record
    return by_iteration


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def assert_continues_the_uninterrupted_run(out: Path, reference: Path) -> None:
    resumed, expected = records(out / "metrics.json"), records(reference / "metrics.json")
    assert sorted(resumed) == sorted(expected) == list(range(MAX_ITER))
    for iteration in range(MAX_ITER):
        for key in ("lr", "loss_normalizer"):
            assert resumed[iteration][key] == expected[iteration][key], (iteration, key)
    final, expected_final = torch.load(out / "model_final.pth"), torch.load(reference / "model_final.pth")
    assert final["iteration"] == expected_final["iteration"] == MAX_ITER - 1
    assert final["trainer"]["hooks"] == expected_final["trainer"]["hooks"]  # LR schedule, loss normaliser
    for name, value in expected_final["model"].items():
        torch.testing.assert_close(final["model"][name], value, rtol=RTOL, atol=ATOL, msg=name)
    momentum = final["trainer"]["optimizer"]["state"]
    assert momentum and momentum.keys() == expected_final["trainer"]["optimizer"]["state"].keys()
    for index, state in expected_final["trainer"]["optimizer"]["state"].items():
        torch.testing.assert_close(momentum[index]["momentum_buffer"], state["momentum_buffer"], rtol=RTOL, atol=ATOL)
    assert not [p.name for p in out.iterdir() if ".tmp." in p.name], "a temporary checkpoint file was left"


def wait_for_iteration(process: subprocess.Popen, metrics_file: Path, iteration: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if metrics_file.is_file() and any(k >= iteration for k in records_so_far(metrics_file)):
            return
        assert process.poll() is None, f"train_net ended ({process.returncode}) before iteration {iteration}:\n" \
                                       f"{process.stderr.read()[-3000:]}"
        time.sleep(0.05)
    raise AssertionError(f"no iteration {iteration} within {DEADLINE_S} s")


def records_so_far(metrics_file: Path) -> list:
    """Iterations in a metrics.json that is being written (its last line may be incomplete)."""
    lines = metrics_file.read_text().split("\n")[:-1]
    return [json.loads(line)["iteration"] for line in lines if '"lr"' in line]


def test_kill_at_a_random_iteration_then_resume_continues_the_run(uninterrupted, one_image, cache_dir, tmp_path):
    seed = random.randrange(10**6)
    target = random.Random(seed).randrange(1, MAX_ITER - 1)
    args = train_args(tmp_path, one_image, 2)
    process = start_train_net(args, cache_dir)
    wait_for_iteration(process, tmp_path / "metrics.json", target)
    kill(process)
    written = (tmp_path / "metrics.json").read_bytes()
    last = (tmp_path / "last_checkpoint").read_text()
    assert torch.load(tmp_path / last)["iteration"] >= 1, f"seed {seed}"  # the checkpoint it names is whole

    run_train_net(*args[:2], "--resume", *args[2:], cache_dir=cache_dir, timeout=DEADLINE_S)
    assert (tmp_path / "metrics.json").read_bytes().startswith(written[:written.rfind(b"\n") + 1]), f"seed {seed}"
    assert_continues_the_uninterrupted_run(tmp_path, uninterrupted)


def test_kill_while_a_checkpoint_is_written_then_resume(uninterrupted, one_image, cache_dir, tmp_path):
    """The checkpoint of iteration 3 is written into a pipe that this test reads: the process is
    killed deterministically in the middle of torch.save, with part of the file written."""
    args = train_args(tmp_path, one_image, 1)
    process = start_train_net(args, cache_dir)
    # Checkpoints are written to <name>.tmp.<pid>, then renamed (dsanet.checkpoint).
    pipe = tmp_path / f"model_0000003.pth.tmp.{process.pid}"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    received, deadline = b"", time.monotonic() + DEADLINE_S
    try:
        while len(received) < 256 * 1024:
            assert time.monotonic() < deadline, "no checkpoint written within the deadline"
            assert process.poll() is None, "train_net never wrote the checkpoint of iteration 3 to a temporary " \
                                           f"file ({process.returncode}):\n{process.stderr.read()[-3000:]}"
            try:
                chunk = os.read(reader, 1 << 16)
            except BlockingIOError:  # the writer is there, between writes
                chunk = b""
            received += chunk
            if not chunk:
                time.sleep(0.01)
        kill(process)  # blocked in the middle of torch.save, as on a slow disk
    finally:
        os.close(reader)
    assert received.startswith(b"PK")  # torch.save's zip format: this was the checkpoint
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not (tmp_path / "model_0000003.pth").exists()
    assert torch.load(tmp_path / "model_0000002.pth")["iteration"] == 2

    resumed = run_train_net(*args[:2], "--resume", *args[2:], cache_dir=cache_dir, timeout=DEADLINE_S)
    assert "Starting training from iteration 3" in resumed.stdout + resumed.stderr
    assert_continues_the_uninterrupted_run(tmp_path, uninterrupted)
