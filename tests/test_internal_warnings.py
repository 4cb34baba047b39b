"""The project's commands print no warning about the internals of torch, fvcore or detectron2, and
still show a warning that comes from elsewhere (dsanet.internal_warnings)."""
import os
import subprocess
import sys

from conftest import ROOT


def _environment(cache) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "DSANET_ALL_WARNINGS")}
    return dict(env, DSANET_CACHE=str(cache), OMP_NUM_THREADS="1")


def _warning_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "Warning" in line or "warnings.warn" in line]


def test_demo_and_export_commands_print_no_internal_warning(trained_demo, tmp_path):
    """demo/demo.py imports fvcore (which scripts at import) and runs detectron2's anchor generator
    (torch.meshgrid); export_model.py traces and loads TorchScript. None of it reaches stderr."""
    env = _environment(trained_demo.cache)
    weights = ["--config-file", str(trained_demo.config), "--weights", str(trained_demo.weights)]
    demo = subprocess.run([sys.executable, "demo/demo.py", *weights, "--input", str(trained_demo.images[0]),
                           "--output", str(tmp_path / "demo")], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert _warning_lines(demo.stderr) == []
    export = subprocess.run([sys.executable, "tools/export_model.py", *weights, "--output", str(tmp_path / "export"),
                             "--format", "torchscript", "--input", str(trained_demo.images[1]), "--repeats", "1"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert export.returncode == 0, export.stderr[-2000:]
    assert _warning_lines(export.stderr) == []
    assert "torchscript" in export.stdout and "OK" in export.stdout

    # The same command with every warning kept shows what was filtered: the filter is not vacuous.
    loud = subprocess.run([sys.executable, "demo/demo.py", *weights, "--input", str(trained_demo.images[0]),
                           "--output", str(tmp_path / "loud")], capture_output=True, text=True,
                          env=dict(env, DSANET_ALL_WARNINGS="1"), cwd=ROOT, timeout=300)
    assert any("torch.meshgrid" in line for line in _warning_lines(loud.stderr))


def test_a_warning_from_elsewhere_still_shows(tmp_path):
    """Warnings raised from a user's own module show, of the categories the filter matches too
    (it matches by message and module, not by category alone)."""
    script = tmp_path / "user_code.py"
    script.write_text("import warnings\nimport dsanet  # noqa: F401\n"
                      "warnings.warn('train.max_iter is below the warm-up length', UserWarning)\n"
                      "warnings.warn('an option of yours is deprecated', FutureWarning)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=_environment(tmp_path), cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "UserWarning: train.max_iter is below the warm-up length" in result.stderr
    assert "FutureWarning: an option of yours is deprecated" in result.stderr
