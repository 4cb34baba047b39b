"""What a newcomer's first two commands cost: ``make setup`` and ``make demo`` timed in a fresh clone, and
what ``make setup`` installs (the wheels pip fetches for it, and the environment's size on disk).

    git clone REPO /tmp/fresh
    python -m benchmarks.make_targets setup --clone /tmp/fresh   # -> benchmarks/results/demo/make_setup.json
    python -m benchmarks.make_targets demo --clone /tmp/fresh    # -> benchmarks/results/demo/make_demo.json

``setup`` downloads the same requirements into a temporary folder with ``pip download`` (the packages that
``make setup`` installs, from the same indexes) and sums their sizes; a machine whose pip finds some wheels
locally reports them at their full size all the same. ``demo`` reads the AP it printed from the evaluation
results that ``train_net.py`` writes in ``output/demo``.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from dsanet.evaluation import PAPER_METRICS, RESULTS_FILE
from dsanet.fileio import write_json
from benchmarks.machine import busy_cores
from dsanet_lab.provenance import provenance

RESULTS = Path(__file__).resolve().parent / "results" / "demo"


def timed_make(target: str, clone: Path) -> float:
    """Run ``make TARGET`` in ``clone``; returns its wall-clock seconds (raises when it fails)."""
    start = time.monotonic()
    subprocess.run(["make", target], cwd=clone, check=True)
    return time.monotonic() - start


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links not followed)."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def setup_requirements(clone: Path) -> List[str]:
    """What ``make setup`` asks pip for: the Makefile's torch pair and the project with its test extra."""
    makefile = (clone / "Makefile").read_text()
    torch_packages = re.search(r"^TORCH_PACKAGES \?= (.+)$", makefile, re.M).group(1).split()
    return [*torch_packages, f"{clone}[test]"]


def download_bytes(requirements: List[str], python: Path) -> int:
    """Bytes of the files ``pip download`` fetches for ``requirements`` (dependencies included)."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([str(python), "-m", "pip", "download", "-q", "-d", folder, *requirements], check=True)
        return folder_bytes(Path(folder))


def measure_setup(clone: Path) -> Dict:
    wall = timed_make("setup", clone)
    python = clone / ".venv" / "bin" / "python"
    return {"command": "make setup", "wall_seconds": round(wall, 1),
            "download_bytes": download_bytes(setup_requirements(clone), python),
            "venv_bytes": folder_bytes(clone / ".venv")}


def measure_demo(clone: Path) -> Dict:
    wall = timed_make("demo", clone)
    results = json.loads(next((clone / "output" / "demo").rglob(RESULTS_FILE)).read_text())
    bbox = results.get("bbox", results)
    return {"command": "make demo", "wall_seconds": round(wall, 1),
            "metrics": {m: round(float(bbox[m]), 2) for m in PAPER_METRICS}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=["setup", "demo"])
    parser.add_argument("--clone", type=Path, required=True, help="a fresh clone of the repository")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for make_<target>.json")
    args = parser.parse_args(argv)
    busy = busy_cores()  # other processes' load when it started: a wall time on a busy machine is longer
    record = (measure_setup if args.target == "setup" else measure_demo)(args.clone.resolve())
    record["provenance"] = provenance()
    record["provenance"].update(threads_env=os.environ.get("OMP_NUM_THREADS"), busy_cores_at_start=busy)
    path = write_json(args.output / f"make_{args.target}.json", record)
    print(json.dumps({k: v for k, v in record.items() if k != "provenance"}))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
