#!/usr/bin/env python
"""Render the docs' result tables from the kept JSON they come from, or check that they agree.

A page holds a table between ``<!-- render: NAME -->`` and ``<!-- /render -->``; NAME is one of
``dsanet_lab.pages.TABLES``, which names its files under ``benchmarks/results/`` and its renderer.
``python tools/render_docs.py`` rewrites every such block of every markdown page in place; ``--check``
rewrites nothing and exits 1 naming each table whose page and JSON disagree (a number changed by hand
on either side).
"""
import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "projects" / "DSANet"))

from dsanet_lab.pages import RenderError, process  # noqa: E402


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 naming every table whose page and JSON disagree")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    try:
        problems = process(args.root.resolve(), args.check)
    except RenderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.check:
        print(f"rendered; {len(problems)} table(s) changed")
        return 0
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} table(s) out of date: run python tools/render_docs.py")
        return 1
    print("every rendered table agrees with its JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
