"""tools/gpu_check.py: without CUDA one line and a non-zero exit; ``--cpu-smoke`` runs every step of
the check on the CPU at tiny sizes and writes the JSON the docs are rendered from."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

TOOL = ROOT / "tools" / "gpu_check.py"
STEPS = ("environment", "cuda_tests", "attention", "training", "benchmark")
MODELS = ("RetinaNet", "DSANet-Conf", "DSANet-P3-P7")


def _run(*args, cache_dir, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, DSANET_CACHE=str(cache_dir), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "projects" / "DSANet"), os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_so_in_one_line_and_fails(cache_dir, tmp_path):
    result = _run("--output", str(tmp_path / "out.json"), cache_dir=cache_dir)
    assert result.returncode == 3
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in result.stderr
    assert not (tmp_path / "out.json").exists()


def test_cpu_smoke_runs_every_step_and_writes_the_json(cache_dir, tmp_path):
    output = tmp_path / "gpu_check.json"
    result = _run("--cpu-smoke", "--output", str(output), cache_dir=cache_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["smoke"] is True and report["settings"]["device"] == "cpu"
    assert {name: step["status"] for name, step in report["steps"].items()} == dict.fromkeys(STEPS, "ok")
    assert set(report["provenance"]) == {"command", "date", "machine", "code"}

    env = report["environment"]
    assert env["torch"] == torch.__version__ and env["dsanet"] and env["detectron2"]
    assert isinstance(env["detectron2_compiled_ops"], bool)

    tests = report["cuda_tests"]  # the fp16-on-CUDA tests exist, and skip here
    assert tests["collected"] >= 1 and tests["skipped"] == tests["collected"] and tests["failed"] == 0

    attention = report["attention"]
    levels = {"p3", "p4", "p5", "p6", "p7"}
    assert {(p["level"], p["batch"]) for p in attention["paths"]} == {(lv, b) for lv in levels for b in (1, 2)}
    assert all(p["path"] in ("dense", "blockwise") for p in attention["paths"])  # never SDPA on a CPU
    assert {(r["level"], r["dtype"]) for r in attention["accuracy"]} == {(lv, d) for lv in levels
                                                                         for d in ("fp32", "fp16", "bf16")}
    assert all(r["within"] and r["out"] <= r["tolerance"] for r in attention["accuracy"])

    training = report["training"]
    assert training["ok"] and training["losses_finite"] and training["checkpoint_written"]
    assert training["iterations"] == training["expected_iterations"] == 2
    assert set(training["ten_numbers"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl"}

    configs = report["benchmark"]["configs"]
    assert {(c["batch"], c["precision"]) for c in configs} == {(1, "fp32"), (2, "fp32")}
    for config in configs:
        assert "skipped" not in config, config
        assert set(config["models"]) == set(MODELS)
        base = config["models"]["RetinaNet"]
        assert base["train_ratio"] == 1.0 and len(base["train_s"]) == report["settings"]["rounds"] == 1
        for row in config["models"].values():
            assert row["train_step_s"] > 0 and row["inference_latency_s"] > 0 and row["images_per_s"] > 0
            assert row["peak_gib"] is None  # max_memory_allocated is CUDA's

    goals = report["goals"]  # computed, but tiny CPU numbers judge nothing
    assert goals["dsanet_conf_step_fp16"]["met"] is None and goals["attention_within_tolerance"]["met"] is True
    assert "GPU check (CPU smoke" in result.stdout and f"wrote {output}" in result.stdout


def test_benchmark_columns_and_goals_from_cuda_shaped_measurements():
    """What the GPU run computes from ``benchmarks.speed.measure``'s rows, without a GPU: per-round
    ratios, peak memory with the model's own state, an out-of-memory model, the judged goals."""
    from benchmarks import gpu_check, speed
    from benchmarks.memory import state_bytes

    model = torch.nn.Linear(4, 4)
    runner = speed.Runner("m", model, torch.optim.SGD(model.parameters(), lr=0.1))
    base = {"train_times_s": [1.0, 2.0], "inference_times_s": [0.1, 0.2], "train_s": 1.5, "inference_s": 0.15,
            "train_peak_mib": 1024.0}
    conf = {"train_times_s": [1.05, 2.2], "inference_times_s": [0.1, 0.3], "train_s": 1.625, "inference_s": 0.2,
            "train_peak_mib": 1024.0}
    row = gpu_check._model_row(conf, base, runner, batch_size=16)
    assert row["train_ratio"] == pytest.approx(1.075) and row["train_ratio_range"] == pytest.approx([1.05, 1.1])
    assert row["images_per_s"] == pytest.approx(16 / 1.625) and not row["oom"]
    assert row["peak_gib"] == round((2 ** 30 + state_bytes(model, runner.optimizer)) / 2 ** 30, 3)
    oom = gpu_check._model_row({"error": "OOM"}, base, runner, batch_size=16)
    assert oom["oom"] and oom["train_s"] == [] and oom["train_ratio"] is None and oom["peak_gib"] is None

    full = {"oom": False, "peak_gib": 40.0}
    result = {"benchmark": {"configs": [{"batch": 16, "precision": "fp16", "models": {
        "DSANet-Conf": {**row, "memory_ratio": 1.05}, "DSANet-P3-P7": full}}]},
        "attention": {"accuracy": [{"within": True}]}}
    goals = gpu_check.judge(result, smoke=False)
    assert goals["dsanet_conf_step_fp16"]["met"] and goals["dsanet_conf_memory_fp16"]["met"]
    assert goals["full_resolution_p3_p7_gib_fp16"] == {"value": 40.0, "limit": 32.0, "met": False}
    assert goals["dsanet_conf_step_bf16"]["met"] is None and goals["attention_within_tolerance"]["met"] is True
