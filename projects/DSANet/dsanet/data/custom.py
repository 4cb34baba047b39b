"""Registering the datasets a config names: custom COCO-format ones declared under the config's
``datasets`` key, and the embedded synthetic set on first use."""
import hashlib
import logging
import os
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from ..errors import UserInputError
from .synthetic import DEFAULT_DATASET_NAMES, register_synthetic_dataset
from .validate import CocoJsonReport, validate_coco_json

__all__ = ["register_coco_format_datasets", "register_datasets_for", "dataset_names_in", "check_num_classes",
           "validation_report"]

logger = logging.getLogger(__name__)


def _load_validated(json_file: str, image_root: str, name: str, report: CocoJsonReport) -> List[dict]:
    """detectron2's ``load_coco_json``, without the annotations that validation dropped."""
    from detectron2.data.datasets import load_coco_json

    records = load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])
    for record in records:
        annotations = [a for a in record.get("annotations", []) if a["id"] not in report.dropped_annotation_ids]
        for annotation in annotations:
            del annotation["id"]
        record["annotations"] = annotations
    return records


def validation_report(dataset_name: str) -> Optional[CocoJsonReport]:
    """The validation report of a dataset registered by ``register_coco_format_datasets`` (else None)."""
    from detectron2.data import MetadataCatalog

    metadata = MetadataCatalog.get(dataset_name)
    if not metadata.get("dsanet_validated", False):
        return None
    return validate_coco_json(metadata.json_file)  # cached


def register_coco_format_datasets(datasets: Mapping[str, Mapping[str, str]]) -> List[str]:
    """Register COCO-format datasets declared as ``{name: {"json_file": ..., "image_root": ...}}``.

    Each json is checked first (``dsanet.data.validate``): broken structure raises one clear error,
    unusable annotations are dropped with a logged count. Class names come from the json's
    categories (detectron2's ``load_coco_json``, which maps category ids, contiguous or not, to
    0..K-1 in id order); images without annotations are kept for evaluation and dropped from
    training by detectron2's loader.

    Returns:
        the names registered by this call (names already registered are left as they are).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    registered = []
    for name, spec in datasets.items():
        for key in ("json_file", "image_root"):
            value = spec.get(key) if isinstance(spec, Mapping) else None
            if not value:
                raise UserInputError(f"datasets.{name}.{key} is not set")
            if not Path(value).exists():
                raise UserInputError(f"datasets.{name}.{key}={value}: no such file or folder")
        if name in DatasetCatalog.list():
            continue
        json_file, image_root = str(spec["json_file"]), str(spec["image_root"])
        if not Path(json_file).is_file():
            raise UserInputError(f"datasets.{name}.json_file={json_file}: not a file")
        report = validate_coco_json(json_file)
        if report.dropped_annotation_ids:
            logger.warning("dataset %s: %s", name, report.summary())
        DatasetCatalog.register(name, lambda j=json_file, i=image_root, n=name, r=report: _load_validated(j, i, n, r))
        MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco",
                                      dsanet_validated=True)
        registered.append(name)
    return registered


def dataset_names_in(cfg, splits: Sequence[str] = ("train", "test")) -> Iterable[tuple]:
    """(config key, dataset name) for every dataset the config's data loaders of ``splits`` read."""
    for split in splits:
        names = cfg.dataloader.get(split, {}).get("dataset", {}).get("names")
        if names is None:
            continue
        for name in [names] if isinstance(names, str) else names:
            yield f"dataloader.{split}.dataset.names", name


def register_datasets_for(cfg, splits: Sequence[str] = ("train", "test")) -> None:
    """Make every dataset that ``cfg`` reads for ``splits`` available in detectron2's DatasetCatalog.

    Raises:
        UserInputError: a dataset is named that nothing registers, or a declared file is missing.
    """
    from detectron2.data import DatasetCatalog

    register_coco_format_datasets(cfg.get("datasets", None) or {})
    used = list(dataset_names_in(cfg, splits))
    if any(name in DEFAULT_DATASET_NAMES for _, name in used):
        # its sizes: dataloader.synthetic (num_train, num_val, image_size, seed); the generator's defaults if absent
        register_synthetic_dataset(**dict(cfg.get("dataloader", {}).get("synthetic", None) or {}))
    for key, name in used:
        if name not in DatasetCatalog.list():
            raise UserInputError(
                f"{key}: dataset {name!r} is not registered. Declare it under the config's "
                f"'datasets' key (json_file, image_root) or use one of: {', '.join(sorted(DatasetCatalog.list()))}")
        _check_dataset_files(key, name)


def _check_dataset_files(key: str, name: str) -> None:
    """A registered COCO-format dataset whose files are absent (COCO itself, on a machine without it)
    fails before training with the path to fix, not inside the data loader."""
    from detectron2.data import MetadataCatalog

    metadata = MetadataCatalog.get(name)
    for field in ("json_file", "image_root"):
        path = getattr(metadata, field, None)
        if path and not Path(path).exists():
            hint = " (detectron2's builtin datasets are read from $DETECTRON2_DATASETS, default ./datasets)" \
                if name.startswith(("coco_", "keypoints_coco_")) else ""
            raise UserInputError(f"{key}: dataset {name!r} reads {field} {path}, which does not exist{hint}")


def check_num_classes(cfg) -> None:
    """Every dataset a training run reads must have ``model.num_classes`` categories.

    Raises:
        UserInputError: naming the dataset's json, its category count and ``model.num_classes``.
    """
    from detectron2.data import MetadataCatalog

    num_classes = cfg.model.get("num_classes")
    if num_classes is None:
        return
    for key, name in dataset_names_in(cfg):
        report = validation_report(name)
        if report is not None:
            count, source = len(report.categories), f"its json {report.json_file}"
        else:
            classes = MetadataCatalog.get(name).get("thing_classes")
            if classes is None:
                continue  # nothing known before loading; detectron2's own datasets set thing_classes
            count, source = len(classes), "its metadata"
        if count != num_classes:
            raise UserInputError(
                f"{key}: dataset {name!r} has {count} categories ({source}) but model.num_classes={num_classes}; "
                f"set model.num_classes={count}")


def dataset_fingerprints(cfg, splits: Sequence[str] = ("train", "test")) -> Dict[str, Dict[str, str]]:
    """What the data of a run was, per registered dataset name: the embedded dataset's recorded content
    fingerprint (images and annotations), else a fingerprint of the annotation file alone (hashing
    every image of COCO on each start would cost minutes)."""
    from detectron2.data import MetadataCatalog

    from .synthetic import recorded_fingerprint

    fingerprints = {}
    for _, name in dataset_names_in(cfg, splits):
        json_file = MetadataCatalog.get(name).get("json_file")
        if not json_file or not os.path.isfile(json_file):
            continue
        dataset_root = Path(json_file).parent.parent
        whole = recorded_fingerprint(dataset_root)
        if whole:
            fingerprints[name] = {"content": whole, "covers": "images and annotations", "root": str(dataset_root)}
        else:
            digest = hashlib.sha256(Path(json_file).read_bytes()).hexdigest()
            fingerprints[name] = {"content": f"sha256:{digest}", "covers": "annotation file", "root": json_file}
    return fingerprints
