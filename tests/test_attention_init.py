"""The attention-conv init switch: PyTorch's default, or the authors' xavier-uniform with zero bias."""
import math

import pytest
import torch
from torch import nn

from conftest import tiny_model
from dsanet.modeling.dsa import DecoupledSelfAttention


def build_model(conv_init: str) -> nn.Module:
    """DSANet-Conf from the project's model config, narrowed; same seed for every init."""
    return tiny_model(dsa_conv_init=conv_init, with_confidence=True)


def attention_convs(model: nn.Module):
    return [m for m in model.head.dsa.modules() if isinstance(m, nn.Conv2d)]


def test_xavier_gives_every_attention_conv_zero_bias_and_xavier_spread():
    convs = attention_convs(build_model("xavier"))
    assert len(convs) == 8 * 3  # P4-P7, two branches, Q/K/V each
    for conv in convs:
        fan_out, fan_in = conv.weight.shape[0], conv.weight[0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert torch.count_nonzero(conv.bias) == 0
        assert conv.weight.abs().max() <= bound
        # a uniform(-b, b) draw has std b / sqrt(3); with >= 128 weights the estimate is within 15%
        assert conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)


def test_the_default_keeps_pytorchs_init_and_the_switch_touches_only_the_attention():
    default, xavier = build_model("pytorch"), build_model("xavier")
    assert default.head.dsa is not None
    assert all(torch.count_nonzero(c.bias) > 0 for c in attention_convs(default))
    xavier_state = xavier.state_dict()
    differing = {name for name, value in default.state_dict().items()
                 if not torch.equal(value, xavier_state[name])}
    attention = {name for name in differing if name.startswith("head.dsa.")}
    assert attention, "xavier changed no attention weight"
    # The head's own layers are built before DSA and keep their values; only the confidence conv,
    # built after DSA from the same random stream, starts elsewhere.
    assert differing - attention <= {"head.object_confidence.weight"}


def test_an_unknown_init_is_named():
    with pytest.raises(ValueError, match="conv_init='kaiming'"):
        DecoupledSelfAttention(in_features=["p4"], levels=["p4"], channels=64, conv_init="kaiming")
