"""benchmarks/compare_studies.py: the same variants trained two ways, paired seed by seed."""
import json
from pathlib import Path

import pytest

from benchmarks import compare_studies
from dsanet.errors import UserInputError


def _study(path: Path, runs) -> Path:
    """A results.json as tools/compare_variants.py writes it, with the fields the script reads."""
    path.write_text(json.dumps({"runs": [
        {"variant": v, "seed": s, "seconds": sec, "error": "",
         "metrics": {"AP": ap, "AP50": ap + 10, "AP75": ap + 5}} for v, s, ap, sec in runs]}))
    return path


def _run(*args):
    compare_studies.main([str(a) for a in args])


def test_pairs_each_seed_and_gives_the_paired_interval_of_second_minus_first(tmp_path, capsys):
    first = _study(tmp_path / "fp32.json", [("retinanet", 0, 76.0, 900), ("retinanet", 1, 77.0, 1000),
                                             ("retinanet", 2, 75.0, 950)])
    # seed 2 is missing from the second study: only seeds 0 and 1 are paired
    second = _study(tmp_path / "bf16.json", [("retinanet_bf16", 0, 76.5, 600), ("retinanet_bf16", 1, 77.3, 700)])
    _run("--first", first, "--second", second, "--pair", "retinanet=retinanet_bf16", "--output", tmp_path / "out.json")
    row = json.loads((tmp_path / "out.json").read_text())["rows"][0]
    assert row["seeds"] == [0, 1]
    ap = row["differences"]["AP"]
    assert ap["mean"] == pytest.approx(0.4) and ap["n"] == 2
    # t(0.975, 1) = 12.706, sd of (0.5, 0.3) = 0.1414: half-width 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert ap["ci_high"] - ap["mean"] == pytest.approx(1.2706, abs=1e-3)
    assert row["seconds"] == {"first": 950, "second": 650}
    assert "| retinanet_bf16 - retinanet | 2 " in capsys.readouterr().out


def test_a_variant_missing_from_a_study_is_named(tmp_path):
    study = _study(tmp_path / "a.json", [("retinanet", 0, 76.0, 900)])
    with pytest.raises(UserInputError, match=r"'dsanet' has no finished run in the --second study \(it has: retinanet\)"):
        _run("--first", study, "--second", study, "--pair", "retinanet=dsanet")
    with pytest.raises(UserInputError, match="none.json: not a study's results.json"):
        _run("--first", tmp_path / "none.json", "--second", study, "--pair", "a=b")
    with pytest.raises(UserInputError, match="expected FIRST_VARIANT=SECOND_VARIANT"):
        _run("--first", study, "--second", study, "--pair", "retinanet")
