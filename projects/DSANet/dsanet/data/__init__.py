"""Datasets for DSANet: the embedded synthetic shapes dataset (see ``dsanet.data.synthetic``) and
COCO-format datasets declared in a config (see ``dsanet.data.custom``)."""
from .synthetic import (
    CLASS_NAMES,
    DEFAULT_DATASET_NAMES,
    default_root,
    ensure_synthetic_dataset,
    register_synthetic_dataset,
)

from .custom import dataset_names_in, register_coco_format_datasets, register_datasets_for

__all__ = [
    "dataset_names_in",
    "register_coco_format_datasets",
    "register_datasets_for",
    "CLASS_NAMES",
    "DEFAULT_DATASET_NAMES",
    "default_root",
    "ensure_synthetic_dataset",
    "register_synthetic_dataset",
]
