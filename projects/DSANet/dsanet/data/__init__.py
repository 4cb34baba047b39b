"""Datasets for DSANet: the embedded synthetic shapes dataset (drawn by ``dsanet.data.shapes``, cached
and registered by ``dsanet.data.synthetic``) and COCO-format datasets declared in a config (see
``dsanet.data.custom``)."""
from .shapes import CLASS_NAMES
from .synthetic import (
    DEFAULT_DATASET_NAMES,
    default_root,
    ensure_synthetic_dataset,
    register_synthetic_dataset,
)

from .custom import (
    check_num_classes,
    dataset_fingerprints,
    dataset_names_in,
    register_coco_format_datasets,
    register_datasets_for,
    validation_report,
)
from .validate import CocoJsonReport, validate_coco_json

__all__ = [
    "check_num_classes",
    "dataset_fingerprints",
    "validation_report",
    "validate_coco_json",
    "CocoJsonReport",
    "dataset_names_in",
    "register_coco_format_datasets",
    "register_datasets_for",
    "CLASS_NAMES",
    "DEFAULT_DATASET_NAMES",
    "default_root",
    "ensure_synthetic_dataset",
    "register_synthetic_dataset",
]
