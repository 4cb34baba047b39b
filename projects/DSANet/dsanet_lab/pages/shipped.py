"""Tables of what a user runs first: a trained model that ships in the package (its ``metrics.json``), and
a timed ``make`` target (its record: the command, its wall time, and what it measured or installed).
Each shows what its file holds; nothing here judges a number."""
import os
from typing import Any, Dict, List

from .format import num, table

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl")
TEST_METRICS = ("AP", "AP50", "AP75")


def duration(seconds: float) -> str:
    """Wall time: seconds below a minute, else minutes with one decimal."""
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def size(count: float) -> str:
    """Bytes in decimal units (MB = 10^6 bytes, GB = 10^9)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{count:.0f} B"


def _count(value: Any) -> Any:
    """A count the file records as a number or as the list of what it counts."""
    return len(value) if isinstance(value, (list, tuple)) else value


def _pinned_detections(detections: Any) -> str:
    """The detections a test pins: a count, a list, or one list per image (of [x0, y0, x1, y1, score, class])."""
    lists = (list, tuple)
    per_image = isinstance(detections, lists) and all(
        isinstance(image, lists) and all(isinstance(box, lists) for box in image) for image in detections)
    if per_image:
        return f"{sum(len(image) for image in detections)} detections of its first {len(detections)} images"
    return f"{_count(detections)} detections"


def _metric_cells(metrics: Dict[str, Any], names=COCO_METRICS) -> List[str]:
    return [num(metrics.get(name), 1) for name in names]


def trained_model(data: Dict[str, Any]) -> str:
    """The weights file (name, dtype, size), its ten COCO numbers on the config's validation split, and
    the numbers the accuracy test pins (on its images and threads; the other columns are not pinned)."""
    test = data["accuracy_test"]
    threads = test["threads"]
    pinned = (f"accuracy test: {_count(test['images'])} images, {threads} torch thread{'' if threads == 1 else 's'}, "
              f"{_pinned_detections(test['detections'])}")
    weights = f"`{os.path.basename(data['weights'])}` ({data['dtype']}, {size(data['size_bytes'])}), validation split"
    rows = [[weights, *_metric_cells(data["metrics"])],
            [pinned, *_metric_cells(test, TEST_METRICS), *["—"] * (len(COCO_METRICS) - len(TEST_METRICS))]]
    return table(["weights, evaluated on", *COCO_METRICS], rows)


def timed_run(data: Dict[str, Any]) -> str:
    """A timed command: its wall time and the ten COCO numbers of the model it trained."""
    return table(["command", "wall time", *COCO_METRICS],
                 [[f"`{data['command']}`", duration(data["wall_seconds"]), *_metric_cells(data["metrics"])]])


def setup_run(data: Dict[str, Any]) -> str:
    """An environment's setup: its wall time, what it downloaded, and the environment's size on disk."""
    return table(["command", "wall time", "downloaded", "environment on disk"],
                 [[f"`{data['command']}`", duration(data["wall_seconds"]), size(data["download_bytes"]),
                   size(data["venv_bytes"])]])
