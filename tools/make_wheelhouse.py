#!/usr/bin/env python
"""Write a folder of wheels that sets this project up on a machine that has torch but no network.

On a machine with network (any OS; the wheels are chosen for the target's Python and platform):

    python tools/make_wheelhouse.py --output wheelhouse --python-version 3.12 --platform manylinux_2_28_x86_64

On the offline machine, with torch and torchvision already installed there:

    python -m pip install --no-index --find-links wheelhouse dsanet detectron2 pytest
    python tools/gpu_check.py

The folder holds:
- ``dsanet-*.whl``: this project (configs included), built from this checkout;
- ``detectron2-*.whl``: by default the pure-Python detectron2 v0.6 of the PyPI sdist that
  ``make setup`` installs where GitHub is out of reach (tools/install_detectron2.py: sha256-checked;
  no compiled ops, which the project does not need); ``--detectron2 PATH`` builds a source tree
  instead (a folder or .tar.gz, e.g. a git archive of detectron2 main), compiling its ops against
  this machine's torch, so run that on a machine like the target (same Python, torch and CUDA);
  ``--detectron2 installed`` packages the pure-Python detectron2 this interpreter imports;
- every other requirement of the project beyond torch/torchvision, plus pytest (for the suite's
  CUDA tests), downloaded as binary wheels for ``--python-version`` and ``--platform``. Two of them
  exist on PyPI only as pure-Python sdists (:data:`PURE_PYTHON_SDISTS`): they are built here into
  ``py3-none-any`` wheels first, which install anywhere.

``--no-download`` writes only the project's and detectron2's wheels (no network needed with
``--detectron2 installed`` or a source tree).
"""
import argparse
import configparser
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import install_detectron2  # noqa: E402  (the sdist download, its sha256 and the pure-Python package)

ROOT = Path(__file__).resolve().parents[1]
# What the project's wheel is built from (copied, so that the build leaves nothing in the checkout).
PROJECT_SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "configs", "projects")
# Installed on the target already, from its own CUDA build.
PROVIDED_BY_TARGET = ("torch", "torchvision")
EXTRA_REQUIREMENTS = ("pytest>=7",)  # tools/gpu_check.py runs the suite's CUDA tests
# Requirements (direct or not) that PyPI holds only as sdists; all pure Python.
PURE_PYTHON_SDISTS = ("fvcore>=0.1.5", "antlr4-python3-runtime==4.9.*")  # antlr: hydra-core 1.x pins 4.9
DEFAULT_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def project_requirements() -> List[str]:
    """setup.cfg's install_requires without what the target provides, plus :data:`EXTRA_REQUIREMENTS`."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = [line.split("#")[0].strip() for line in parser["options"]["install_requires"].splitlines()]
    names = [line for line in lines if line]
    kept = [r for r in names if re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() not in PROVIDED_BY_TARGET]
    return kept + list(EXTRA_REQUIREMENTS)


def build_project_wheel(output: Path, work: Path) -> Path:
    source = work / "dsanet-source"
    source.mkdir()
    for name in PROJECT_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(output), str(source))
    return _one(output, "dsanet-*.whl")


def build_detectron2_wheel(output: Path, work: Path, which: str) -> Path:
    """The detectron2 wheel: "sdist" (PyPI's pure-Python v0.6), "installed", or a source tree's path."""
    if which == "sdist":
        package = install_detectron2.pure_python_sdist_package(work)
    elif which == "installed":
        import detectron2

        folder = Path(detectron2.__file__).parent
        if any(folder.glob("_C*")):
            sys.exit(f"error: --detectron2 installed: {folder} has compiled ops built for this machine; "
                     "pass its source tree (--detectron2 PATH) on a machine like the target instead")
        package = install_detectron2.pure_python_package(folder, work / "detectron2-installed", detectron2.__version__,
                                                         f"pure-Python package as installed at {folder}")
    else:
        source = Path(which).resolve()
        if not source.exists():
            sys.exit(f"error: --detectron2 {which}: no such file or folder")
        package = source  # pip builds a folder or an archive of one alike; setup.py compiles the ops
    _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(output), str(package))
    return _one(output, "detectron2-*.whl")


def download_requirements(output: Path, python_version: str, platforms: List[str]) -> None:
    """Binary wheels of :func:`project_requirements` and their dependencies for the target; the
    sdist-only ones are built into pure-Python wheels first and found in ``output`` by pip."""
    _pip("wheel", "-q", "--no-deps", "--no-binary", ":all:", "-w", str(output), *PURE_PYTHON_SDISTS)
    impure = [p.name for p in output.glob("*.whl") if not p.name.endswith("-none-any.whl")]
    if impure:
        sys.exit(f"error: {', '.join(impure)}: expected pure-Python wheels (py3-none-any)")
    abi = "cp" + python_version.replace(".", "")
    platform_args = [arg for platform in platforms for arg in ("--platform", platform)]
    _pip("download", "-q", "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
         "--abi", abi, "--abi", "abi3", "--abi", "none", *platform_args, "--find-links", str(output),
         "-d", str(output), *project_requirements())


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        sys.exit(f"error: expected one {pattern} in {folder}, found {[p.name for p in found]}")
    return found[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("wheelhouse"), help="the folder to write (created)")
    parser.add_argument("--python-version", default="3.12", help="the target's Python, e.g. 3.12")
    parser.add_argument("--platform", action="append", default=None,
                        help=f"a wheel platform tag of the target, repeatable (default: {' '.join(DEFAULT_PLATFORMS)})")
    parser.add_argument("--detectron2", default="sdist",
                        help='"sdist" (default), "installed", or a detectron2 source folder or .tar.gz')
    parser.add_argument("--no-download", action="store_true", help="only the project's and detectron2's wheels")
    args = parser.parse_args(argv)
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    for old in [*output.glob("dsanet-*.whl"), *output.glob("detectron2-*.whl")]:
        old.unlink()  # a wheel of an older checkout would make pip's choice ambiguous
    with tempfile.TemporaryDirectory(prefix="wheelhouse_") as work:
        project = build_project_wheel(output, Path(work))
        detectron2 = build_detectron2_wheel(output, Path(work), args.detectron2)
    if not args.no_download:
        download_requirements(output, args.python_version, args.platform or list(DEFAULT_PLATFORMS))
    print(f"{output}: {len(list(output.glob('*.whl')))} wheels ({project.name}, {detectron2.name}, ...)")
    print("On the offline machine (torch and torchvision installed):")
    print(f"  python -m pip install --no-index --find-links {args.output} dsanet detectron2 pytest")
    print("  python tools/gpu_check.py")


if __name__ == "__main__":
    main()
