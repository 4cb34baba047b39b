"""Synthetic shapes: a small, deterministic object-detection dataset that ships with DSANet.

It lets a detector be trained and evaluated on a CPU in a few minutes, with no download.
Every image is a square JPEG (128x128 pixels by default) whose background is low-contrast,
low-saturation clutter (noise, blurred blobs and thin lines), with zero to four filled,
saturated-colour shapes of three classes drawn on top:

========  ===========  ================================================================
id        name         shape
========  ===========  ================================================================
1         ``circle``   a disc of diameter ``s``
2         ``square``   a square of side ``s``, rotated by a random angle
3         ``triangle`` an equilateral triangle of side ``s``, rotated by a random angle
========  ===========  ================================================================

Sizes ``s`` are log-uniform between ``image_size / 8`` and ``image_size / 2`` (16 to 64 pixels
at the default size). Shapes may reach a little past the image border and may overlap, but
every shape keeps at least 60% of its pixels inside the image and visible. A ground-truth box
is the tight box around all pixels of the drawn shape, clipped to the image; its ``area`` is
the number of the shape's pixels inside the image. About 3% of the images of each split hold
no object at all (their annotation list is empty), as in real datasets.

On disk, the layout is COCO's::

    <root>/train/000000.jpg ...          <root>/annotations/train.json
    <root>/val/000000.jpg ...            <root>/annotations/val.json
    <root>/COMPLETE.json                 (the generation parameters; written last)

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
import colorsys
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_DATASET_NAMES",
    "default_root",
    "dataset_folder",
    "draw_synthetic_image",
    "ensure_synthetic_dataset",
    "register_synthetic_dataset",
]

CLASS_NAMES = ("circle", "square", "triangle")
DEFAULT_DATASET_NAMES = ("synthetic_shapes_train", "synthetic_shapes_val")

_FORMAT_VERSION = 1  # bump whenever the drawing changes, so cached datasets are regenerated
_MARKER = "COMPLETE.json"
_SPLITS = ("train", "val")
_EMPTY_FRACTION = 0.03
_MAX_OBJECTS = 4
_MIN_VISIBLE_FRACTION = 0.6  # of a shape's pixels: inside the image and not hidden by later shapes
_PLACEMENT_TRIES = 30
JPEG_QUALITY = 92  # of the dataset's files

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


def _remove_unsized_cache(base: Path) -> None:
    """Before datasets had one folder per size, the default one lay directly in ``default_root()``; remove it."""
    if (base / _MARKER).is_file():
        for name in ("train", "val", "annotations", _MARKER):
            target = base / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            elif target.exists():
                target.unlink()


def _parameters(num_train: int, num_val: int, image_size: int, seed: int) -> Dict[str, int]:
    return {
        "format_version": _FORMAT_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
    }


def _is_complete(root: Path, parameters: Dict[str, int]) -> bool:
    """True when ``root`` holds a finished dataset generated with exactly ``parameters``."""
    try:
        with open(root / _MARKER, encoding="utf-8") as f:
            return json.load(f) == parameters
    except (OSError, ValueError):
        return False


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

    Nothing is written when ``<root>/COMPLETE.json`` records the same parameters. Otherwise the
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
    """
    if num_train < 0 or num_val < 0:
        raise ValueError(f"image counts must be >= 0, got num_train={num_train}, num_val={num_val}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    if root is None:
        _remove_unsized_cache(default_root())
        root = dataset_folder(num_train, num_val, image_size, seed)
    root = Path(root).expanduser().absolute()
    parameters = _parameters(num_train, num_val, image_size, seed)
    if _is_complete(root, parameters):
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
        with open(staging / _MARKER, "w", encoding="utf-8") as f:
            json.dump(parameters, f)
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
        "info": {"description": "DSANet synthetic shapes", "version": str(_FORMAT_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                       for i, name in enumerate(CLASS_NAMES)],
    }


def draw_synthetic_image(seed: int, split_index: int, index: int, image_size: int = 128, *, empty: bool = False
                         ) -> Tuple[Image.Image, List[Tuple[int, Tuple[int, int, int, int], int]]]:
    """Image ``index`` of split ``split_index`` (0: train, 1: val) of the dataset of ``seed``, as drawn
    before it is saved as a JPEG (quality ``JPEG_QUALITY``); other users of the drawing (backbone
    pretraining, :mod:`dsanet.pretrain`) take their images from here.

    Args:
        seed: the generator's seed; the image depends only on ``seed``, ``split_index`` and ``index``.
        split_index: which stream of images of that seed (0 and 1 are the dataset's train and val).
        index: the image's index in that stream.
        image_size: height and width in pixels.
        empty: draw the background only (the dataset's few images without objects).
    Returns:
        the RGB image and its objects as ``(category_id, (x0, y0, x1, y1), area)``, x1/y1 exclusive.
    """
    rng = np.random.default_rng([seed, split_index, 1, index])
    return _draw_image(rng, image_size, 0 if empty else None)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-contrast, low-saturation clutter: blurred blobs, thin lines and pixel noise."""
    base = rng.uniform(70, 185) + rng.uniform(-8, 8, size=3)

    def nearby_colour(spread: float) -> Tuple[int, int, int]:
        tint = rng.uniform(-spread, spread) + rng.uniform(-spread / 4, spread / 4, size=3)
        return tuple(int(v) for v in np.clip(base + tint, 0, 255))

    image = Image.new("RGB", (size, size), nearby_colour(0))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 14))):
        cx, cy = rng.uniform(0, size, size=2)
        rx, ry = rng.uniform(size / 16, size / 3, size=2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=nearby_colour(28))
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(3, 7))))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0, x1, y1 = rng.uniform(-size / 4, size * 5 / 4, size=4)
        draw.line([x0, y0, x1, y1], fill=nearby_colour(30), width=int(rng.integers(1, 4)))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0, 5, size=pixels.shape)
    return np.clip(pixels, 0, 255)


def _object_colour(rng: np.random.Generator) -> Tuple[int, int, int]:
    """A saturated, bright colour, far from the grey-ish background."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.65, 1), rng.uniform(0.7, 1))
    return int(r * 255), int(g * 255), int(b * 255)


def _shape_mask(category: int, size: float, cx: float, cy: float, angle: float,
                image_size: int, pad: int) -> np.ndarray:
    """Boolean mask of one filled shape on a canvas padded by ``pad`` pixels on every side."""
    canvas = Image.new("L", (image_size + 2 * pad,) * 2, 0)
    draw = ImageDraw.Draw(canvas)
    centre = (cx + pad, cy + pad)
    if category == 1:  # circle of diameter `size`
        r = size / 2
        draw.ellipse([centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r], fill=255)
    elif category == 2:  # square of side `size`
        draw.regular_polygon((centre, size / np.sqrt(2)), 4, rotation=angle, fill=255)
    else:  # equilateral triangle of side `size`
        draw.regular_polygon((centre, size / np.sqrt(3)), 3, rotation=angle, fill=255)
    return np.asarray(canvas) > 0


def _draw_image(rng: np.random.Generator, image_size: int, num_objects: Optional[int] = None
                ) -> Tuple[Image.Image, List[Tuple[int, Tuple[int, int, int, int], int]]]:
    """One image and its objects as ``(category_id, (x0, y0, x1, y1), area)``, x1/y1 exclusive."""
    pixels = _background(rng, image_size)
    if num_objects is None:
        num_objects = int(rng.integers(1, _MAX_OBJECTS + 1))
    min_size, max_size = image_size / 8, image_size / 2
    pad = int(np.ceil(max_size))
    inside = (slice(pad, pad + image_size),) * 2

    placed = []  # (category, full in-image mask, visible mask)
    for attempt in range(num_objects * _PLACEMENT_TRIES):
        if len(placed) == num_objects:
            break
        category = int(rng.integers(1, len(CLASS_NAMES) + 1))
        size = float(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
        cx, cy = rng.uniform(-0.2 * size, image_size + 0.2 * size, size=2)
        angle = float(rng.uniform(0, 360))
        if not placed and attempt == num_objects * _PLACEMENT_TRIES - 1:
            cx = cy = image_size / 2  # last resort: every image meant to hold objects gets one
        full = _shape_mask(category, size, cx, cy, angle, image_size, pad)
        mask = full[inside]
        total = full.sum()
        if total == 0 or mask.sum() < _MIN_VISIBLE_FRACTION * total:
            continue
        # A new shape is drawn on top: every earlier shape must stay visible enough.
        if any((visible & ~mask).sum() < _MIN_VISIBLE_FRACTION * shape_total
               for _, _, visible, shape_total in placed):
            continue
        placed = [(c, whole, visible & ~mask, t) for c, whole, visible, t in placed]
        placed.append((category, mask, mask.copy(), total))
        pixels[mask] = _object_colour(rng)

    pixels += rng.normal(0, 3, size=pixels.shape)  # sensor noise over objects and background
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    objects = []
    for category, mask, _, _ in placed:
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        objects.append((category, box, int(mask.sum())))
    return image, objects


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
