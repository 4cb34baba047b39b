"""bf16 mixed precision on CPU (dsanet.precision, CheckedSimpleTrainer with a MixedPrecision): training
steps under bf16 autocast against fp32 on the same seed, what stays fp32, resuming, CPUs without
native bf16, and how ``train.amp.precision`` picks the dtype (fp16 itself: tests/test_fp16.py)."""
import itertools
import logging
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, make_inputs, tiny_model

DEMO_CONFIG = ROOT / "configs" / "Demo" / "dsanet_conf_synthetic_cpu.py"


def _train(dtype, steps: int = 4):
    """``steps`` SGD steps of a tiny DSANet-Conf (gamma from 0) on two fixed images: (model, optimizer)."""
    from dsanet.engine import CheckedSimpleTrainer
    from dsanet.precision import MixedPrecision

    model = tiny_model("common/models/dsanet_conf.py", seed=0).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = itertools.repeat(make_inputs())
    trainer = CheckedSimpleTrainer(model, batches, optimizer, MixedPrecision("cpu", dtype))
    assert not trainer.grad_scaler.is_enabled() and trainer.optimizer is optimizer  # bf16: no scaler
    for trainer.iter in range(steps):
        trainer.run_step()
    return model, optimizer


def _losses(model, dtype):
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        return model(make_inputs())


def test_bf16_steps_stay_finite_close_to_fp32_and_gamma_learns():
    from detectron2.utils.events import EventStorage

    with EventStorage():
        fp32_model, _ = _train(None)
        bf16_model, optimizer = _train(torch.bfloat16)
    gammas = {n: float(p.detach()) for n, p in bf16_model.named_parameters() if n.endswith("gamma")}
    assert len(gammas) == 8 and all(g != 0 for n, g in gammas.items() if ".cls_branch." in n)  # learnt from 0
    assert all(p.dtype == torch.float32 for p in bf16_model.parameters())  # weights stay fp32
    assert all(v.dtype == torch.float32 for state in optimizer.state.values() for v in state.values()
               if torch.is_tensor(v))  # so does the optimizer's momentum
    with torch.no_grad(), EventStorage():
        fp32 = _losses(fp32_model.train(), None)
        bf16 = _losses(bf16_model.train(), torch.bfloat16)
    for name in fp32:
        assert torch.isfinite(bf16[name]), name
        assert float(bf16[name]) == pytest.approx(float(fp32[name]), rel=0.1, abs=0.02), name


def test_gamma_gradients_under_bf16_match_fp32():
    from detectron2.utils.events import EventStorage

    grads = {}
    with EventStorage():
        for dtype in (None, torch.bfloat16):
            model = tiny_model("common/models/dsanet_conf.py", seed=0).train()
            sum(_losses(model, dtype).values()).backward()
            grads[dtype] = {n: float(p.grad) for n, p in model.named_parameters() if n.endswith("gamma")}
    reached = [n for n, g in grads[None].items() if g != 0]
    assert len(reached) >= 4
    for name in reached:
        assert grads[torch.bfloat16][name] == pytest.approx(grads[None][name], rel=0.35), name


def test_losses_iou_targets_and_detections_are_fp32_under_bf16_autocast():
    from detectron2.utils.events import EventStorage

    model = tiny_model("common/models/dsanet_conf.py", seed=0).train()
    with torch.autocast("cpu", dtype=torch.bfloat16), EventStorage():
        features = model.backbone(model.preprocess_image(make_inputs()).tensor)
        head_out = model.head([features[f] for f in model.head_in_features])
        losses = model(make_inputs())
    assert head_out[0][0].dtype == torch.bfloat16  # the network itself ran in bf16
    assert {k: v.dtype for k, v in losses.items()} == {k: torch.float32 for k in losses}
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        instances = model(make_inputs(with_gt=False))[0]["instances"]
    assert instances.scores.dtype == torch.float32 and instances.pred_boxes.tensor.dtype == torch.float32


def test_without_native_bf16_the_switch_runs_fp32_and_says_so(monkeypatch, caplog):
    from detectron2.config import LazyConfig
    from dsanet.precision import FORCE_NO_BF16_ENV, cpu_autocast_dtype

    cfg = LazyConfig.load(str(DEMO_CONFIG))
    cfg.train.amp.enabled = True
    monkeypatch.setenv(FORCE_NO_BF16_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="dsanet.precision"):
        assert cpu_autocast_dtype(cfg) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"train.amp.enabled=True: this CPU has no native bf16 ({FORCE_NO_BF16_ENV}=1), where bf16 is emulated "
        "and slower than fp32; running in fp32"]
    cfg.train.amp.enabled = False
    assert cpu_autocast_dtype(cfg) is None


# (train.device, train.amp.enabled, train.amp.precision, CPU has native bf16) -> (autocast dtype, scales gradients).
# Only the config decides: the CUDA rows need no GPU.
PRECISION_RULES = [
    ("cpu", False, "auto", True, None, False),
    ("cpu", False, "float16", True, None, False),  # the precision applies only with amp enabled
    ("cpu", True, "auto", True, torch.bfloat16, False),
    ("cpu", True, "auto", False, None, False),  # emulated bf16 would be slower than fp32: fp32, one line
    ("cpu", True, None, True, torch.bfloat16, False),  # a config saved before the key: "auto"
    ("cpu", True, "float16", False, torch.float16, True),
    ("cpu", True, "bfloat16", False, torch.bfloat16, False),  # asked for explicitly: honoured
    ("cuda", False, "auto", True, None, False),
    ("cuda", True, "auto", True, torch.float16, True),
    ("cuda", True, "float16", True, torch.float16, True),
    ("cuda", True, "bfloat16", True, torch.bfloat16, False),
]


@pytest.mark.parametrize("device,enabled,choice,native,dtype,scales", PRECISION_RULES)
def test_train_amp_precision_picks_the_autocast_dtype(device, enabled, choice, native, dtype, scales, monkeypatch):
    from detectron2.config import LazyConfig
    from dsanet.precision import FORCE_NO_BF16_ENV, amp_precision, cpu_autocast_dtype, cpu_has_native_bf16

    if native and not cpu_has_native_bf16()[0]:
        pytest.skip("this CPU has no native bf16")
    if not native:
        monkeypatch.setenv(FORCE_NO_BF16_ENV, "1")
    cfg = LazyConfig.load(str(DEMO_CONFIG))
    cfg.train.device, cfg.train.amp.enabled = device, enabled
    if choice is None:
        del cfg.train.amp.precision
    else:
        cfg.train.amp.precision = choice
    precision = amp_precision(cfg)
    assert (precision.device_type, precision.dtype, precision.scales_gradients) == (device, dtype, scales)
    assert cpu_autocast_dtype(cfg) == (dtype if device == "cpu" else None)  # what evaluation and Predictor use


def test_the_recipes_default_to_auto_and_a_bad_precision_is_one_clear_error():
    from detectron2.config import LazyConfig
    from dsanet.errors import UserInputError
    from dsanet.precision import amp_precision

    cfg = LazyConfig.load(str(ROOT / "configs" / "COCO-Detection" / "dsanet_conf_R_50_FPN_1x.py"))
    assert dict(cfg.train.amp) == {"enabled": False, "precision": "auto"}
    cfg.train.amp.enabled, cfg.train.amp.precision = True, "fp16"
    with pytest.raises(UserInputError, match="train.amp.precision='fp16': choose one of 'auto', 'float16', 'bfloat16'"):
        amp_precision(cfg)


@pytest.mark.parametrize("native", [True, False])
def test_train_net_with_amp_enabled_trains_and_resumes(native, cache_dir, tmp_path):
    """train.amp.enabled=True through train_net.py: bf16 where the CPU has it (forced to count as
    absent in the second case: fp32, one line), then --resume continues to the longer schedule."""
    from dsanet.precision import FORCE_NO_BF16_ENV, cpu_has_native_bf16

    if native and not cpu_has_native_bf16()[0]:
        pytest.skip("this CPU has no native bf16")
    env = dict(os.environ, DSANET_CACHE=str(cache_dir), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if not native:
        env[FORCE_NO_BF16_ENV] = "1"
    common = [sys.executable, str(ROOT / "train_net.py"), "--config-file", str(DEMO_CONFIG), "train.amp.enabled=True",
              f"train.output_dir={tmp_path}", "train.eval_period=0", "dataloader.train.total_batch_size=2",
              "dataloader.train.num_workers=0", "train.seed=0", "train.log_period=1", "train.checkpointer.period=2"]
    first = subprocess.run([*common, "train.max_iter=2"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert ("bf16 autocast on CPU" in log) == native
    assert ("no native bf16" in log and "running in fp32" in log) == (not native)
    resumed = subprocess.run([*common, "train.max_iter=4", "--resume"], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert checkpoint["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
