"""The benchmark helpers count and measure what they claim (no timings are asserted)."""
import json
from pathlib import Path

import pytest
import torch

from benchmarks import attention, model_cost, models, run_all, speed, timing
from conftest import make_inputs, narrow_model_config, tiny_model
from dsanet import model_zoo
from dsanet.modeling import DSABlock, SelfAttention2d
from dsanet.precision import FORCE_NO_BF16_ENV, cpu_has_native_bf16
from dsanet_lab.provenance import CPU_FLAGS

CHANNELS, HEIGHT, WIDTH = 64, 12, 16


def branch_flops(impl: str, **kwargs):
    torch.manual_seed(0)
    branch = DSABlock(SelfAttention2d(CHANNELS, impl=attention.ATTENTION_IMPLS[impl], **kwargs))
    return model_cost.module_flops(branch, (torch.randn(1, CHANNELS, HEIGHT, WIDTH),))


ATTENTION_OP = {"sdpa_padded": "scaled_dot_product_attention", "dense": "bmm",
                "blockwise": "PythonOp._BlockwiseAttention"}


def test_every_attention_path_is_counted_like_the_dense_matmuls():
    counts = {impl: branch_flops(impl) for impl in ATTENTION_OP}
    length, qk_dim = HEIGHT * WIDTH, CHANNELS // 8
    attention_flops = length * length * (qk_dim + CHANNELS)  # Q K^T and weights @ V, true (unpadded) D
    conv_flops = length * CHANNELS * (qk_dim + qk_dim + CHANNELS)  # 1x1 query, key, value convs
    for impl, op in ATTENTION_OP.items():
        assert counts[impl][op] == attention_flops > 0, impl
        assert counts[impl]["conv"] == conv_flops, impl
        assert sum(counts[impl].values()) == sum(counts["dense"].values()), impl


def test_half_resolution_attention_counts_agree_across_paths():
    length = (HEIGHT // 2) * (WIDTH // 2)
    counts = {impl: branch_flops(impl, stride=2, kernel_size=3) for impl in ATTENTION_OP}
    for impl, op in ATTENTION_OP.items():
        assert counts[impl][op] == length * length * (CHANNELS // 8 + CHANNELS), impl
        assert sum(counts[impl].values()) == sum(counts["dense"].values()), impl


def test_model_cost_of_tiny_models_counts_params_flops_and_attention():
    size = (64, 96)
    baseline = model_cost.model_cost_of(tiny_model(dsa_levels=[]), size)
    dsanet = model_cost.model_cost_of(tiny_model(dsa_levels=["p3", "p4", "p5", "p6", "p7"]), size)
    assert baseline["params"] > 0 and baseline["flops"] > 0
    assert not set(model_cost.ATTENTION_OPERATORS) & set(baseline["flops_by_operator"])
    # 64x96: every level's L x L fits the dense budget, so the auto path runs the dense bmm.
    assert dsanet["flops_by_operator"]["bmm"] > 0
    assert dsanet["params"] > baseline["params"] and dsanet["flops"] > baseline["flops"]
    assert dsanet["flops"] == sum(dsanet["flops_by_operator"].values())


def test_interleaved_times_runs_calls_in_rounds_with_per_call_repeats():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "AB"}
    times = timing.interleaved_times(calls, {"A": 3, "B": 2}, "cpu", warmup=1)
    assert order == ["A", "B", "A", "B", "A", "B", "A"]  # warm-up round, then ABAB, then A alone
    assert [len(times["A"]), len(times["B"])] == [3, 2]
    assert timing.median([3.0, 1.0, 2.0]) == 2.0


def test_time_ratios_are_taken_per_round_and_judged_on_their_median():
    results = {"RetinaNet": {"train_times_s": [1.0, 2.0, 1.0], "inference_times_s": [1.0, 1.0, 1.0]},
               "DSANet": {"train_times_s": [1.1, 2.0, 1.3], "inference_times_s": [1.0, 1.2]}}
    speed.add_ratios(results, {"RetinaNet": {"flop_ratio": 1.0}, "DSANet": {"flop_ratio": 1.1}})
    dsanet = results["DSANet"]
    assert dsanet["train_step_ratio_rounds"] == pytest.approx([1.1, 1.0, 1.3])
    assert (dsanet["train_step_ratio"], dsanet["train_step_ratio_min"], dsanet["train_step_ratio_max"]) == \
        pytest.approx((1.1, 1.0, 1.3))
    assert dsanet["inference_ratio_rounds"] == pytest.approx([1.0, 1.2])  # only rounds both ran
    assert dsanet["train_step_ratio_over_flop_ratio"] == pytest.approx(1.0)
    goals = {g["goal"]: g["pass"] for g in speed.evaluate_goals(results)}
    assert goals["DSANet training step <= 1.08x RetinaNet"] is False  # median 1.10
    assert goals["DSANet training step time ratio <= 1.15x FLOP ratio"] is True


def test_level_shapes_follow_the_fpn_strides_of_an_800x1333_image():
    shapes = [attention.level_shape((800, 1333), s) for s in attention.LEVEL_STRIDES.values()]
    assert shapes == [(100, 167), (50, 84), (25, 42), (13, 21), (7, 11)]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS via /proc is Linux-only")
def test_fresh_process_peak_memory_sees_the_quadratic_dense_matrix():
    # One L x L fp32 matrix is 256 MiB. Blockwise's own peak (its O(L) tensors, two 8 MiB blocks,
    # the allocator's slack) is about 40 MiB at any L this size: at L = 4096 (a 64 MiB matrix)
    # that came within 20% of the bound below, so the size keeps the two apart by about 6x.
    length = 128 * 64
    matrix_bytes = length ** 2 * 4
    dense = attention.measure_memory("dense", "forward", length, "cpu")
    blockwise = attention.measure_memory("blockwise", "forward_backward", length, "cpu")
    assert dense >= matrix_bytes
    assert 0 < blockwise < matrix_bytes / 2


def test_executed_flops_count_padding_and_recomputation():
    length, d, c = 10, attention.QK_DIM, attention.CHANNELS
    math_forward = length * length * (d + c)
    assert attention.executed_flops("dense", "forward", length) == math_forward
    assert attention.executed_flops("dense", "forward_backward", length) == 3 * math_forward
    assert attention.executed_flops("blockwise", "forward_backward", length) == 3 * math_forward + length ** 2 * d
    assert attention.executed_flops("sdpa_padded", "forward_backward", length) == 7 * length ** 2 * c


# Two model families as the FCOS configs will add them: every ratio of a model is against its own baseline.
FAMILIES = {"RetinaNet": models.ModelSpec("r.py"), "DSANet": models.ModelSpec("d.py"),
            "FCOS": models.ModelSpec("f.py", baseline="FCOS"), "DSA-FCOS": models.ModelSpec("df.py", baseline="FCOS")}


def test_every_ratio_is_against_the_models_own_baseline():
    costs = {"RetinaNet": {"flops": 100, "params": 10}, "DSANet": {"flops": 110, "params": 11},
             "FCOS": {"flops": 200, "params": 20}, "DSA-FCOS": {"flops": 250, "params": 22}}
    model_cost.add_cost_ratios(costs, FAMILIES)
    assert [costs[n]["flop_ratio"] for n in FAMILIES] == pytest.approx([1.0, 1.1, 1.0, 1.25])
    assert costs["DSA-FCOS"]["param_ratio"] == pytest.approx(1.1) and costs["DSA-FCOS"]["baseline"] == "FCOS"
    results = {"RetinaNet": {"train_times_s": [1.0, 1.0], "inference_times_s": [1.0, 1.0]},
               "DSANet": {"train_times_s": [1.1, 1.2], "inference_times_s": [1.0, 1.0]},
               "FCOS": {"train_times_s": [2.0, 4.0], "inference_times_s": [2.0, 2.0]},
               "DSA-FCOS": {"train_times_s": [3.0, 4.4], "inference_times_s": [2.2, 2.2]}}
    speed.add_ratios(results, costs, models=FAMILIES)
    assert results["DSA-FCOS"]["train_step_ratio_rounds"] == pytest.approx([1.5, 1.1])  # over FCOS, per round
    assert results["DSA-FCOS"]["inference_ratio"] == pytest.approx(1.1)
    assert results["DSA-FCOS"]["inference_ratio_over_flop_ratio"] == pytest.approx(1.1 / 1.25)
    assert results["FCOS"]["train_step_ratio"] == pytest.approx(1.0) and results["FCOS"]["baseline"] == "FCOS"
    assert results["DSANet"]["train_step_ratio_rounds"] == pytest.approx([1.1, 1.2])
    goals = [g["goal"] for g in speed.evaluate_goals(results, FAMILIES)]
    assert any(g.startswith("DSA-FCOS training step time ratio") for g in goals)
    assert not any(g.startswith(("FCOS ", "RetinaNet ")) for g in goals)  # a baseline has no FLOP goal
    assert models.baselines(FAMILIES) == ["RetinaNet", "FCOS"]
    assert models.baseline_label(FAMILIES) == "each model's baseline"
    assert models.baseline_label({"RetinaNet": models.ModelSpec("r.py"), "DSANet": models.ModelSpec("d.py")}) == "RetinaNet"


def test_a_baseline_must_be_a_compared_model_that_is_its_own_baseline():
    with pytest.raises(ValueError, match="'FCOS' is not a compared model"):
        models.check_models({"RetinaNet": models.ModelSpec("r.py"), "DSA-FCOS": models.ModelSpec("d.py", "FCOS")})
    with pytest.raises(ValueError, match="not its own baseline"):
        models.check_models({"RetinaNet": models.ModelSpec("r.py"), "FCOS": models.ModelSpec("f.py"),
                             "DSA-FCOS": models.ModelSpec("d.py", "FCOS")})
    assert models.check_models() is models.MODELS


def test_bf16_ratios_are_against_the_fp32_baseline_and_speedups_against_the_models_own_fp32():
    fp32 = {"RetinaNet": {"train_times_s": [2.0, 4.0], "inference_times_s": [1.0, 1.0]},
            "DSANet": {"train_times_s": [2.2, 4.0], "inference_times_s": [1.2, 1.0]}}
    bf16 = {"RetinaNet": {"train_times_s": [1.0, 2.5], "inference_times_s": [0.5, 0.8]},
            "DSANet": {"train_times_s": [1.1, 2.0], "inference_times_s": [0.6, 0.4]}}
    speed.add_ratios(bf16, {}, reference=fp32)
    speed.add_speedups(bf16, fp32)
    dsanet = bf16["DSANet"]
    assert dsanet["train_step_ratio_rounds"] == pytest.approx([0.55, 0.5])  # bf16 DSANet / fp32 RetinaNet
    assert (dsanet["inference_ratio"], dsanet["inference_ratio_min"], dsanet["inference_ratio_max"]) == \
        pytest.approx((0.5, 0.4, 0.6))
    assert dsanet["train_speedup_rounds"] == pytest.approx([2.0, 2.0])  # fp32 DSANet / bf16 DSANet
    assert bf16["RetinaNet"]["train_speedup_rounds"] == pytest.approx([2.0, 1.6])
    assert bf16["RetinaNet"]["train_step_ratio_rounds"] == pytest.approx([0.5, 0.625])
    assert "flop_ratio" not in dsanet and "train_step_ratio_over_flop_ratio" not in dsanet


def test_bf16_steps_run_the_network_in_bf16_and_keep_weights_and_sgd_in_fp32():
    model = tiny_model()
    runner = speed.Runner("tiny", model, torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9))
    seen = []
    model.head.register_forward_hook(lambda module, inputs, output: seen.append(output[0][0].dtype))
    batch = make_inputs()
    for precision in ("fp32", "bf16"):
        speed.train_step(runner, batch, "cpu", precision)
        speed.inference(runner, [{"image": item["image"]} for item in batch], "cpu", precision)
    assert seen == [torch.float32, torch.float32, torch.bfloat16, torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    assert runner.scaler is None
    with pytest.raises(ValueError, match="unknown precision"):
        speed.inference(runner, batch, "cpu", "fp16")


def test_measure_infers_on_the_images_it_is_given_and_state_bytes_counts_weights_and_momentum(monkeypatch):
    from benchmarks.memory import state_bytes

    model = tiny_model()
    runner = speed.Runner("tiny", model, torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9))
    batch, seen = make_inputs(), []
    inference = speed.inference

    def counting_inference(runner, images, *args):
        seen.append(len(images))
        inference(runner, images, *args)

    monkeypatch.setattr(speed, "inference", counting_inference)
    rows = speed.measure([runner], batch, "cpu", train_repeats={"tiny": 1}, inference_repeats={"tiny": 2},
                         images=[{"image": batch[0]["image"]}])["fp32"]
    assert seen == [1, 1, 1] and len(rows["tiny"]["inference_times_s"]) == 2  # warm-up, then 2 rounds
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    momentum = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    assert state_bytes(model, runner.optimizer) == weights + momentum


def quick_speed_run(monkeypatch, tmp_path, names):
    """speed.run(quick=True) on ``names`` only, their configs narrowed to ResNet-18-like toys (an R50
    step is seconds on a busy CPU), at 64x96, recording each (phase, model, precision) call."""
    monkeypatch.setattr(models, "MODELS", {name: models.MODELS[name] for name in names})
    monkeypatch.setattr(speed, "QUICK_IMAGE_SIZE", (64, 96))
    get_config = model_zoo.get_config

    def narrowed_config(config):
        cfg = get_config(config)
        narrow_model_config(cfg.model, norm="FrozenBN")
        return cfg

    monkeypatch.setattr(model_zoo, "get_config", narrowed_config)
    calls = []
    train_step, inference = speed.train_step, speed.inference

    def recording_train_step(runner, batch, device, precision="fp32"):
        calls.append(("train", runner.name, precision))
        train_step(runner, batch, device, precision)

    def recording_inference(runner, images, device, precision="fp32"):
        calls.append(("inference", runner.name, precision))
        inference(runner, images, device, precision)

    monkeypatch.setattr(speed, "train_step", recording_train_step)
    monkeypatch.setattr(speed, "inference", recording_inference)
    costs = {name: {"flop_ratio": 1.0 + 0.1 * index} for index, name in enumerate(names)}
    return speed.run(tmp_path, quick=True, device="cpu", costs=costs), calls, costs


@pytest.mark.skipif(not cpu_has_native_bf16()[0], reason="this CPU has no native bf16: the bf16 columns are skipped")
def test_quick_speed_run_times_fp32_and_bf16_interleaved_in_the_same_rounds(monkeypatch, tmp_path, capsys):
    result, calls, costs = quick_speed_run(monkeypatch, tmp_path, ["RetinaNet", "DSANet"])
    order = [(name, precision) for name in ("RetinaNet", "DSANet") for precision in ("fp32", "bf16")]
    warmups = [(phase, *key) for key in order for phase in ("train", "inference")]
    rounds = [("train", *key) for key in order] * 2 + [("inference", *key) for key in order] * 2
    assert calls == warmups + rounds
    fp32, bf16 = result["cpu"], result["cpu_bf16"]
    for name in ("RetinaNet", "DSANet"):
        for kind, key in speed.RATIO_KEYS:
            times = bf16[name][f"{kind}_times_s"]
            assert len(times) == 2
            assert bf16[name][f"{key}_rounds"] == pytest.approx(
                [t / b for t, b in zip(times, fp32["RetinaNet"][f"{kind}_times_s"])])
            assert bf16[name][f"{kind}_speedup_rounds"] == pytest.approx(
                [f / t for f, t in zip(fp32[name][f"{kind}_times_s"], times)])
            assert bf16[name][f"{kind}_speedup"] == pytest.approx(sum(bf16[name][f"{kind}_speedup_rounds"]) / 2)
    assert fp32["DSANet"]["flop_ratio"] == costs["DSANet"]["flop_ratio"]  # fp32 columns as before
    printed = capsys.readouterr().out
    assert "fp32 and bf16 autocast" in printed and "| bf16 train s" in printed and "against fp32 RetinaNet" in printed
    assert all(goal["goal"].startswith(("DSANet", "RetinaNet")) for goal in result["goals"])  # judged on fp32
    assert result["goals"][0]["value"] == fp32["DSANet"]["train_step_ratio"]
    written = json.loads((tmp_path / "speed.json").read_text())
    assert set(written["cpu_bf16"]) == {"RetinaNet", "DSANet"}
    record = written["provenance"]
    assert record["command"] and record["date"] and record["device"] == "cpu" and "loadavg_1min" in record
    assert record["machine"]["cpu"]["model_name"] and set(record["machine"]["cpu"]["flags"]) == set(CPU_FLAGS)
    summary = run_all.build_summary({"models": {n: {"params": 1, "flops": 1, **c} for n, c in costs.items()},
                                     "flop_unit": "multiply-add", "image_size": [64, 96]}, result, "cpu", {})
    assert summary["bf16"].startswith("measured")
    assert summary["models"]["DSANet"]["bf16"]["train_speedup"] == bf16["DSANet"]["train_speedup"]
    assert summary["models"]["DSANet"]["bf16"]["inference_ratio_rounds"] == 2
    assert summary["models"]["DSANet"]["baseline"] == "RetinaNet"
    assert summary["provenance"]["machine"]["cpu"] == record["machine"]["cpu"]


def test_quick_speed_run_skips_bf16_with_one_line_where_the_cpu_has_no_native_bf16(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(FORCE_NO_BF16_ENV, "1")
    result, calls, costs = quick_speed_run(monkeypatch, tmp_path, ["RetinaNet"])
    assert {precision for _, _, precision in calls} == {"fp32"} and len(calls) == 6  # warm-up + 2 rounds, x2
    assert result["cpu_bf16"].startswith("skipped: this CPU has no native bf16") and FORCE_NO_BF16_ENV in result["cpu_bf16"]
    assert len(result["cpu"]["RetinaNet"]["train_times_s"]) == 2
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if "bf16" in line] == [f"bf16 columns {result['cpu_bf16']}"]
    written = json.loads((tmp_path / "speed.json").read_text())
    assert written["cpu_bf16"] == result["cpu_bf16"]
    summary = run_all.build_summary({"models": {"RetinaNet": {"params": 1, "flops": 1, "flop_ratio": 1.0}},
                                     "flop_unit": "multiply-add", "image_size": [64, 96]}, result, "cpu", {})
    assert summary["bf16"] == result["cpu_bf16"] and "bf16" not in summary["models"]["RetinaNet"]


def test_the_benchmarks_run_as_modules_from_the_repository_root():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "benchmarks.run_all", "--help"], cwd=root, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--output" in result.stdout
