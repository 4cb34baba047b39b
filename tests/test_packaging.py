"""A non-editable install ships the configs: from a wheel installed outside the source tree, from
any working directory, model_zoo finds, loads and builds them (relative imports included)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The project's wheel, built as the offline wheel folder builds it (from a copy of the sources, so the
    build leaves nothing in the checkout) and installed into a bare folder."""
    work = tmp_path_factory.mktemp("wheel")
    wheel = load_script("tools/make_wheelhouse.py").build_project_wheel(work / "dist", work)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    site = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    shutil.rmtree(work / "dsanet-source")  # nothing of the source tree is left to fall back on
    return site


def test_the_wheel_ships_every_config(installed_wheel):
    shipped = {p.relative_to(installed_wheel / "dsanet" / "configs") for p in (installed_wheel / "dsanet" / "configs").rglob("*.py")}
    in_tree = {p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.py")}
    assert shipped == in_tree


def test_model_zoo_works_from_an_installed_wheel_anywhere(installed_wheel, tmp_path):
    code = "\n".join([
        "import dsanet, torch",
        "from dsanet import model_zoo",
        "assert dsanet.__file__.startswith(SITE), dsanet.__file__",
        "path = model_zoo.get_config_file('COCO-Detection/dsanet_conf_R_50_FPN_1x.py')",
        "assert path.startswith(SITE), path",
        "cfg = model_zoo.get_config('COCO-Detection/dsanet_conf_R_50_FPN_1x.py')  # relative imports",
        "ablation = model_zoo.get_config('Ablations/dsanet_p3half_k3_R_50_FPN_1x.py')  # LazyConfig.load_rel",
        "custom = model_zoo.get_config('Custom/dsanet_conf_small_custom_cpu.py')  # load_rel of the demo",
        "model = model_zoo.get('COCO-Detection/dsanet_R_50_FPN_1x.py', device='cpu')",
        "trained = model_zoo.get('Demo/dsanet_conf_synthetic_cpu.py', trained=True, device='cpu')  # shipped weights",
        "assert model_zoo.trained_weights('Demo/dsanet_conf_synthetic_cpu.py').startswith(SITE)",
        "print(cfg.model.head.with_confidence, ablation.model.head.dsa_levels.p3, custom.model.num_classes,",
        "      type(model).__name__, trained.training)",
    ])
    env = dict(os.environ, PYTHONPATH=str(installed_wheel), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-c", f"SITE = {str(installed_wheel)!r}\n{code}"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["True", "self_half_k3", "1", "DSANet", "False"]
