"""The trained model that ships with the package: it loads offline by config name, and it still outputs what
it output when it was shipped (an inference accuracy test, in the spirit of detectron2's
``quick_schedules/*_inference_acc_test``).

The accuracy test evaluates the shipped fp16 weights on the first images of the demo validation split at one
intra-op thread and compares with ``metrics.json``'s ``accuracy_test``. CPU fp32 inference at a fixed thread
count repeats bit for bit: on the processor that shipped the model, the slice evaluated twice at one
thread, and once at two, gave identical AP, boxes (kept to 1e-3 px) and scores (kept to 1e-5). The
tolerances (AP 0.05 points, boxes 1e-2 px, scores 1e-4: ten rounding steps) only absorb what another
processor's kernels may round differently. Swapping the fusion's exponents (alpha 0.4 for 0.6) moves the
slice's AP by 0.56, and renaming a parameter leaves it untrained: either fails here.
"""
import hashlib
import shutil

import pytest
import torch

from conftest import load_script
from dsanet import model_zoo
from dsanet.errors import UserInputError

DEMO = "Demo/dsanet_conf_synthetic_cpu.py"
AP_TOLERANCE = 0.05
BOX_TOLERANCE = 1e-2
SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def shipped():
    weights = model_zoo.trained_weights(DEMO)
    assert weights is not None, f"no trained model ships for {DEMO}"
    return {"weights": weights, "metrics": model_zoo.trained_metrics(DEMO)}


def test_the_demo_model_ships_small_with_its_hash_and_metrics(shipped):
    with open(shipped["weights"], "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert shipped["weights"].endswith(f"model_final_{digest[:8]}.pth")
    metrics = shipped["metrics"]
    assert metrics["weights"] == shipped["weights"].rsplit("/", 1)[-1]
    assert set(metrics["metrics"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "ARs", "ARm", "ARl"}
    assert metrics["size_bytes"] < 16 * 2 ** 20
    assert {"command", "date"} <= set(metrics["provenance"])


def test_model_zoo_loads_the_trained_demo_model_offline(shipped):
    model = model_zoo.get(DEMO, trained=True, device="cpu")
    assert not model.training
    weights = torch.load(shipped["weights"], map_location="cpu", weights_only=True)["model"]
    state = model.state_dict()
    assert set(weights) == set(state)
    for name, value in weights.items():  # fp16 on disk, widened exactly to the model's fp32
        assert torch.equal(state[name], value.to(state[name].dtype)), name


def test_configs_without_a_trained_model_say_so():
    with pytest.raises(UserInputError, match=r"no trained weights ship for COCO-Detection/dsanet_conf_R_50_FPN_1x\.py.*"
                                             r"Demo/dsanet_conf_synthetic_cpu\.py"):
        model_zoo.get_config("COCO-Detection/dsanet_conf_R_50_FPN_1x.py", trained=True)


def test_a_damaged_copy_is_refused(shipped, tmp_path, monkeypatch):
    folder = tmp_path / "Demo" / "dsanet_conf_synthetic_cpu"
    folder.mkdir(parents=True)
    damaged = folder / shipped["weights"].rsplit("/", 1)[-1]
    shutil.copy(shipped["weights"], damaged)
    with open(damaged, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(model_zoo, "TRAINED_ROOT", tmp_path)
    with pytest.raises(UserInputError, match="damaged"):
        model_zoo.trained_weights(DEMO)


def test_the_shipped_model_outputs_what_it_output_when_shipped(shipped, tmp_path, monkeypatch):
    monkeypatch.setenv("DSANET_CACHE", str(tmp_path))  # the demo's split, apart from the other tests' sizes
    ship = load_script("tools/ship_trained_model.py")
    expected = shipped["metrics"]["accuracy_test"]
    measured = ship.accuracy_on_first_images(DEMO, num_images=expected["images"])
    for metric in ("AP", "AP50", "AP75"):
        assert measured[metric] == pytest.approx(expected[metric], abs=AP_TOLERANCE), metric
    assert [len(d) for d in measured["detections"]] == [len(d) for d in expected["detections"]]
    for image, (got, want) in enumerate(zip(measured["detections"], expected["detections"])):
        for rank, (g, w) in enumerate(zip(got, want)):
            where = f"image {image}, detection {rank}"
            assert g[5] == w[5], f"{where}: class {g[5]} != {w[5]}"
            assert g[:4] == pytest.approx(w[:4], abs=BOX_TOLERANCE), f"{where}: box"
            assert g[4] == pytest.approx(w[4], abs=SCORE_TOLERANCE), f"{where}: score"
