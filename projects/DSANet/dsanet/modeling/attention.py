"""Spatial attention kinds used by the DSA block.

Each module maps a feature map x (N, C, H, W) to an attention feature of the same shape; the
residual ``x + gamma * att`` (paper eq. 2) lives in :class:`dsanet.modeling.dsa.DSABlock`.

Naming: N images, C channels, H x W positions, L = H * W, D = C // reduction (query/key dim).
"""
import math
from typing import Callable, Dict, Union

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
    "sdpa_attention",
    "AttentionFn",
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
    scores = _attention_scores(q, k, scale)  # (N, L, L); fp32 under fp16
    # Low-precision scores (bf16 autocast) get their softmax max and sum in fp32; fp32/fp64 stay.
    stats = torch.float32 if scores.dtype in (torch.bfloat16, torch.float16) else scores.dtype
    weights = torch.softmax(scores, dim=-1, dtype=stats)
    return torch.bmm(weights.to(v.dtype), v)


def _attention_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Q K^T * scale, with the product in fp32 wherever it would otherwise run in fp16.

    Why: fp16 tops out at 65504. Q K^T sums D products of conv outputs, so FPN features of a few
    hundred (x100 the tiny test model's own) already give inf scores, then NaN from the softmax
    (tests/test_numerics.py); fp32's range holds them. bf16 has fp32's exponent range: its product
    stays bf16 (its softmax statistics are fp32, see :func:`dense_attention`).

    Args:
        q, k: (N, L, D).
    Returns:
        (N, L, L): fp32 for fp16 inputs or under fp16 autocast, else the product's own dtype.
    """
    if not _computes_in_fp16(q):
        return torch.bmm(q, k.transpose(1, 2)) * scale
    with torch.autocast(q.device.type, enabled=False):
        return torch.bmm(q.float(), k.float().transpose(1, 2)) * scale


def _computes_in_fp16(x: torch.Tensor) -> bool:
    """Whether a matrix product of ``x`` would run in fp16: ``x`` is fp16, or fp16 autocast is on for its device."""
    device_type = x.device.type
    return x.dtype == torch.float16 or (torch.is_autocast_enabled(device_type)
                                        and torch.get_autocast_dtype(device_type) == torch.float16)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                   pad_qk_on_cpu: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale) v as one ``scaled_dot_product_attention`` op (one head).

    On CUDA its memory-efficient kernel takes q and k narrower than v (D != C), in fp32 too, in
    memory linear in L. On CPU no fused kernel takes D != C, and the op silently falls back to the
    quadratic math path, unless ``pad_qk_on_cpu`` zero-pads q and k from D to C: the padding
    leaves Q K^T unchanged (``scale`` stays the caller's) but makes it cost C / D times its math.
    Models use :func:`auto_attention` (which picks per device); the exporter sets the padded form
    (``dsanet.export.export_attention``), which a graph holds as one op for every map size.

    Args:
        q, k: (N, L, D); v: (N, L, C).
        pad_qk_on_cpu: on a CPU tensor with D != C, pad q and k to (N, L, C) first.
    Returns:
        (N, L, C).
    """
    if pad_qk_on_cpu and q.device.type == "cpu" and q.shape[-1] != v.shape[-1]:
        pad = v.shape[-1] - q.shape[-1]
        q, k = F.pad(q, (0, pad)), F.pad(k, (0, pad))
    q, k, v = (_contiguous(t).unsqueeze(1) for t in (q, k, v))  # (N, 1, L, E), contiguous in E
    return F.scaled_dot_product_attention(q, k, v, scale=scale).squeeze(1)


def _contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x`` in contiguous memory: ``contiguous()`` eagerly (no copy when it already is), a clone under torch.export.

    Reason: ``contiguous()`` on a symbolic shape makes torch.export assert H * W != 1 at run time
    (a 1x1 P7 of a 128-pixel image); a clone decides nothing from the shape.
    """
    if torch.compiler.is_exporting():
        return x.clone(memory_format=torch.contiguous_format)
    return x.contiguous()


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


# An attention implementation: (q (N, L, D), k (N, L, D), v (N, L, C), scale) -> (N, L, C).
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]

# Attention implementations by name; "auto" picks one per shape and device (see attention_path).
ATTENTION_IMPLS: Dict[str, AttentionFn] = {
    "auto": auto_attention,
    "dense": dense_attention,
    "blockwise": blockwise_attention,
    "sdpa": sdpa_attention,
}


class SelfAttention2d(nn.Module):
    """Self-attention over all positions of a feature map (paper Fig. 2b, eq. 5).

    Q and K come from convs to C // reduction channels, V from a conv to C channels. ``impl``
    names the attention implementation (a key of :data:`ATTENTION_IMPLS`; all exact): "auto"
    picks dense, blockwise or SDPA per shape and device (:func:`attention_path`). It may also be
    an :data:`AttentionFn`, set by whoever needs another exact path (the exporter sets one op that
    a graph can hold, ``dsanet.export.export_attention``); such a function gets q, k, v as strided
    views of the convs' outputs and makes them contiguous itself where it needs. With
    ``stride=2`` (paper Fig. 5, for P3) the three convs halve the resolution, attention runs at
    half resolution, and the result is upsampled (nearest) back to H x W; ``kernel_size`` 3 is
    padded so that the half-resolution grid stays aligned.

    ``qk_scale`` picks the factor on Q K^T: ``"query_dim"`` is 1/sqrt(C // reduction), the
    paper's eq. 5 (d_k = C/8); ``"channels"`` is 1/sqrt(C), what the authors' released FPN code
    computes (``d_k = C``).
    """

    def __init__(self, channels: int, *, reduction: int = 8, stride: int = 1, kernel_size: int = 1,
                 impl: Union[str, AttentionFn] = "auto", qk_scale: str = "query_dim"):
        super().__init__()
        if channels % reduction:
            raise ValueError(f"channels={channels} is not divisible by reduction={reduction}")
        if not callable(impl) and impl not in ATTENTION_IMPLS:
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
        if self._runs_sdpa(x.device.type):
            # SDPA needs q, k, v contiguous in their last dim: channels_last makes the conv outputs
            # (N, l, D|C) contiguous views. Dense and blockwise read the transposed views as they
            # are, so there the copy of x (one more (N, C, H, W) tensor, kept for backward) is skipped.
            x = x.contiguous(memory_format=torch.channels_last)
        q, k, v = self.query(x), self.key(x), self.value(x)  # (N, D|C, h, w), h = H / stride
        n, c, h, w = v.shape
        q, k, v = (t.flatten(2).transpose(1, 2) for t in (q, k, v))  # (N, l, D|C)
        attend = self.impl if callable(self.impl) else ATTENTION_IMPLS[self.impl]
        out = attend(q, k, v, self.scale)  # (N, l, C)
        out = out.transpose(1, 2).unflatten(2, (h, w))  # (N, C, h, w), a view: reshape would copy
        if self.stride != 1:  # not a shape comparison: an exported graph would keep its outcome
            out = F.interpolate(out, size=x.shape[-2:], mode="nearest")
        return out

    def _runs_sdpa(self, device_type: str) -> bool:
        """True when ``impl`` names the SDPA path ("sdpa", or "auto" on CUDA): SDPA wants q, k, v
        contiguous in their last dim. A callable ``impl`` gets them as they are."""
        return self.impl == "sdpa" or (self.impl == "auto" and device_type == "cuda")


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
