"""Synthetic shapes: a small, deterministic object-detection dataset that ships with DSANet.

It lets a detector be trained and evaluated on a CPU in a few minutes, with no download.
Its images are drawn by :mod:`dsanet.data.shapes` (three shape classes on clutter), saved as square
JPEGs (128x128 pixels by default); about 3% of the images of each split hold no object at all (their
annotation list is empty), as in real datasets. This module caches the dataset on disk and registers
it with detectron2.

On disk, the layout is COCO's::

    <root>/train/000000.jpg ...          <root>/annotations/train.json
    <root>/val/000000.jpg ...            <root>/annotations/val.json
    <root>/COMPLETE.json                 (the generation parameters and the content fingerprint; written last)

where the cached ``<root>`` is ``default_root() / "train600-val100-128px-seed0"`` (its parameters), so
datasets of other sizes sit side by side and are never mixed. Image ``i`` of a split depends only on
the seed, the split and ``i``: a larger split begins with a smaller one's images (but for which few
images are left empty).

The same parameters (seed included) give byte-identical json files and images. Generation
writes into a temporary sibling folder and renames it into place, so an interrupted run never
leaves a dataset that looks complete. Typical use::

    import dsanet
    from dsanet.data import register_synthetic_dataset

    register_synthetic_dataset()  # "synthetic_shapes_train", "synthetic_shapes_val"
"""
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import UserInputError
from .fingerprint import folder_fingerprint
from .shapes import CLASS_NAMES, DRAWING_VERSION, JPEG_QUALITY, draw_synthetic_image

__all__ = [
    "DEFAULT_DATASET_NAMES",
    "default_root",
    "dataset_folder",
    "ensure_synthetic_dataset",
    "recorded_fingerprint",
    "register_synthetic_dataset",
]

DEFAULT_DATASET_NAMES = ("synthetic_shapes_train", "synthetic_shapes_val")

_MARKER = "COMPLETE.json"
_SPLITS = ("train", "val")
_EMPTY_FRACTION = 0.03

PathLike = Union[str, os.PathLike]


def default_root() -> Path:
    """The folder where the synthetic datasets are cached, one subfolder per size (``dataset_folder``).

    Returns:
        ``$DSANET_CACHE/synthetic_shapes`` when the environment variable ``DSANET_CACHE`` is set
        (and not empty), else ``~/.cache/dsanet/synthetic_shapes``.
    """
    cache = os.environ.get("DSANET_CACHE")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache" / "dsanet"
    return base / "synthetic_shapes"


def dataset_folder(num_train: int = 600, num_val: int = 100, image_size: int = 128, seed: int = 0) -> Path:
    """Where ``ensure_synthetic_dataset`` caches the dataset of these parameters, under ``default_root()``."""
    return default_root() / f"train{int(num_train)}-val{int(num_val)}-{int(image_size)}px-seed{int(seed)}"


def _parameters(num_train: int, num_val: int, image_size: int, seed: int) -> Dict[str, int]:
    return {
        "format_version": DRAWING_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
    }


def _read_marker(root: Path) -> Optional[Dict]:
    try:
        with open(root / _MARKER, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, parameters: Dict[str, int]) -> bool:
    """True when ``root`` holds a finished dataset generated with exactly ``parameters`` and its
    content fingerprint (a marker without one, from before fingerprints, counts as unfinished)."""
    marker = _read_marker(root)
    if not isinstance(marker, dict) or "fingerprint" not in marker:
        return False
    return {k: v for k, v in marker.items() if k != "fingerprint"} == parameters


def recorded_fingerprint(root: PathLike) -> Optional[str]:
    """The content fingerprint recorded when the dataset in ``root`` was generated, or None."""
    marker = _read_marker(Path(root))
    return marker.get("fingerprint") if isinstance(marker, dict) else None


def _check_fingerprint(root: Path) -> None:
    """A cached dataset is reused only with the bytes it was generated with: results trained on
    other images would not be comparable, and nothing else would notice."""
    recorded, found = recorded_fingerprint(root), folder_fingerprint(root, exclude=[_MARKER])
    if found != recorded:
        raise UserInputError(
            f"{root}: the cached synthetic dataset's files changed since it was generated (content "
            f"{found}, recorded {recorded}); delete the folder and it is generated again")


def _looks_generated(root: Path) -> bool:
    """True when ``root`` holds nothing but what this module writes (so it may be replaced)."""
    ours = {"train", "val", "annotations", _MARKER}
    return all(entry.name in ours for entry in root.iterdir())


def ensure_synthetic_dataset(
    root: Optional[PathLike] = None,
    num_train: int = 600,
    num_val: int = 100,
    image_size: int = 128,
    seed: int = 0,
) -> Path:
    """Generate the synthetic shapes dataset into ``root``, unless it is already there.

    Nothing is written when ``<root>/COMPLETE.json`` records the same parameters; the files are then
    checked against the content fingerprint recorded there (``dsanet.data.fingerprint``). Otherwise the
    whole dataset is generated in a temporary sibling folder, the marker is written last, and
    the folder is renamed to ``root`` (replacing an older or unfinished dataset there).

    Args:
        root: Folder for the dataset; ``dataset_folder(...)`` of these parameters when None.
        num_train: Number of training images.
        num_val: Number of validation images.
        image_size: Height and width of every image, in pixels.
        seed: Seed of the generator; the same parameters give byte-identical files.

    Returns:
        The dataset folder, as an absolute path.

    Raises:
        ValueError: If a parameter is out of range.
        FileExistsError: If ``root`` exists and holds files this module did not write.
        UserInputError: If a cached dataset's files differ from its recorded fingerprint.
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(f"image counts must be >= 0, got num_train={num_train}, num_val={num_val}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if root is None:
        root = dataset_folder(num_train, num_val, image_size, seed)
    root = Path(root).expanduser().absolute()
    parameters = _parameters(num_train, num_val, image_size, seed)
    if _is_complete(root, parameters):
        _check_fingerprint(root)
        return root
    if root.exists() and not (root.is_dir() and _looks_generated(root)):
        raise FileExistsError(
            f"{root} exists and is not a synthetic shapes dataset; choose another root"
        )

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        (staging / "annotations").mkdir()
        counts = {"train": num_train, "val": num_val}
        for split_index, split in enumerate(_SPLITS):
            coco = _write_split(staging / split, counts[split], image_size, seed, split_index)
            with open(staging / "annotations" / f"{split}.json", "w", encoding="utf-8") as f:
                json.dump(coco, f)
        fingerprint = folder_fingerprint(staging, exclude=[_MARKER])
        with open(staging / _MARKER, "w", encoding="utf-8") as f:
            json.dump({**parameters, "fingerprint": fingerprint}, f)
        _move_into_place(staging, root, parameters)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the rename succeeded
    return root


def _move_into_place(staging: Path, root: Path, parameters: Dict[str, int]) -> None:
    """Rename the finished ``staging`` folder to ``root``, moving an older dataset aside."""
    for _ in range(3):
        if _is_complete(root, parameters):  # another process finished the same dataset first
            return
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            try:
                os.replace(root, old / "dataset")
            except FileNotFoundError:  # another process moved it aside first
                pass
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(staging, root)  # atomic; fails if another process created root meanwhile
            return
        except OSError:
            continue
    if not _is_complete(root, parameters):
        raise RuntimeError(f"could not move the generated dataset into {root}")


def _write_split(
    image_dir: Path, num_images: int, image_size: int, seed: int, split_index: int
) -> dict:
    """Draw and save one split's images; return its COCO dictionary."""
    image_dir.mkdir(parents=True)
    split_rng = np.random.default_rng([seed, split_index, 0])
    num_empty = int(round(_EMPTY_FRACTION * num_images))
    if num_images >= 2:
        num_empty = max(num_empty, 1)
    empty = set(split_rng.choice(num_images, size=num_empty, replace=False).tolist())

    images, annotations = [], []
    for index in range(num_images):
        image, objects = draw_synthetic_image(seed, split_index, index, image_size, empty=index in empty)
        file_name = f"{index:06d}.jpg"
        image.save(image_dir / file_name, format="JPEG", quality=JPEG_QUALITY)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name,
                       "height": image_size, "width": image_size})
        for category_id, (x0, y0, x1, y1), area in objects:
            annotations.append({
                "id": len(annotations) + 1,  # COCO ids start at 1 (0 means "unmatched" in COCOeval)
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float(area),
                "iscrowd": 0,
            })
    return {
        "info": {"description": "DSANet synthetic shapes", "version": str(DRAWING_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                       for i, name in enumerate(CLASS_NAMES)],
    }


def register_synthetic_dataset(
    root: Optional[PathLike] = None,
    names: Sequence[str] = DEFAULT_DATASET_NAMES,
    **generation_kwargs,
) -> List[str]:
    """Register the synthetic shapes splits with detectron2's ``DatasetCatalog``.

    The dataset is generated first if needed (a cheap check once it is cached). Each split is
    then registered like ``register_coco_instances`` does: its loader calls
    ``load_coco_json`` (after making sure the files are still there), and its metadata holds
    ``json_file``, ``image_root``, ``evaluator_type="coco"`` and ``thing_classes``, so
    ``COCOEvaluator`` works on it. Names already registered for the same files are left as they
    are; registered for another dataset folder (other sizes), they are registered anew.

    Args:
        root: Dataset folder; ``dataset_folder(...)`` of the generation parameters when None.
        names: Dataset names for the train and the val split, in that order.
        **generation_kwargs: ``num_train``, ``num_val``, ``image_size`` or ``seed``, passed to
            ``ensure_synthetic_dataset``.

    Returns:
        The names registered by this call (those not registered before for these files).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json

    if len(names) != len(_SPLITS):
        raise ValueError(f"names must give one name per split {_SPLITS}, got {tuple(names)}")
    root = ensure_synthetic_dataset(root, **generation_kwargs)
    registered = set(DatasetCatalog.list())
    for split, name in zip(_SPLITS, names):
        if name in registered and MetadataCatalog.get(name).get("json_file") != str(root / "annotations" / f"{split}.json"):
            # registered in this process for other sizes (another config): register it anew for these
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
            registered.discard(name)

    def loader(json_file: str, image_root: str, name: str) -> List[dict]:
        ensure_synthetic_dataset(root, **generation_kwargs)
        return load_coco_json(json_file, image_root, name)

    newly_registered = []
    for split, name in zip(_SPLITS, names):
        if name in registered:
            continue
        json_file = str(root / "annotations" / f"{split}.json")
        image_root = str(root / split)
        DatasetCatalog.register(
            name, lambda j=json_file, i=image_root, n=name: loader(j, i, n)
        )
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=list(CLASS_NAMES),
        )
        newly_registered.append(name)
    return newly_registered
