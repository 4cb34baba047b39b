"""train_net.py across machines, as a user runs it on two nodes: ``--num-machines 2 --machine-rank 0|1
--dist-url tcp://HOST:PORT``, one process each, here two CPU processes over loopback and gloo.

Both ranks must end with rank 0's weights bit for bit (the engine gathers a digest of every tensor
and logs the outcome), those weights must equal one process's trained with the whole batch (the
approach of test_ddp.py, through the command line), and neither rank may print a warning about the
internals of torch or detectron2 (dsanet.internal_warnings).
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from test_ddp import ATOL, RTOL

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="exercises the CPU (gloo) launch path")

TRAIN_NET = ROOT / "train_net.py"
CONFIGS = {
    "dsanet_conf": ROOT / "configs" / "Demo" / "dsanet_conf_synthetic_cpu.py",
    "dsa_fcos": ROOT / "configs" / "Demo" / "dsa_fcos_synthetic_cpu.py",
}
ITERATIONS = 3
# Tiny and deterministic across process counts: GN in the backbone (plain BN normalises per process;
# synchronised BN computes its variance by another formula than one process's BN, so weights would
# agree to about 1e-5 only), no random flip (each rank seeds its augmentation with seed + rank),
# 4 images per step in all (2 per rank).
OVERRIDES = [f"train.max_iter={ITERATIONS}", "train.eval_period=0", "train.log_period=1", "train.seed=0",
             "train.checkpointer.period=1000", "dataloader.train.total_batch_size=4",
             "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
             "dataloader.train.mapper.augmentations=[]",
             "model.backbone.bottom_up.stem.norm=GN", "model.backbone.bottom_up.stages.norm=GN"]


def _environment(cache_dir: Path) -> dict:
    # Every warning that the project does not filter itself must reach stderr.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "DSANET_ALL_WARNINGS")}
    return dict(env, DSANET_CACHE=str(cache_dir), OMP_NUM_THREADS="1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_net(config: Path, output_dir: Path, cache_dir: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TRAIN_NET), "--config-file", str(config), *flags, *OVERRIDES,
                             f"train.output_dir={output_dir}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_environment(cache_dir), cwd=ROOT)


def _finish(process: subprocess.Popen, name: str) -> str:
    """Waits for a run; its stderr, or an AssertionError that shows the tails of both streams."""
    try:
        stdout, stderr = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise AssertionError(f"{name} failed ({process.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return stderr


def _warning_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "Warning" in line or "warnings.warn" in line]


@pytest.mark.parametrize("model", sorted(CONFIGS))
def test_two_machines_of_one_process_train_like_one_process_with_the_whole_batch(model, cache_dir, tmp_path):
    config = CONFIGS[model]
    # One run first, alone: it also generates the synthetic dataset into the cache the ranks then share.
    single = tmp_path / "single"
    _finish(_train_net(config, single, cache_dir), "one process")

    url = f"tcp://127.0.0.1:{_free_port()}"
    ranks = [_train_net(config, tmp_path / f"machine{rank}", cache_dir, "--num-machines", "2",
                        "--machine-rank", str(rank), "--dist-url", url) for rank in range(2)]
    stderrs = [_finish(process, f"machine rank {rank}") for rank, process in enumerate(ranks)]
    for rank, stderr in enumerate(stderrs):
        assert _warning_lines(stderr) == [], f"rank {rank} printed warnings:\n{stderr[-3000:]}"

    log = (tmp_path / "machine0" / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in log
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "machine1" / "log.txt.rank1").read_text()
    # Rank 1's weights, compared on rank 0 from the digests both gathered: identical, buffers too.
    assert "Parameters identical on all 2 processes after training" in log
    assert "Buffers identical on all 2 processes after training" in log
    assert not (tmp_path / "machine1" / "model_final.pth").exists()  # only rank 0 writes checkpoints

    expected = torch.load(single / "model_final.pth", weights_only=True)
    actual = torch.load(tmp_path / "machine0" / "model_final.pth", weights_only=True)
    assert expected["iteration"] == actual["iteration"] == ITERATIONS - 1
    assert set(actual["model"]) == set(expected["model"])
    for name, value in expected["model"].items():
        torch.testing.assert_close(actual["model"][name], value, rtol=RTOL, atol=ATOL,
                                   msg=lambda m, name=name: f"{model}: {name} after {ITERATIONS} iterations: {m}")
