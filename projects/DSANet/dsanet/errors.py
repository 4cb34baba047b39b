"""The one error type for bad user input: train_net.py prints its message on one line and exits 2."""

__all__ = ["UserInputError"]


class UserInputError(Exception):
    """Bad input from the command line or a config: the message names the file, key or value at fault."""
