"""The embedded synthetic shapes dataset: deterministic, valid COCO, cached, loadable by detectron2."""
import json
from pathlib import Path

import cv2
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from dsanet.data.fingerprint import folder_fingerprint
from dsanet.data.synthetic import recorded_fingerprint
from dsanet.errors import UserInputError
from dsanet.data import CLASS_NAMES, DEFAULT_DATASET_NAMES, default_root, ensure_synthetic_dataset, register_synthetic_dataset

SMALL = {"num_train": 20, "num_val": 8, "image_size": 96}


def load_split(root: Path, split: str) -> dict:
    with open(root / "annotations" / f"{split}.json", encoding="utf-8") as f:
        return json.load(f)


def file_bytes(root: Path) -> dict:
    """Every file of the dataset, by its path relative to ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def file_mtimes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("shapes") / "data", seed=3, **SMALL)


def test_layout(small_dataset):
    for split, count in (("train", SMALL["num_train"]), ("val", SMALL["num_val"])):
        coco = load_split(small_dataset, split)
        assert len(coco["images"]) == count
        assert sorted(p.name for p in (small_dataset / split).iterdir()) == sorted(
            image["file_name"] for image in coco["images"])
        assert coco["categories"] == [
            {"id": 1, "name": "circle", "supercategory": "shape"},
            {"id": 2, "name": "square", "supercategory": "shape"},
            {"id": 3, "name": "triangle", "supercategory": "shape"},
        ]
    assert json.loads((small_dataset / "COMPLETE.json").read_text())["seed"] == 3
    assert not [p for p in small_dataset.parent.iterdir() if p != small_dataset]  # no temp folders


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, small_dataset):
    again = ensure_synthetic_dataset(tmp_path / "again", seed=3, **SMALL)
    assert file_bytes(again) == file_bytes(small_dataset)

    other = ensure_synthetic_dataset(tmp_path / "other", seed=4, **SMALL)
    assert load_split(other, "train")["annotations"] != load_split(small_dataset, "train")["annotations"]


def test_annotations_are_valid(small_dataset):
    seen_categories = set()
    for split in ("train", "val"):
        coco = load_split(small_dataset, split)
        images = {image["id"]: image for image in coco["images"]}
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        assert min(a["id"] for a in coco["annotations"]) >= 1
        for ann in coco["annotations"]:
            image = images[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]
            assert 0 < ann["area"] <= w * h
            assert ann["iscrowd"] == 0
            assert ann["category_id"] in {1, 2, 3}
            seen_categories.add(ann["category_id"])
        per_image = [sum(a["image_id"] == i for a in coco["annotations"]) for i in images]
        assert max(per_image) <= 4
        if split == "train":
            assert 0 in per_image  # a few images hold no object
            assert sum(n > 0 for n in per_image) >= len(per_image) - 2
    assert seen_categories == {1, 2, 3}


def test_images_have_declared_size(small_dataset):
    coco = load_split(small_dataset, "val")
    for image in coco["images"][:3]:
        pixels = cv2.imread(str(small_dataset / "val" / image["file_name"]))
        assert pixels is not None and pixels.shape == (image["height"], image["width"], 3)


def test_ensure_is_cached_and_regenerates_on_new_parameters(tmp_path):
    root = tmp_path / "data"
    params = dict(num_train=6, num_val=2, image_size=64)
    ensure_synthetic_dataset(root, **params)
    before = file_mtimes(root)
    assert ensure_synthetic_dataset(root, **params) == root
    assert file_mtimes(root) == before

    ensure_synthetic_dataset(root, **{**params, "num_train": 5})
    assert len(load_split(root, "train")["images"]) == 5
    assert len(list((root / "train").iterdir())) == 5
    assert json.loads((root / "COMPLETE.json").read_text())["num_train"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_unfinished_dataset_is_regenerated(tmp_path):
    root = tmp_path / "data"
    ensure_synthetic_dataset(root, num_train=4, num_val=2, image_size=64)
    (root / "COMPLETE.json").unlink()  # as if generation had stopped before the marker
    (root / "train" / "000000.jpg").unlink()
    ensure_synthetic_dataset(root, num_train=4, num_val=2, image_size=64)
    assert (root / "COMPLETE.json").is_file() and (root / "train" / "000000.jpg").is_file()


def test_a_cached_dataset_is_reused_only_with_the_bytes_it_was_generated_with(tmp_path):
    root = ensure_synthetic_dataset(tmp_path / "data", num_train=4, num_val=2, image_size=64)
    recorded = recorded_fingerprint(root)
    assert recorded == folder_fingerprint(root, exclude=["COMPLETE.json"])
    image = root / "val" / "000001.jpg"
    original = image.read_bytes()
    image.write_bytes(original[:-10] + bytes(10))  # another encoder, or a damaged file: other bytes
    with pytest.raises(UserInputError, match=r"data: the cached synthetic dataset's files changed"):
        ensure_synthetic_dataset(root, num_train=4, num_val=2, image_size=64)
    assert image.read_bytes() != original  # nothing is replaced behind the user's back
    image.write_bytes(original)
    assert ensure_synthetic_dataset(root, num_train=4, num_val=2, image_size=64) == root


def test_a_cache_without_a_recorded_fingerprint_is_generated_again(tmp_path):
    root = ensure_synthetic_dataset(tmp_path / "data", num_train=4, num_val=2, image_size=64)
    marker = json.loads((root / "COMPLETE.json").read_text())
    del marker["fingerprint"]
    (root / "COMPLETE.json").write_text(json.dumps(marker))
    ensure_synthetic_dataset(root, num_train=4, num_val=2, image_size=64)
    assert recorded_fingerprint(root) == folder_fingerprint(root, exclude=["COMPLETE.json"])


def test_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        ensure_synthetic_dataset(tmp_path, num_train=2, num_val=1, image_size=64)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_default_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DSANET_CACHE", str(tmp_path))
    assert default_root() == tmp_path / "synthetic_shapes"
    monkeypatch.delenv("DSANET_CACHE")
    assert default_root() == Path.home() / ".cache" / "dsanet" / "synthetic_shapes"


def test_register_loads_with_detectron2(small_dataset):
    names = ("test_synthetic_shapes_train", "test_synthetic_shapes_val")
    try:
        assert register_synthetic_dataset(small_dataset, names=names, seed=3, **SMALL) == list(names)
        assert register_synthetic_dataset(small_dataset, names=names, seed=3, **SMALL) == []
        for name, split in zip(names, ("train", "val")):
            dicts = DatasetCatalog.get(name)
            assert len(dicts) == len(load_split(small_dataset, split)["images"])
            annotations = [a for d in dicts for a in d["annotations"]]
            assert annotations and all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in annotations)
            assert {a["category_id"] for a in annotations} <= {0, 1, 2}
            metadata = MetadataCatalog.get(name)
            assert metadata.thing_classes == list(CLASS_NAMES)
            assert metadata.evaluator_type == "coco"
            assert Path(metadata.json_file).is_file()
            assert metadata.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
            first = dicts[0]
            pixels = cv2.imread(first["file_name"])
            assert pixels.shape[:2] == (first["height"], first["width"])
        train = DatasetCatalog.get(names[0])
        assert {a["category_id"] for d in train for a in d["annotations"]} == {0, 1, 2}
        assert any(not d["annotations"] for d in train)
    finally:
        for name in names:
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_each_size_has_its_own_cached_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DSANET_CACHE", str(tmp_path))
    small = ensure_synthetic_dataset(num_train=4, num_val=2, image_size=64)
    large = ensure_synthetic_dataset(num_train=4, num_val=5, image_size=64)
    assert small != large and small.parent == large.parent == default_root()
    assert len(load_split(small, "val")["images"]) == 2 and len(load_split(large, "val")["images"]) == 5
    assert ensure_synthetic_dataset(num_train=4, num_val=2, image_size=64) == small  # still cached, not regenerated
    assert (small / "val" / "000000.jpg").read_bytes() == (large / "val" / "000000.jpg").read_bytes()


def test_the_config_sets_the_sizes_and_another_size_registers_anew(monkeypatch, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from omegaconf import OmegaConf

    from dsanet.data import register_datasets_for

    monkeypatch.setenv("DSANET_CACHE", str(tmp_path))
    for name in DEFAULT_DATASET_NAMES:  # another test of this process may have registered them
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    for num_val in (3, 5):
        cfg = OmegaConf.create({"dataloader": {
            "train": {"dataset": {"names": "synthetic_shapes_train"}},
            "test": {"dataset": {"names": "synthetic_shapes_val"}},
            "synthetic": {"num_train": 4, "num_val": num_val, "image_size": 64}}})
        register_datasets_for(cfg)
        assert len(DatasetCatalog.get("synthetic_shapes_val")) == num_val
        assert f"val{num_val}-" in MetadataCatalog.get("synthetic_shapes_val").json_file
