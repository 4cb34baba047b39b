"""Training and evaluation loops for train_net.py, after detectron2's lazyconfig_train_net.py, with
its gaps closed: --eval-only honours --resume, predictions are saved, results print once, the
loss normaliser is checkpointed so a resumed run continues the same run, checkpoints are written
atomically and load without running code (see :mod:`dsanet.checkpoint`), and
``train.eval_period=0`` means no evaluation during or after training."""
import hashlib
import logging
import math
import os
import warnings
from typing import Callable, Dict, List, Mapping, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.engine import SimpleTrainer, default_writers, hooks
from detectron2.engine.train_loop import HookBase
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from . import compat
from .best_checkpoint import BEST_WEIGHTS, KeepBestModel
from .checkpoint import CheckedCheckpointer, remove_stale_temporary_files
from .errors import UserInputError
from .precision import MixedPrecision, amp_precision, inference_autocast

__all__ = ["do_train", "do_test", "evaluate_kept_model", "load_weights", "make_checkpointer", "LossNormalizerState",
           "CheckedCheckpointer", "CheckedSimpleTrainer", "GradScalerStep", "TrainingForward",
           "LRSchedulerOverSkippedSteps", "lr_scheduler_hook", "raise_on_non_finite_losses", "scaled_in_backward",
           "WeightsAgreeAcrossProcesses"]

logger = logging.getLogger("dsanet")


class LossNormalizerState(HookBase):
    """Saves RetinaNet's loss-normaliser EMA with the trainer's checkpoint and restores it on resume
    (detectron2 keeps it as a plain attribute that no checkpoint holds); logs it every iteration
    as ``loss_normalizer`` so metrics.json shows that a resumed run continues it."""

    def __init__(self, model: torch.nn.Module):
        self._model = model.module if hasattr(model, "module") else model

    def state_dict(self) -> Dict[str, float]:
        value = getattr(self._model, "loss_normalizer", None)
        return {} if value is None else {"loss_normalizer": float(value)}

    def load_state_dict(self, state_dict: Dict[str, float]) -> None:
        if "loss_normalizer" in state_dict:
            self._model.loss_normalizer = float(state_dict["loss_normalizer"])

    def after_step(self) -> None:
        value = getattr(self._model, "loss_normalizer", None)
        if value is not None:
            self.trainer.storage.put_scalar("loss_normalizer", float(value), smoothing_hint=False)


class WeightsAgreeAcrossProcesses(HookBase):
    """After training on several processes, compares every process's weights with rank 0's, bit for
    bit (a digest per tensor, gathered), and logs the outcome on rank 0.

    Why: only rank 0 writes checkpoints, so a process whose weights drifted (a parameter updated
    outside DDP, a machine with other library versions) would otherwise go unnoticed. Parameters
    that differ are a warning; buffers that differ are expected with plain BN, whose running
    statistics stay per process (``broadcast_buffers=False``): an info line names them.
    """

    def __init__(self, model: torch.nn.Module):
        self._model = model.module if hasattr(model, "module") else model

    @staticmethod
    def _digests(named_tensors) -> Dict[str, str]:
        return {name: hashlib.sha256(t.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy()).hexdigest()
                for name, t in named_tensors}

    def after_train(self) -> None:
        # Only after the last iteration: a rank that failed would leave the others waiting in the gather.
        if comm.get_world_size() == 1 or self.trainer.iter < self.trainer.max_iter:
            return
        mine = {"parameters": self._digests(self._model.named_parameters()),
                "buffers": self._digests(self._model.named_buffers())}
        gathered = comm.all_gather(mine)
        if not comm.is_main_process():
            return
        differing: Dict[str, List[str]] = {"parameters": [], "buffers": []}
        for kind, reference in gathered[0].items():
            for rank, other in enumerate(gathered[1:], start=1):
                differing[kind] += [f"{name} (rank {rank})" for name in reference if other[kind].get(name) != reference[name]]
        world = len(gathered)
        if differing["parameters"]:
            logger.warning("Parameters differ between processes after training: %s", ", ".join(differing["parameters"][:10]))
        else:
            logger.info("Parameters identical on all %d processes after training", world)
        if differing["buffers"]:
            logger.info("Buffers differ between processes (plain BN keeps its statistics per process; SyncBN "
                        "shares them): %s", ", ".join(differing["buffers"][:10]))
        elif not differing["parameters"]:
            logger.info("Buffers identical on all %d processes after training", world)


def make_checkpointer(cfg, model: torch.nn.Module, **checkpointables) -> CheckedCheckpointer:
    """The project's checkpointer for ``cfg``; ``train.allow_unsafe_pickle`` opts in to full pickle."""
    return CheckedCheckpointer(model, cfg.train.output_dir,
                               allow_unsafe_pickle=bool(cfg.train.get("allow_unsafe_pickle", False)),
                               **checkpointables)


def _drop_partial_last_record(metrics_file: str) -> None:
    """A run killed while writing metrics.json can leave half a line; cut it so records append cleanly."""
    if not os.path.isfile(metrics_file):
        return
    with open(metrics_file, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def raise_on_non_finite_losses(loss_dict: Mapping[str, torch.Tensor], iteration: int) -> None:
    """Raises FloatingPointError naming each non-finite loss (detectron2 checks only their sum and
    prints the whole dict).

    Args:
        loss_dict: loss name -> scalar tensor.
        iteration: the trainer's iteration, for the message.
    """
    values = {k: v.detach().float().item() for k, v in loss_dict.items()}
    bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"Loss became infinite or NaN at iteration={iteration}: {', '.join(bad)} "
                                 f"(all losses: {values})")


class _ScaledInBackward(torch.autograd.Function):
    """Identity on a loss in forward; in backward, the incoming gradient times the grad scaler's scale.

    Why: backward then computes the gradients of ``scaler.scale(loss)`` (what fp16 needs so that
    small gradients do not flush to zero), while the loss the trainer sums and logs stays unscaled.
    """

    @staticmethod
    def forward(ctx, loss: torch.Tensor, scaler: torch.amp.GradScaler) -> torch.Tensor:
        ctx.scaler = scaler
        return loss.view_as(loss)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.scaler.scale(grad), None


def scaled_in_backward(losses: Dict[str, torch.Tensor], scaler: torch.amp.GradScaler) -> Dict[str, torch.Tensor]:
    """``losses`` (name -> scalar) whose gradients ``scaler`` scales in backward; unchanged when it is disabled."""
    if not scaler.is_enabled():
        return losses
    return {name: _ScaledInBackward.apply(loss, scaler) for name, loss in losses.items()}


class GradScalerStep:
    """The optimizer as the trainer steps it under fp16: ``step()`` is ``scaler.step(optimizer)``
    (unscale the gradients, skip the step if one is inf or NaN) then ``scaler.update()`` (adapt the
    scale). Everything else (``zero_grad``, ``param_groups``, ``state_dict``...) is the optimizer's.

    An optimizer that clips gradients in its own ``step`` (``SGDWithGradientClipping``) clips the
    unscaled ones: ``scaler.step`` unscales before calling it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler):
        self.optimizer = optimizer
        self.scaler = scaler

    def step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def __getattr__(self, name: str):
        if name == "optimizer":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.optimizer, name)


class TrainingForward(torch.nn.Module):
    """The model as a trainer calls it: ``model(data)`` under the run's autocast, whose losses must
    be finite (a non-finite one stops training before backward and the optimizer step), and whose
    gradients the fp16 grad scaler scales in backward.

    Why a wrapper: detectron2's ``SimpleTrainer.run_step`` says "if you want to do something with the
    losses, you can wrap the model"; its step (data, zero_grad, backward, metrics, optimizer step)
    then stays detectron2's own, on v0.6 and on main, for fp32, bf16 and fp16 alike.

    Args:
        model: returns a dict of scalar losses in training mode (DDP-wrapped or not).
        iteration: returns the trainer's current iteration, for the error message.
        precision: the forward's autocast; None: fp32.
        grad_scaler: scales the losses' gradients in backward; None or disabled: no scaling.
    """

    def __init__(self, model: torch.nn.Module, iteration: Callable[[], int],
                 precision: Optional[MixedPrecision] = None, grad_scaler: Optional[torch.amp.GradScaler] = None):
        super().__init__()
        self.model = model
        self.iteration = iteration
        self.precision = precision or MixedPrecision()
        self.grad_scaler = (grad_scaler if grad_scaler is not None
                            else torch.amp.GradScaler(self.precision.device_type, enabled=False))

    def forward(self, data: List[dict]) -> Dict[str, torch.Tensor]:
        """data: a batch as the data loader gives it -> the model's losses (name -> scalar tensor, unscaled)."""
        with self.precision.autocast():
            loss_dict = self.model(data)
        if not isinstance(loss_dict, Mapping):
            loss_dict = {"total_loss": loss_dict}
        raise_on_non_finite_losses(loss_dict, self.iteration())
        return scaled_in_backward(dict(loss_dict), self.grad_scaler)


class CheckedSimpleTrainer(SimpleTrainer):
    """detectron2's SimpleTrainer, its ``run_step`` unchanged, for fp32, bf16 and fp16 alike; a NaN or
    infinite loss raises FloatingPointError naming that loss.

    What mixed precision needs is composed around that step, as its comments invite: the model is
    wrapped in :class:`TrainingForward` (autocast forward, finite losses, loss gradients scaled by
    the fp16 grad scaler in backward), and with fp16 the optimizer in :class:`GradScalerStep`
    (unscale, skip a step with inf/NaN gradients, update the scale). The scaler's state is saved with
    the trainer's, under ``grad_scaler`` as detectron2's ``AMPTrainer`` saves it.

    Why not detectron2's ``AMPTrainer``: its ``run_step`` asserts CUDA (v0.6 and main), uses the
    deprecated ``torch.cuda.amp`` autocast and GradScaler (FutureWarnings), autocasts to fp16 only
    on v0.6, and is a second copy of the step. This one path runs the GPU recipe on a CPU (fp16
    autocast and scaler included), bf16 without a scaler, and fp32, on CUDA and on a CPU.

    Args:
        model, data_loader, optimizer: as detectron2's SimpleTrainer (and its keyword arguments).
        precision: the forward's autocast and whether gradients are scaled; None: fp32.
    Attributes:
        grad_scaler: the run's ``torch.amp.GradScaler`` (disabled unless fp16).
    """

    def __init__(self, model, data_loader, optimizer, precision: Optional[MixedPrecision] = None, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.precision = precision or MixedPrecision()
        self.grad_scaler = self.precision.grad_scaler()
        # After detectron2's constructor has set the model up (train mode), as the step calls it.
        self.model = TrainingForward(self.model, lambda: self.iter, self.precision, self.grad_scaler)
        if self.grad_scaler.is_enabled():
            self.optimizer = GradScalerStep(optimizer, self.grad_scaler)

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.grad_scaler.is_enabled():
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # A checkpoint of an fp32 or bf16 run has no scaler state: fp16 then starts from the initial scale.
        if self.grad_scaler.is_enabled() and state_dict.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])


class LRSchedulerOverSkippedSteps(hooks.LRScheduler):
    """detectron2's LRScheduler hook for a trainer with the fp16 grad scaler: the learning rate follows
    the iteration also where the scaler skipped that iteration's optimizer step (inf gradients, as
    at the start of fp16 training while the scale comes down), as under detectron2's AMPTrainer.

    Why: torch then warns "Detected call of `lr_scheduler.step()` before `optimizer.step()`" at the
    first iteration, a false alarm for a schedule by iterations; that one message is silenced.
    """

    def after_step(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before "
                                    r"`optimizer\.step\(\)`", category=UserWarning)
            super().after_step()


def lr_scheduler_hook(trainer: CheckedSimpleTrainer, optimizer: torch.optim.Optimizer, scheduler) -> hooks.LRScheduler:
    """detectron2's LRScheduler hook on ``optimizer`` itself (under fp16 the trainer's is a
    :class:`GradScalerStep`, which torch's LR schedulers refuse); :class:`LRSchedulerOverSkippedSteps`
    where the trainer scales gradients."""
    hook = LRSchedulerOverSkippedSteps if trainer.grad_scaler.is_enabled() else hooks.LRScheduler
    return hook(optimizer=optimizer, scheduler=scheduler)


def load_weights(checkpointer: DetectionCheckpointer, path: str, *, resume: bool) -> None:
    """``resume_or_load`` with one clear error for a missing (or, with CheckedCheckpointer, unreadable) file.

    Weights whose shapes differ (another number of classes) are skipped and listed by detectron2.
    """
    if resume and checkpointer.has_checkpoint():
        path = checkpointer.get_checkpoint_file()
    elif not path:
        return
    elif "://" not in path and not os.path.isfile(path):
        raise UserInputError(f"train.init_checkpoint={path}: no such file")
    elif "://" in path:
        try:  # fetched (and cached) here so that a failed download is one line, not a traceback
            PathManager.get_local_path(path)
        except Exception as e:  # iopath raises URLError, HTTPError, OSError, ... by handler
            raise UserInputError(f"train.init_checkpoint={path}: cannot be downloaded ({type(e).__name__}: {e}); "
                                 f"pass a local file, or train.init_checkpoint='' to start from scratch") from e
    checkpointer.resume_or_load(path, resume=resume)


def do_test(cfg, model: torch.nn.Module) -> Dict:
    """Evaluate ``model`` on ``cfg.dataloader.test``; predictions and results go to
    ``<train.output_dir>/inference``. The paper's ten numbers reach the console and log.txt once,
    from the evaluator's log (main process)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    cfg.dataloader.evaluator.output_dir = os.path.join(cfg.train.output_dir, "inference")
    with inference_autocast(cfg):
        results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process() and results:
        print_csv_format(results)
    return results


def do_train(cfg, *, resume: bool) -> None:
    """Train ``cfg.model`` with periodic checkpoints, evaluation, console/JSON/TensorBoard logs."""
    model = instantiate(cfg.model)
    logger.info("Model:\n%s", model)
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = compat.create_ddp_model(model, **cfg.train.ddp)
    # One trainer for fp32, bf16 and fp16 (train.amp.enabled / train.amp.precision), on CPU and CUDA.
    trainer = CheckedSimpleTrainer(model, train_loader, optimizer, amp_precision(cfg))
    checkpointer = make_checkpointer(cfg, model, trainer=trainer)
    best_metric = cfg.train.get("best_metric") or None
    keep_best = None
    if best_metric and cfg.train.eval_period > 0 and comm.is_main_process():
        keep_best = KeepBestModel(cfg.train.eval_period, model, cfg.train.output_dir, metric=best_metric)
    if comm.is_main_process():
        for name in remove_stale_temporary_files(cfg.train.output_dir):
            logger.info("Removed %s, left half-written by an interrupted run", name)
        _drop_partial_last_record(os.path.join(cfg.train.output_dir, "metrics.json"))
    trainer.register_hooks([
        hooks.IterationTimer(),
        lr_scheduler_hook(trainer, optimizer, instantiate(cfg.lr_multiplier)),
        LossNormalizerState(model),
        WeightsAgreeAcrossProcesses(model),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
        # detectron2's EvalHook also evaluates after the last iteration when its period is 0.
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)) if cfg.train.eval_period > 0 else None,
        keep_best,  # after the EvalHook whose results it reads
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period) if comm.is_main_process() else None,
    ])

    load_weights(checkpointer, cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    if start_iter >= cfg.train.max_iter:
        logger.info("Nothing to train: resumed at iteration %d of %d", start_iter, cfg.train.max_iter)
        return
    trainer.train(start_iter, cfg.train.max_iter)
    if best_metric and cfg.train.eval_period > 0:
        evaluate_kept_model(cfg, model, keep_best.best_iteration if keep_best is not None else None)


def evaluate_kept_model(cfg, model: torch.nn.Module, best_iteration) -> None:
    """After training with ``train.best_metric``: the run's results (``inference/``) become the kept
    model's. The last evaluation already is when the best was the last iteration; otherwise
    ``model_best.pth`` is loaded into ``model`` and evaluated again. Every process must call it
    (``best_iteration`` is known on the main process only)."""
    best_iteration = comm.all_gather(best_iteration)[0]
    if best_iteration is None:
        logger.warning("No model kept: no evaluation gave %s", cfg.train.best_metric)
        return
    path = os.path.join(cfg.train.output_dir, BEST_WEIGHTS)
    if best_iteration >= cfg.train.max_iter:
        logger.info("Kept model: the last iteration's (%d), %s", best_iteration, path)
        return
    logger.info("Kept model: iteration %d of %d, %s; evaluating it, so that the results in %s are its own",
                best_iteration, cfg.train.max_iter, path, os.path.join(cfg.train.output_dir, "inference"))
    comm.synchronize()  # the main process has written model_best.pth
    make_checkpointer(cfg, model).load(path)
    do_test(cfg, model)
