"""Finding the rendered blocks of the markdown pages, rendering them, and comparing them with the pages.

A page holds a table between two markers::

    <!-- render: NAME -->
    (generated: a markdown table and a caption naming the file, command, machine and date)
    <!-- /render -->
"""
import difflib
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

from .captions import caption
from .format import REPO_LINK
from .registry import TABLES

RESULTS = "benchmarks/results"
BLOCK = re.compile(r"(<!-- render: ([\w.-]+) -->\n)(.*?)(<!-- /render -->)", re.S)
SKIP_DIRS = {".git", ".venv", ".venv-d2src", "output", "node_modules", "build", "dist"}


class RenderError(Exception):
    """A marker names no known table, or one of its files cannot be read."""


def pages(root: Path) -> List[Path]:
    """Every markdown file under ``root`` outside virtual environments, outputs and .git."""
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS and not d.startswith(".venv"))
        found += [Path(directory) / name for name in sorted(files) if name.endswith(".md")]
    return found


def source_path(relative: str) -> str:
    """A table file's path from the repository root (files are named from benchmarks/results/)."""
    return os.path.normpath(f"{RESULTS}/{relative}").replace(os.sep, "/")


def _load(name: str, relative: str, page: Path, root: Path) -> Tuple[str, Dict[str, Any]]:
    path = source_path(relative)
    try:
        return path, json.loads((root / path).read_text())
    except (OSError, ValueError) as error:
        raise RenderError(f"table '{name}' on {page}: cannot read {path}: {error}")


def block_text(name: str, page: Path, root: Path) -> str:
    """The generated contents of block ``name`` on ``page`` (the lines between the markers)."""
    if name not in TABLES:
        raise RenderError(f"{page}: unknown table '{name}' (known: {', '.join(sorted(TABLES))})")
    spec = TABLES[name]
    sources = [_load(name, relative, page, root) for relative in spec.sources]
    inputs = [_load(name, relative, page, root)[1] for relative in spec.inputs]
    to_root = os.path.relpath(root, page.parent).replace(os.sep, "/")
    rendered = spec.render(*(data for _, data in sources), *inputs).replace(
        f"]({REPO_LINK}", "](" + ("" if to_root == "." else to_root + "/"))
    return rendered + "\n\n" + caption(sources, page, root) + "\n"


def _first_difference(old: str, new: str) -> str:
    return next((line for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
                 if line[:1] in "+-" and line[:3] not in ("+++", "---")), "")


def render_page(page: Path, root: Path) -> Tuple[str, List[str]]:
    """``page``'s text with every block rendered, and one message per block that differed."""
    problems = []

    def replace(match: "re.Match[str]") -> str:
        name, wanted = match.group(2), block_text(match.group(2), page, root)
        if match.group(3) != wanted:
            files = ", ".join(source_path(s) for s in TABLES[name].sources + TABLES[name].inputs)
            problems.append(f"{page.relative_to(root)}: table '{name}' differs from {files} "
                            f"(first differing line: {_first_difference(match.group(3), wanted).strip()[:160]})")
        return match.group(1) + wanted + match.group(4)

    return BLOCK.sub(replace, page.read_text()), problems


def process(root: Path, check: bool) -> List[str]:
    """Render (or with ``check``, compare) every block of every page; one message per disagreeing table."""
    problems = []
    for page in pages(root):
        text = page.read_text()
        if "<!-- render:" not in text:
            continue
        new, found = render_page(page, root)
        problems += found
        if not check and new != text:
            page.write_text(new)
    return problems
