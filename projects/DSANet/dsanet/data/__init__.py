"""Datasets for DSANet: the embedded synthetic shapes dataset (see ``dsanet.data.synthetic``)."""
from .synthetic import (
    CLASS_NAMES,
    DEFAULT_DATASET_NAMES,
    default_root,
    ensure_synthetic_dataset,
    register_synthetic_dataset,
)

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_DATASET_NAMES",
    "default_root",
    "ensure_synthetic_dataset",
    "register_synthetic_dataset",
]
