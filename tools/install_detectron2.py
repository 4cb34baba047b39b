#!/usr/bin/env python
"""Install detectron2 into the running interpreter's environment, the best way this machine allows.

With ``--source PATH`` (a detectron2 source tree, as a folder or a ``.tar.gz`` of one, e.g. a
``git archive`` of detectron2 main): build that, C++ CPU ops included, replacing any detectron2
already installed. This is how the suite is run against another detectron2 (``make test D2_SRC=PATH``).

Otherwise, in order of preference:
  1. a detectron2 that is already importable (kept as it is);
  2. the official source build from GitHub, which compiles the C++/CUDA ops (what GPU users want),
     tried only when GitHub answers;
  3. the PyPI sdist ``pb1-detectron2==0.6``, checked against a pinned sha256, whose pure-Python
     ``detectron2`` package is installed on its own (its setup.py cannot build: it lacks the C++
     sources). ``dsanet.compat`` makes that package run on today's torch, numpy and Pillow.

It ends by printing which detectron2 is installed, from where, and whether the compiled ops are present.
Run it with the interpreter of the target environment: ``.venv/bin/python tools/install_detectron2.py``.
"""
import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import urllib.request
from pathlib import Path

GITHUB_SOURCE = "git+https://github.com/facebookresearch/detectron2.git"
SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"


def pip(*args: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", *args])


def detectron2_is_importable() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def github_reachable(timeout_s: float = 5.0) -> bool:
    try:
        urllib.request.urlopen("https://github.com", timeout=timeout_s)
        return True
    except Exception:
        return False


def install_from_github() -> None:
    # Builds detectron2._C against the installed torch; needs a compiler (and nvcc for CUDA ops).
    pip("install", "--no-build-isolation", GITHUB_SOURCE)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_pure_python_sdist(workdir: Path) -> None:
    pip("install", "--no-deps", "--no-build-isolation", str(pure_python_sdist_package(workdir)))


def pure_python_sdist_package(workdir: Path) -> Path:
    """Downloads the sdist into ``workdir``, checks its sha256, and returns a folder that pip builds
    into a wheel holding only its pure-Python ``detectron2`` (see :func:`pure_python_package`)."""
    # pip prepares the sdist's metadata by running its setup.py, which imports torch: hence
    # --no-build-isolation (torch is installed in this environment already).
    pip("download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:",
        "-d", str(workdir), f"{SDIST_NAME}=={SDIST_VERSION}")
    (sdist,) = workdir.glob(f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz")
    actual = sha256_of(sdist)
    if actual != SDIST_SHA256:
        sys.exit(f"error: {sdist.name} has sha256 {actual}, expected {SDIST_SHA256}; not installing it")
    with tarfile.open(sdist) as tar:
        tar.extractall(workdir, filter="data")
    source = workdir / f"{SDIST_NAME}-{SDIST_VERSION}" / "detectron2"
    return pure_python_package(source, workdir / "detectron2-pure-python", SDIST_VERSION,
                               f"pure-Python part of the {SDIST_NAME} sdist")


def pure_python_package(source: Path, package_root: Path, version: str, origin: str) -> Path:
    """A minimal package at ``package_root`` holding only the pure-Python ``detectron2`` folder
    ``source`` (with its model-zoo configs), for ``pip install`` or ``pip wheel``."""
    shutil.copytree(source, package_root / "detectron2",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    (package_root / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "detectron2"
        version = "{version}"
        description = "detectron2 {version}, {origin} (no compiled ops)"

        [tool.setuptools.packages.find]
        include = ["detectron2*"]

        [tool.setuptools.package-data]
        "*" = ["**/*.yaml", "**/*.py"]
        """))
    return package_root


def install_from_source(source: Path, workdir: Path) -> None:
    """Build and install detectron2 from a source tree (folder or .tar.gz), compiling its ops.

    Without CUDA its setup.py builds the CPU ops only. ``--no-deps``: the project's own
    requirements (``make setup``) already hold detectron2's run-time ones, and main's list also
    pins tools (black) that the suite does not use.
    """
    if not source.exists():
        sys.exit(f"error: --source {source}: no such file or folder")
    if source.is_file():
        if not tarfile.is_tarfile(source):
            sys.exit(f"error: --source {source}: neither a folder nor a tar archive")
        with tarfile.open(source) as tar:
            tar.extractall(workdir, filter="data")
        roots = [p.parent for p in workdir.glob("**/setup.py") if (p.parent / "detectron2").is_dir()]
        if not roots:
            sys.exit(f"error: --source {source}: no detectron2 setup.py inside")
        source = min(roots, key=lambda p: len(p.parts))
    elif not (source / "setup.py").is_file():
        sys.exit(f"error: --source {source}: no setup.py in this folder")
    if detectron2_is_importable():
        pip("uninstall", "--yes", "detectron2")
    # A wheel, not an editable install: the extracted tree is temporary.
    pip("install", "--no-deps", "--no-build-isolation", str(source))


def report() -> None:
    code = textwrap.dedent("""\
        import importlib.util, os, detectron2
        from importlib.metadata import PackageNotFoundError, distribution
        try:
            dist = distribution("detectron2")
            source = dist.metadata.get("Summary") or dist.metadata["Name"]
        except PackageNotFoundError:
            source = "not installed by pip"
        compiled = importlib.util.find_spec("detectron2._C") is not None
        print(f"detectron2 {detectron2.__version__} at {os.path.dirname(detectron2.__file__)}")
        print(f"  from: {source}")
        print(f"  compiled ops (detectron2._C): {'present' if compiled else 'absent'}")
        """)
    subprocess.check_call([sys.executable, "-c", code])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force-sdist", action="store_true",
                        help="skip the GitHub build and install the pure-Python sdist")
    parser.add_argument("--source", type=Path, default=None,
                        help="build this detectron2 source tree (folder or .tar.gz) instead, with its ops")
    args = parser.parse_args()
    if args.source is not None:
        print(f"building detectron2 from {args.source}")
        with tempfile.TemporaryDirectory() as tmp:
            install_from_source(args.source.resolve(), Path(tmp))
    elif detectron2_is_importable():
        print("detectron2 is already importable: keeping it")
    elif not args.force_sdist and github_reachable():
        print(f"GitHub answers: building detectron2 from {GITHUB_SOURCE}")
        install_from_github()
    else:
        print(f"GitHub is out of reach: installing the pure-Python part of {SDIST_NAME}=={SDIST_VERSION}")
        with tempfile.TemporaryDirectory() as tmp:
            install_pure_python_sdist(Path(tmp))
    report()


if __name__ == "__main__":
    main()
