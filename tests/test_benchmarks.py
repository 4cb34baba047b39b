"""The benchmark helpers count and measure what they claim (no timings are asserted)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds `benchmarks`

from benchmarks import attention, common, model_cost  # noqa: E402
from conftest import tiny_model  # noqa: E402
from dsanet.modeling import DSABlock, SelfAttention2d  # noqa: E402

CHANNELS, HEIGHT, WIDTH = 64, 12, 16


def branch_flops(fused: bool, **kwargs):
    torch.manual_seed(0)
    branch = DSABlock(SelfAttention2d(CHANNELS, fused=fused, **kwargs))
    return model_cost.module_flops(branch, (torch.randn(1, CHANNELS, HEIGHT, WIDTH),))


def test_fused_attention_is_counted_like_the_dense_matmuls():
    fused, dense = branch_flops(fused=True), branch_flops(fused=False)
    length, qk_dim = HEIGHT * WIDTH, CHANNELS // 8
    attention_flops = length * length * (qk_dim + CHANNELS)  # Q K^T and weights @ V, true (unpadded) D
    conv_flops = length * CHANNELS * (qk_dim + qk_dim + CHANNELS)  # 1x1 query, key, value convs
    assert fused["scaled_dot_product_attention"] == attention_flops > 0
    assert dense["bmm"] == attention_flops
    assert fused["conv"] == dense["conv"] == conv_flops
    assert sum(fused.values()) == sum(dense.values())


def test_half_resolution_attention_fused_and_dense_counts_agree():
    fused = branch_flops(fused=True, stride=2, kernel_size=3)
    dense = branch_flops(fused=False, stride=2, kernel_size=3)
    length = (HEIGHT // 2) * (WIDTH // 2)
    assert fused["scaled_dot_product_attention"] == dense["bmm"] == length * length * (CHANNELS // 8 + CHANNELS)
    assert sum(fused.values()) == sum(dense.values())


def test_model_cost_of_tiny_models_counts_params_flops_and_attention():
    size = (64, 96)
    baseline = model_cost.model_cost_of(tiny_model(dsa_levels=[]), size)
    dsanet = model_cost.model_cost_of(tiny_model(dsa_levels=["p3", "p4", "p5", "p6", "p7"]), size)
    assert baseline["params"] > 0 and baseline["flops"] > 0
    assert "scaled_dot_product_attention" not in baseline["flops_by_operator"]
    assert dsanet["flops_by_operator"]["scaled_dot_product_attention"] > 0
    assert dsanet["params"] > baseline["params"] and dsanet["flops"] > baseline["flops"]
    assert dsanet["flops"] == sum(dsanet["flops_by_operator"].values())


def test_interleaved_times_runs_calls_in_rounds_with_per_call_repeats():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "AB"}
    times = common.interleaved_times(calls, {"A": 3, "B": 2}, "cpu", warmup=1)
    assert order == ["A", "B", "A", "B", "A", "B", "A"]  # warm-up round, then ABAB, then A alone
    assert [len(times["A"]), len(times["B"])] == [3, 2]
    assert common.median([3.0, 1.0, 2.0]) == 2.0


def test_level_shapes_follow_the_fpn_strides_of_an_800x1333_image():
    shapes = [attention.level_shape((800, 1333), s) for s in attention.LEVEL_STRIDES.values()]
    assert shapes == [(100, 167), (50, 84), (25, 42), (13, 21), (7, 11)]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS via /proc is Linux-only")
def test_fresh_process_peak_memory_sees_the_quadratic_dense_matrix():
    size = (64, 64)  # L = 4096: one L x L fp32 matrix is 64 MiB
    matrix_bytes = (size[0] * size[1]) ** 2 * 4
    dense = attention.measure_memory("dense", "forward", size, "cpu")
    fused = attention.measure_memory("fused", "forward", size, "cpu")
    assert dense >= matrix_bytes
    assert 0 < fused < matrix_bytes / 2
