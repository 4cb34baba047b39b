"""Attention paths the benchmarks compare with what models run, and that no model runs.

``sdpa_padded`` is ``scaled_dot_product_attention`` with q and k zero-padded to v's width on CPU,
so that PyTorch's fused CPU kernel takes them (the exporter's padding,
:func:`dsanet.export.pad_qk_to_value_width`). The padding makes Q K^T cost C / D = 8 times its
math on CPU, and the kernel's backward recomputes it: the models' blockwise path computes the same
at width D. It is measured beside the dense and blockwise paths as a reference.
"""
from typing import Dict

import torch

from dsanet.export import pad_qk_to_value_width
from dsanet.modeling.attention import ATTENTION_IMPLS as MODEL_IMPLS
from dsanet.modeling.attention import AttentionFn, attention_path, sdpa_attention

__all__ = ["ATTENTION_IMPLS", "attention_path", "sdpa_padded"]


def sdpa_padded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v by one ``scaled_dot_product_attention`` call, q and k padded to v's width on CPU.

    Args:
        q, k: (N, L, D); v: (N, L, C).
    Returns:
        (N, L, C).
    """
    return sdpa_attention(*pad_qk_to_value_width(q, k, v), scale)


sdpa_padded.needs_contiguous_qkv = True  # SelfAttention2d hands SDPA q, k, v contiguous in their last dim

# The models' attention implementations by name, and the benchmark-only reference.
ATTENTION_IMPLS: Dict[str, AttentionFn] = {**MODEL_IMPLS, "sdpa_padded": sdpa_padded}
