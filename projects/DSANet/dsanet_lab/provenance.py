"""What a kept result depends on, recorded beside it: the command, the date and the machine.

A number read in the docs is only as good as what can be said about where it came from. Every kept
results JSON carries ``{"provenance": provenance()}``: the command line that made it, the UTC date,
and :func:`machine_record` (processor model and flags, GPU, library versions, intra-op threads). The
docs' tables print that record beside the numbers (``tools/render_docs.py``).
"""
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from dsanet.fileio import write_json

# CPU flags that decide how fast fp32 and bf16 run (AVX-512, native bf16 dot products, AMX tiles).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")

# Distribution names whose versions a result depends on (a missing one is recorded as None).
LIBRARIES = ("torch", "torchvision", "detectron2", "numpy", "opencv-python-headless", "opencv-python",
             "Pillow", "pycocotools", "dsanet")


def _cpuinfo_fields() -> Dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (keys lower-cased), or {}."""
    fields: Dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _lscpu_flags() -> Optional[List[str]]:
    """The words of ``lscpu``'s Flags line, or None where lscpu is absent."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "flags":
            return value.split()
    return None


def cpu_record(flag_names: Sequence[str] = CPU_FLAGS) -> Dict[str, Any]:
    """The processor: model name, family/model/stepping numbers, and which of ``flag_names`` it has.

    A flag is True/False where /proc/cpuinfo or lscpu could be read, else None (never assumed).
    """
    fields = _cpuinfo_fields()
    flags = fields["flags"].split() if "flags" in fields else _lscpu_flags()
    present = set(flags or ())
    return {
        "model_name": fields.get("model name") or platform.processor() or "unknown",
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "stepping": fields.get("stepping"),
        "flags": {name: (name in present) if flags is not None else None for name in flag_names},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cores": os.cpu_count(),
    }


def cpu_summary(cpu: Dict[str, Any]) -> str:
    """One line for a table caption, e.g. ``Intel(R) Xeon(R) Processor (family 6 model 143; avx512f,
    amx_tile)``, from a :func:`cpu_record`."""
    numbers = ", ".join(f"{key} {cpu[key]}" for key in ("family", "model") if cpu.get(key) is not None)
    flags = [name for name, present in (cpu.get("flags") or {}).items() if present]
    details = "; ".join(part for part in (numbers, ", ".join(flags) or "none of " + "/".join(CPU_FLAGS)) if part)
    return f"{cpu.get('model_name', 'unknown')} ({details})"


def library_versions(names: Sequence[str] = LIBRARIES) -> Dict[str, Optional[str]]:
    """Installed version of each distribution in ``names``, None where it is not installed.

    detectron2 built from source may not register distribution metadata; its module version is the
    fallback.
    """
    versions: Dict[str, Optional[str]] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions.get("detectron2") is None:
        try:
            import detectron2

            versions["detectron2"] = detectron2.__version__
        except ImportError:
            pass
    return versions


def gpu_record() -> Optional[Dict[str, Any]]:
    """The CUDA device in use (name, memory, compute capability, count, CUDA and cuDNN versions), or None
    without CUDA."""
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    properties = torch.cuda.get_device_properties(index)
    return {
        "name": properties.name,
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "capability": f"{properties.major}.{properties.minor}",
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def machine_record() -> Dict[str, Any]:
    """Everything about this machine and its software that moves a result."""
    return {
        "cpu": cpu_record(),
        "gpu": gpu_record(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": library_versions(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The command that is running, as a shell line: ``python tools/x.py --flag value``, or
    ``python -m benchmarks.speed --flag value`` for a module run with ``-m``."""
    if argv is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name not in (None, "__main__"):  # run as `python -m NAME`
            return shlex.join(["python", "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]])
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(".py"):
        try:
            argv[0] = str(Path(argv[0]).resolve().relative_to(Path.cwd()))
        except ValueError:
            pass
    return shlex.join(["python", *argv])


def code_version(directory: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """The git commit the code runs from: ``{"commit": sha, "dirty": bool}`` (dirty: tracked files differ
    from that commit), or None outside a git checkout (an installed wheel).

    ``directory`` defaults to this package's folder, so it is the project's commit whatever the cwd."""
    directory = Path(directory) if directory is not None else Path(__file__).resolve().parent

    def git(*args: str) -> Optional[str]:
        try:
            result = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if changed is None else bool(changed)}


def provenance(command: Optional[str] = None) -> Dict[str, Any]:
    """``{"command", "date", "machine", "code"}`` for a results file: what made it, when, where, and from
    which commit (:func:`code_version`)."""
    return {
        "command": command if command is not None else command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine_record(),
        "code": code_version(),
    }


INVOCATIONS_FILE = "provenance.json"


def read_invocations(output_dir: Union[str, Path]) -> List[Dict[str, Any]]:
    """The invocations recorded in ``<output_dir>/provenance.json``, oldest first; [] when none are."""
    try:
        return json.loads((Path(output_dir) / INVOCATIONS_FILE).read_text())["invocations"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def record_invocation(output_dir: str, **extra: Any) -> Path:
    """Append this process's :func:`provenance` (plus ``extra``, e.g. the world size) to
    ``<output_dir>/provenance.json`` (``{"invocations": [...]}``): a run resumed on another machine
    or with another thread count keeps the record of each part."""
    invocations = read_invocations(output_dir) + [{**provenance(), **extra}]
    return write_json(Path(output_dir) / INVOCATIONS_FILE, {"invocations": invocations})
