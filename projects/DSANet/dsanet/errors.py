"""The one error type for bad user input, and how the command-line tools report it: one line, exit 2."""
import sys
from typing import Callable, NoReturn, Optional

__all__ = ["UserInputError", "exit_with_status_of", "one_line"]


class UserInputError(Exception):
    """Bad input from the command line or a config: the message names the file, key or value at fault."""


def one_line(error: UserInputError) -> str:
    """The error's message on one line. A DataLoader worker's error arrives re-raised with the
    worker's traceback in its message ("Caught ... Original Traceback ..."): its own last line is kept."""
    message = str(error)
    if "Original Traceback" in message:
        last = message.strip().splitlines()[-1]
        message = last.split(f"{UserInputError.__name__}: ", 1)[-1]
    return message


def exit_with_status_of(main: Callable[[], Optional[int]]) -> NoReturn:
    """Run a tool's ``main`` and exit with its status (None counts as 0); a UserInputError is
    printed as ``error: <message>`` on stderr, on one line, with exit status 2."""
    try:
        status = main()
    except UserInputError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
