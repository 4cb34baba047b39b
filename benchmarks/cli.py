"""What every benchmark script shares on the command line: its options and its tables."""
import argparse
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from tabulate import tabulate

from benchmarks.models import QUICK_IMAGE_SIZE


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--output, --quick, --device and --threads, shared by every benchmark script."""
    parser.add_argument("--output", type=Path, default=Path("output/bench"), help="folder for JSON and plots")
    parser.add_argument("--quick", action="store_true",
                        help=f"small image {QUICK_IMAGE_SIZE[0]}x{QUICK_IMAGE_SIZE[1]} and 1-2 repeats: a smoke run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice, usually one per core)")
    return parser


def parse_common_arguments(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``parser`` with the shared options added, and set torch's CPU threads when given."""
    args = add_common_arguments(parser).parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main_from_command_line(run: Callable[..., Any], description: str, argv: Optional[Sequence[str]] = None) -> None:
    """Parse the shared options and call ``run(output, quick=..., device=...)``."""
    args = parse_common_arguments(argparse.ArgumentParser(description=description), argv)
    run(args.output, quick=args.quick, device=args.device)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table; None shows as "-"."""
    return tabulate([["-" if v is None else v for v in row] for row in rows], headers=headers,
                    tablefmt="github", disable_numparse=True)


def fmt(value: Optional[float], digits: int = 2, suffix: str = "") -> str:
    """A number with fixed digits, or "-" for None."""
    return "-" if value is None else f"{value:.{digits}f}{suffix}"
