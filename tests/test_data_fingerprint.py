"""The embedded dataset is the same bytes on every machine: a change in the drawing or in the image
encoder fails here, by name, instead of moving every trained result without a word."""
import pytest

from dsanet.data.fingerprint import folder_fingerprint
from dsanet.data.synthetic import ensure_synthetic_dataset

# Six training and three validation images of seed 0 at 128 px (`ensure_synthetic_dataset`'s defaults
# but for the counts). A change here must come with a reason: every kept result was trained on the
# images these fingerprints pin.
PINNED = {
    "annotations": "sha256:fe33e8455f4c4cd4213c8f056a3aad2a558a2d8624bdc90bba67ca1a33c2f0e5",
    "train": "sha256:2ccc2e50affc6e2410b5f36ca2468936ddb810225fef6818baace0b6028d0bd5",
    "val": "sha256:8c5b0b4f19c31223706ca25d26e877aa3b1dce06ceada11fa8f3903b4b6469bf",
}
WHAT_CHANGED = {
    "annotations": "the drawing (shapes, boxes or areas) changed",
    "train": "the training images changed (drawing, Pillow's drawing or its JPEG encoder)",
    "val": "the validation images changed (drawing, Pillow's drawing or its JPEG encoder)",
}


@pytest.mark.parametrize("part", sorted(PINNED))
def test_embedded_dataset_is_pinned(tmp_path, part):
    root = ensure_synthetic_dataset(tmp_path / "shapes", num_train=6, num_val=3)
    found = folder_fingerprint(root / part)
    assert found == PINNED[part], (
        f"embedded dataset, {part}/: {WHAT_CHANGED[part]}: fingerprint {found}, pinned {PINNED[part]}. "
        "Results trained on the old images are not comparable with new ones.")


def test_fingerprint_sees_content_and_names_but_not_listing_order(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"123")
    (tmp_path / "b.json").write_text("{}")
    reference = folder_fingerprint(tmp_path)
    (tmp_path / "a" / "x.jpg").write_bytes(b"124")
    assert folder_fingerprint(tmp_path) != reference
    (tmp_path / "a" / "x.jpg").write_bytes(b"123")
    assert folder_fingerprint(tmp_path) == reference
    (tmp_path / "a" / "x.jpg").rename(tmp_path / "a" / "y.jpg")
    assert folder_fingerprint(tmp_path) != reference
    assert folder_fingerprint(tmp_path, exclude=["b.json"]) != folder_fingerprint(tmp_path)
