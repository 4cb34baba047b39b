"""Exact softmax attention in memory linear in the sequence length, at the true query width.

``softmax(Q K^T * scale) V`` with q, k of width D and v of width C (D = C / 8 in DSANet). The
queries are processed in blocks of B rows: a block's (N, B, L) score matrix is the only
quadratic-looking tensor ever alive, and B is chosen so that it stays within
:data:`BLOCK_BUDGET_BYTES`. The forward saves q, k, v, the output and the per-row log-sum-exp
(all O(L)); the backward runs over blocks of B keys (all queries each) and recomputes each block's
softmax from them (as FlashAttention does), so no L x L matrix exists for the whole map in either
pass.

Unlike PyTorch's CPU flash kernel, which needs q, k and v of one width (so q and k would be
zero-padded from D to C, making Q K^T cost C / D times its math), the products here run at width D.

Naming: N batch, L = Lq = Lk positions, D query/key width, C value width, B query rows per block.
"""
import math
from typing import Optional, Tuple

import torch

__all__ = ["BLOCK_BUDGET_BYTES", "blockwise_attention", "query_block_rows"]

# Bytes one block's (N, B, L) fp32 score matrix may take. The backward holds two such matrices
# (P and dP) at once. 8 MiB keeps both within a few tens of MiB at P3 while the per-block matrix
# products stay big enough (B = 125 rows at P3 of 800x1333) that Python's loop overhead is noise.
BLOCK_BUDGET_BYTES = 8 * 2 ** 20
_FLOAT32_BYTES = 4
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def query_block_rows(batch: int, length_q: int, length_k: int, budget_bytes: Optional[int] = None) -> int:
    """Query rows B per block so that one (batch, B, length_k) fp32 score matrix fits ``budget_bytes``
    (default :data:`BLOCK_BUDGET_BYTES`, read at call time).

    At least 1 row and at most ``length_q`` (one block for short sequences).
    """
    budget_bytes = BLOCK_BUDGET_BYTES if budget_bytes is None else budget_bytes
    rows = budget_bytes // max(batch * length_k * _FLOAT32_BYTES, 1)
    return int(min(max(rows, 1), max(length_q, 1)))


class _BlockwiseAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v, blockwise over queries; see the module docstring.

    forward(q (N, L, D), k (N, L, D), v (N, L, C), scale, block_rows) -> (N, L, C).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                block_rows: int) -> torch.Tensor:
        q_scaled = q * scale  # scaling q (N, L, D) is cheaper than scaling every (N, B, L) block
        k_t = k.transpose(1, 2)  # (N, D, L), a view: bmm takes it strided
        n, length, _ = q.shape
        out = v.new_empty(n, length, v.shape[-1])  # (N, L, C)
        lse = q.new_empty(n, length, 1)  # (N, L, 1) log-sum-exp of each score row
        buffer = _BlockBuffer(q, n * min(block_rows, length) * length)
        for rows in _blocks(length, block_rows):
            block = buffer.view(n, len(range(length)[rows]), length)
            scores = torch.bmm(q_scaled[:, rows], k_t, out=block)  # (N, B, L)
            # One fused, max-subtracting kernel (as fast as one elementwise pass) instead of
            # separate max, subtract, exp, sum and divide passes over the block.
            log_probs = torch.log_softmax(scores, dim=-1)  # S - lse, (N, B, L)
            # lse from any one column: S_0 - (S_0 - lse); log space, so nothing underflows.
            lse[:, rows] = scores[..., :1] - log_probs[..., :1]
            out[:, rows] = torch.bmm(log_probs.exp_(), v)  # softmax @ v, (N, B, C)
            del log_probs
        ctx.save_for_backward(q_scaled, k, v, out, lse)
        ctx.scale, ctx.block_rows, ctx.compute_dtype = scale, block_rows, q.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        """Per block of keys j: P = exp(Q K_j^T * scale - lse), dV_j = P^T dO, dP = dO V_j^T,
        dS = P * (dP - rowsum(dO * O)), dK_j = dS^T Q * scale, dQ += dS K_j * scale."""
        # backward() may be called inside autocast: keep every product here in fp32.
        with torch.autocast(grad_out.device.type, enabled=False):
            return _BlockwiseAttention._backward(ctx, grad_out.to(ctx.compute_dtype))

    @staticmethod
    def _backward(ctx, grad_out: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        q_scaled, k, v, out, lse = ctx.saved_tensors
        scale, block_rows = ctx.scale, ctx.block_rows
        if 0 in grad_out.stride():  # the gradient of sum() arrives as an expanded scalar
            grad_out = grad_out.contiguous()
        # Otherwise grad_out may be a transposed view: bmm reads it strided, without an (N, L, C) copy.
        n, length, _ = q_scaled.shape
        # delta_i = sum_j P_ij dP_ij = dO_i . O_i, the softmax backward's row term, in row chunks
        # so that no (N, L, C) product is materialised.
        delta = lse.new_empty(n, length, 1)  # (N, L, 1)
        for rows in _blocks(length, block_rows):
            delta[:, rows] = (grad_out[:, rows] * out[:, rows]).sum(dim=-1, keepdim=True)
        grad_q = torch.zeros_like(q_scaled)  # (N, L, D), summed over key blocks
        grad_k = torch.empty_like(k)  # (N, L, D)
        grad_v = torch.empty_like(v)  # (N, L, C)
        # Blocks of keys, all queries per block: dK and dV of a key block are complete after one
        # step (no (N, L, C) accumulator read and written once per block); only the small dQ
        # (N, L, D) accumulates.
        block_keys = block_rows
        size = n * length * min(block_keys, length)
        probs_buffer, grad_scores_buffer = _BlockBuffer(q_scaled, size), _BlockBuffer(q_scaled, size)
        for cols in _blocks(length, block_keys):
            width = len(range(length)[cols])
            probs = torch.bmm(q_scaled, k[:, cols].transpose(1, 2), out=probs_buffer.view(n, length, width))
            probs.sub_(lse).exp_()  # P (N, L, Bk), recomputed from the saved log-sum-exp
            grad_v[:, cols] = torch.bmm(probs.transpose(1, 2), grad_out)  # (N, Bk, C)
            grad_scores = torch.bmm(grad_out, v[:, cols].transpose(1, 2),
                                    out=grad_scores_buffer.view(n, length, width))  # dP (N, L, Bk)
            grad_scores.sub_(delta).mul_(probs)  # dS = P * (dP - delta), in place
            grad_k[:, cols] = torch.bmm(grad_scores.transpose(1, 2), q_scaled)  # q_scaled carries the scale
            grad_q.baddbmm_(grad_scores, k[:, cols])  # (N, L, D)
        del probs_buffer, grad_scores_buffer
        grad_q.mul_(scale)
        return grad_q, grad_k, grad_v, None, None


class _BlockBuffer:
    """One flat buffer reused by every block of a loop: blocks are allocated once rather than
    freed and reallocated per block, which keeps the allocator's resident memory steady."""

    def __init__(self, like: torch.Tensor, numel: int):
        self.flat = like.new_empty(numel)

    def view(self, *shape: int) -> torch.Tensor:
        """The buffer's leading elements as a contiguous tensor of ``shape``."""
        return self.flat[:math.prod(shape)].view(*shape)


def _blocks(length: int, size: int):
    """Slices of ``size`` consecutive positions covering range(length)."""
    return (slice(start, start + size) for start in range(0, length, size))


def blockwise_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                        block_rows: Optional[int] = None) -> torch.Tensor:
    """Exact softmax(q k^T * scale) v in memory linear in L, q and k at their own width D.

    Low-precision inputs (bf16/fp16, e.g. from convs under autocast) are computed in fp32 (the
    upcast copies are O(L * C)) with autocast off, and the result is returned in v's dtype:
    the softmax statistics stay exact and no matmul silently drops to bf16 inside the kernel.

    Args:
        q, k: (N, L, D); v: (N, L, C).
        scale: multiplies q k^T (1 / sqrt(D) in DSANet).
        block_rows: query rows per block; default :func:`query_block_rows` (an 8 MiB score block).
    Returns:
        (N, L, C) in v's dtype.
    """
    if q.dim() != 3 or k.shape != q.shape or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"expected q, k (N, L, D) and v (N, L, C); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    dtype = v.dtype
    compute_dtype = torch.float32 if dtype in _LOW_PRECISION else dtype  # fp64 stays fp64 (gradcheck)
    n, length, _ = q.shape
    block_rows = block_rows or query_block_rows(n, length, length)
    with torch.autocast(q.device.type, enabled=False):
        q, k, v = (t.to(compute_dtype) for t in (q, k, v))
        out = _BlockwiseAttention.apply(q, k, v, float(scale), int(block_rows))
    return out.to(dtype)
