"""The Q K^T scale switch: the paper's 1/sqrt(C/8) by default, the authors' code's 1/sqrt(C) on request."""
import math

import pytest
import torch
from detectron2.config import instantiate

from dsanet import model_zoo
from dsanet.modeling import SelfAttention2d
from dsanet.modeling.dsa import DecoupledSelfAttention


def attention_by_hand(module: SelfAttention2d, x: torch.Tensor, divisor: float) -> torch.Tensor:
    """softmax(Q K^T / sqrt(divisor)) V, written out from the module's own convs."""
    n, c, h, w = x.shape
    q, k, v = (conv(x).flatten(2).transpose(1, 2) for conv in (module.query, module.key, module.value))
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(divisor), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(n, c, h, w)


@pytest.mark.parametrize("qk_scale,divisor", [("query_dim", 64 // 8), ("channels", 64)])
def test_self_attention_divides_by_the_chosen_dimension(qk_scale, divisor):
    torch.manual_seed(0)
    module = SelfAttention2d(64, qk_scale=qk_scale, impl="dense")
    x = torch.randn(2, 64, 5, 7)
    assert module.scale == pytest.approx(1 / math.sqrt(divisor))
    torch.testing.assert_close(module(x), attention_by_hand(module, x, divisor), atol=1e-5, rtol=1e-5)


def test_the_default_is_the_papers_query_dim_scale_and_the_two_differ():
    assert SelfAttention2d(256).scale == pytest.approx(1 / math.sqrt(32))
    torch.manual_seed(0)
    paper = SelfAttention2d(64)
    authors = SelfAttention2d(64, qk_scale="channels")
    authors.load_state_dict(paper.state_dict())  # same weights: only the scale differs
    x = torch.randn(1, 64, 6, 6)
    assert not torch.allclose(paper(x), authors(x))


def test_the_switch_reaches_every_self_attention_block_from_the_config():
    cfg = model_zoo.get_config("Demo/dsanet_conf_synthetic_cpu.py")
    assert cfg.model.head.dsa_qk_scale == "query_dim"
    cfg.model.head.dsa_qk_scale = "channels"
    model = instantiate(cfg.model)
    blocks = [m for m in model.modules() if isinstance(m, SelfAttention2d)]
    assert len(blocks) == 8  # P4-P7, one per task
    assert all(b.scale == pytest.approx(1 / math.sqrt(64)) for b in blocks)


def test_an_unknown_scale_is_named():
    with pytest.raises(ValueError, match="qk_scale='sqrt'"):
        DecoupledSelfAttention(in_features=["p4"], levels=["p4"], channels=64, qk_scale="sqrt")
