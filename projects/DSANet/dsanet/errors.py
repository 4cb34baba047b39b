"""The one error type for bad user input, and how the command-line tools report it: one line, exit 2."""
import sys
from typing import Callable, NoReturn, Optional

__all__ = ["UserInputError", "exit_with_status_of"]


class UserInputError(Exception):
    """Bad input from the command line or a config: the message names the file, key or value at fault."""


def exit_with_status_of(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run a tool's ``main`` and exit with its status (None counts as 0); a UserInputError is
    printed as ``error: <message>`` on stderr, on one line, with exit status 2."""
    try:
        status = main()
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
