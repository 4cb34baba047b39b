"""Registering the datasets a config names: custom COCO-format ones declared under the config's
``datasets`` key, and the embedded synthetic set on first use."""
from pathlib import Path
from typing import Iterable, List, Mapping, Sequence

from ..errors import UserInputError
from .synthetic import DEFAULT_DATASET_NAMES, register_synthetic_dataset

__all__ = ["register_coco_format_datasets", "register_datasets_for", "dataset_names_in"]


def register_coco_format_datasets(datasets: Mapping[str, Mapping[str, str]]) -> List[str]:
    """Register COCO-format datasets declared as ``{name: {"json_file": ..., "image_root": ...}}``.

    Class names come from the json's categories (detectron2's ``load_coco_json``); images without
    annotations are kept for evaluation and dropped from training by detectron2's loader, and
    degenerate boxes are removed by its mapper.

    Returns:
        the names registered by this call (names already registered are left as they are).
    """
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

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
        register_coco_instances(name, {}, str(spec["json_file"]), str(spec["image_root"]))
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
        register_synthetic_dataset()
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
