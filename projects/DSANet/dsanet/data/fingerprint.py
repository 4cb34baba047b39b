"""A content fingerprint of a dataset folder: what a result trained on it depends on, in one string.

Two machines that draw the embedded dataset from the same seed should hold the same bytes; a different
JPEG encoder or drawing library would give other images without any error. The fingerprint lets a
cached dataset be checked when it is reused, and lets a kept result name the data it was made on.
"""
import hashlib
import os
from pathlib import Path
from typing import Iterable, Union

PathLike = Union[str, os.PathLike]


def folder_fingerprint(root: PathLike, exclude: Iterable[str] = ()) -> str:
    """``sha256:<hex>`` over every file below ``root``: its path relative to ``root`` and its bytes.

    Files are visited in sorted path order, so the fingerprint does not depend on the file system's
    listing order. Names in ``exclude`` (relative paths, e.g. the completion marker that stores the
    fingerprint itself) are left out.
    """
    root = Path(root)
    excluded = set(exclude)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative in excluded:
            continue
        digest.update(relative.encode("utf-8") + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()
