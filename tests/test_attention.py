"""The fused attention equals the paper's softmax attention, also under autocast."""
import math

import pytest
import torch

from dsanet.modeling import SelfAttention2d, dense_attention, fused_attention


@pytest.mark.parametrize("length,qk_dim,v_dim", [(1, 4, 32), (7 * 9, 32, 256), (300, 8, 64)])
def test_fused_attention_matches_dense_softmax_reference(length, qk_dim, v_dim):
    torch.manual_seed(0)
    q, k = torch.randn(2, length, qk_dim), torch.randn(2, length, qk_dim)
    v = torch.randn(2, length, v_dim)
    scale = 1.0 / math.sqrt(qk_dim)
    by_hand = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(qk_dim), dim=-1) @ v
    torch.testing.assert_close(dense_attention(q, k, v, scale), by_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_attention(q, k, v, scale), by_hand, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("stride,kernel_size", [(1, 1), (2, 1), (2, 3)])
def test_self_attention_module_fused_equals_dense(stride, kernel_size):
    torch.manual_seed(0)
    fused = SelfAttention2d(64, stride=stride, kernel_size=kernel_size)
    dense = SelfAttention2d(64, stride=stride, kernel_size=kernel_size, fused=False)
    dense.load_state_dict(fused.state_dict())
    x = torch.randn(2, 64, 13, 10, requires_grad=True)
    out = fused(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, dense(x), atol=1e-4, rtol=1e-4)
    (grad_fused,) = torch.autograd.grad(out.sum(), x)
    (grad_dense,) = torch.autograd.grad(dense(x).sum(), x)
    torch.testing.assert_close(grad_fused, grad_dense, atol=1e-4, rtol=1e-4)


def test_half_resolution_attention_upsamples_nearest_back_to_the_input_grid():
    torch.manual_seed(0)
    module = SelfAttention2d(16, stride=2, kernel_size=1)
    out = module(torch.randn(1, 16, 8, 8))
    # Nearest upsampling from 4x4: each 2x2 block holds one value.
    torch.testing.assert_close(out[..., 0::2, 0::2], out[..., 1::2, 1::2])


def test_self_attention_under_cpu_bf16_autocast_is_finite_and_close():
    torch.manual_seed(0)
    module = SelfAttention2d(64)
    x = torch.randn(2, 64, 20, 24, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(out.float(), module(x).detach(), atol=5e-2, rtol=5e-2)
