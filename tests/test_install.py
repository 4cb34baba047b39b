"""Installing into an existing detectron2 environment, as the README describes: a fresh virtual
environment that already has torch and detectron2, `pip install` of this checkout (non-editable, so the
packaged configs are what runs), then the entry point, the model zoo and a one-iteration training run
from another working directory."""
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", ".venv-d2src", "output", "build", "dist", "__pycache__", ".pytest_cache"}


def copy_checkout(target: Path) -> Path:
    """The tracked files of this checkout (every file outside outputs and environments without git)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        files = [name for name in names.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [str(path.relative_to(REPO)) for path in REPO.rglob("*")
                 if path.is_file() and not SKIP.intersection(path.relative_to(REPO).parts)]
    for name in files:
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of the new environment, its environment variables, a working directory outside the checkout)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("an offline install (--no-index --no-build-isolation) needs setuptools in this environment")
    root = tmp_path_factory.mktemp("install")
    checkout = copy_checkout(root / "checkout")
    env_dir = root / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    new_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    # The environment "that already has torch and detectron2": this interpreter's site-packages, listed
    # after the new environment's own (its .pth files, such as an editable dsanet, are not processed).
    (new_site / "existing_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", DSANET_CACHE=str(root / "cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    pip = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--ignore-installed", str(checkout)], capture_output=True, text=True, env=env, cwd=root)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return python, env, elsewhere, checkout


def run(installed, *args, timeout=600):
    python, env, elsewhere, _ = installed
    return subprocess.run([str(python), *args], capture_output=True, text=True, env=env, cwd=elsewhere, timeout=timeout)


def test_the_new_install_is_what_imports(installed):
    python, *_ = installed
    result = run(installed, "-c", "import dsanet, detectron2, torch; print(dsanet.__file__)")
    assert result.returncode == 0, result.stderr[-3000:]
    assert Path(result.stdout.strip()).is_relative_to(python.parent.parent), result.stdout


def test_train_net_help(installed):
    _, _, _, checkout = installed
    result = run(installed, str(checkout / "train_net.py"), "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--config-file" in result.stdout and "--num-gpus" in result.stdout


def test_model_zoo_finds_the_packaged_configs(installed):
    python, *_ = installed
    code = ("from dsanet import model_zoo; import json; "
            "path = model_zoo.get_config_file('COCO-Detection/dsanet_conf_R_50_FPN_1x.py'); "
            "cfg = model_zoo.get_config('COCO-Detection/dsanet_conf_R_50_FPN_1x.py'); "
            "print(json.dumps([path, cfg.model.head.with_confidence, list(cfg.model.head.dsa_levels)]))")
    result = run(installed, "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    path, with_confidence, levels = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(path).is_relative_to(python.parent.parent)
    assert with_confidence is True and levels == ["p4", "p5", "p6", "p7"]


def test_one_iteration_of_the_demo_config(installed):
    python, _, elsewhere, checkout = installed
    config = run(installed, "-c", "from dsanet import model_zoo; print(model_zoo.get_config_file('Demo/dsanet_conf_synthetic_cpu.py'))")
    assert config.returncode == 0, config.stderr[-3000:]
    config_file = config.stdout.strip().splitlines()[-1]
    assert Path(config_file).is_relative_to(python.parent.parent)
    output = elsewhere / "one_iteration"
    result = run(installed, str(checkout / "train_net.py"), "--config-file", config_file,
                 "dataloader.synthetic.num_train=8", "dataloader.synthetic.num_val=4", "train.max_iter=1",
                 f"train.output_dir={output}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (output / "model_final.pth").is_file()
    metrics = json.loads((output / "inference" / "coco_eval_results.json").read_text())
    assert "AP" in metrics["bbox"]
