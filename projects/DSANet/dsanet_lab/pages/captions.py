"""The caption under every rendered table: per source file its link, the command, the machine and the
date, read from the file's provenance record (:func:`dsanet_lab.provenance.provenance`)."""
import os
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

from ..provenance import CPU_FLAGS, cpu_summary


def threads(count: Any) -> str:
    """``1 torch thread`` / ``N torch threads``."""
    return f"{count} torch thread" + ("" if count == 1 else "s")


def machine_text(record: Dict[str, Any]) -> str:
    """One machine record in words: a provenance record, or a benchmark's own ``machine`` entry."""
    if "cpu" in record:  # dsanet_lab.provenance.machine_record()
        return _provenance_machine(record)
    return _benchmark_machine(record)


def _provenance_machine(record: Dict[str, Any]) -> str:
    parts = [cpu_summary(record["cpu"])]
    if record.get("gpu"):
        gpu = record["gpu"]
        parts.append(f"{gpu.get('count', 1)}x {gpu['name']} (CUDA {gpu.get('cuda')})")
    libraries = record.get("libraries") or {}
    parts += [f"{name} {libraries[name]}" for name in ("torch", "detectron2") if libraries.get(name)]
    parts.append(threads(record.get("torch_threads")))
    return ", ".join(parts)


def _benchmark_machine(record: Dict[str, Any]) -> str:
    """The benchmarks' own machine entry (model name, optional flags, torch, threads)."""
    flags = record.get("cpu_flags")
    if flags:
        cpu = cpu_summary({"model_name": record.get("cpu_model", "unknown"),
                           "flags": {name: flags.get(name) for name in CPU_FLAGS}})
    else:
        cpu = f"{record.get('cpu_model', 'unknown')} (CPU flags not recorded)"
    parts = [cpu, f"{record.get('cpu_count')} cores", f"torch {record.get('torch')}",
             threads(record.get("torch_threads"))]
    if record.get("cuda_device"):
        parts.append(str(record["cuda_device"]))
    return ", ".join(parts)


def machine_line(data: Dict[str, Any]) -> str:
    """The machine a JSON records, in one line: for a study whose runs record their setups, the setups
    the runs trained on (the invocation that wrote the report may run with other threads); else its
    provenance record, else its own ``machine``."""
    runs = {machine_text(setup["machine"]) for setup in
            ((run.get("setup") or {}) for run in data.get("runs") or []) if setup.get("machine")}
    if len(runs) == 1:
        return "machine of every run: " + runs.pop()
    if runs:
        return f"runs on {len(runs)} setups (each run's in the file)"
    record = (data.get("provenance") or {}).get("machine") or data.get("machine")
    if not record:
        return "machine not recorded"
    return "machine: " + machine_text(record)


def source_line(path: str, data: Dict[str, Any], link: str) -> str:
    """One source: another work's numbers say where they are printed; a measurement says how it was made."""
    if data.get("quoted_from"):
        return f"Source: [`{path}`]({link}), quoted from {data['quoted_from']}."
    prov = data.get("provenance") or {}
    command = f"`{prov['command']}`" if prov.get("command") else "command not recorded"
    date = prov.get("date") or "date not recorded"
    if prov.get("recorded_after_the_run"):
        date += " (commit date; provenance recorded after the run)"
    return f"Source: [`{path}`]({link}); command: {command}; {machine_line(data)}; date: {date}."


def caption(sources: Sequence[Tuple[str, Dict[str, Any]]], page: Path, root: Path) -> str:
    """One italic line per source file (``path`` from ``root``), linked relative to ``page``; lines
    end in two spaces so that markdown keeps them apart."""
    lines = [source_line(path, data, os.path.relpath(root / path, page.parent).replace(os.sep, "/"))
             for path, data in sources]
    return "\n".join("_" + line + "_" + ("  " if i < len(lines) - 1 else "") for i, line in enumerate(lines))
