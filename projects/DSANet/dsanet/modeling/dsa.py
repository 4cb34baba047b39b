"""The DSA (decoupled self attention) module: per FPN level, one attention branch for the
classification tower and one for the box tower (paper Fig. 1), or one shared branch (Table 2)."""
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

from .attention import build_attention

__all__ = ["DSABlock", "DecoupledSelfAttention", "normalize_levels", "CONV_INITS"]

# How the attention's convolutions start: PyTorch's default (kaiming-uniform with a=sqrt(5)), or
# xavier-uniform with zero bias, which the authors' code gets from its FPN neck's init_weights.
CONV_INITS = ("pytorch", "xavier")

LevelSpec = Union[Mapping[str, str], Sequence[str]]


def normalize_levels(levels: LevelSpec) -> Dict[str, str]:
    """``["p4", "p5"]`` (self-attention on each) or ``{"p3": "self_half_k1", ...}`` -> dict."""
    if isinstance(levels, str):
        raise TypeError(f"dsa levels must be a list or dict of level names, got the string {levels!r}")
    if isinstance(levels, Mapping):
        return {str(k): str(v) for k, v in levels.items()}
    return {str(level): "self" for level in levels}


class DSABlock(nn.Module):
    """Residual attention, paper eq. 2: out = x + gamma * attention(x).

    gamma is a learned scalar initialised to 0 (so the block starts as the identity), or the
    constant 1 (paper Table 4).
    """

    def __init__(self, attention: nn.Module, *, learn_gamma: bool = True):
        super().__init__()
        self.attention = attention
        if learn_gamma:
            self.gamma = nn.Parameter(torch.zeros(1))
        else:
            self.register_buffer("gamma", torch.ones(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, C, H, W)."""
        attention = self.attention(x)
        return torch.addcmul(x, self.gamma.to(x.dtype), attention.to(x.dtype))  # one op, no temporary


class DecoupledSelfAttention(nn.Module):
    """DSA over the head's input levels; levels without DSA pass through unchanged.

    Args:
        in_features: names of all levels the head sees, in order (e.g. ["p3", ..., "p7"]).
        levels: which of them get DSA, and the attention kind of each (see :func:`normalize_levels`).
        channels: channels C of each level's feature map.
        shared: one branch feeding both tasks instead of one branch per task.
        learn_gamma: learned gamma (initialised to 0) or gamma fixed to 1.
        reduction: query/key channels are C // reduction.
        qk_scale: factor on Q K^T in self-attention, ``"query_dim"`` (1/sqrt(C // reduction), paper
            eq. 5) or ``"channels"`` (1/sqrt(C), the authors' code).
        conv_init: initialisation of the attention's convolutions, one of :data:`CONV_INITS`.
    """

    def __init__(self, *, in_features: Sequence[str], levels: LevelSpec, channels: int,
                 shared: bool = False, learn_gamma: bool = True, reduction: int = 8,
                 qk_scale: str = "query_dim", conv_init: str = "pytorch"):
        super().__init__()
        if conv_init not in CONV_INITS:
            raise ValueError(f"conv_init={conv_init!r}; choose one of {CONV_INITS}")
        levels = normalize_levels(levels)
        unknown = sorted(set(levels) - set(in_features))
        if unknown:
            raise ValueError(f"dsa levels {unknown} are not among the head's input features {list(in_features)}")
        self.in_features = list(in_features)
        self.shared = shared

        def branch() -> nn.ModuleDict:
            return nn.ModuleDict({
                level: DSABlock(build_attention(kind, channels, reduction, qk_scale=qk_scale), learn_gamma=learn_gamma)
                for level, kind in levels.items()
            })

        if shared:
            self.shared_branch = branch()
        else:
            self.cls_branch, self.reg_branch = branch(), branch()
        if conv_init == "xavier":
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

    @staticmethod
    def _attend(branch: nn.ModuleDict, names: List[str], features: List[torch.Tensor]) -> List[torch.Tensor]:
        return [branch[name](x) if name in branch else x for name, x in zip(names, features)]

    def forward(self, cls_features: List[torch.Tensor],
                reg_features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per-level features for each task (the same list twice when DSA sits before the towers).

        Args:
            cls_features, reg_features: lists over ``in_features`` of (N, C, Hi, Wi).
        Returns:
            (cls_features, reg_features), each a list of (N, C, Hi, Wi).
        """
        cls_branch = self.shared_branch if self.shared else self.cls_branch
        reg_branch = self.shared_branch if self.shared else self.reg_branch
        out_cls = self._attend(cls_branch, self.in_features, cls_features)
        if self.shared and reg_features is cls_features:  # before the towers: one input, computed once
            return out_cls, out_cls
        return out_cls, self._attend(reg_branch, self.in_features, reg_features)
