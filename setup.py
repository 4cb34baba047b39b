"""Ships the repository's top-level ``configs/`` inside the package as ``dsanet/configs``, the way
detectron2 ships its model-zoo configs, so a non-editable install (``pip install .``, a wheel)
can still ``dsanet.model_zoo.get_config(...)``. Everything else is declared in setup.cfg."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildPyWithConfigs(build_py):
    """build_py that also copies configs/**/*.py into the built package (not needed for editable
    installs, where ``dsanet.model_zoo`` reads the source tree's configs/ directly)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "dsanet" / "configs"
        if target.exists():
            shutil.rmtree(target)
        for source in CONFIGS.rglob("*.py"):
            destination = target / source.relative_to(CONFIGS)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


setup(cmdclass={"build_py": BuildPyWithConfigs})
