"""Numerics: mixed precision with extreme inputs stays finite, and a non-finite loss is named."""
import pytest
import torch
from detectron2.utils.events import EventStorage
from conftest import make_inputs, tiny_model

from dsanet.engine import CheckedSimpleTrainer

EXTREMES = {
    "all_zero": lambda image: torch.zeros_like(image),
    "saturated": lambda image: torch.full_like(image, 255.0),
    "random": lambda image: image,
}
# FPN outputs scaled up: feature norms far beyond what training sees, where attention logits
# (Q K^T) and the box decoder overflow first if they are computed carelessly.
FEATURE_SCALES = (1.0, 1e4)


def extreme_inputs(kind: str) -> list:
    inputs = make_inputs()
    for record in inputs:
        record["image"] = EXTREMES[kind](record["image"])
    return inputs


def scale_features(model, scale: float):
    """Forward hook on the real backbone that multiplies every FPN level by ``scale``."""
    return model.backbone.register_forward_hook(lambda module, args, out: {k: v * scale for k, v in out.items()})


def assert_finite_outputs(outputs: list) -> None:
    for output in outputs:
        instances = output["instances"]
        assert torch.isfinite(instances.pred_boxes.tensor).all()
        assert torch.isfinite(instances.scores).all()
        assert ((instances.scores >= 0) & (instances.scores <= 1)).all()


def run_under_autocast(device: str, dtype: torch.dtype, kind: str, scale: float) -> None:
    model = tiny_model("common/models/dsanet_conf.py", dsa_levels=["p3", "p4", "p5", "p6", "p7"]).to(device)
    hook = scale_features(model, scale)
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs CUDA")
@pytest.mark.parametrize("scale", FEATURE_SCALES)
@pytest.mark.parametrize("kind", sorted(EXTREMES))
def test_fp16_autocast_on_cuda_stays_finite_on_extreme_inputs(kind, scale):
    run_under_autocast("cuda", torch.float16, kind, scale)


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
