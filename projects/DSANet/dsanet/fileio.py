"""Writing files so that no reader ever sees half of one: checkpoints, study markers and reports,
benchmark and pretraining results.

Each file goes to ``<name>.tmp.<pid>`` first, is flushed to disk, then renamed over its real name
(``os.replace``, atomic on POSIX). A process killed mid-write leaves at most that temporary file,
which no reader looks at; another process reading the file (a second study invocation, a resumed
training) sees the old version or the new one, whole.
"""
import json
import os
from pathlib import Path
from typing import IO, Any, Callable, Union

__all__ = ["atomic_write", "write_text", "write_json"]

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, renamed over it once on disk.

    Args:
        write: called with the temporary file, opened in binary mode (``torch.save``, ``np.savez``,
            ``fig.savefig`` all take one).
    """
    path = os.fspath(path)
    temporary = f"{path}.tmp.{os.getpid()}"
    try:
        with open(temporary, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise
    folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating its parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (what json cannot encode, as ``str``), atomically, creating
    parent folders; returns the path."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
