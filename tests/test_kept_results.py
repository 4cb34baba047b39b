"""Every kept result says what it depends on: the command, the date and the machine that made it.

A result made by the project's tools carries ``dsanet_lab.provenance.provenance()``; the few kept files made
before results recorded it carry what the repository itself records about them and say so
(``recorded_after_the_run``). A new results file without a machine record fails here, by name."""
import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
KEPT = sorted(RESULTS.rglob("*.json"))


def test_there_are_kept_results():
    assert len(KEPT) >= 10


@pytest.mark.parametrize("path", KEPT, ids=lambda p: str(p.relative_to(RESULTS)))
def test_a_kept_result_records_command_date_and_machine(path):
    data = json.loads(path.read_text())
    provenance = data.get("provenance")
    assert provenance, f"{path}: no provenance record (dsanet_lab.provenance.provenance())"
    assert provenance.get("date"), f"{path}: provenance without a date"
    if provenance.get("recorded_after_the_run"):
        return  # made before results recorded themselves: only what the repository records about it
    assert provenance.get("command"), f"{path}: provenance without the command that made it"
    machine = provenance.get("machine")
    assert machine and machine.get("cpu", {}).get("model_name") and machine.get("libraries", {}).get("torch"), (
        f"{path}: no machine record (processor, libraries, threads) in its provenance")
    assert "torch_threads" in machine, f"{path}: the machine record lacks the thread count"

