"""Paired, multi-seed comparison of model variants through train_net.py (tools/compare_variants.py).

- :mod:`.variants`: what a variant is and how one is written on the command line;
- :mod:`.runner`: the runs (train or evaluate each variant with each seed), resumable; :mod:`.locks`: one lock per run;
- :mod:`.bootstrap`: how much the validation sample moves a run's AP and a difference (image bootstrap);
- :mod:`.stats`: mean, std and paired t-intervals over seeds, and an interval split into its parts;
- :mod:`.noise`: one model of the noise (effect + setup part + run noise) over runs on several setups;
- :mod:`.report`: results.json, results.csv, summary.md and the plots.
"""
from .report import write_report
from .runner import Run, StudyRunner, plan_runs
from .stats import paired_difference, summarize, t_quantile_975
from .variants import Variant, parse_comparison, parse_eval_variant, parse_variant

__all__ = ["Variant", "parse_variant", "parse_eval_variant", "parse_comparison", "Run", "plan_runs",
           "StudyRunner", "summarize", "paired_difference", "t_quantile_975", "write_report"]
