"""fp16 mixed precision on the CPU, through the trainer every recipe uses (``CheckedSimpleTrainer``, what
``do_train`` builds for ``train.amp.enabled=True``): ``torch.autocast("cpu", dtype=torch.float16)`` and a
``torch.amp.GradScaler("cpu")``, the same code path as on CUDA, where only the device type differs.

DSANet-Conf, DSA-FCOS and the full-resolution P3-P7 variant train a few steps in fp16 and in fp32
from the same weights and data; the losses each step logs and the first step's gradients agree
within the tolerances below, the scaler's scale stays finite, and detections under fp16 autocast
are post-processed in fp32.

Magnitudes: the images are conftest's (uniform 0-255), normalised as the COCO recipes normalise
(caffe mean, std 1: values of about +-130, as real images give). Each FPN level is rescaled to a
per-element RMS of :data:`FPN_RMS` = 8. Measured: the shipped trained DSANet-Conf (the Demo config's,
``model_zoo.get(..., trained=True)``) gives 0.39-1.94 per level on demo/images/, the untrained tiny
model 0.3-2.0; 8 is four times the largest, on the pessimistic side for a trained R50-FPN (none is on
this machine to measure). Extremes far beyond it are tests/test_numerics.py's.
"""
import itertools
import math
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace
from typing import Dict, List, Optional

import pytest
import torch
from detectron2.engine.train_loop import HookBase
from fvcore.common.param_scheduler import CosineParamScheduler

from conftest import ROOT, make_inputs, tiny_model
from dsanet.engine import CheckedSimpleTrainer, GradScalerStep, lr_scheduler_hook
from dsanet.modeling.attention import SelfAttention2d
from dsanet.precision import MixedPrecision

STEPS = 4
FPN_RMS = 8.0
# name -> (model config, head overrides); the P3-P7 model's P3 attention runs blockwise (the path P3
# takes at 800x1333 on a CPU), its other levels dense.
MODELS = {
    "dsanet_conf": ("common/models/dsanet_conf.py", {}),
    "dsa_fcos": ("common/models/dsa_fcos.py", {"conv_dims": [64, 64]}),  # 64: GN's 32 groups (tests/test_fcos.py)
    "dsanet_conf_p3_p7_full_resolution": ("common/models/dsanet_conf.py", {"dsa_levels": ["p3", "p4", "p5", "p6", "p7"]}),
}
# Measured on this machine's CPU (torch 2.14, OMP_NUM_THREADS=1), over the three models, fp16 (bf16) against fp32:
# - logged losses, each of the 4 steps: max relative difference 3.1e-4 to 4.5e-4 (bf16 1.1e-3 to
#   1.9e-3) -> tolerance 2e-3.
# - the first step's gradients, all parameters as one vector, relative L2 error: 6.8e-2 to 8.4e-2
#   (bf16 1.9e-1 to 2.2e-1) -> 0.15, and fp16's must stay below bf16's on the same step. Most of it
#   is BN's backward in the random backbone: the head's alone is 2.0e-2 to 2.8e-2 (bf16 9.5e-2 to
#   1.1e-1) -> 5e-2.
LOSS_RTOL = 2e-3
GRAD_RTOL = 0.15
HEAD_GRAD_RTOL = 5e-2


def rescale_fpn(model: torch.nn.Module, rms: float):
    """Forward hook on the backbone: each FPN level (N, C, Hi, Wi) multiplied to a per-element RMS of ``rms``."""
    def hook(module, args, features):
        return {name: x * (rms / x.detach().float().pow(2).mean().sqrt()) for name, x in features.items()}
    return model.backbone.register_forward_hook(hook)


def build(name: str) -> torch.nn.Module:
    """The tiny model ``name`` of :data:`MODELS`, seed 0, FPN rescaled to :data:`FPN_RMS`."""
    config, head = MODELS[name]
    model = tiny_model(config, seed=0, **head)
    rescale_fpn(model, FPN_RMS)
    if "p3" in head.get("dsa_levels", ()):
        for module_name, module in model.named_modules():
            if isinstance(module, SelfAttention2d) and module_name.endswith(".p3.attention"):
                module.impl = "blockwise"
    return model


class KeepFirstGradients(HookBase):
    """Copies the model's gradients after the first step (under fp16: unscaled by ``scaler.step``)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.grads: Dict[str, torch.Tensor] = {}

    def after_step(self) -> None:
        if self.trainer.iter == 0:
            self.grads = {n: p.grad.detach().float().clone() for n, p in self.model.named_parameters()
                          if p.grad is not None}


def train(name: str, dtype: Optional[torch.dtype]) -> SimpleNamespace:
    """:data:`STEPS` steps of ``trainer.train`` (SGD, momentum) on two fixed images, under ``dtype`` autocast
    (None: fp32). Returns model, trainer, losses (name -> per-step logged values) and grads (first step)."""
    model = build(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = CheckedSimpleTrainer(model, itertools.repeat(make_inputs()), optimizer, MixedPrecision("cpu", dtype))
    first = KeepFirstGradients(model)
    trainer.register_hooks([first])
    trainer.train(0, STEPS)
    losses = {key: [value for value, _ in history.values()] for key, history in trainer.storage.histories().items()
              if key.startswith("loss_")}
    return SimpleNamespace(model=model, trainer=trainer, losses=losses, grads=first.grads)


@pytest.fixture(scope="module")
def runs():
    """``runs(name, dtype)``: :func:`train`, each (name, dtype) once per module."""
    done = {}

    def get(name: str, dtype: Optional[torch.dtype]) -> SimpleNamespace:
        if (name, dtype) not in done:
            done[name, dtype] = train(name, dtype)
        return done[name, dtype]
    return get


def relative_error(grads: Dict[str, torch.Tensor], reference: Dict[str, torch.Tensor], prefix: str = "") -> float:
    """||g - g_ref|| / ||g_ref|| over the parameters whose names start with ``prefix``, as one vector."""
    names = [n for n in reference if n.startswith(prefix)]
    error = math.sqrt(sum(float((grads[n] - reference[n]).pow(2).sum()) for n in names))
    return error / math.sqrt(sum(float(reference[n].pow(2).sum()) for n in names))


@pytest.mark.parametrize("name", MODELS)
def test_fp16_training_through_the_trainer_is_finite_and_agrees_with_fp32(name, runs):
    fp32, fp16 = runs(name, None), runs(name, torch.float16)
    trainer = fp16.trainer
    assert trainer.grad_scaler.is_enabled() and isinstance(trainer.optimizer, GradScalerStep)
    scale = trainer.grad_scaler.get_scale()
    assert math.isfinite(scale) and scale > 0
    assert trainer.state_dict()["grad_scaler"]["scale"] == scale  # checkpointed with the trainer
    assert set(fp16.losses) == set(fp32.losses) and len(fp16.losses) == 3
    for key, values in fp16.losses.items():
        assert len(values) == STEPS and all(math.isfinite(v) for v in values), (key, values)
        for step, (got, expected) in enumerate(zip(values, fp32.losses[key])):  # logged unscaled
            assert got == pytest.approx(expected, rel=LOSS_RTOL), (key, step)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in fp16.model.parameters())
    assert set(fp16.grads) == set(fp32.grads)
    assert all(torch.isfinite(g).all() for g in fp16.grads.values())  # the first step was not skipped
    fp16_error = relative_error(fp16.grads, fp32.grads)
    assert fp16_error <= GRAD_RTOL
    assert fp16_error <= relative_error(runs(name, torch.bfloat16).grads, fp32.grads)
    assert relative_error(fp16.grads, fp32.grads, "head.") <= HEAD_GRAD_RTOL


@pytest.mark.parametrize("name", MODELS)
def test_fp16_inference_runs_the_network_in_fp16_and_post_processing_in_fp32(name, runs):
    model = runs(name, torch.float16).model.eval()
    head_dtypes = []
    hook = model.head.register_forward_hook(lambda m, args, out: head_dtypes.append(out[0][0].dtype))
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
            outputs = model(make_inputs(with_gt=False))
    finally:
        hook.remove()
    assert head_dtypes == [torch.float16]  # the network itself ran in fp16
    for output in outputs:
        instances = output["instances"]
        assert instances.pred_boxes.tensor.dtype == torch.float32 and instances.scores.dtype == torch.float32
        assert torch.isfinite(instances.pred_boxes.tensor).all() and torch.isfinite(instances.scores).all()


class _ToyLosses(torch.nn.Module):
    """A model whose loss gradient becomes inf on request: ``inf_next`` poisons the next backward."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.inf_next = False

    def forward(self, data: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
        loss = (self.weight * data[0]).sum()
        if self.inf_next:
            loss.register_hook(lambda grad: grad * float("inf"))
            self.inf_next = False
        return {"loss_toy": loss}


def test_fp16_scaler_skips_a_step_whose_gradients_are_inf_and_halves_its_scale():
    """What ``GradScalerStep`` adds to detectron2's step: a step with an inf gradient leaves the weights
    as they were and halves the scale; the next finite step updates them with unscaled gradients. The
    learning rate follows the iterations, skipped ones included, without torch's warning about it."""
    model = _ToyLosses()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = CheckedSimpleTrainer(model, itertools.repeat([torch.tensor([1.0, 2.0, 3.0])]), optimizer,
                                   MixedPrecision("cpu", torch.float16))
    trainer.register_hooks([lr_scheduler_hook(trainer, optimizer, CosineParamScheduler(1.0, 1.0))])
    model.inf_next = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        trainer.train(0, 1)
    assert torch.equal(model.weight.detach(), torch.ones(3)) and trainer.grad_scaler.get_scale() == 2.0 ** 15
    assert trainer.storage.history("total_loss").latest() == 6.0  # logged unscaled (one loss: as total_loss)
    trainer.train(1, 2)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([0.5, 0.0, -0.5]))  # 1 - 0.5 * (1, 2, 3)
    resumed = CheckedSimpleTrainer(_ToyLosses(), [], torch.optim.SGD(_ToyLosses().parameters(), lr=0.5),
                                   MixedPrecision("cpu", torch.float16))
    resumed.load_state_dict(trainer.state_dict())  # what a checkpoint restores on --resume
    assert resumed.grad_scaler.get_scale() == 2.0 ** 15


def test_fp16_train_net_trains_clips_and_resumes_with_the_scalers_state(cache_dir, tmp_path):
    """``train.amp.precision=float16`` through train_net.py on a CPU (do_train: the LR schedule, the
    Demo recipe's gradient clipping after unscaling, checkpoints), then ``--resume`` to a longer schedule."""
    env = dict(os.environ, DSANET_CACHE=str(cache_dir), OMP_NUM_THREADS="1")
    common = [sys.executable, str(ROOT / "train_net.py"), "--config-file",
              str(ROOT / "configs" / "Demo" / "dsanet_conf_synthetic_cpu.py"), "train.amp.enabled=True",
              "train.amp.precision=float16", f"train.output_dir={tmp_path}", "train.eval_period=0",
              "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "train.seed=0",
              "train.log_period=1", "train.checkpointer.period=2"]
    first = subprocess.run([*common, "train.max_iter=2"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Warning" not in first.stderr, first.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert "train.amp.enabled=True: fp16 autocast on CPU with a gradient scaler (train.amp.precision=float16)" in log
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert math.isfinite(saved["trainer"]["grad_scaler"]["scale"])
    resumed = subprocess.run([*common, "train.max_iter=4", "--resume"], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert final["iteration"] == 3 and math.isfinite(final["trainer"]["grad_scaler"]["scale"])
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
