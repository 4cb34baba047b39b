"""Drawing the synthetic shapes: one image and its objects from a seed, a stream and an index.

The detection dataset (:mod:`dsanet.data.synthetic`) and backbone pretraining (:mod:`dsanet.pretrain`)
both take their images from :func:`draw_synthetic_image`. Every image is square, its background
low-contrast, low-saturation clutter (noise, blurred blobs and thin lines), with zero to four filled,
saturated-colour shapes of three classes drawn on top:

========  ===========  ================================================================
id        name         shape
========  ===========  ================================================================
1         ``circle``   a disc of diameter ``s``
2         ``square``   a square of side ``s``, rotated by a random angle
3         ``triangle`` an equilateral triangle of side ``s``, rotated by a random angle
========  ===========  ================================================================

Sizes ``s`` are log-uniform between ``image_size / 8`` and ``image_size / 2`` (16 to 64 pixels
at 128x128). Shapes may reach a little past the image border and may overlap, but every shape
keeps at least 60% of its pixels inside the image and visible. An object's box is the tight box
around all pixels of the drawn shape, clipped to the image; its ``area`` is the number of the
shape's pixels inside the image.
"""
import colorsys
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["CLASS_NAMES", "DRAWING_VERSION", "JPEG_QUALITY", "draw_synthetic_image"]

CLASS_NAMES = ("circle", "square", "triangle")
DRAWING_VERSION = 1  # bump whenever the drawing changes, so cached datasets are regenerated
JPEG_QUALITY = 92  # of the dataset's files, and of the pretraining images (which go through the same encoding)
_MAX_OBJECTS = 4
_MIN_VISIBLE_FRACTION = 0.6  # of a shape's pixels: inside the image and not hidden by later shapes
_PLACEMENT_TRIES = 30


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
