#!/usr/bin/env python
"""Compare model variants: train and evaluate each with the same seeds through train_net.py, then
write a table of the ten COCO numbers (mean ± std over seeds), paired differences against the first
variant with 95% confidence intervals, each run's image-bootstrap spread and each difference's paired
bootstrap over validation images (how much of an interval is the validation sample, how much is
training, and the seeds and images a +-1.0 / +-0.5 AP interval needs), plots, and JSON/CSV of every run.

    tools/compare_variants.py --config-file configs/Demo/dsanet_conf_synthetic_cpu.py --seeds 3 \\
        --variant 'retinanet: model.head.dsa_levels=[] model.head.with_confidence=False' \\
        --variant 'dsanet_conf:' \\
        --eval-variant 'alpha0.7=dsanet_conf: model.score_fusion_alpha=0.7' \\
        --output output/study  [key=value ...   (applied to every run)]

Seed s sets train.seed=s for every variant (paired). A second invocation with the same output folder
reads the runs that finished and runs only the rest; an interrupted training resumes from its last
checkpoint. A study whose run folders are gone resumes from its kept results.json with
--import-results (those runs keep their numbers, not their detections). A run that fails is reported
by name with its error, and the others go on. The report files are rewritten after every run (runs
not yet made are listed as "pending").
Several invocations may share one output folder: each run is locked while it is made, so none is
made twice, and each invocation waits for the others' runs before its final report.

How far a result moves on another setup (processor, thread count): train the same study there (or with
--threads N) into another folder, then report this one with --import-setup NAME=OTHER/results.json.
Each run records where it was trained (its folder's provenance.json); the replicated runs give a setup
part beside the run noise and validation parts, and the total interval of a difference includes it.
--threads N above the core count runs as many threads as cores, the same setup as that count: two imports
on one recorded setup are refused.
"""
import argparse
import os
from pathlib import Path

import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
from dsanet.errors import UserInputError, exit_with_status_of
from dsanet.evaluation import PAPER_METRICS
from dsanet_lab.provenance import provenance
from dsanet_lab.study import StudyRunner, parse_comparison, parse_eval_variant, parse_variant, plan_runs, write_report
from dsanet_lab.study.report import check_distinct_setups
from dsanet_lab.study.runner import read_study
from dsanet_lab.study.variants import check_variants

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config-file", required=True, help="the base config every variant overrides")
    parser.add_argument("--variant", action="append", default=[], metavar="'NAME: key=value ...'",
                        help="a trained variant (repeat; the first is the baseline)")
    parser.add_argument("--eval-variant", action="append", default=[], metavar="'NAME=SOURCE: key=value ...'",
                        help="evaluate SOURCE's checkpoints with extra overrides, no training (repeat)")
    parser.add_argument("--compare", action="append", default=[], metavar="VARIANT:AGAINST",
                        help="also report VARIANT's paired difference against AGAINST (repeat)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, the same for every variant")
    parser.add_argument("--output", required=True, help="study folder (runs/, results.json, summary.md, plots)")
    parser.add_argument("--import-results", metavar="RESULTS_JSON",
                        help="an earlier study's results.json (same config): its finished runs count as finished "
                             "here, without their detections (for a study whose run folders are gone)")
    parser.add_argument("--import-setup", action="append", default=[], metavar="NAME=RESULTS_JSON",
                        help="another study's results.json with the same config and variants, trained on another "
                             "setup (processor or thread count): its runs replicate this study's and measure how far "
                             "a result moves between setups (repeat)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="intra-op threads of every run (OMP_NUM_THREADS; default: the environment's)")
    parser.add_argument("--num-gpus", type=int, default=1, help="passed to train_net.py")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value overrides for every run")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Run the study; returns the exit status (1 when some run failed)."""
    if args.seeds < 1:
        raise UserInputError(f"--seeds {args.seeds}: need at least 1")
    if not Path(args.config_file).is_file():
        raise UserInputError(f"--config-file {args.config_file}: no such file")
    bad = [o for o in args.opts if "=" not in o]
    if bad:
        raise UserInputError(f"override {bad[0]!r} is not key=value")
    comparisons = [parse_comparison(c) for c in args.compare]
    variants = check_variants([parse_variant(v) for v in args.variant] +
                              [parse_eval_variant(v) for v in args.eval_variant], comparisons)
    output = Path(args.output).resolve()
    seeds = list(range(args.seeds))
    if args.threads is not None and args.threads < 1:
        raise UserInputError(f"--threads {args.threads}: need at least 1")
    env = None if args.threads is None else dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    runner = StudyRunner(train_net=ROOT / "train_net.py", config_file=str(Path(args.config_file).resolve()),
                         common_overrides=args.opts, num_gpus=args.num_gpus, env=env,
                         log=lambda line: print(line, flush=True))
    invocation = provenance()

    def report(runs) -> None:
        write_report(output, config_file=args.config_file, common_overrides=args.opts, variants=variants,
                     seeds=seeds, runs=runs, metrics=PAPER_METRICS, extra_comparisons=comparisons,
                     setup_replicates=replicates, imported_differences=imported_differences, provenance=invocation)

    planned = plan_runs(variants, seeds, output)
    imported_differences, replicates = [], []
    if args.import_results:
        for run in runner.import_finished(planned, variants, Path(args.import_results)):
            print(f"{run.label}: imported from {args.import_results}", flush=True)
        imported_differences = read_study(Path(args.import_results), runner.config_file)[0].get("differences") or []
    for spec in args.import_setup:
        name, _, path = spec.partition("=")
        if not name.strip() or not path:
            raise UserInputError(f"--import-setup {spec!r}: expected NAME=RESULTS_JSON")
        found = runner.import_setup(planned, variants, name.strip(), Path(path))
        print(f"--import-setup {name.strip()}: {len(found)} runs replicated from {path}", flush=True)
        replicates += found
    check_distinct_setups(replicates)
    # The report is rewritten after every run: a study stopped part-way still leaves its tables.
    runs = runner.run_all(planned, variants, after_each=report)
    report(runs)
    print((output / "summary.md").read_text(), flush=True)
    failed = [r.label for r in runs if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)}", flush=True)
    print(f"wrote {output}/results.json, results.csv, summary.md, ap.png, loss_curves.png", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    exit_with_status_of(lambda: main(parse_args()))
