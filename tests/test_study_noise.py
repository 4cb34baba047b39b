"""One model of a study's noise (effect + setup part + run noise), and the difference's interval built on it."""
import math

import pytest

from dsanet_lab.study.noise import difference_by_setup, noise_model, rerun_half
from dsanet_lab.study.stats import decompose_interval, paired_difference, t_quantile_975


def test_one_setup_gives_the_paired_t_interval_over_its_seeds():
    d = {0: 1.5, 1: 1.7, 2: 1.4, 3: 0.9}
    t = paired_difference(d, {s: 0.0 for s in d})
    model = noise_model({"this": d})
    assert model["mean"] == pytest.approx(t["mean"])
    assert (model["low"], model["high"]) == pytest.approx((t["ci_low"], t["ci_high"]))
    assert model["setup_sd"] is None and model["runs"] == 4 and model["dof"] == 3


def test_setups_that_disagree_beyond_run_noise_widen_the_interval_to_their_own_few_dof():
    # Two setups of three runs, one unit apart, runs 0.2 apart: the setup part dominates and only
    # S - 1 = 1 dof speak for it (balanced: variance MSB / N).
    model = noise_model({"a": {0: 1.0, 1: 1.2, 2: 0.8}, "b": {0: 2.0, 1: 2.2, 2: 1.8}})
    msw, msb = 0.04, 1.5
    assert model["run_sd"] == pytest.approx(math.sqrt(msw))
    assert model["setup_sd"] == pytest.approx(math.sqrt((msb - msw) / 3))
    assert model["dof"] == pytest.approx(1.0)
    assert model["half"] == pytest.approx(t_quantile_975(1) * math.sqrt(msb / 6))
    assert model["mean"] == pytest.approx(1.5)


def test_setups_that_agree_within_run_noise_pool_their_runs():
    same = {"a": {0: 1.0, 1: 1.4, 2: 0.6}, "b": {0: 1.1, 1: 0.7}}
    model = noise_model(same)
    one_setup = noise_model({"a": same["a"]})
    assert model["setup_sd"] == 0.0 and model["runs"] == 5 and model["dof"] == 3
    assert model["mean"] == pytest.approx(4.8 / 5)
    assert model["half"] < one_setup["half"]  # two more runs, no setup part
    assert rerun_half(model) > model["half"]


def test_single_runs_on_several_setups_cannot_tell_run_noise_from_the_setup_part():
    assert noise_model({"a": {0: 1.0}, "b": {0: 1.5}, "c": {0: math.nan, 1: 2.0}}) is None


def test_a_difference_pairs_seeds_within_each_setup_only():
    table = {"v": {"a": {0: 80.0, 1: 81.0}, "b": {0: 79.0}}, "base": {"a": {0: 78.0, 1: 78.5}, "b": {1: 77.0}}}
    assert difference_by_setup(table, "v", "base") == {"a": {0: 2.0, 1: 2.5}, "b": {}}


def test_the_validation_part_joins_the_training_part_in_quadrature():
    model = noise_model({"a": {0: 1.5, 1: 1.7, 2: 1.4}, "b": {0: 1.6, 1: 1.2}})
    parts = decompose_interval(model, {"std": 0.1}, 2000)
    assert parts["training_half"] == pytest.approx(model["half"])
    assert parts["total_half"] == pytest.approx(math.hypot(model["half"], 1.959964 * 0.1), rel=1e-6)
    assert parts["total_low"] == pytest.approx(model["mean"] - parts["total_half"])
    assert decompose_interval(None, {"std": 0.1}, 2000) is None


def test_chi2_cdf_matches_its_closed_form_and_table_quantiles():
    from dsanet_lab.study.stats import chi2_cdf

    assert chi2_cdf(0.5, 2) == pytest.approx(1 - math.exp(-0.25))
    assert chi2_cdf(3.841, 1) == pytest.approx(0.95, abs=1e-4)
    assert chi2_cdf(11.070, 5) == pytest.approx(0.95, abs=1e-4)
    assert chi2_cdf(0.0, 3) == 0.0


def test_setups_needed_follow_the_setup_part_and_not_the_seeds():
    from dsanet_lab.study.noise import setups_for_half

    # setup sd 1, no run noise: t(0.975, S-1) / sqrt(S) <= 1 first at S = 7 (2.447 / 2.646; S = 6: 2.571 / 2.449).
    only_setups = {"setup_sd": 1.0, "run_sd": 0.0}
    assert setups_for_half(only_setups, 1.0) == 7
    assert setups_for_half(only_setups, 1.0, seeds_per_setup=20) == 7  # more seeds per setup do not help
    assert setups_for_half({"setup_sd": 2.0, "run_sd": 0.0}, 1.0) > 7
    assert setups_for_half({"setup_sd": 1.0, "run_sd": 0.0}, 1.0, validation_half=0.5) > 7
    assert setups_for_half({"setup_sd": None, "run_sd": 0.5}, 1.0) is None  # one setup: not measured
    assert setups_for_half(only_setups, 1.0, validation_half=1.0) is None
