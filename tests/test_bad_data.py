"""Broken annotation files and broken images, on real files written here and detectron2's real loaders.

Annotations: broken structure is one clear error naming the file, the record and the field, before
training; unusable boxes are dropped with a logged count. Images: odd modes are converted right,
unreadable files are skipped with a warning naming them, in training, evaluation and drawing.
"""
import copy
import itertools
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dsanet  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data import transforms as T

from dsanet.data import check_num_classes, register_coco_format_datasets
from dsanet.data.mapper import UNREADABLE_ERRORS, UNREADABLE_KEY, RobustDatasetMapper, read_image
from dsanet.errors import UserInputError
from dsanet.evaluation import COCOEvaluatorWithRecall

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "Demo" / "dsanet_conf_synthetic_cpu.py"
HEIGHT, WIDTH = 64, 96
RED_RGB = (200, 40, 10)
CATEGORIES = [{"id": 3, "name": "box"}, {"id": 7, "name": "disc"}]  # not 1..K: detectron2 maps them to 0, 1


def picture(seed: int) -> np.ndarray:
    """(H, W, 3) uint8: grey background with one red rectangle at rows 16-40, columns 20-60."""
    pixels = np.random.default_rng(seed).integers(90, 110, size=(HEIGHT, WIDTH, 3)).astype(np.uint8)
    pixels[16:40, 20:60] = RED_RGB
    return pixels


def annotation(ann_id: int, image_id: int, bbox=(20, 16, 40, 24), category_id: int = 3) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": list(bbox),
            "area": float(bbox[2] * bbox[3]), "iscrowd": 0}


def write_dataset(root: Path, num_images: int = 4, extra_images=()) -> dict:
    """A COCO-format split of good PNGs plus ``extra_images`` (file name, writer) in ``root``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    names = [(f"good_{i}.png", lambda path, i=i: Image.fromarray(picture(i)).save(path)) for i in range(num_images)]
    for image_id, (name, write) in enumerate([*names, *extra_images], start=1):
        write(root / "images" / name)
        images.append({"id": image_id, "file_name": name, "height": HEIGHT, "width": WIDTH})
        annotations.append(annotation(image_id, image_id, category_id=3 if image_id % 2 else 7))
    return {"images": images, "annotations": annotations, "categories": copy.deepcopy(CATEGORIES)}


def save_json(data: dict, path: Path) -> Path:
    path.write_text(json.dumps(data))  # NaN is written as the bare NaN that json.load accepts
    return path


def register(name: str, json_file: Path, image_root: Path) -> str:
    register_coco_format_datasets({name: {"json_file": str(json_file), "image_root": str(image_root)}})
    return name


def unique_name(tmp_path: Path) -> str:
    return f"bad_data_{tmp_path.name}"


# ---------------------------------------------------------------------------------------------
# Broken annotation files


def _set(path: str, value):
    """A mutation that sets data[a][i][key] (path "a.i.key") to value, or deletes it for ``...``."""
    def mutate(data):
        *parents, key = path.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is ...:
            del node[key]
        else:
            node[int(key) if key.isdigit() else key] = value
    return mutate


STRUCTURE_DEFECTS = {
    "missing bbox": (_set("annotations.1.bbox", ...), "annotations[1] (id 2): missing key 'bbox'"),
    "missing area": (_set("annotations.0.area", ...), "annotations[0] (id 1): missing key 'area'"),
    "bbox of 3 numbers": (_set("annotations.2.bbox", [1, 2, 3]), "annotations[2] (id 3): 'bbox' is [1, 2, 3]"),
    "bbox as strings": (_set("annotations.2.bbox", ["1", "2", "3", "4"]), "annotations[2] (id 3): 'bbox'"),
    "width as string": (_set("images.3.width", "96"), "images[3] (id 4): 'width' is \"96\" (str)"),
    "image without id": (_set("images.2.id", ...), "images[2]: missing key 'id'"),
    "unknown category": (_set("annotations.3.category_id", 5),
                         "annotations[3] (id 4): 'category_id' 5 is not among the categories' ids [3, 7]"),
    "duplicate image id": (_set("images.3.id", 2), "images[3] (id 2): 'id' 2 is also the id of images[1]"),
    "duplicate annotation id": (_set("annotations.2.id", 1),
                                "annotations[2] (id 1): 'id' 1 is also the id of annotations[0]"),
    "category without name": (_set("categories.1.name", ...), "categories[1]: missing key 'name'"),
    "no categories key": (_set("categories", ...), "missing top-level key 'categories'"),
    "annotations not a list": (_set("annotations", {}), "'annotations' is a dict, expected a list"),
}


@pytest.mark.parametrize("defect", sorted(STRUCTURE_DEFECTS))
def test_broken_structure_is_one_error_naming_file_record_and_field(defect, tmp_path):
    mutate, expected = STRUCTURE_DEFECTS[defect]
    data = write_dataset(tmp_path)
    mutate(data)
    json_file = save_json(data, tmp_path / "train.json")
    with pytest.raises(UserInputError) as error:
        register(unique_name(tmp_path), json_file, tmp_path / "images")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{json_file}: ") and expected in message, message


def test_invalid_json_is_one_error_naming_the_file_and_position(tmp_path):
    json_file = tmp_path / "train.json"
    json_file.write_text('{"images": [}')
    with pytest.raises(UserInputError, match=f"^{json_file}: not valid JSON: .*line 1 column"):
        register(unique_name(tmp_path), json_file, tmp_path)


def test_unusable_annotations_are_dropped_with_a_logged_count(tmp_path, caplog):
    data = write_dataset(tmp_path, num_images=3)
    data["annotations"] += [
        annotation(10, 1, bbox=(5, 5, 0, 10)),                    # zero width
        annotation(11, 2, bbox=(5, 5, 10, -3)),                   # negative height
        annotation(12, 2, bbox=(math.nan, 5, 10, 10)),            # NaN
        annotation(13, 3, bbox=(WIDTH + 5, 5, 10, 10)),           # right of the image
        annotation(14, 99),                                       # image 99 does not exist
        annotation(15, 3, bbox=(WIDTH - 10, 50, 30, 30)),         # partly outside: kept, clipped later
        {**annotation(16, 1), "area": -1.0},                      # negative area
    ]
    json_file = save_json(data, tmp_path / "train.json")
    name = unique_name(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dsanet"):
        register(name, json_file, tmp_path / "images")
    summary = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(summary) == 1, caplog.text
    assert f"{json_file}: dropped 6 of 10 annotations" in summary[0]
    for expected in ["1 with its image_id is not among the images (annotations[7] (id 14))",
                     "1 with a non-finite (NaN or infinite) bbox or area (annotations[5] (id 12))",
                     "2 with a bbox of zero or negative width or height (annotations[3] (id 10), annotations[4] (id 11))",
                     "1 with a bbox entirely outside its image (annotations[6] (id 13))",
                     "1 with a negative area (annotations[9] (id 16))"]:
        assert expected in summary[0]

    records = {r["image_id"]: r for r in DatasetCatalog.get(name)}
    boxes = {image_id: [a["bbox"] for a in r["annotations"]] for image_id, r in records.items()}
    assert boxes == {1: [[20, 16, 40, 24]], 2: [[20, 16, 40, 24]], 3: [[20, 16, 40, 24], [WIDTH - 10, 50, 30, 30]]}
    # Category ids 3 and 7 become classes 0 and 1, never a wrong label.
    assert [records[i]["annotations"][0]["category_id"] for i in (1, 2, 3)] == [0, 1, 0]
    assert MetadataCatalog.get(name).thing_classes == ["box", "disc"]

    # The evaluator's ground truth drops the same annotations (not only the training records).
    evaluator = COCOEvaluatorWithRecall(name, output_dir=str(tmp_path / "eval"))
    assert sorted(evaluator.ground_truth.getAnnIds()) == [1, 2, 3, 15]


def test_category_count_must_match_model_num_classes(tmp_path):
    from detectron2.config import LazyConfig

    json_file = save_json(write_dataset(tmp_path), tmp_path / "train.json")
    name = register(unique_name(tmp_path), json_file, tmp_path / "images")
    cfg = LazyConfig.load(str(DEMO_CONFIG))
    cfg.dataloader.train.dataset.names = name
    cfg.model.num_classes = 3
    with pytest.raises(UserInputError) as error:
        check_num_classes(cfg)
    assert str(error.value) == (f"dataloader.train.dataset.names: dataset {name!r} has 2 categories (its json "
                                f"{json_file}) but model.num_classes=3; set model.num_classes=2")
    cfg.model.num_classes = 2
    cfg.dataloader.test.dataset.names = name
    check_num_classes(cfg)  # ids 3 and 7: two categories, whatever their ids


# ---------------------------------------------------------------------------------------------
# Broken images


def save_cmyk_jpeg(path):
    Image.fromarray(picture(0)).convert("CMYK").save(path, format="JPEG", quality=95)


def save_16_bit_png(path):
    """Mode I;16 PNG: the 8-bit picture's red channel times 257 (full 16-bit range)."""
    Image.fromarray(picture(0)[:, :, 0].astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode.startswith("I")


def save_exif_rotated_jpeg(path):
    """The picture stored turned 90 degrees, with EXIF orientation 6 (rotate 270 to view upright)."""
    stored = Image.fromarray(picture(0)).transpose(Image.Transpose.ROTATE_90)
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(path, format="JPEG", quality=95, subsampling=0, exif=exif)  # no chroma blur: colours stay


def save_truncated_png(path):
    Image.fromarray(picture(0)).save(path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


READABLE = {
    "gray.png": lambda p: Image.fromarray(picture(0)[:, :, 0]).save(p),
    "rgba.png": lambda p: Image.fromarray(np.dstack([picture(0), np.full((HEIGHT, WIDTH), 128, np.uint8)])).save(p),
    "cmyk.jpg": save_cmyk_jpeg,
    "deep.png": save_16_bit_png,
    "exif.jpg": save_exif_rotated_jpeg,
}
UNREADABLE = {
    "empty.png": lambda p: Path(p).write_bytes(b""),
    "truncated.png": save_truncated_png,
}


@pytest.mark.parametrize("name", sorted(READABLE))
def test_odd_image_modes_are_converted_correctly(name, tmp_path):
    path = tmp_path / name
    READABLE[name](path)
    bgr = read_image(str(path), format="BGR")
    assert bgr.shape == (HEIGHT, WIDTH, 3) and bgr.dtype == np.uint8
    expected = picture(0)[:, :, ::-1].astype(int)
    if name in ("gray.png", "deep.png"):
        expected = np.repeat(picture(0)[:, :, :1], 3, axis=2).astype(int)
    tolerance = 12 if name.endswith(".jpg") else 1  # JPEG is lossy
    assert np.abs(bgr[16:40, 20:60].astype(int) - expected[16:40, 20:60]).max() <= tolerance
    assert np.abs(bgr.astype(int) - expected).mean() <= tolerance


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_images_raise_an_error_the_mapper_catches(name, tmp_path):
    path = tmp_path / name
    UNREADABLE[name](path)
    with pytest.raises(UNREADABLE_ERRORS):
        read_image(str(path), format="BGR")


def mapper(is_train: bool) -> RobustDatasetMapper:
    return RobustDatasetMapper(is_train=is_train, augmentations=[T.RandomFlip()] if is_train else [],
                               image_format="BGR")


def test_mapper_skips_unreadable_images_with_a_warning_naming_them(tmp_path, caplog):
    data = write_dataset(tmp_path, num_images=1, extra_images=[
        ("empty.png", UNREADABLE["empty.png"]), ("truncated.png", UNREADABLE["truncated.png"]),
        ("rotated_size.jpg", save_exif_rotated_jpeg)])
    data["images"][3].update(height=WIDTH, width=HEIGHT)  # the stored size, not the upright one
    records = [{"file_name": str(tmp_path / "images" / im["file_name"]), "image_id": im["id"],
                "height": im["height"], "width": im["width"], "annotations": []} for im in data["images"]]
    with caplog.at_level(logging.WARNING, logger="dsanet"):
        assert mapper(True)(copy.deepcopy(records[0]))["image"].shape == (3, HEIGHT, WIDTH)
        for record in records[1:]:
            assert mapper(True)(copy.deepcopy(record)) is None
            flagged = mapper(False)(copy.deepcopy(record))
            assert flagged[UNREADABLE_KEY] and flagged["image_id"] == record["image_id"]
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped image")]
    assert len(warnings) == 3  # one per file, however often it is met
    for record, error in zip(records[1:], ["UnidentifiedImageError", "truncated", "SizeMismatchError"]):
        assert any(record["file_name"] in w and error in w for w in warnings), warnings


def test_training_loader_takes_other_images_when_some_are_unreadable(tmp_path):
    data = write_dataset(tmp_path, num_images=2, extra_images=[(n, UNREADABLE[n]) for n in sorted(UNREADABLE)])
    json_file = save_json(data, tmp_path / "train.json")
    name = register(unique_name(tmp_path), json_file, tmp_path / "images")
    loader = build_detection_train_loader(dataset=DatasetCatalog.get(name), mapper=mapper(True),
                                          total_batch_size=2, num_workers=0)
    batches = list(itertools.islice(loader, 6))
    files = {Path(r["file_name"]).name for batch in batches for r in batch}
    assert files <= {"good_0.png", "good_1.png"} and len(batches) == 6


# ---------------------------------------------------------------------------------------------
# End to end: train_net.py and the drawing tool on a dataset that holds every kind of image


def run(script: Path, *args, cache_dir: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DSANET_CACHE=str(cache_dir), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=300, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{script.name} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def dataset_overrides(json_file: Path, image_root: Path) -> list:
    return [f"+datasets.mixed.json_file={json_file}", f"+datasets.mixed.image_root={image_root}",
            "dataloader.train.dataset.names=mixed", "dataloader.test.dataset.names=mixed", "model.num_classes=2",
            "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
            "train.seed=0", "train.log_period=1"]


def test_train_evaluate_and_draw_on_a_dataset_with_broken_images(tmp_path):
    extra = [(n, w) for n, w in [*READABLE.items(), *UNREADABLE.items()]]
    data = write_dataset(tmp_path, num_images=2, extra_images=extra)
    json_file = save_json(data, tmp_path / "mixed.json")
    out = tmp_path / "out"
    result = run(ROOT / "train_net.py", "--config-file", DEMO_CONFIG, *dataset_overrides(json_file, tmp_path / "images"),
                 f"train.output_dir={out}", "train.max_iter=3", "train.eval_period=3", cache_dir=tmp_path)
    log = result.stdout + result.stderr
    assert (out / "model_final.pth").is_file() and "AP\tAP50" in log
    for name in UNREADABLE:  # named in training (skipped) and in evaluation (left out of the metrics)
        assert f"skipped image {tmp_path / 'images' / name}" in log
    left_out = [line for line in log.splitlines() if "unreadable image(s) left out of the COCO metrics" in line]
    assert len(left_out) == 1 and "2 unreadable" in left_out[0]
    assert all(str(tmp_path / "images" / n) in left_out[0] for n in UNREADABLE)
    predicted = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    assert not {p["image_id"] for p in predicted} & {8, 9}  # the two unreadable images (ids 8, 9)

    drawn = run(ROOT / "tools" / "visualize_predictions.py", "--config-file", DEMO_CONFIG,
                "--weights", out / "model_final.pth", "--output", tmp_path / "drawn", "--num-images", "9",
                "--score-thresh", "0.0", *dataset_overrides(json_file, tmp_path / "images"), cache_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == sorted(
        ["good_0.png", "good_1.png", "gray.png", "rgba.png", "cmyk.png", "deep.png", "exif.png"])
    for name in UNREADABLE:
        assert f"warning: skipped image {tmp_path / 'images' / name}" in drawn.stderr


@pytest.mark.parametrize("defect,overrides,expected", [
    ("unknown category", [], "annotations[0] (id 1): 'category_id' 5 is not among the categories' ids [3, 7]"),
    ("class count", ["model.num_classes=3"], "has 2 categories (its json"),
])
def test_train_net_stops_before_training_with_one_line(defect, overrides, expected, tmp_path):
    data = write_dataset(tmp_path, num_images=2)
    if defect == "unknown category":
        data["annotations"][0]["category_id"] = 5
    json_file = save_json(data, tmp_path / "mixed.json")
    result = run(ROOT / "train_net.py", "--config-file", DEMO_CONFIG, *dataset_overrides(json_file, tmp_path / "images"),
                 *overrides, f"train.output_dir={tmp_path / 'out'}", "train.max_iter=2", cache_dir=tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last and (str(json_file) in last)
    assert not (tmp_path / "out" / "model_final.pth").exists()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_train_net_on_a_dataset_without_one_readable_image_stops_with_one_line(num_workers, tmp_path):
    """Every image unreadable: one error line and exit status 2 (v0.6 and detectron2 main word the
    empty retry pool differently; both end here), also when a loader worker raises it."""
    data = write_dataset(tmp_path, num_images=0, extra_images=[(n, UNREADABLE[n]) for n in sorted(UNREADABLE)])
    json_file = save_json(data, tmp_path / "mixed.json")
    result = run(ROOT / "train_net.py", "--config-file", DEMO_CONFIG, *dataset_overrides(json_file, tmp_path / "images"),
                 f"dataloader.train.num_workers={num_workers}", f"train.output_dir={tmp_path / 'out'}",
                 "train.max_iter=2", cache_dir=tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the data loader found no element of the dataset that it could map "
        "(every image it tried was skipped; see the warnings naming them)")
