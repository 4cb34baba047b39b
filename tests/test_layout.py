"""The project's shape: ``dsanet`` is the model and its detectron2 glue, the lab (``dsanet_lab``,
``benchmarks``) imports it and is never imported by it, and importing ``dsanet`` changes nothing
global beyond the version shims that the installed detectron2 needs."""
import json
import re
import subprocess
import sys

from conftest import ROOT

MODEL_PACKAGE = ROOT / "projects" / "DSANet" / "dsanet"
LAB_PACKAGES = ("dsanet_lab", "benchmarks")


def test_the_model_package_never_imports_the_lab():
    pattern = re.compile(r"^\s*(from|import)\s+(%s)\b" % "|".join(LAB_PACKAGES), re.M)
    offenders = [f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
                 for path in sorted(MODEL_PACKAGE.rglob("*.py"))
                 for match in pattern.finditer(path.read_text(encoding="utf-8"))]
    assert offenders == []
    mentions = [str(p.relative_to(ROOT)) for p in MODEL_PACKAGE.rglob("*.py") if "dsanet_lab" in p.read_text(encoding="utf-8")]
    assert mentions == [], "the model package names the lab"


# Runs in a fresh interpreter: every warning filter added while `import dsanet` runs is recorded with the
# module that added it, so that a filter a third-party library adds at its own import (sympy does) is told
# apart from one that dsanet leaves behind.
_IMPORT_AND_REPORT = r"""
import json, sys, warnings
import torch  # torch installs filters of its own at import
added_by = {}
def recording(add):
    def add_and_record(*args, **kwargs):
        before = list(warnings.filters)
        add(*args, **kwargs)
        caller = sys._getframe(1).f_globals.get("__name__", "")
        for entry in warnings.filters:
            if entry not in before:
                added_by[repr(entry)] = caller
    return add_and_record
warnings.filterwarnings = recording(warnings.filterwarnings)
warnings.simplefilter = recording(warnings.simplefilter)
before = list(warnings.filters)
import dsanet
left = [f for f in warnings.filters if f not in before]
print(json.dumps({"left": [[repr(f), added_by.get(repr(f), "?")] for f in left], "shims": dsanet.compat.applied_shims()}))
"""


def test_importing_dsanet_leaves_the_warning_filters_as_it_found_them():
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _IMPORT_AND_REPORT], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # A filter that another library adds at its own import (sympy does) is that library's; none may come
    # from dsanet, and none may appear without a call that says who added it.
    left_by_dsanet = [(entry, owner) for entry, owner in report["left"] if owner == "?" or owner.startswith("dsanet")]
    assert left_by_dsanet == [], f"import dsanet left warning filters behind: {left_by_dsanet}"


def test_the_commands_quiet_internal_warnings_through_one_public_call():
    import dsanet

    assert callable(dsanet.silence_internal_warnings)
    for script in ["train_net.py", "demo/demo.py", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tools").glob("*.py"))]:
        text = (ROOT / script).read_text(encoding="utf-8")
        if re.search(r"^(import dsanet|from dsanet)\b", text, re.M):
            assert "dsanet.silence_internal_warnings()" in text, f"{script} imports dsanet but does not quiet internal warnings"
