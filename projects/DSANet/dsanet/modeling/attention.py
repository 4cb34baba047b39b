"""Spatial attention kinds used by the DSA block.

Each module maps a feature map x (N, C, H, W) to an attention feature of the same shape; the
residual ``x + gamma * att`` (paper eq. 2) lives in :class:`dsanet.modeling.dsa.DSABlock`.

Naming: N images, C channels, H x W positions, L = H * W, D = C // reduction (query/key dim).
"""
import contextlib
import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from .blockwise import blockwise_attention

__all__ = [
    "SelfAttention2d",
    "SpatialAttention2d",
    "auto_attention",
    "attention_path",
    "blockwise_attention",
    "dense_attention",
    "export_attention",
    "is_exporting",
    "tracing_for_export",
    "fused_attention",
    "sdpa_attention",
    "ATTENTION_KINDS",
    "ATTENTION_IMPLS",
    "DENSE_BUDGET_BYTES",
    "build_attention",
    "QK_SCALES",
]

# Choices for the factor on Q K^T (see SelfAttention2d): the paper's 1/sqrt(C/8), the authors' code's 1/sqrt(C).
QK_SCALES = ("query_dim", "channels")

# The dense path is taken on CPU while one (N, Lq, Lk) fp32 score matrix fits in this many bytes.
# Its autograd holds about three such matrices at its peak (scores, softmax, their gradient), so
# 64 MiB bounds it near 200 MiB. At 800x1333 that is P5-P7 (P5: 4.2 MiB); P4 (67 MiB) and P3
# (1064 MiB) go blockwise. Below the budget one big product beats a loop over query blocks.
DENSE_BUDGET_BYTES = 64 * 2 ** 20


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference attention, paper eq. 5: softmax(Q K^T * scale) V, materialising the L x L matrix.

    Args:
        q, k: (N, L, D); v: (N, L, C).
    Returns:
        (N, L, C). Memory is quadratic in L.
    """
    scores = torch.bmm(q, k.transpose(1, 2)) * scale  # (N, L, L)
    # Low-precision scores (bf16 autocast) get their softmax max and sum in fp32; fp32/fp64 stay.
    stats = torch.float32 if scores.dtype in (torch.bfloat16, torch.float16) else scores.dtype
    weights = torch.softmax(scores, dim=-1, dtype=stats)
    return torch.bmm(weights.to(v.dtype), v)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """PyTorch's ``scaled_dot_product_attention`` on q, k and v as they are (one head).

    On CUDA its memory-efficient kernel takes q and k narrower than v (D != C), in fp32 too, in
    memory linear in L. On CPU no fused kernel takes D != C, and it silently falls back to the
    quadratic math path: use :func:`auto_attention` (which picks per device) rather than this directly.

    Args:
        q, k: (N, L, D); v: (N, L, C).
    Returns:
        (N, L, C).
    """
    q, k, v = (t.unsqueeze(1).contiguous() for t in (q, k, v))  # (N, 1, L, E), contiguous in E
    return F.scaled_dot_product_attention(q, k, v, scale=scale).squeeze(1)


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The same as :func:`dense_attention` via ``scaled_dot_product_attention``, zero-padding q and
    k to v's width on CPU (the "SDPA-padded" path, kept as a benchmark reference).

    ``scaled_dot_product_attention`` silently falls back to the quadratic math path when no
    fused kernel accepts its inputs. On CPU the fused (flash) kernel needs q, k and v to share
    their last dimension, each contiguous in it: q and k are zero-padded from D to C, which leaves
    Q K^T unchanged, and the scale is passed explicitly so it stays 1/sqrt(D). On CUDA the
    memory-efficient kernel takes D != C directly, in fp32 too. The padding makes Q K^T cost
    C / D = 8 times its math on CPU, and the kernel's backward recomputes it:
    :func:`blockwise_attention` computes the same at width D.

    Args:
        q, k: (N, L, D); v: (N, L, C).
    Returns:
        (N, L, C).
    """
    if q.device.type == "cpu" and q.shape[-1] != v.shape[-1]:
        pad = v.shape[-1] - q.shape[-1]
        q, k = F.pad(q, (0, pad)), F.pad(k, (0, pad))
    return sdpa_attention(q, k, v, scale)


def export_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The attention inside exported graphs (torch.export, the ONNX exporters, TorchScript tracing).

    One ``scaled_dot_product_attention`` op, q and k zero-padded to v's width on CPU as in
    :func:`fused_attention`. Why not the eager paths: :func:`blockwise_attention` is a Python loop
    whose block count depends on H * W (a graph would keep the count of the traced image), and
    the dense/blockwise choice is a branch on the shape. In PyTorch's runtime the op runs the
    fused CPU kernel (memory linear in L); onnxruntime computes it as MatMul-Softmax-MatMul.
    ``clone`` rather than ``contiguous()``: ``contiguous()`` on a symbolic shape makes torch.export
    assert H * W != 1 at run time (a 1x1 P7 of a 128-pixel image).

    Args:
        q, k: (N, L, D); v: (N, L, C).
    Returns:
        (N, L, C).
    """
    if q.device.type == "cpu" and q.shape[-1] != v.shape[-1]:
        pad = v.shape[-1] - q.shape[-1]
        q, k = F.pad(q, (0, pad)), F.pad(k, (0, pad))
    q, k, v = (t.clone(memory_format=torch.contiguous_format).unsqueeze(1) for t in (q, k, v))  # (N, 1, L, E)
    return F.scaled_dot_product_attention(q, k, v, scale=scale).squeeze(1)


_TRACING_FOR_EXPORT = False


def is_exporting() -> bool:
    """True while torch.export or the dynamo ONNX exporter records the model, or while
    ``dsanet.export`` traces it (:func:`tracing_for_export`). Other tracing, such as fvcore's FLOP
    count, sees the eager paths."""
    return _TRACING_FOR_EXPORT or torch.compiler.is_exporting()


@contextlib.contextmanager
def tracing_for_export():
    """Within it, ``torch.jit.trace`` records :func:`export_attention` (see :func:`is_exporting`)."""
    global _TRACING_FOR_EXPORT
    previous, _TRACING_FOR_EXPORT = _TRACING_FOR_EXPORT, True
    try:
        yield
    finally:
        _TRACING_FOR_EXPORT = previous


def attention_path(device_type: str, batch: int, length_q: int, length_k: int,
                   dense_budget_bytes: int = DENSE_BUDGET_BYTES) -> str:
    """Which exact attention :func:`auto_attention` runs for a shape: "sdpa", "dense" or "blockwise".

    CUDA: "sdpa" (the memory-efficient kernel, q/k narrower than v as they are). Elsewhere:
    "dense" while one (batch, Lq, Lk) fp32 score matrix fits ``dense_budget_bytes``, else
    "blockwise" (memory linear in L). Only the shape decides, so a model's path per level is fixed.
    """
    if device_type == "cuda":
        return "sdpa"
    if batch * length_q * length_k * 4 <= dense_budget_bytes:
        return "dense"
    return "blockwise"


def auto_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Exact softmax(q k^T * scale) v by the path :func:`attention_path` picks for the shape.

    Args:
        q, k: (N, L, D); v: (N, L, C).
    Returns:
        (N, L, C).
    """
    path = attention_path(q.device.type, q.shape[0], q.shape[1], k.shape[1])
    return ATTENTION_IMPLS[path](q, k, v, scale)


# Attention implementations by name; "auto" picks one per shape and device (see attention_path).
ATTENTION_IMPLS: Dict[str, Callable[..., torch.Tensor]] = {
    "auto": auto_attention,
    "dense": dense_attention,
    "blockwise": blockwise_attention,
    "sdpa": sdpa_attention,
    "sdpa_padded": fused_attention,
    "export": export_attention,
}


class SelfAttention2d(nn.Module):
    """Self-attention over all positions of a feature map (paper Fig. 2b, eq. 5).

    Q and K come from convs to C // reduction channels, V from a conv to C channels. ``impl``
    names the attention implementation (a key of :data:`ATTENTION_IMPLS`; all exact): "auto"
    picks dense, blockwise or SDPA per shape and device (:func:`attention_path`); exported graphs
    use :func:`export_attention` unless ``impl`` is "dense". With
    ``stride=2`` (paper Fig. 5, for P3) the three convs halve the resolution, attention runs at
    half resolution, and the result is upsampled (nearest) back to H x W; ``kernel_size`` 3 is
    padded so that the half-resolution grid stays aligned.

    ``qk_scale`` picks the factor on Q K^T: ``"query_dim"`` is 1/sqrt(C // reduction), the
    paper's eq. 5 (d_k = C/8); ``"channels"`` is 1/sqrt(C), what the authors' released FPN code
    computes (``d_k = C``).
    """

    def __init__(self, channels: int, *, reduction: int = 8, stride: int = 1, kernel_size: int = 1,
                 impl: str = "auto", qk_scale: str = "query_dim"):
        super().__init__()
        if channels % reduction:
            raise ValueError(f"channels={channels} is not divisible by reduction={reduction}")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention impl {impl!r}; choose one of {sorted(ATTENTION_IMPLS)}")
        if qk_scale not in QK_SCALES:
            raise ValueError(f"qk_scale={qk_scale!r}; choose one of {QK_SCALES}")
        self.qk_dim = channels // reduction
        self.scale = 1.0 / math.sqrt(self.qk_dim if qk_scale == "query_dim" else channels)
        self.stride = stride
        self.impl = impl
        conv = dict(kernel_size=kernel_size, stride=stride, padding=kernel_size // 2)
        self.query = nn.Conv2d(channels, self.qk_dim, **conv)
        self.key = nn.Conv2d(channels, self.qk_dim, **conv)
        self.value = nn.Conv2d(channels, channels, **conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> attention feature (N, C, H, W)."""
        impl = "export" if is_exporting() and self.impl != "dense" else self.impl
        if impl != "export" and self._needs_contiguous_qkv(x.device.type):
            # SDPA needs q, k, v contiguous in their last dim: channels_last makes the conv outputs
            # (N, l, D|C) contiguous views. Dense and blockwise read the transposed views as they
            # are, so there the copy of x (one more (N, C, H, W) tensor, kept for backward) is skipped.
            x = x.contiguous(memory_format=torch.channels_last)
        q, k, v = self.query(x), self.key(x), self.value(x)  # (N, D|C, h, w), h = H / stride
        n, c, h, w = v.shape
        q, k, v = (t.flatten(2).transpose(1, 2) for t in (q, k, v))  # (N, l, D|C)
        out = ATTENTION_IMPLS[impl](q, k, v, self.scale)  # (N, l, C)
        out = out.transpose(1, 2).unflatten(2, (h, w))  # (N, C, h, w), a view: reshape would copy
        if self.stride != 1:  # not a shape comparison: an exported graph would keep its outcome
            out = F.interpolate(out, size=x.shape[-2:], mode="nearest")
        return out

    def _needs_contiguous_qkv(self, device_type: str) -> bool:
        """True when the attention will run SDPA, which wants q, k, v contiguous in their last dim."""
        return self.impl in ("sdpa", "sdpa_padded") or (self.impl == "auto" and device_type == "cuda")


class SpatialAttention2d(nn.Module):
    """CBAM spatial attention (paper Fig. 2a, eq. 3-4): x * sigmoid(conv7x7([max_c x, mean_c x])).

    Each output position depends only on a 7x7 neighbourhood of the input: no global context.
    """

    def __init__(self, channels: int, *, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> attention feature (N, C, H, W)."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))  # (N, 1, H, W) map shared by all channels


# Attention kinds selectable by name in configs (DSA levels map a level to one of these).
ATTENTION_KINDS: Dict[str, Callable[..., nn.Module]] = {
    "self": lambda c, r, **kw: SelfAttention2d(c, reduction=r, **kw),
    "self_dense": lambda c, r, **kw: SelfAttention2d(c, reduction=r, impl="dense", **kw),
    "self_half_k1": lambda c, r, **kw: SelfAttention2d(c, reduction=r, stride=2, kernel_size=1, **kw),
    "self_half_k3": lambda c, r, **kw: SelfAttention2d(c, reduction=r, stride=2, kernel_size=3, **kw),
    "cbam": lambda c, r, **kw: SpatialAttention2d(c),  # no Q K^T: qk_scale does not apply
}


def build_attention(kind: str, channels: int, reduction: int = 8, *, qk_scale: str = "query_dim") -> nn.Module:
    """Build an attention module by kind name (a key of :data:`ATTENTION_KINDS`); ``qk_scale`` is
    passed to the self-attention kinds (see :class:`SelfAttention2d`)."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; choose one of {sorted(ATTENTION_KINDS)}")
    return ATTENTION_KINDS[kind](channels, reduction, qk_scale=qk_scale)
