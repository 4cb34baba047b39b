"""Several invocations on one study folder: each run is made under an exclusive ``flock`` on its
folder, which the kernel drops when the holder dies, so no two invocations make the same run and a
crashed one blocks nothing. An invocation first passes over the runs another one holds, then waits
for each of them in turn and reads what it made."""
import contextlib
import fcntl
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

__all__ = ["LOCK", "holding", "in_turn"]

LOCK = ".study_lock"  # in the run's folder, held by the invocation making the run
T = TypeVar("T")


@contextlib.contextmanager
def holding(directory: Path, *, wait: bool, on_busy: Callable[[], None]) -> Iterator[bool]:
    """Hold ``directory``'s lock for the with-block and yield True. When another process holds it,
    ``on_busy()`` is called first; then with ``wait`` this blocks until the lock is free, without it
    yields False at once (nothing held)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "a") as lock:  # closing the file drops the lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            on_busy()
            held = wait
            if wait:
                fcntl.flock(lock, fcntl.LOCK_EX)
        yield held


def in_turn(items: Sequence[T], attempt: Callable[[int, T, bool], bool]) -> None:
    """``attempt(position, item, wait=False)`` for every item in order; the items it returned False
    for (held by another invocation) are attempted again, in order, with ``wait=True`` at the end."""
    passed_over = [(position, item) for position, item in enumerate(items) if not attempt(position, item, False)]
    for position, item in passed_over:
        attempt(position, item, True)
