"""tools/compare_variants.py end to end on a tiny schedule, and the statistics it reports."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsanet.data import ensure_synthetic_dataset
from dsanet.errors import UserInputError
from dsanet_lab.study import StudyRunner, paired_difference, parse_eval_variant, parse_variant, plan_runs, t_quantile_975
from dsanet_lab.study.runner import MARKER
from dsanet_lab.study import stats

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "compare_variants.py"
DEMO_CONFIG = ROOT / "configs" / "Demo" / "dsanet_conf_synthetic_cpu.py"
TEN = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl"]


def tiny_schedule(data: Path) -> list:
    """Overrides for every run: a small COCO-format copy of the synthetic data, two iterations."""
    return [
        f"+datasets.tiny_train.json_file={data / 'annotations' / 'train.json'}",
        f"+datasets.tiny_train.image_root={data / 'train'}",
        f"+datasets.tiny_val.json_file={data / 'annotations' / 'val.json'}",
        f"+datasets.tiny_val.image_root={data / 'val'}",
        "dataloader.train.dataset.names=tiny_train", "dataloader.test.dataset.names=tiny_val",
        "train.max_iter=2", "train.log_period=1", "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "+model.test_score_thresh=0.0",  # two iterations score below detectron2's 0.05: keep every box
    ]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("data") / "shapes", num_train=16, num_val=6)


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_data):
    """Two variants x two seeds, an evaluation-only variant and a variant with a bad key; then the
    same command again."""
    output = tmp_path_factory.mktemp("study") / "out"
    command = [
        sys.executable, str(TOOL), "--config-file", str(DEMO_CONFIG), "--seeds", "2", "--output", str(output),
        "--variant", "retinanet: model.head.dsa_levels=[] model.head.with_confidence=False",
        "--variant", "dsanet_conf:",
        "--variant", "broken: model.head.no_such_key=1",
        "--eval-variant", "alpha0.7=dsanet_conf: model.score_fusion_alpha=0.7",
        *tiny_schedule(tiny_data),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, cwd=ROOT)
    first_results = json.loads((output / "results.json").read_text())  # the second invocation rewrites it
    checkpoints = sorted(output.glob("runs/*/seed*/model_final.pth"))
    mtimes = {p: p.stat().st_mtime_ns for p in checkpoints}
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, cwd=ROOT)
    return {"output": output, "first": first, "first_results": first_results, "second": second,
            "mtimes": mtimes}


def test_every_run_is_trained_or_evaluated_and_the_bad_variant_is_named(study):
    first, output = study["first"], study["output"]
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]  # 1: some run failed
    assert "[1/8] retinanet seed 0: training" in first.stdout
    assert "ETA" in first.stdout
    assert "broken seed 0: FAILED: error: override 'model.head.no_such_key=1'" in first.stdout
    assert "2 of 8 runs failed: broken seed 0, broken seed 1" in first.stdout
    results = study["first_results"]
    status = {(r["variant"], r["seed"]): r["status"] for r in results["runs"]}
    assert status == {(v, s): "failed" if v == "broken" else "done"
                      for v in ["retinanet", "dsanet_conf", "broken", "alpha0.7"] for s in (0, 1)}
    for run in results["runs"]:
        if run["status"] == "done":
            assert set(run["metrics"]) >= set(TEN)
            assert math.isfinite(run["metrics"]["AP"]) and math.isfinite(run["metrics"]["AR"])
    assert len(study["mtimes"]) == 4  # trained runs only; evaluation-only runs reuse dsanet_conf's
    assert not (output / "runs" / "alpha0.7" / "seed0" / "model_final.pth").exists()


def test_the_report_files_hold_the_table_the_intervals_and_the_plots(study):
    output = study["output"]  # as the second invocation wrote them: from the runs it read
    results = json.loads((output / "results.json").read_text())
    assert results["summary"]["dsanet_conf"]["AP"]["n"] == 2
    diffs = {(d["variant"], d["against"]): d for d in results["differences"]}
    assert set(diffs) == {("dsanet_conf", "retinanet"), ("broken", "retinanet"), ("alpha0.7", "retinanet"),
                          ("alpha0.7", "dsanet_conf")}
    ap = diffs[("dsanet_conf", "retinanet")]["AP"]
    assert ap["n"] == 2 and ap["ci_low"] <= ap["mean"] <= ap["ci_high"]
    per_run = {(r["variant"], r["seed"]): r["metrics"] for r in results["runs"]}
    expected = sum(per_run[("dsanet_conf", s)]["AP"] - per_run[("retinanet", s)]["AP"] for s in (0, 1)) / 2
    assert ap["mean"] == pytest.approx(expected)
    assert diffs[("broken", "retinanet")]["AP"] is None
    assert results["runs"][0]["directory"] == "runs/retinanet/seed0"  # relative: the JSON can be kept elsewhere
    rows = list(csv.DictReader((output / "results.csv").open()))
    assert len(rows) == 8 and set(TEN) <= set(rows[0])
    summary = (output / "summary.md").read_text()
    assert "| dsanet_conf | 2 |" in summary and "paired t-interval" in summary
    for plot in ["ap.png", "loss_curves.png"]:
        assert (output / plot).read_bytes()[:4] == b"\x89PNG"


def test_a_second_invocation_reads_finished_runs_and_retrains_nothing(study):
    second = study["second"]
    assert second.stdout.count("done, reading its results") == 6
    assert ": training ..." not in second.stdout and ": evaluating" not in second.stdout
    assert {p: p.stat().st_mtime_ns for p in study["mtimes"]} == study["mtimes"]
    assert "broken seed 1: FAILED" in second.stdout
    results = json.loads((study["output"] / "results.json").read_text())
    assert {r["status"] for r in results["runs"] if r["variant"] != "broken"} == {"reused"}
    assert [r["metrics"] for r in results["runs"]] == [r["metrics"] for r in study["first_results"]["runs"]]


def test_two_invocations_launched_together_on_one_folder_make_each_run_once(tiny_data, tmp_path):
    output = tmp_path / "out"
    command = [sys.executable, str(TOOL), "--config-file", str(DEMO_CONFIG), "--seeds", "2", "--output", str(output),
               "--variant", "retinanet: model.head.dsa_levels=[] model.head.with_confidence=False",
               "--variant", "dsanet_conf:", "--eval-variant", "alpha0.7=dsanet_conf: model.score_fusion_alpha=0.7",
               *tiny_schedule(tiny_data)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=1800)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    labels = [f"{v} seed {s}" for s in (0, 1) for v in ("retinanet", "dsanet_conf")]
    for label in labels:
        assert sum(out.count(f"{label}: training ...") for out in outputs) == 1, label
    for s in (0, 1):
        assert sum(out.count(f"alpha0.7 seed {s}: evaluating") for out in outputs) == 1
    for log in output.glob("runs/*/seed*/study_log.txt"):  # one train_net.py command per run, never two
        assert log.read_text().count("$ ") == 1, log
    for out in outputs:  # each invocation ends with every run in its report, the other's included
        assert "| retinanet | 2 |" in out and "| dsanet_conf | 2 |" in out and "| alpha0.7 | 2 |" in out
    results = json.loads((output / "results.json").read_text())
    assert {r["status"] for r in results["runs"]} <= {"done", "reused"}


def test_an_interim_report_holds_a_run_that_another_invocation_finished(study, tiny_data, tmp_path):
    """b seed 0 is locked "by another invocation" (this test) that has already finished it: the report
    written after a seed 0 is made must show b as read, and the wait pass then reads it once the lock goes."""
    import fcntl
    import shutil
    import threading

    from dsanet_lab.study.locks import LOCK

    finished = study["output"] / "runs" / "dsanet_conf" / "seed0"
    target = tmp_path / "runs" / "b" / "seed0"
    shutil.copytree(finished, target)
    marker = json.loads((target / MARKER).read_text())
    lock = os.open(target / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    runner = StudyRunner(train_net=ROOT / "train_net.py", config_file=str(DEMO_CONFIG),
                         common_overrides=tiny_schedule(tiny_data), log=lambda line: None,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    variants = [parse_variant("a: model.head.dsa_levels=[] model.head.with_confidence=False"), parse_variant("b:")]
    marker["overrides"] = runner.overrides(plan_runs(variants, [0], tmp_path)[1], {v.name: v for v in variants})
    (target / MARKER).write_text(json.dumps(marker))
    snapshots = []

    def report(runs):
        snapshots.append({r.variant.name: r.status for r in runs})
        if len(snapshots) == 1:
            releasing.start()  # the other invocation ends

    releasing = threading.Timer(1.0, os.close, (lock,))
    runs = runner.run_all(plan_runs(variants, [0], tmp_path), variants, after_each=report)
    releasing.join()
    assert snapshots[0] == {"a": "done", "b": "reused"}
    assert [r.status for r in runs] == ["done", "reused"] and runs[1].metrics == marker["metrics"]


def test_every_run_keeps_its_detections_and_bootstrap_and_the_report_splits_the_interval(study):
    output = study["output"]
    results = json.loads((output / "results.json").read_text())
    for run in (r for r in results["runs"] if r["variant"] != "broken"):
        folder = output / run["directory"] / "inference"
        assert (folder / "coco_instances_results.json").is_file() and (folder / "bootstrap_replicates.npz").is_file()
        boot = run["bootstrap"]
        assert boot["num_images"] == 6 and boot["replicates"] == 400 and boot["matches_evaluator"]
        assert boot["AP"]["value"] == pytest.approx(run["metrics"]["AP"], abs=1e-6)
        assert boot["AP"]["ci_low"] <= boot["AP"]["ci_high"]
    diffs = {(d["variant"], d["against"]): d for d in results["differences"]}
    paired = diffs[("dsanet_conf", "retinanet")]
    assert paired["bootstrap"]["n"] == 2 and set(paired["bootstrap"]["AP"]["per_seed"]) == {"0", "1"}
    assert paired["bootstrap"]["AP"]["mean"]["value"] == pytest.approx(paired["AP"]["mean"], abs=1e-6)
    parts = paired["decomposition"]
    assert parts["total_half"] >= max(parts["training_half"], parts["validation_half"])
    assert set(parts["needed"]) == {"1.0", "0.5"}
    assert "Noise of the validation sample" in (output / "summary.md").read_text()


def test_a_study_whose_run_folders_are_gone_imports_its_results_json_and_trains_only_the_new_seed(
        study, tiny_data, tmp_path):
    """A kept results.json (run folders lost with a machine) extends to a third seed: seeds 0-1 are read
    from it, seed 2 is trained, and the image-bootstrap part of the interval says it covers 1 seed of 3."""
    kept = tmp_path / "kept_results.json"
    kept.write_text((study["output"] / "results.json").read_text())
    output = tmp_path / "extended"
    command = [sys.executable, str(TOOL), "--config-file", str(DEMO_CONFIG), "--seeds", "3", "--output", str(output),
               "--import-results", str(kept),
               "--variant", "retinanet: model.head.dsa_levels=[] model.head.with_confidence=False",
               "--variant", "dsanet_conf:", *tiny_schedule(tiny_data)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count(f"imported from {kept}") == 4
    assert done.stdout.count(": training ...") == 2 and "retinanet seed 2: training" in done.stdout
    before = {(r["variant"], r["seed"]): r["metrics"] for r in study["first_results"]["runs"]}
    results = json.loads((output / "results.json").read_text())
    for run in results["runs"]:
        if run["seed"] < 2:
            assert run["status"] == "reused" and run["metrics"] == before[(run["variant"], run["seed"])]
            marker = json.loads((output / run["directory"] / MARKER).read_text())
            assert marker["imported_from"] == str(kept)
        else:
            assert run["status"] == "done"
    [difference] = results["differences"]
    assert difference["AP"]["n"] == 3 and difference["bootstrap"]["n"] == 1
    assert difference["decomposition"]["validation_seeds"] == 1
    assert "(seeds: 1 of 3)" in (output / "summary.md").read_text()


def test_imports_skip_runs_made_with_other_overrides_and_name_a_file_that_is_not_a_study(study, tiny_data, tmp_path):
    lines = []
    runner = StudyRunner(train_net=ROOT / "train_net.py", config_file=str(DEMO_CONFIG),
                         common_overrides=tiny_schedule(tiny_data), log=lines.append)
    variants = [parse_variant("retinanet: model.head.dsa_levels=[]"), parse_variant("dsanet_conf:")]
    runs = plan_runs(variants, [0, 1], tmp_path)
    imported = runner.import_finished(runs, variants, study["output"] / "results.json")
    assert [r.label for r in imported] == ["dsanet_conf seed 0", "dsanet_conf seed 1"]
    assert not (tmp_path / "runs" / "retinanet" / "seed0" / MARKER).exists()
    assert lines[0].startswith("retinanet seed 0: not imported from")
    not_a_study = tmp_path / "metrics.json"
    not_a_study.write_text('{"AP": 1}')
    with pytest.raises(UserInputError, match="metrics.json: not a study's results.json"):
        runner.import_finished(runs, variants, not_a_study)


def test_a_run_that_crashes_is_reported_with_its_error_and_leaves_no_marker(tiny_data, tmp_path):
    """A key that exists but a value train_net.py rejects only once it builds the model."""
    lines = []
    runner = StudyRunner(train_net=ROOT / "train_net.py", config_file=str(DEMO_CONFIG),
                         common_overrides=tiny_schedule(tiny_data), log=lines.append,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    variants = [parse_variant("crash: model.head.dsa_levels=[p9]")]
    eval_only = parse_eval_variant("later=crash: model.score_fusion_alpha=0.5")
    snapshots = []  # statuses each time the report would be rewritten
    [run, dependent] = runner.run_all(plan_runs([*variants, eval_only], [0], tmp_path), [*variants, eval_only],
                                      after_each=lambda runs: snapshots.append([r.status for r in runs]))
    assert snapshots == [["failed", "pending"], ["failed", "failed"]]
    assert run.status == "failed" and "train_net.py exited 1" in run.error and "p9" in run.error
    assert not (run.directory / MARKER).exists()
    assert dependent.status == "failed" and dependent.error == "its source run crash seed 0 failed"
    assert lines[1].startswith("[1/2] crash seed 0: FAILED: train_net.py exited 1")


def test_paired_interval_by_hand():
    diff = paired_difference({0: 2.0, 1: 4.0, 2: 6.0, 3: 9.0}, {0: 1.0, 1: 2.0, 2: 3.0})  # seed 3 unpaired
    half = 4.303 * 1.0 / math.sqrt(3)  # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2)
    assert diff["n"] == 3 and diff["mean"] == pytest.approx(2.0)
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-3)
    assert math.isnan(paired_difference({0: 1.0}, {0: 0.5})["ci_low"])  # one seed: no interval


def test_t_quantiles_come_from_the_table_and_its_expansion():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(2) == 4.303
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-4)  # expansion beyond the table
    assert abs(stats._T975[-1] - t_quantile_975(31)) < 3e-3


@pytest.mark.parametrize("spec,parse,message", [
    ("retinanet model.x=1", parse_variant, "expected 'NAME: key=value ...'"),
    ("r: model.x", parse_variant, "override 'model.x' is not key=value"),
    ("a/b: model.x=1", parse_variant, "name 'a/b' must be"),
    ("alpha: model.x=1", parse_eval_variant, "expected 'NAME=SOURCE: key=value ...'"),
])
def test_bad_variant_specs_are_named(spec, parse, message):
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse(spec)


def test_every_run_records_where_it_was_trained_and_on_what_data(study, tiny_data):
    from dsanet.data.synthetic import recorded_fingerprint

    for run in study["first_results"]["runs"]:
        if run["status"] not in ("done", "reused") or run["variant"] == "alpha0.7":
            continue
        setup = run["setup"]
        assert setup["machine"]["cpu"]["model_name"] and setup["machine"]["torch_threads"] >= 1, run["variant"]
        assert setup["machine"]["libraries"]["torch"]
        assert {d["content"] for d in setup["data"].values()} == {recorded_fingerprint(tiny_data)}
    assert study["first_results"]["provenance"]["command"].startswith("python tools/compare_variants.py")


def test_runs_made_on_another_setup_join_one_noise_model(study, tiny_data, tmp_path):
    """A study re-reported from its kept results.json with its runs made again elsewhere (seed 0 moved):
    nothing is trained, and each result's interval comes from one model over both setups' runs."""
    kept = tmp_path / "kept_results.json"
    kept.write_text((study["output"] / "results.json").read_text())
    elsewhere = json.loads(kept.read_text())
    shifts = {"retinanet": 0.5, "dsanet_conf": 0.2}
    for run in elsewhere["runs"]:
        if run["variant"] in shifts and run["seed"] == 0:
            run["metrics"]["AP"] += shifts[run["variant"]]
            run["setup"] = {"machine": None}
    (tmp_path / "elsewhere.json").write_text(json.dumps(elsewhere))
    output = tmp_path / "with_setups"
    command = [sys.executable, str(TOOL), "--config-file", str(DEMO_CONFIG), "--seeds", "2", "--output", str(output),
               "--import-results", str(kept), "--import-setup", f"other={tmp_path / 'elsewhere.json'}",
               "--variant", "retinanet: model.head.dsa_levels=[] model.head.with_confidence=False",
               "--variant", "dsanet_conf:", *tiny_schedule(tiny_data)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert ": training ..." not in done.stdout
    assert "--import-setup other: 4 runs replicated" in done.stdout
    results = json.loads((output / "results.json").read_text())
    ap = {(r["variant"], r["seed"]): r["metrics"]["AP"] for r in results["runs"]}
    model = results["noise"]["retinanet"]
    assert model["runs"] == 4 and set(model["setups"]) == {"this study", "other"}
    assert model["mean"] == pytest.approx((2 * ap["retinanet", 0] + 0.5 + 2 * ap["retinanet", 1]) / 4)
    [difference] = results["differences"]
    d = [ap["dsanet_conf", s] - ap["retinanet", s] for s in (0, 1)]
    assert difference["noise"]["mean"] == pytest.approx((2 * sum(d) - 0.3) / 4)
    parts = difference["decomposition"]
    assert parts["mean"] == pytest.approx(difference["noise"]["mean"]) and parts["runs"] == 4
    assert parts["training_half"] == pytest.approx(difference["noise"]["half"])
    assert parts["total_half"] == pytest.approx(math.sqrt(parts["training_half"] ** 2 + parts["validation_half"] ** 2))
    summary = (output / "summary.md").read_text()
    assert "Runs on several setups" in summary and "machine not recorded" in summary


def test_one_setup_imported_under_two_names_is_refused():
    """More threads than cores run as many threads as cores: such a study repeats another's digits, and
    importing both as setups would count the same runs twice."""
    from dsanet_lab.study.report import check_distinct_setups

    cpu = {"model_name": "Some CPU", "family": "6", "model": "1", "flags": {}}
    def replicate(name, threads):
        return {"variant": "v", "seed": 0, "setup_name": name, "metrics": {"AP": 1.0},
                "setup": {"machine": {"cpu": cpu, "torch_threads": threads}}}
    check_distinct_setups([replicate("threads2", 2), replicate("threads4", 4)])
    check_distinct_setups([replicate("a", None), replicate("b", None)])  # threads not recorded: cannot tell
    check_distinct_setups([{**replicate("a", 2), "setup": None}, {**replicate("b", 2), "setup": None}])
    with pytest.raises(UserInputError, match="--import-setup threads3 and --import-setup threads2: both ran on"):
        check_distinct_setups([replicate("threads2", 2), replicate("threads3", 2)])
