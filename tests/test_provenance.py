"""The record every kept result carries: the command, the date and the machine that made it."""
import datetime
import json

import torch

from dsanet_lab.provenance import CPU_FLAGS, command_line, cpu_summary, provenance


def test_provenance_records_command_date_and_machine():
    record = provenance(command="python tools/compare_variants.py --seeds 2")
    assert record["command"] == "python tools/compare_variants.py --seeds 2"
    datetime.date.fromisoformat(record["date"])
    machine = record["machine"]
    assert machine["torch_threads"] == torch.get_num_threads()
    assert machine["libraries"]["torch"] == torch.__version__.split("+")[0] or \
        machine["libraries"]["torch"] == torch.__version__
    assert machine["libraries"]["detectron2"]  # found from metadata or the module
    assert set(machine["cpu"]["flags"]) == set(CPU_FLAGS)
    assert machine["cpu"]["model_name"]


def test_command_line_quotes_arguments_a_shell_can_replay():
    line = command_line(["train_net.py", "--config-file", "configs/x.py", "model.head.dsa_levels=[]",
                         "--variant", "a b: c"])
    assert line == "python train_net.py --config-file configs/x.py 'model.head.dsa_levels=[]' --variant 'a b: c'"


def test_cpu_summary_names_model_and_present_flags_only():
    cpu = {"model_name": "Some CPU", "family": "25", "model": "1",
           "flags": {"avx2": True, "avx512f": False, "amx_tile": None}}
    assert cpu_summary(cpu) == "Some CPU (family 25, model 1; avx2)"


def test_record_invocation_appends_one_entry_per_invocation(tmp_path):
    from dsanet_lab.provenance import record_invocation

    record_invocation(str(tmp_path), world_size=1)
    path = record_invocation(str(tmp_path), world_size=2)
    invocations = json.loads(path.read_text())["invocations"]
    assert [i["world_size"] for i in invocations] == [1, 2]
    assert all("machine" in i and "command" in i for i in invocations)


def test_cpu_flags_come_from_cpuinfo_else_lscpu_and_are_never_assumed(monkeypatch):
    import subprocess
    from pathlib import Path

    from dsanet_lab.provenance import cpu_record

    real_read_text = Path.read_text

    def no_cpuinfo(path, *args, **kwargs):
        if str(path) == "/proc/cpuinfo":
            raise OSError("no /proc here")
        return real_read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_cpuinfo)
    lscpu = "Architecture:  x86_64\nModel name:    Some CPU\nFlags:         fpu avx2 avx512f avx512_bf16\n"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=lscpu))
    assert cpu_record()["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_tile": False,
                                     "amx_bf16": False}

    def no_lscpu(*args, **kwargs):
        raise FileNotFoundError("lscpu")

    monkeypatch.setattr(subprocess, "run", no_lscpu)
    assert cpu_record()["flags"] == {flag: None for flag in CPU_FLAGS}


def test_a_module_run_with_dash_m_is_recorded_as_one():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys; from dsanet_lab.provenance import command_line; print(command_line())"
    # json.tool stands in for any module: run it the way `python -m benchmarks.speed` runs, via runpy.
    result = subprocess.run([sys.executable, "-c", f"import runpy, sys; sys.argv = ['x', '--quick']; "
                             f"sys.modules['__main__'].__spec__ = __import__('importlib.util').util.find_spec("
                             f"'benchmarks.speed'); {code}"], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "python -m benchmarks.speed --quick", result.stderr


def test_code_version_is_the_checkout_commit_and_none_outside_git(tmp_path):
    import subprocess
    from pathlib import Path

    from dsanet_lab.provenance import code_version

    package = Path(__file__).resolve().parents[1] / "projects" / "DSANet" / "dsanet"
    head = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        import pytest
        pytest.skip("the tests do not run from a git checkout")
    record = code_version()
    assert record["commit"] == head.stdout.strip() and isinstance(record["dirty"], bool)
    assert provenance(command="x")["code"] == record
    assert code_version(tmp_path) is None  # not a checkout: nothing is invented
