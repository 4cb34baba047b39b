"""Numerics: mixed precision (bf16 and fp16, on the CPU) with extreme inputs stays finite, every exact
attention path keeps fp16's Q K^T in range, and a non-finite loss is named."""
import pytest
import torch
from detectron2.utils.events import EventStorage
from conftest import make_inputs, tiny_model

from dsanet.engine import CheckedSimpleTrainer
from dsanet.modeling.attention import ATTENTION_IMPLS

EXTREMES = {
    "all_zero": lambda image: torch.zeros_like(image),
    "saturated": lambda image: torch.full_like(image, 255.0),
    "random": lambda image: image,
}
# FPN outputs scaled up: feature norms far beyond what training sees, where attention logits
# (Q K^T) and the box decoder overflow first if they are computed carelessly.
FEATURE_SCALES = (1.0, 1e4)
# fp16 holds at most 65504: x1e4 puts this model's P3 near 8.6e4, inf before any op of DSA runs (no
# fp16 network can carry such features). x1e3 (P3 up to ~8.6e3) is the extreme that fp16 can hold.
# With Q K^T in fp16, x100 already gives inf scores and NaN losses: dense_attention multiplies in fp32.
FP16_FEATURE_SCALES = (1.0, 1e3)


def extreme_inputs(kind: str) -> list:
    inputs = make_inputs()
    for record in inputs:
        record["image"] = EXTREMES[kind](record["image"])
    return inputs


def scale_features(model, scale: float, seen: dict):
    """Forward hook on the real backbone that multiplies every FPN level by ``scale``; ``seen["finite"]``
    records whether the scaled features were all finite (the premise: the input is representable)."""
    def hook(module, args, out):
        scaled = {k: v * scale for k, v in out.items()}
        seen["finite"] = seen.get("finite", True) and all(bool(torch.isfinite(v).all()) for v in scaled.values())
        return scaled
    return model.backbone.register_forward_hook(hook)


def assert_finite_outputs(outputs: list) -> None:
    for output in outputs:
        instances = output["instances"]
        assert torch.isfinite(instances.pred_boxes.tensor).all()
        assert torch.isfinite(instances.scores).all()
        assert ((instances.scores >= 0) & (instances.scores <= 1)).all()


def run_under_autocast(device: str, dtype: torch.dtype, kind: str, scale: float) -> None:
    model = tiny_model("common/models/dsanet_conf.py", dsa_levels=["p3", "p4", "p5", "p6", "p7"]).to(device)
    seen = {}
    hook = scale_features(model, scale, seen)
    inputs = [{k: (v.to(device) if hasattr(v, "to") else v) for k, v in r.items()} for r in extreme_inputs(kind)]
    try:
        with EventStorage(), torch.autocast(device, dtype=dtype):
            model.train()
            losses = model(inputs)
            model.eval()
            with torch.no_grad():
                outputs = model(inputs)
    finally:
        hook.remove()
    assert seen["finite"], f"features x{scale} do not fit {dtype}: the test's input, not the model, overflows"
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_conf"}
    for name, value in losses.items():
        assert torch.isfinite(value), f"{name}={value} ({kind}, features x{scale})"
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"gradient of {name} ({kind}, features x{scale})"
    assert_finite_outputs(outputs)


@pytest.mark.parametrize("scale", FEATURE_SCALES)
@pytest.mark.parametrize("kind", sorted(EXTREMES))
def test_bf16_autocast_on_cpu_stays_finite_on_extreme_inputs(kind, scale):
    run_under_autocast("cpu", torch.bfloat16, kind, scale)


@pytest.mark.parametrize("scale", FP16_FEATURE_SCALES)
@pytest.mark.parametrize("kind", sorted(EXTREMES))
def test_fp16_autocast_on_cpu_stays_finite_on_extreme_inputs(kind, scale):
    """CPU fp16 autocast: convolutions and matrix products in fp16, as on CUDA (the CPU keeps more ops
    in fp16 than CUDA does, GroupNorm and softmax included, so it is the stricter of the two). The
    attention runs dense here, the path CPUs take for these map sizes."""
    run_under_autocast("cpu", torch.float16, kind, scale)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's fp16 SDPA kernels (the path 'auto' takes on a GPU)")
@pytest.mark.parametrize("scale", FP16_FEATURE_SCALES)
@pytest.mark.parametrize("kind", sorted(EXTREMES))
def test_fp16_autocast_on_cuda_stays_finite_on_extreme_inputs(kind, scale):
    run_under_autocast("cuda", torch.float16, kind, scale)


@pytest.mark.parametrize("impl", ["dense", "blockwise", "sdpa"])
def test_every_attention_path_under_fp16_autocast_matches_fp32_where_q_k_exceeds_fp16s_range(impl):
    """q and k share a large component (as features of one large FPN map do): |Q K^T| reaches 1.16e5,
    beyond fp16's 65504, while each row's scores differ by ~4 (softmax weights up to ~0.2, not one-hot).
    Each exact path (dense, blockwise, and SDPA on the CPU) returns the fp64 reference within fp16's
    rounding of the output: measured max error 3.4e-3 (dense), 2.8e-3 (blockwise), 2.2e-3 (SDPA);
    tolerance 1e-2. The same inputs with Q K^T in fp16 give inf scores and NaN."""
    generator = torch.Generator().manual_seed(0)
    shared = 100 * torch.randn(8, generator=generator)
    q = shared + torch.randn(2, 40, 8, generator=generator)
    k = shared + 0.01 * torch.randn(2, 40, 8, generator=generator)
    v = torch.randn(2, 40, 64, generator=generator)
    q, k, v = (t.half().float() for t in (q, k, v))  # values fp16 holds: only the computation differs
    assert (q @ k.transpose(1, 2)).abs().max() > torch.finfo(torch.float16).max
    reference = ATTENTION_IMPLS["dense"](q.double(), k.double(), v.double(), 8 ** -0.5).float()
    with torch.autocast("cpu", dtype=torch.float16):
        out = ATTENTION_IMPLS[impl](q.half(), k.half(), v.half(), 8 ** -0.5)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), reference, rtol=0, atol=1e-2)


def test_a_non_finite_loss_stops_training_naming_that_loss():
    model = tiny_model("common/models/dsanet_conf.py")
    with torch.no_grad():
        model.head.cls_score.bias.fill_(float("nan"))  # only the classification loss sees it
    weights_before = model.head.bbox_pred.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = CheckedSimpleTrainer(model, [make_inputs()] * 2, optimizer)
    with pytest.raises(FloatingPointError) as error:
        trainer.train(0, 2)
    message = str(error.value)
    assert "iteration=0" in message and "loss_cls=nan" in message
    assert "loss_box_reg=" not in message and "loss_conf=" not in message  # the finite ones are not blamed
    assert torch.equal(model.head.bbox_pred.weight, weights_before)  # stopped before the optimizer step
