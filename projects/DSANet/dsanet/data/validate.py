"""Checking a COCO-format annotation file before anything trains on it.

Broken structure (a missing key, a wrong type, a duplicate id, a category id that is not among the
categories) would crash detectron2's loader half-way or, worse, give an object a wrong label: it
raises one ``UserInputError`` naming the file, the record and the field. Broken values that leave
the rest of the file usable (a box of zero, negative or non-finite size, a box entirely outside
its image, an annotation of an image that does not exist) are dropped and counted, with the
reason, in one warning. The policy table is in projects/DSANet/docs/USING_MODELS.md ("Broken
annotation files and images").
"""
import json
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from ..errors import UserInputError

__all__ = ["CocoJsonReport", "validate_coco_json"]

logger = logging.getLogger(__name__)

_EXAMPLES_PER_REASON = 3

# Reasons an annotation is dropped, in the order they are checked and reported.
NO_SUCH_IMAGE = "its image_id is not among the images"
NON_FINITE = "a non-finite (NaN or infinite) bbox or area"
EMPTY_BOX = "a bbox of zero or negative width or height"
NEGATIVE_AREA = "a negative area"
OUTSIDE = "a bbox entirely outside its image"


@dataclass
class CocoJsonReport:
    """What ``validate_coco_json`` found in one file.

    Attributes:
        json_file: the file checked.
        categories: ``(id, name)`` of each category, sorted by id (detectron2 maps the i-th to class i).
        num_images: images in the file.
        num_annotations: annotations in the file, dropped ones included.
        dropped: reason -> labels (``annotations[i] (id N)``) of the annotations dropped for it.
        dropped_annotation_ids: ids of every dropped annotation.
    """

    json_file: str
    categories: List[Tuple[int, str]]
    num_images: int
    num_annotations: int
    dropped: Dict[str, List[str]] = field(default_factory=dict)
    dropped_annotation_ids: Set[int] = field(default_factory=set)

    def summary(self) -> str:
        """One line: how many annotations were dropped, for which reasons, with a few examples."""
        total = len(self.dropped_annotation_ids)
        parts = []
        for reason, labels in self.dropped.items():
            examples = ", ".join(labels[:_EXAMPLES_PER_REASON]) + (", ..." if len(labels) > _EXAMPLES_PER_REASON else "")
            parts.append(f"{len(labels)} with {reason} ({examples})")
        return f"{self.json_file}: dropped {total} of {self.num_annotations} annotations: " + "; ".join(parts)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


class _Checker:
    """Field checks that raise one UserInputError naming ``json_file``, the record and the field."""

    def __init__(self, json_file: str):
        self.json_file = json_file

    def fail(self, record: str, message: str) -> None:
        raise UserInputError(f"{self.json_file}: {record}: {message}")

    def get(self, record: str, item: Any, key: str, kind: str, check, *, required: bool = True) -> Any:
        """``item[key]``, which must pass ``check`` (described by ``kind``); None if absent and optional."""
        if not isinstance(item, Mapping):
            self.fail(record, f"is a {_type_name(item)}, expected an object")
        if key not in item:
            if required:
                self.fail(record, f"missing key '{key}'")
            return None
        value = item[key]
        if not check(value):
            self.fail(record, f"'{key}' is {json.dumps(value)[:60]} ({_type_name(value)}), expected {kind}")
        return value


def _load(json_file: str) -> Dict[str, list]:
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise UserInputError(f"{json_file}: not valid JSON: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"{json_file}: cannot be read: {e}") from e
    if not isinstance(data, dict):
        raise UserInputError(f"{json_file}: the top level is a {_type_name(data)}, expected an object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserInputError(f"{json_file}: missing top-level key '{key}'")
        if not isinstance(data[key], list):
            raise UserInputError(f"{json_file}: '{key}' is a {_type_name(data[key])}, expected a list")
    return data


def _check_categories(check: _Checker, categories: list) -> List[Tuple[int, str]]:
    seen: Dict[int, int] = {}
    result = []
    for i, category in enumerate(categories):
        record = f"categories[{i}]"
        cat_id = check.get(record, category, "id", "an integer", _is_int)
        name = check.get(record, category, "name", "a string", lambda v: isinstance(v, str))
        if cat_id in seen:
            check.fail(record, f"'id' {cat_id} is also the id of categories[{seen[cat_id]}]")
        seen[cat_id] = i
        result.append((cat_id, name))
    if not result:
        check.fail("categories", "is empty")
    return sorted(result)


def _check_images(check: _Checker, images: list) -> Dict[int, Tuple[int, int]]:
    """image id -> (width, height)."""
    sizes: Dict[int, Tuple[int, int]] = {}
    first_index: Dict[int, int] = {}
    for i, image in enumerate(images):
        record = f"images[{i}]"
        image_id = check.get(record, image, "id", "an integer", _is_int)
        record = f"images[{i}] (id {image_id})"
        check.get(record, image, "file_name", "a non-empty string", lambda v: isinstance(v, str) and v != "")
        width = check.get(record, image, "width", "a positive integer", lambda v: _is_int(v) and v > 0)
        height = check.get(record, image, "height", "a positive integer", lambda v: _is_int(v) and v > 0)
        if image_id in sizes:
            check.fail(record, f"'id' {image_id} is also the id of images[{first_index[image_id]}]")
        sizes[image_id] = (width, height)
        first_index[image_id] = i
    return sizes


def _drop_reason(bbox: List[float], area: float, size: Optional[Tuple[int, int]]) -> Optional[str]:
    """Why an annotation that is well-formed cannot be used, or None when it can."""
    if size is None:
        return NO_SUCH_IMAGE
    if not all(math.isfinite(v) for v in (*bbox, area)):
        return NON_FINITE
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return EMPTY_BOX
    if area < 0:
        return NEGATIVE_AREA
    width, height = size
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return OUTSIDE
    return None  # partly outside is kept: detectron2 clips boxes to the image


def _check_annotations(check: _Checker, annotations: list, category_ids: Set[int],
                       image_sizes: Mapping[int, Tuple[int, int]], report: CocoJsonReport) -> None:
    first_index: Dict[int, int] = {}
    dropped = defaultdict(list)
    for i, annotation in enumerate(annotations):
        ann_id = check.get(f"annotations[{i}]", annotation, "id", "an integer", _is_int)
        record = f"annotations[{i}] (id {ann_id})"
        if ann_id in first_index:
            check.fail(record, f"'id' {ann_id} is also the id of annotations[{first_index[ann_id]}]")
        first_index[ann_id] = i
        image_id = check.get(record, annotation, "image_id", "an integer", _is_int)
        category_id = check.get(record, annotation, "category_id", "an integer", _is_int)
        if category_id not in category_ids:
            check.fail(record, f"'category_id' {category_id} is not among the categories' ids {sorted(category_ids)}")
        bbox = check.get(record, annotation, "bbox", "a list of 4 numbers [x, y, width, height]",
                         lambda v: isinstance(v, list) and len(v) == 4 and all(_is_number(x) for x in v))
        area = check.get(record, annotation, "area", "a number", _is_number)
        check.get(record, annotation, "iscrowd", "0 or 1", lambda v: v in (0, 1), required=False)
        check.get(record, annotation, "ignore", "0 (detectron2 does not support 'ignore')", lambda v: not v,
                  required=False)
        reason = _drop_reason(bbox, area, image_sizes.get(image_id))
        if reason is not None:
            dropped[reason].append(record)
            report.dropped_annotation_ids.add(ann_id)
    order = (NO_SUCH_IMAGE, NON_FINITE, EMPTY_BOX, NEGATIVE_AREA, OUTSIDE)
    report.dropped = {reason: dropped[reason] for reason in order if dropped[reason]}


_CACHE: Dict[Tuple[str, int, int], CocoJsonReport] = {}


def validate_coco_json(json_file: str) -> CocoJsonReport:
    """Check a COCO-format detection json; the result is cached while the file is unchanged.

    Raises:
        UserInputError: the file is not usable as it is; the message names the file, the record
            (``images[3] (id 7)``) and the field.
    """
    json_file = os.fspath(json_file)
    try:
        stat = os.stat(json_file)
    except OSError as e:
        raise UserInputError(f"{json_file}: cannot be read: {e}") from e
    key = (os.path.abspath(json_file), stat.st_mtime_ns, stat.st_size)
    if key in _CACHE:
        return _CACHE[key]
    data = _load(json_file)
    check = _Checker(json_file)
    categories = _check_categories(check, data["categories"])
    image_sizes = _check_images(check, data["images"])
    report = CocoJsonReport(json_file, categories, len(data["images"]), len(data["annotations"]))
    _check_annotations(check, data["annotations"], {c for c, _ in categories}, image_sizes, report)
    _CACHE[key] = report
    return report
