"""The study's runs: every variant with every seed through train_net.py, each in its own folder
``<output>/runs/<variant>/seed<k>``, resumable, one failure never stopping the others, several
invocations sharing one study folder (:mod:`.locks`)."""
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from dsanet.best_checkpoint import BEST_WEIGHTS, read_best_record
from dsanet.config import load_config
from dsanet.errors import UserInputError
from dsanet.evaluation import RESULTS_FILE
from dsanet.fileio import atomic_write, write_json
from ..provenance import read_invocations
from . import bootstrap, locks
from .variants import Variant

__all__ = ["Run", "plan_runs", "read_study", "StudyRunner", "MARKER", "format_duration"]

MARKER = "study_run.json"  # written once a run has finished and been evaluated: a resume reads it
LOG = "study_log.txt"  # train_net.py's stdout and stderr for the run
DETECTIONS = "coco_instances_results.json"  # detectron2's COCOEvaluator writes it into inference/ (kept)
REPLICATES_FILE = "bootstrap_replicates.npz"  # each replicate's AP, AP50, AP75 (inference/): reports pair runs


@dataclass
class Run:
    """One variant with one seed, and what became of it."""
    variant: Variant
    seed: int
    directory: Path
    status: str = "pending"  # then "done" (ran now), "reused" (read from an earlier invocation), "failed",
    #                          or "elsewhere" (another invocation is making it)
    metrics: Dict[str, float] = field(default_factory=dict)
    bootstrap: Dict = field(default_factory=dict)  # bootstrap.bootstrap_metrics() of its detections
    error: str = ""
    seconds: float = math.nan

    @property
    def ok(self) -> bool:
        return self.status in ("done", "reused")

    @property
    def label(self) -> str:
        return f"{self.variant.name} seed {self.seed}"

    @property
    def kept_model(self) -> Optional[Dict]:
        """The run's ``model_best.json`` (iteration and score of the model its results are of), or None
        when it kept only its last iteration (no ``train.best_metric``)."""
        return read_best_record(self.directory)

    @property
    def setup(self) -> Optional[Dict]:
        """Where the run was trained: its last training invocation's ``{"date", "machine", "data", "code"}``
        (train_net.py's ``provenance.json``), else its marker's ``setup`` carried over from an imported
        study (None when neither recorded it)."""
        trained = [i for i in read_invocations(self.directory) if not i.get("eval_only")]
        if trained:
            return {key: trained[-1].get(key) for key in ("date", "machine", "data", "code")}
        return self._marker_field("setup")

    @property
    def imported_from(self) -> Optional[str]:
        """The kept results file the run was read from (``--import-results``), None for a run made here."""
        return self._marker_field("imported_from")

    def _marker_field(self, key: str):
        """``key`` of the run's marker (None when the marker or the key is missing or unreadable)."""
        try:
            return json.loads((self.directory / MARKER).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            return None

    def replicates(self) -> Optional[Dict[str, np.ndarray]]:
        """Each bootstrap replicate's metrics (metric -> (B,)), or None when none were saved."""
        path = self.directory / "inference" / REPLICATES_FILE
        if not path.is_file():
            return None
        with np.load(path) as data:
            return {m: data[m] for m in data.files}


def ground_truth_file(config_file: str, overrides: Sequence[str]) -> Optional[str]:
    """The COCO json that a run's evaluation reads (registering its dataset), or None if none is known."""
    from detectron2.data import MetadataCatalog
    from dsanet.data import register_datasets_for

    cfg = load_config(config_file, overrides)
    register_datasets_for(cfg, ("test",))
    names = cfg.dataloader.test.dataset.names
    return MetadataCatalog.get(names if isinstance(names, str) else names[0]).get("json_file")


def read_study(results_file: Path, config_file: str) -> Tuple[Dict, Dict[Tuple[str, int], Dict], Dict[str, List[str]]]:
    """An earlier study's ``results.json``: its content, its finished runs by (variant, seed), and each
    variant's model overrides (:func:`_model_overrides`). Raises UserInputError naming the file when it
    is not a study's results or was made with another config."""
    try:
        earlier = json.loads(Path(results_file).read_text())
        records = {(r["variant"], r["seed"]): r for r in earlier["runs"] if r["status"] in ("done", "reused")}
        earlier_variants = {v["name"]: Variant(v["name"], tuple(v["overrides"]), v["source"])
                            for v in earlier["variants"]}
        overrides = {name: _model_overrides(v, earlier_variants, earlier["common_overrides"])
                     for name, v in earlier_variants.items()}
        earlier_config = Path(earlier["config_file"]).name
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserInputError(f"{results_file}: not a study's results.json ({type(e).__name__}: {e})") from e
    if earlier_config != Path(config_file).name:
        raise UserInputError(f"{results_file}: its study used {earlier['config_file']}, not {config_file}")
    return earlier, records, overrides


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


def _model_overrides(variant: Variant, sources: Dict[str, Variant], common: Sequence[str]) -> List[str]:
    """What a variant's runs are made with, paths and seed aside: the common overrides, the source's
    (evaluation-only variants), then its own."""
    return [*common, *(sources[variant.source].overrides if not variant.trained else ()), *variant.overrides]


def _portable(overrides: Sequence[str]) -> List[str]:
    """Overrides without the study's own paths, so a study folder can be moved and still resume."""
    return [o for o in overrides if not o.startswith(("train.output_dir=", "train.init_checkpoint="))]


def _tail(path: Path, lines: int = 15) -> str:
    """The last lines of a run's log, for its error message."""
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
        own = _model_overrides(run.variant, sources, self.common_overrides)
        own += [f"train.output_dir={run.directory}", f"train.seed={run.seed}"]
        if not run.variant.trained:  # the source's kept model when it kept one, else its last
            source = run.directory.parent.parent / run.variant.source / f"seed{run.seed}"
            checkpoint = source / (BEST_WEIGHTS if read_best_record(source) else "model_final.pth")
            own.append(f"train.init_checkpoint={checkpoint}")
        return own

    def _train_net(self, flags: Sequence[str], overrides: Sequence[str], log_file: Path) -> int:
        """Run train_net.py with ``flags`` and ``overrides``, appending its output to ``log_file``; its exit code."""
        command = [sys.executable, str(self.train_net), "--config-file", self.config_file,
                   "--num-gpus", str(self.num_gpus), *flags, *overrides]
        with open(log_file, "a") as f:
            print("$", *command, file=f, flush=True)
            return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=self.env).returncode

    def _eta(self, remaining: Sequence[Run]) -> str:
        """Time left for ``remaining``, from the mean duration of the runs of the same kind (trained
        or evaluation-only) made in this invocation; a kind not yet timed makes it a lower bound."""
        mean = {trained: sum(done) / len(done) for trained, done in self._durations.items() if done}
        total = sum(mean.get(run.variant.trained, 0.0) for run in remaining)
        unknown = any(run.variant.trained not in mean for run in remaining)
        if unknown and total == 0:
            return "ETA ?"
        return f"ETA {'> ' if unknown else ''}{format_duration(total)}"

    def import_finished(self, runs: Sequence[Run], variants: Sequence[Variant], results_file: Path) -> List[Run]:
        """Give each planned run without a marker that finished in an earlier study (``results_file``, kept
        when its run folders were lost) a marker holding that run's metrics, bootstrap summary, seconds,
        setup and ``imported_from``: it is read, not retrained, but without its detections adds nothing to
        the paired image bootstrap of differences. Returns the runs given a marker."""
        imported, sources = [], {v.name: v for v in variants}
        for run, record in self._matching_runs(runs, sources, results_file, "not imported"):
            if not (run.directory / MARKER).is_file():
                write_json(run.directory / MARKER, self._marker(
                    run, self.overrides(run, sources), record["metrics"], record.get("bootstrap") or {},
                    record.get("seconds"), imported_from=str(results_file), setup=record.get("setup")))
                imported.append(run)
        return imported

    def import_setup(self, runs: Sequence[Run], variants: Sequence[Variant], name: str,
                     results_file: Path) -> List[Dict]:
        """Another study's runs (``results_file``, trained on another processor or thread count) that
        replicate planned trained runs: how far a result moves between setups (the report's setup part),
        not seeds. One ``{"variant", "seed", "setup_name", "metrics", "setup", "from"}`` per replicated run."""
        return [{"variant": run.variant.name, "seed": run.seed, "setup_name": name, "metrics": record["metrics"],
                 "setup": record.get("setup"), "from": str(results_file)}
                for run, record in self._matching_runs(runs, {v.name: v for v in variants}, results_file,
                                                       "no replicate")
                if run.variant.trained]

    def _matching_runs(self, runs: Sequence[Run], sources: Dict[str, Variant], results_file: Path, skipped: str
                       ) -> Iterator[Tuple[Run, Dict]]:
        """(planned run, its finished record in ``results_file``) for every run made there with the same
        variant, seed and model overrides; a run made there with other overrides is logged as ``skipped``."""
        _, records, earlier_overrides = read_study(results_file, self.config_file)
        for run in runs:
            record = records.get((run.variant.name, run.seed))
            if record is None:
                continue
            theirs = earlier_overrides.get(run.variant.name)
            if theirs is None or _portable(theirs) != _portable(_model_overrides(run.variant, sources,
                                                                                 self.common_overrides)):
                self.log(f"{run.label}: {skipped} from {results_file}: its overrides there were {theirs}")
                continue
            yield run, record

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
        # A metric with no objects of its size is NaN; results.json (imported markers) holds it as null.
        metrics = {m: math.nan if v is None else v for m, v in saved["metrics"].items()}
        run.status, run.metrics, run.seconds = "reused", metrics, saved.get("seconds") or math.nan
        run.bootstrap = saved.get("bootstrap") or {}
        return True

    def _add_bootstrap(self, run: Run, overrides: List[str]) -> None:
        """Set ``run.bootstrap`` to the image-level bootstrap of its detections (``bootstrap_metrics`` plus
        ``matches_evaluator``: whether the AP recomputed from them is the evaluator's, else the ground
        truths differ) and save the replicates beside them; without detections or ground truth, none."""
        inference = run.directory / "inference"
        if not (inference / DETECTIONS).is_file():
            self.log(f"{run.label}: no {DETECTIONS} in {inference}: no bootstrap")
            return
        try:
            gt_json = ground_truth_file(self.config_file, overrides)
        except UserInputError as e:
            self.log(f"{run.label}: no bootstrap, its ground truth is not found: {e}")
            return
        if gt_json:
            table = bootstrap.match_detections(gt_json, json.loads((inference / DETECTIONS).read_text()))
            summary, replicated = bootstrap.bootstrap_metrics(table)
            atomic_write(inference / REPLICATES_FILE, lambda f: np.savez(f, **replicated))
            summary["matches_evaluator"] = bool(abs(summary["AP"]["value"] - run.metrics.get("AP", math.nan)) < 1e-6)
            run.bootstrap = summary

    def _launch(self, run: Run, overrides: List[str]) -> None:
        run.directory.mkdir(parents=True, exist_ok=True)
        results = run.directory / "inference" / RESULTS_FILE
        log_file = run.directory / LOG
        start = time.time()
        # --resume: an interrupted training continues from its last checkpoint.
        rc = self._train_net(["--resume"] if run.variant.trained else ["--eval-only"], overrides, log_file)
        if rc == 0 and run.variant.trained and (not results.is_file() or results.stat().st_mtime < start):
            # Training was already complete (nothing to train, so no evaluation): evaluate its kept model
            # (model_best.pth) when it kept one, else its final checkpoint.
            if run.kept_model is not None:
                kept = [f"train.init_checkpoint={run.directory / BEST_WEIGHTS}"]
                rc = self._train_net(["--eval-only"], overrides + kept, log_file)
            else:
                rc = self._train_net(["--eval-only", "--resume"], overrides, log_file)
        if rc != 0:
            run.seconds = time.time() - start
            run.status, run.error = "failed", f"train_net.py exited {rc}:\n{_tail(log_file)}"
            return
        if not results.is_file() or results.stat().st_mtime < start:
            run.status, run.error = "failed", f"train_net.py wrote no {results} (does the config have an evaluator?)"
            return
        run.metrics = json.loads(results.read_text()).get("bbox", {})
        self._add_bootstrap(run, overrides)
        run.seconds = time.time() - start
        run.status = "done"
        self._durations[run.variant.trained].append(run.seconds)
        write_json(run.directory / MARKER, self._marker(run, overrides, run.metrics, run.bootstrap, run.seconds))

    def _marker(self, run: Run, overrides: List[str], metrics: Dict, bootstrap: Dict, seconds, **extra) -> Dict:
        """What a finished run's marker holds (what :meth:`_reuse` reads)."""
        return {"variant": run.variant.name, "seed": run.seed, "config_file": self.config_file, "overrides": overrides,
                "metrics": metrics, "bootstrap": bootstrap, "seconds": seconds, **extra}

    def _make(self, run: Run, prefix: str, overrides: List[str], source_run: Optional[Run], remaining: Sequence[Run],
              wait: bool) -> bool:
        """Read, or make under the run's lock, one run. False (nothing done) when another invocation holds
        the lock and ``wait`` is False, or when its source run is still being made elsewhere."""
        if source_run is not None and source_run.status == "elsewhere":
            return False
        busy = (f"{prefix}: waiting for the invocation that makes it ..." if wait else
                f"{prefix}: being made by another invocation; read when it has finished")
        with locks.holding(run.directory, wait=wait, on_busy=lambda: self.log(busy)) as held:
            if not held:
                return False
            if self._reuse(run, overrides):  # finished earlier, or by the invocation that held the lock
                outcome = f"done, reading its results (AP {run.metrics.get('AP', math.nan):.1f})"
            elif source_run is not None and not source_run.ok:
                run.status, run.error = "failed", f"its source run {source_run.label} failed"
            else:
                action = "training" if run.variant.trained else f"evaluating {run.variant.source}'s checkpoint"
                self.log(f"{prefix}: {action} ... {self._eta(remaining)} ({run.directory})")
                self._launch(run, overrides)
                spread = run.bootstrap.get("AP", {}).get("std", math.nan)
                outcome = (f"AP {run.metrics.get('AP', math.nan):.1f} (bootstrap std {spread:.2f}) "
                           f"in {format_duration(run.seconds)}" if run.ok else "")
            self.log(f"{prefix}: {outcome}" if run.ok else f"{prefix}: FAILED: {run.error}")
            return True

    def run_all(self, runs: Sequence[Run], variants: Sequence[Variant],
                after_each: Optional[Callable[[Sequence[Run]], None]] = None) -> List[Run]:
        """Run (or read) every run in order; returns them with status, metrics and errors filled in.

        Runs that another invocation is making are read at the end (:func:`.locks.in_turn`).
        ``after_each(runs)`` is called after every run made now (e.g. to rewrite the report).
        """
        sources = {v.name: v for v in variants}
        by_key = {(r.variant.name, r.seed): r for r in runs}

        def attempt(position: int, run: Run, wait: bool) -> bool:
            prefix = f"[{position + 1}/{len(runs)}] {run.label}"
            overrides = self.overrides(run, sources)
            try:  # a bad override fails here in a moment, not after a subprocess has imported everything
                load_config(self.config_file, overrides)
            except UserInputError as e:
                run.status, run.error = "failed", f"error: {e}"
                self.log(f"{prefix}: FAILED: {run.error}")
                return True
            source_run = None if run.variant.trained else by_key[(run.variant.source, run.seed)]
            made_before = run.status
            if not self._make(run, prefix, overrides, source_run, runs[position:], wait):
                run.status = "elsewhere"
                return False
            if after_each is not None and (run.status != "reused" or made_before == "elsewhere"):
                self._read_finished_elsewhere(runs, sources)
                after_each(runs)
            return True

        locks.in_turn(runs, attempt)
        return list(runs)

    def _read_finished_elsewhere(self, runs: Sequence[Run], sources: Dict[str, Variant]) -> None:
        """Read the runs that other invocations have finished since, so an interim report holds them too."""
        for run in runs:
            if run.status in ("pending", "elsewhere") and (run.directory / MARKER).is_file():
                status = run.status
                if not self._reuse(run, self.overrides(run, sources)) or not run.ok:
                    run.status, run.error = status, ""  # left for its own turn, which reports it

