"""A training schedule stated in epochs of the registered training set, turned into iterations.

A config that sets ``train.epochs`` gets, once its datasets are registered (``train_net.py``'s setup)::

    iterations per epoch = ceil(training images / dataloader.train.total_batch_size)
    train.max_iter       = train.epochs x iterations per epoch
    warm-up              = train.warmup_epochs x iterations per epoch  (lr_multiplier.warmup_length, a fraction)
    train.eval_period    = train.eval_epochs x iterations per epoch    (also train.checkpointer.period)

The decay of a scheduler whose milestones are fractions of the run (cosine, or detectron2's
``WarmupParamScheduler`` around any fvcore scheduler) stretches with ``max_iter`` by itself.
"Training images" are those the training loader reads: the dataset dicts of
``dataloader.train.dataset`` after its own filtering (detectron2 drops images without annotations).
With ``train.epochs=null``, ``train.max_iter`` is given instead (likewise ``train.eval_epochs``/``train.eval_period``).
"""
import math
from dataclasses import asdict, dataclass
from numbers import Real
from typing import Optional

from omegaconf import OmegaConf

from .errors import UserInputError

__all__ = ["EpochSchedule", "resolve_epoch_schedule", "count_training_images"]


@dataclass(frozen=True)
class EpochSchedule:
    """The iteration numbers an epoch schedule resolved to."""
    num_images: int
    batch_size: int
    iters_per_epoch: int
    epochs: float
    max_iter: int
    warmup_iters: int
    eval_period: int

    def describe(self) -> str:
        return (f"epoch schedule: {self.epochs:g} epochs of {self.num_images} training images at batch "
                f"{self.batch_size} = {self.iters_per_epoch} iterations per epoch -> train.max_iter={self.max_iter}, "
                f"warm-up {self.warmup_iters} iterations, evaluation every {self.eval_period} iterations")

    def as_dict(self) -> dict:
        return asdict(self)


def count_training_images(cfg) -> int:
    """The number of dataset dicts the training loader of ``cfg`` reads (its datasets must be registered)."""
    from detectron2.config import instantiate

    return len(instantiate(cfg.dataloader.train.dataset))


def _positive_number(cfg, key: str, *, allow_zero: bool = False) -> float:
    value = cfg.train.get(key)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        need = "a number >= 0" if allow_zero else "a number > 0"
        raise UserInputError(f"train.{key}={value!r}: must be {need} (train.epochs=null to give train.max_iter instead)")
    return float(value)


def _epochs_to_iters(epochs: float, iters_per_epoch: int) -> int:
    return int(round(epochs * iters_per_epoch))


def _given(cfg, key: str):
    return OmegaConf.select(cfg.train, key, default=None)


def resolve_epoch_schedule(cfg, num_images: Optional[int] = None) -> Optional[EpochSchedule]:
    """Set ``train.max_iter``, the warm-up, ``train.eval_period`` and ``train.checkpointer.period`` of
    ``cfg`` from ``train.epochs``, ``train.warmup_epochs`` and ``train.eval_epochs`` (``EpochSchedule.describe``
    says what they became; train_net.py logs it).

    A value in epochs and the same value in iterations cannot both be set (``train.epochs`` and
    ``train.max_iter``, ``train.eval_epochs`` and ``train.eval_period``): a config stating epochs leaves
    the iteration key null, and ``train.epochs=null train.max_iter=N`` gives iterations instead.

    Args:
        cfg: a loaded LazyConfig whose training datasets are registered; changed in place.
        num_images: the training set's size; counted from ``cfg.dataloader.train.dataset`` when None.

    Returns:
        the resolved numbers, or None when no key in epochs is set (nothing is changed).

    Raises:
        UserInputError: a bad value (not a positive number, warm-up not shorter than the run, both keys
            of a pair set or neither, an empty training set), naming the key; or ``train.warmup_epochs`` on
            a config whose ``lr_multiplier`` has no ``warmup_length``.
    """
    resolved_before = _given(cfg, "epoch_schedule")  # a training's saved config.yaml, run again (--resume)
    if resolved_before is not None:
        for epochs_key, iters_key in (("epochs", "max_iter"), ("eval_epochs", "eval_period")):
            if _given(cfg, epochs_key) is not None and _given(cfg, iters_key) == resolved_before.get(iters_key):
                cfg.train[iters_key] = None  # computed then: computed again
    for epochs_key, iters_key in (("epochs", "max_iter"), ("eval_epochs", "eval_period")):
        if _given(cfg, epochs_key) is not None and _given(cfg, iters_key) is not None:
            raise UserInputError(
                f"train.{epochs_key}={_given(cfg, epochs_key)} and train.{iters_key}={_given(cfg, iters_key)} are both "
                f"set: give one (train.{epochs_key}=null train.{iters_key}=N to count in iterations)")
        if _given(cfg, epochs_key) is None and _given(cfg, iters_key) is None:
            raise UserInputError(f"train.{epochs_key} and train.{iters_key} are both null: set one of them")
    if all(_given(cfg, key) is None for key in ("epochs", "warmup_epochs", "eval_epochs")):
        return None
    epochs = _positive_number(cfg, "epochs") if _given(cfg, "epochs") is not None else None
    warmup_epochs = _positive_number(cfg, "warmup_epochs", allow_zero=True) \
        if _given(cfg, "warmup_epochs") is not None else None
    eval_epochs = _positive_number(cfg, "eval_epochs") if _given(cfg, "eval_epochs") is not None else None
    batch_size = cfg.dataloader.train.get("total_batch_size")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise UserInputError(f"dataloader.train.total_batch_size={batch_size!r}: must be an integer > 0")
    if num_images is None:
        num_images = count_training_images(cfg)
    if num_images <= 0:
        raise UserInputError(f"dataloader.train.dataset.names={cfg.dataloader.train.dataset.names}: no training "
                             f"image with annotations, so a schedule in epochs cannot be turned into iterations")

    iters_per_epoch = math.ceil(num_images / batch_size)
    max_iter = max(1, _epochs_to_iters(epochs, iters_per_epoch)) if epochs is not None else int(cfg.train.max_iter)
    warmup_iters = 0
    if warmup_epochs is not None:
        if warmup_epochs * iters_per_epoch >= max_iter:
            raise UserInputError(f"train.warmup_epochs={cfg.train.warmup_epochs}: must be shorter than the run "
                                 f"({max_iter} iterations, {max_iter / iters_per_epoch:g} epochs)")
        if "warmup_length" not in cfg.lr_multiplier:
            raise UserInputError(f"train.warmup_epochs={cfg.train.warmup_epochs}: this config's lr_multiplier "
                                 f"({cfg.lr_multiplier.get('_target_')}) has no warmup_length to set")
        warmup_iters = _epochs_to_iters(warmup_epochs, iters_per_epoch)
        cfg.lr_multiplier.warmup_length = warmup_iters / max_iter  # a fraction of the run, as the scheduler wants
    elif "warmup_length" in cfg.lr_multiplier:
        warmup_iters = int(round(cfg.lr_multiplier.warmup_length * max_iter))
    if eval_epochs is not None:
        eval_period = max(1, min(_epochs_to_iters(eval_epochs, iters_per_epoch), max_iter))
        cfg.train.eval_period = eval_period
        cfg.train.checkpointer.period = eval_period  # a checkpoint where each evaluation is, for --resume
    else:
        eval_period = int(cfg.train.eval_period)
    cfg.train.max_iter = max_iter
    return EpochSchedule(num_images=num_images, batch_size=batch_size, iters_per_epoch=iters_per_epoch,
                         epochs=max_iter / iters_per_epoch, max_iter=max_iter, warmup_iters=warmup_iters,
                         eval_period=eval_period)
