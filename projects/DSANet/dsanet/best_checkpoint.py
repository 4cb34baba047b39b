"""The best evaluated model of a training run: kept as ``model_best.pth`` with ``model_best.json`` beside
it, and what the tools load by default.

Training (``train.best_checkpoint=dict(metric="bbox/AP", mode="max")``) registers detectron2's own
``BestCheckpointer`` after the evaluation hook, with two gaps closed:

- detectron2 saves the best model through the trainer's checkpointer, whose ``save`` also tags it as
  the last checkpoint, so ``--resume`` would continue from the best iteration, not the latest one; here
  the best is written by a model-only checkpointer that leaves ``last_checkpoint`` alone;
- detectron2 forgets the best score on resume, so the first evaluation after it overwrote the best
  model whatever its score; here it is read back from ``model_best.json``.

``model_best.json``: ``{"iteration": int, "metric": "bbox/AP", "value": float, "mode": "max", "file":
"model_best.pth"}``, where ``iteration`` counts the iterations trained when the model was evaluated
(``train.max_iter`` for the last one; detectron2's own log and ``metrics.json`` count from 0, one less).
"""
import json
import logging
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from detectron2.engine import hooks

from .checkpoint import CheckedCheckpointer
from .fileio import write_json
from .errors import UserInputError

__all__ = ["BEST_WEIGHTS", "BEST_RECORD", "KeepBestModel", "read_best_record", "default_weights", "weights_for_tool",
           "WEIGHTS_HELP"]

BEST_WEIGHTS = "model_best.pth"
BEST_RECORD = "model_best.json"
_PREFIX = "model_best"

logger = logging.getLogger("dsanet")


class _ModelOnlyCheckpointer(CheckedCheckpointer):
    """Saves the model alone and never moves ``last_checkpoint`` (that names what ``--resume`` continues)."""

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        pass


def read_best_record(folder) -> Optional[Dict]:
    """``model_best.json`` of a training output folder, or None when it (or ``model_best.pth``) is absent."""
    folder = Path(folder)
    record_file, weights = folder / BEST_RECORD, folder / BEST_WEIGHTS
    if not (record_file.is_file() and weights.is_file()):
        return None
    return json.loads(record_file.read_text())


class KeepBestModel(hooks.BestCheckpointer):
    """detectron2's BestCheckpointer writing ``model_best.pth`` and ``model_best.json`` into ``output_dir``.

    Register it after the ``EvalHook`` it reads (the same ``eval_period``), on the main process only.
    """

    def __init__(self, eval_period: int, model, output_dir: str, *, metric: str = "bbox/AP", mode: str = "max"):
        super().__init__(eval_period, _ModelOnlyCheckpointer(model, output_dir), metric, mode=mode,
                         file_prefix=_PREFIX)
        self.output_dir = output_dir
        self.metric, self.mode = metric, mode  # kept here: detectron2 keeps its own copies private
        self.best_iteration: Optional[int] = None  # iterations trained when the kept model was evaluated

    def before_train(self) -> None:
        # On --resume: continue from the kept best, so a worse evaluation cannot replace it.
        record = read_best_record(self.output_dir)
        if record is not None and record.get("metric") == self.metric and self.trainer.start_iter > 0 \
                and record["iteration"] <= self.trainer.start_iter:
            self.best_metric, self.best_iteration = float(record["value"]), int(record["iteration"])
            self.best_iter = self.best_iteration - 1  # detectron2's count, for its own log lines
            logger.info("Best %s so far: %.4f at iteration %d (%s)", self.metric, self.best_metric,
                        self.best_iteration, os.path.join(self.output_dir, BEST_WEIGHTS))

    def _check_and_record(self, check, iterations_trained: int) -> None:
        before = (self.best_metric, self.best_iter)
        check()
        if self.best_iter is not None and (self.best_metric, self.best_iter) != before:
            self.best_iteration = iterations_trained
            record = {"iteration": iterations_trained, "metric": self.metric, "value": float(self.best_metric),
                      "mode": self.mode, "file": BEST_WEIGHTS}
            write_json(os.path.join(self.output_dir, BEST_RECORD), record)
            logger.info("Best model so far: iteration %d, %s %.4f -> %s", iterations_trained, self.metric,
                        self.best_metric, os.path.join(self.output_dir, BEST_WEIGHTS))

    def after_step(self) -> None:
        self._check_and_record(super().after_step, self.trainer.iter + 1)

    def after_train(self) -> None:
        # detectron2's loop leaves trainer.iter at max_iter after a finished run (max_iter - 1 otherwise,
        # when BestCheckpointer checks nothing)
        self._check_and_record(super().after_train, self.trainer.iter)


def default_weights(output_dir: Optional[str], config_file: Optional[str] = None) -> Tuple[Optional[str], str]:
    """The weights a tool loads when none are given: ``model_best.pth``, else ``model_final.pth``, of the
    training output folder (``train.output_dir``, or the folder of a ``config.yaml`` that training saved).

    Returns:
        (path or None, a phrase saying where it came from, for the log)
    """
    folders = []
    if config_file and Path(config_file).suffix == ".yaml":
        folders.append(Path(config_file).parent)
    if output_dir:
        folders.append(Path(output_dir))
    for folder in folders:
        record = read_best_record(folder)
        if record is not None:
            return str(folder / BEST_WEIGHTS), (f"the best evaluation of its training ({record['metric']} "
                                                f"{record['value']:.2f} at iteration {record['iteration']})")
    for folder in folders:
        if (folder / "model_final.pth").is_file():
            return str(folder / "model_final.pth"), "the last iteration of its training (no model_best.pth)"
    return None, "no model_best.pth or model_final.pth in " + (", ".join(map(str, folders)) or "no output folder")


WEIGHTS_HELP = ("checkpoint (.pth/.pkl or detectron2:// URL); default: model_best.pth (the best evaluated model) of "
                "the config's training output folder (train.output_dir, or the folder of a config.yaml that "
                "training saved) when it exists, else model_final.pth there, else the trained model that ships "
                "for the config (configs/Demo/dsanet_conf_synthetic_cpu.py has one)")


def weights_for_tool(weights: Optional[str], config_file: str, opts: Sequence[str] = (), *,
                     init_checkpoint_last: bool = False) -> str:
    """The checkpoint a tool loads: ``weights`` when given, else ``default_weights`` of the config's output
    folder, else the trained model that ships for the config (``dsanet.model_zoo``), named on stderr. With ``init_checkpoint_last`` (demo/demo.py, which always read it), a
    ``train.init_checkpoint=`` in ``opts`` comes before the default, the config's own after it.

    Raises:
        UserInputError: nothing to load, naming the folders looked in.
    """
    from .config import load_config

    if weights:
        return weights
    cfg = load_config(config_file, opts)
    init_checkpoint = str(cfg.train.get("init_checkpoint") or "")
    if init_checkpoint_last and any(o.lstrip("+").startswith("train.init_checkpoint=") for o in opts) \
            and init_checkpoint:
        return init_checkpoint
    path, why = default_weights(cfg.train.get("output_dir"), config_file)
    if path is not None:
        print(f"weights: {path}, {why}", file=sys.stderr)
        return path
    if init_checkpoint_last and init_checkpoint:
        return init_checkpoint
    from .model_zoo import trained_weights

    shipped = trained_weights(config_file)
    if shipped is not None:
        print(f"weights: {shipped}, the trained model that ships for {config_file} ({why})", file=sys.stderr)
        return shipped
    raise UserInputError(f"no weights: give --weights ({why})")
