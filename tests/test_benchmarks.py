"""The benchmark helpers count and measure what they claim (no timings are asserted)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds `benchmarks`

from benchmarks import attention, common, model_cost, speed  # noqa: E402
from conftest import tiny_model  # noqa: E402
from dsanet.modeling import DSABlock, SelfAttention2d  # noqa: E402

CHANNELS, HEIGHT, WIDTH = 64, 12, 16


def branch_flops(impl: str, **kwargs):
    torch.manual_seed(0)
    branch = DSABlock(SelfAttention2d(CHANNELS, impl=impl, **kwargs))
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
    times = common.interleaved_times(calls, {"A": 3, "B": 2}, "cpu", warmup=1)
    assert order == ["A", "B", "A", "B", "A", "B", "A"]  # warm-up round, then ABAB, then A alone
    assert [len(times["A"]), len(times["B"])] == [3, 2]
    assert common.median([3.0, 1.0, 2.0]) == 2.0


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
FAMILIES = {"RetinaNet": common.ModelSpec("r.py"), "DSANet": common.ModelSpec("d.py"),
            "FCOS": common.ModelSpec("f.py", baseline="FCOS"), "DSA-FCOS": common.ModelSpec("df.py", baseline="FCOS")}


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
    assert common.baselines(FAMILIES) == ["RetinaNet", "FCOS"]
    assert common.baseline_label(FAMILIES) == "each model's baseline" and common.baseline_label() == "RetinaNet"


def test_a_baseline_must_be_a_compared_model_that_is_its_own_baseline():
    with pytest.raises(ValueError, match="'FCOS' is not a compared model"):
        common.check_models({"RetinaNet": common.ModelSpec("r.py"), "DSA-FCOS": common.ModelSpec("d.py", "FCOS")})
    with pytest.raises(ValueError, match="not its own baseline"):
        common.check_models({"RetinaNet": common.ModelSpec("r.py"), "FCOS": common.ModelSpec("f.py"),
                             "DSA-FCOS": common.ModelSpec("d.py", "FCOS")})
    assert common.check_models() is common.MODELS


def test_cpu_flags_come_from_cpuinfo_else_lscpu_and_are_never_assumed(monkeypatch):
    real_read_text = Path.read_text

    def no_cpuinfo(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            raise OSError("no /proc here")
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_cpuinfo)
    lscpu = "Architecture:  x86_64\nModel name:    Some CPU\nFlags:         fpu avx2 avx512f avx512_bf16\n"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=lscpu))
    assert common.cpu_flags() == {"source": "lscpu", "avx2": True, "avx512f": True, "avx512_bf16": True,
                                  "amx_tile": False, "amx_bf16": False}

    def no_lscpu(*args, **kwargs):
        raise FileNotFoundError("lscpu")

    monkeypatch.setattr(subprocess, "run", no_lscpu)
    assert common.cpu_flags() == {"source": None, **{flag: None for flag in common.CPU_FLAGS}}
