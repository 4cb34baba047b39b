"""The study's interval parts: seeds, validation images, and the setup (machine, thread count)."""
import math

import pytest

from dsanet_lab.study.stats import decompose_interval, paired_difference, setup_spread


def test_setup_spread_pools_deviations_within_groups_only():
    # Two seeds, each trained on two setups: the seeds' own levels (76 vs 80) must not count.
    spread = setup_spread({0: {"t1": 76.0, "t2": 76.4}, 1: {"t1": 80.0, "t2": 80.2}, 2: {"t1": 90.0}})
    expected_sd = math.sqrt((0.2 ** 2 * 2 + 0.1 ** 2 * 2) / 2)
    assert spread["sd"] == pytest.approx(expected_sd)
    assert spread["half"] == pytest.approx(1.959964 * expected_sd, rel=1e-6)
    assert spread["max_shift"] == pytest.approx(0.4)
    assert spread["groups"] == 2 and spread["dof"] == 2 and spread["setups"] == ["t1", "t2"]


def test_setup_spread_is_none_without_a_replicated_group():
    assert setup_spread({0: {"t1": 76.0}, 1: {"t1": 77.0, "t2": math.nan}}) is None


def test_the_setup_part_widens_the_total_interval_in_quadrature():
    t_interval = paired_difference({0: 78.0, 1: 78.4, 2: 78.2}, {0: 76.5, 1: 76.7, 2: 76.8})
    without = decompose_interval(t_interval, {"std": 0.1}, 2000)
    setup = setup_spread({0: {"t1": 1.5, "t2": 1.0}})
    with_setup = decompose_interval(t_interval, {"std": 0.1}, 2000, setup=setup)
    assert without["setup_half"] is None
    assert with_setup["setup_half"] == pytest.approx(setup["half"])
    assert with_setup["total_half"] == pytest.approx(math.hypot(without["total_half"], setup["half"]))
    assert with_setup["total_low"] < without["total_low"] and with_setup["total_high"] > without["total_high"]
