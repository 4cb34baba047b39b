"""Checkpoints: written atomically, and loading one cannot run code unless the user opts in."""
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import tiny_model
from dsanet.checkpoint import UNSAFE_PICKLE_OPT_IN, CheckedCheckpointer
from dsanet.errors import UserInputError
from test_train_net import DEMO_CONFIG, QUICK, run_train_net

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class CreatesAFile:
    """Unpickling this creates ``path``: what a malicious checkpoint could do instead."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_malicious_pkl_does_not_run_on_the_default_path(cache_dir, tmp_path):
    marker = tmp_path / "code_ran"
    weights = tmp_path / "model_zoo_like.pkl"
    weights.write_bytes(pickle.dumps({"model": {}, "__author__": "attacker", "payload": CreatesAFile(marker)}))
    result = run_train_net("--config-file", DEMO_CONFIG, "--eval-only", *QUICK, f"train.output_dir={tmp_path / 'out'}",
                           f"train.init_checkpoint={weights}", cache_dir=cache_dir, check=False)
    assert not marker.exists()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: checkpoint {weights} was not loaded") and UNSAFE_PICKLE_OPT_IN in last_line


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_only_the_opt_in_unpickles_code(tmp_path, suffix):
    marker = tmp_path / "code_ran"
    path = tmp_path / f"weights{suffix}"
    model = tiny_model()
    data = {"model": model.state_dict(), "__author__": "attacker", "payload": CreatesAFile(marker)}
    if suffix == ".pth":
        torch.save(data, path)
    else:
        path.write_bytes(pickle.dumps(data))
    with pytest.raises(UserInputError, match=UNSAFE_PICKLE_OPT_IN.replace(".", r"\.")):
        CheckedCheckpointer(model).load(str(path))
    assert not marker.exists()
    CheckedCheckpointer(model, allow_unsafe_pickle=True).load(str(path))
    assert marker.exists()  # the file really would run code: the refusal above is what stopped it


def caffe2_blobs(state_dict: dict) -> dict:
    """A model's bottom-up weights under Detectron's (Caffe2) names, as its ImageNet .pkl files hold them."""
    prefix, blobs = "backbone.bottom_up.", {}
    for key, value in state_dict.items():
        if not key.startswith(prefix) or key.endswith("num_batches_tracked"):
            continue
        rest, field = key[len(prefix):].rsplit(".", 1)
        is_norm = rest.endswith(".norm")
        if rest.startswith("stem."):
            name = "res_conv1_bn" if is_norm else "conv1"
        else:
            stage, block, conv = rest.split(".")[:3]
            name = f"{stage}_{block}_" + ("branch1" if conv == "shortcut" else "branch2" + "abc"[int(conv[-1]) - 1])
            name += "_bn" if is_norm else ""
        suffix = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"} if is_norm else {"weight": "w", "bias": "b"}
        blobs[f"{name}_{suffix[field]}"] = value.numpy()
    return blobs


@pytest.mark.parametrize("layout,protocol", [("detectron2", 2), ("caffe2", 2), ("detectron2", pickle.HIGHEST_PROTOCOL)])
def test_model_zoo_pkl_weights_load_on_the_default_path(tmp_path, layout, protocol):
    source, target = tiny_model(seed=1), tiny_model(seed=2)
    weights = {k: v.numpy() for k, v in source.state_dict().items()}
    if layout == "caffe2":  # Detectron's ImageNet weights: the bottom-up only, converted by name heuristics
        data = {"blobs": caffe2_blobs(source.state_dict())}
        weights = {k: v for k, v in weights.items() if k.startswith("backbone.bottom_up.") and "num_batches" not in k}
    else:
        data = {"model": weights, "__author__": "Detectron2 Model Zoo"}
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))  # the model zoo's files are protocol 2
    CheckedCheckpointer(target).load(str(path))
    assert all(np.array_equal(target.state_dict()[k].numpy(), v) for k, v in weights.items())


def test_checkpoint_and_last_checkpoint_are_replaced_never_rewritten_in_place(tmp_path):
    """An in-place write would change the old file's contents; a rename leaves them as they were."""
    checkpointer = CheckedCheckpointer(tiny_model(), str(tmp_path))
    checkpointer.save("model_0000001")
    os.link(tmp_path / "model_0000001.pth", tmp_path / "old_checkpoint")
    os.link(tmp_path / "last_checkpoint", tmp_path / "old_last_checkpoint")
    old_bytes = (tmp_path / "old_checkpoint").read_bytes()
    checkpointer.save("model_0000001", iteration=7)
    checkpointer.save("model_0000002")
    assert (tmp_path / "old_checkpoint").read_bytes() == old_bytes
    assert (tmp_path / "old_last_checkpoint").read_text() == "model_0000001.pth"
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"
    assert torch.load(tmp_path / "model_0000001.pth", weights_only=True)["iteration"] == 7
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp." in p.name) == []
