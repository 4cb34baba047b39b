"""The study's runs: every variant with every seed through train_net.py, each in its own folder
``<output>/runs/<variant>/seed<k>``, resumable, one failure never stopping the others."""
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..config import load_config
from ..errors import UserInputError
from ..evaluation import RESULTS_FILE
from .variants import Variant

__all__ = ["Run", "plan_runs", "StudyRunner", "MARKER", "format_duration"]

MARKER = "study_run.json"  # written once a run has finished and been evaluated: a resume reads it
LOG = "study_log.txt"  # train_net.py's stdout and stderr for the run
_ERROR_TAIL_LINES = 15


@dataclass
class Run:
    """One variant with one seed, and what became of it."""
    variant: Variant
    seed: int
    directory: Path
    status: str = "pending"  # then "done" (ran now), "reused" (read from an earlier invocation) or "failed"
    metrics: Dict[str, float] = field(default_factory=dict)
    error: str = ""
    seconds: float = math.nan

    @property
    def ok(self) -> bool:
        return self.status in ("done", "reused")

    @property
    def label(self) -> str:
        return f"{self.variant.name} seed {self.seed}"


def plan_runs(variants: Sequence[Variant], seeds: Sequence[int], output: Path) -> List[Run]:
    """Seed-major order (all variants with seed 0, then seed 1, ...), so a study cut short still holds
    complete pairs; within a seed the trained variants come before those that evaluate their checkpoints."""
    ordered = [v for v in variants if v.trained] + [v for v in variants if not v.trained]
    return [Run(v, s, output / "runs" / v.name / f"seed{s}") for s in seeds for v in ordered]


def format_duration(seconds: float) -> str:
    """``95`` -> ``'1m35s'``; ``4000`` -> ``'1h06m'``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _portable(overrides: Sequence[str]) -> List[str]:
    """Overrides without the study's own paths, so a study folder can be moved and still resume."""
    return [o for o in overrides if not o.startswith(("train.output_dir=", "train.init_checkpoint="))]


def _tail(path: Path, lines: int = _ERROR_TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


class StudyRunner:
    """Runs train_net.py for each planned run; prints progress and an ETA.

    Args:
        train_net: path of train_net.py.
        config_file: the base config every variant overrides.
        common_overrides: ``key=value`` applied to every run before the variant's own.
        num_gpus: passed to train_net.py (``--num-gpus``).
        env: environment of the subprocesses (default: this process's).
        log: where progress lines go.
    """

    def __init__(self, *, train_net: Path, config_file: str, common_overrides: Sequence[str] = (),
                 num_gpus: int = 1, env: Optional[Dict[str, str]] = None, log: Callable[[str], None] = print):
        self.train_net = Path(train_net)
        self.config_file = str(config_file)
        self.common_overrides = tuple(common_overrides)
        self.num_gpus = num_gpus
        self.env = env
        self.log = log
        self._durations: Dict[bool, List[float]] = {True: [], False: []}  # trained? -> seconds of runs made now

    def overrides(self, run: Run, sources: Dict[str, Variant]) -> List[str]:
        """The run's overrides in order: common, the source's (evaluation-only), the variant's, the study's."""
        variant = run.variant
        own = list(self.common_overrides)
        if not variant.trained:
            own += sources[variant.source].overrides
        own += list(variant.overrides)
        own += [f"train.output_dir={run.directory}", f"train.seed={run.seed}"]
        if not variant.trained:
            checkpoint = run.directory.parent.parent / variant.source / f"seed{run.seed}" / "model_final.pth"
            own.append(f"train.init_checkpoint={checkpoint}")
        return own

    def _command(self, flags: Sequence[str], overrides: Sequence[str]) -> List[str]:
        return [sys.executable, str(self.train_net), "--config-file", self.config_file,
                "--num-gpus", str(self.num_gpus), *flags, *overrides]

    def _execute(self, command: Sequence[str], log_file: Path) -> int:
        with open(log_file, "a") as f:
            f.write("$ " + " ".join(command) + "\n")
            f.flush()
            return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=self.env).returncode

    def _eta(self, remaining: Sequence[Run]) -> str:
        """Time left for ``remaining``, from the mean duration of the runs of the same kind (trained
        or evaluation-only) made in this invocation; a kind not yet timed makes it a lower bound."""
        total, unknown = 0.0, False
        for run in remaining:
            done = self._durations[run.variant.trained]
            if done:
                total += sum(done) / len(done)
            else:
                unknown = True
        if unknown and total == 0:
            return "ETA ?"
        return f"ETA {'> ' if unknown else ''}{format_duration(total)}"

    def _reuse(self, run: Run, overrides: List[str]) -> bool:
        marker = run.directory / MARKER
        if not marker.is_file():
            return False
        saved = json.loads(marker.read_text())
        if _portable(saved.get("overrides", [])) != _portable(overrides):
            run.status, run.error = "failed", (
                f"{run.directory} holds a finished run with other overrides ({saved.get('overrides')}); "
                "delete that folder or choose another --output")
            return True
        run.status, run.metrics, run.seconds = "reused", saved["metrics"], saved.get("seconds", math.nan)
        return True

    def _launch(self, run: Run, overrides: List[str], source_run: Optional[Run]) -> None:
        if source_run is not None and not source_run.ok:
            run.status, run.error = "failed", f"its source run {source_run.label} failed"
            return
        run.directory.mkdir(parents=True, exist_ok=True)
        results = run.directory / "inference" / RESULTS_FILE
        log_file = run.directory / LOG
        start = time.time()
        # --resume: an interrupted training continues from its last checkpoint.
        rc = self._execute(self._command(["--resume"] if run.variant.trained else ["--eval-only"], overrides),
                           log_file)
        if rc == 0 and run.variant.trained and (not results.is_file() or results.stat().st_mtime < start):
            # Training was already complete (nothing to train, so no evaluation): evaluate its final checkpoint.
            rc = self._execute(self._command(["--eval-only", "--resume"], overrides), log_file)
        run.seconds = time.time() - start
        if rc != 0:
            run.status, run.error = "failed", f"train_net.py exited {rc}:\n{_tail(log_file)}"
            return
        if not results.is_file() or results.stat().st_mtime < start:
            run.status, run.error = "failed", f"train_net.py wrote no {results} (does the config have an evaluator?)"
            return
        run.metrics = json.loads(results.read_text()).get("bbox", {})
        run.status = "done"
        self._durations[run.variant.trained].append(run.seconds)
        marker = {"variant": run.variant.name, "seed": run.seed, "config_file": self.config_file,
                  "overrides": overrides, "metrics": run.metrics, "seconds": run.seconds}
        (run.directory / MARKER).write_text(json.dumps(marker, indent=2))

    def run_all(self, runs: Sequence[Run], variants: Sequence[Variant],
                after_each: Optional[Callable[[Sequence[Run]], None]] = None) -> List[Run]:
        """Run (or read) every run in order; returns them with status, metrics and errors filled in.

        ``after_each(runs)`` is called after every run that was made now (e.g. to rewrite the report,
        so a study stopped part-way still leaves its tables).
        """
        sources = {v.name: v for v in variants}
        by_key = {(r.variant.name, r.seed): r for r in runs}
        for index, run in enumerate(runs):
            prefix = f"[{index + 1}/{len(runs)}] {run.label}"
            overrides = self.overrides(run, sources)
            if self._reuse(run, overrides):
                if run.ok:
                    self.log(f"{prefix}: done, reading its results (AP {run.metrics.get('AP', math.nan):.1f})")
                else:
                    self.log(f"{prefix}: FAILED: {run.error}")
                continue
            try:  # a bad override fails here in a moment, not after a subprocess has imported everything
                load_config(self.config_file, overrides)
            except UserInputError as e:
                run.status, run.error = "failed", f"error: {e}"
                self.log(f"{prefix}: FAILED: {run.error}")
                continue
            action = "training" if run.variant.trained else f"evaluating {run.variant.source}'s checkpoint"
            self.log(f"{prefix}: {action} ... {self._eta(runs[index:])} ({run.directory})")
            source_run = None if run.variant.trained else by_key[(run.variant.source, run.seed)]
            self._launch(run, overrides, source_run)
            if run.ok:
                self.log(f"{prefix}: AP {run.metrics.get('AP', math.nan):.1f} in {format_duration(run.seconds)}")
            else:
                self.log(f"{prefix}: FAILED: {run.error}")
            if after_each is not None:
                after_each(runs)
        return list(runs)
