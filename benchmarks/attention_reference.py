"""Attention paths the benchmarks compare with what models run, and that no model runs.

``sdpa_padded`` is the models' :func:`dsanet.modeling.attention.sdpa_attention` with q and k
zero-padded to v's width on CPU (``pad_qk_on_cpu=True``), so that PyTorch's fused CPU kernel takes
them: the attention of the exported graphs (``dsanet.export.export_attention``). The padding makes
Q K^T cost C / D = 8 times its math on CPU, and the kernel's backward recomputes it: the models'
blockwise path computes the same at width D. It is measured beside the dense and blockwise paths as
a reference.
"""
import functools
from typing import Dict

from dsanet.modeling.attention import ATTENTION_IMPLS as MODEL_IMPLS
from dsanet.modeling.attention import AttentionFn, attention_path, sdpa_attention

__all__ = ["ATTENTION_IMPLS", "attention_path", "sdpa_padded"]

# (q (N, L, D), k (N, L, D), v (N, L, C), scale) -> (N, L, C), q and k padded to (N, L, C) on CPU.
sdpa_padded: AttentionFn = functools.partial(sdpa_attention, pad_qk_on_cpu=True)

# The models' attention implementations by name, and the benchmark-only reference.
ATTENTION_IMPLS: Dict[str, AttentionFn] = {**MODEL_IMPLS, "sdpa_padded": sdpa_padded}
