"""tools/make_wheelhouse.py: the project's and detectron2's wheels install with ``--no-index`` into a
fresh environment that already has torch, and the project runs from them.

Covered offline: the dsanet wheel (configs included) and the detectron2 wheel (``--detectron2
installed``: the pure-Python package this interpreter imports), installed ``--no-deps`` into a new
venv that reaches torch and the other requirements through a .pth file to the running environment;
``__file__`` proves the venv's own copies are the ones imported. Not covered here (it needs PyPI):
the download of the other requirements for a named Python and platform, and the ``sdist`` source
of detectron2.
"""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from conftest import ROOT


def _env() -> dict:
    # Nothing of the checkout on the path: the wheels must provide dsanet and its configs.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_FIND_LINKS", "PIP_INDEX_URL")}
    return dict(env, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_wheelhouse.py"), "--output", str(folder),
                    "--no-download", "--detectron2", "installed"], check=True, capture_output=True, env=_env(),
                   timeout=600)
    return folder


def test_the_folder_holds_the_two_pure_python_wheels(wheelhouse):
    names = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert len(names) == 2, names
    assert names[0].startswith("detectron2-") and names[1].startswith("dsanet-")
    assert all(name.endswith("-py3-none-any.whl") for name in names)


def test_the_wheels_install_offline_into_a_fresh_venv_and_the_project_runs(wheelhouse, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # torch and the requirements, from the running environment, after the venv's own site-packages.
    (site / "running_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
                              "--find-links", str(wheelhouse), "--no-deps", "--ignore-installed", "dsanet", "detectron2"],
                             capture_output=True, text=True, env=_env(), timeout=600)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]

    code = "\n".join([
        "import dsanet, detectron2",
        "from dsanet import compat, model_zoo",
        "print(dsanet.__file__); print(detectron2.__file__)",
        "model = model_zoo.get('COCO-Detection/dsanet_conf_R_50_FPN_1x.py', device='cpu')",
        "print(type(model).__name__, compat.has_compiled_ops())",
    ])
    result = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, env=_env(),
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    dsanet_file, detectron2_file, built = result.stdout.strip().splitlines()
    assert dsanet_file.startswith(str(site)) and detectron2_file.startswith(str(site))
    assert built == "DSANet False"

    # The offline machine's next command runs from these wheels (without CUDA: one line, non-zero exit).
    check = subprocess.run([str(python), str(ROOT / "tools" / "gpu_check.py")], cwd=ROOT, capture_output=True,
                           text=True, env=_env(), timeout=300)
    if not torch.cuda.is_available():
        assert check.returncode == 3 and "no CUDA device" in check.stderr, check.stderr[-2000:]
