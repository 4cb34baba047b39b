"""Every config file loads and builds its model; model-zoo style loading works from anywhere."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate

from conftest import CONFIGS, tiny_model
from dsanet import model_zoo
from dsanet.errors import UserInputError
from dsanet.modeling import DSANet

EXPERIMENT_CONFIGS = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/*.py") if p.parent.name != "common")
FIVE_NAMES = {"model", "dataloader", "optimizer", "lr_multiplier", "train"}


def test_there_is_a_config_for_every_experiment():
    names = {Path(p).name for p in EXPERIMENT_CONFIGS}
    for model in ["retinanet", "retinanet_conf", "dsanet", "dsanet_conf"]:
        for depth in [50, 101]:
            assert f"{model}_R_{depth}_FPN_1x.py" in names
    assert {"dsanet_conf_R_50_FPN_2x.py", "dsanet_conf_R_101_FPN_2x.py"} <= names
    assert sum(p.startswith("Ablations/") for p in EXPERIMENT_CONFIGS) >= 12
    assert {"COCO-Detection/fcos_R_50_FPN_1x.py", "COCO-Detection/dsa_fcos_R_50_FPN_1x.py",
            "Demo/dsa_fcos_synthetic_cpu.py", "Demo/dsa_fcos_synthetic_study_cpu.py"} <= set(EXPERIMENT_CONFIGS)


@pytest.mark.parametrize("config", EXPERIMENT_CONFIGS)
def test_every_config_loads_and_instantiates(config):
    cfg = model_zoo.get_config(config)
    assert FIVE_NAMES <= set(cfg)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert model.num_classes == cfg.model.num_classes


def test_model_zoo_works_from_any_working_directory(tmp_path):
    code = ("from dsanet import model_zoo; "
            "cfg = model_zoo.get_config('COCO-Detection/dsanet_conf_R_50_FPN_1x.py'); "
            "print(cfg.model.head.with_confidence, type(model_zoo.get('COCO-Detection/dsanet_R_50_FPN_1x.py', device='cpu')).__name__)")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "DSANet"]


def test_model_zoo_names_what_is_missing():
    with pytest.raises(UserInputError, match="COCO-Detection/dsanet_conf_R_50_FPN_1x.py"):
        model_zoo.get_config("COCO-Detection/no_such_config.py")
    with pytest.raises(UserInputError, match="no trained weights are published"):
        model_zoo.get_config("COCO-Detection/dsanet_R_50_FPN_1x.py", trained=True)


def test_a_detectron2_model_zoo_style_pkl_initialises_dsanet(tmp_path):
    """detectron2's model-zoo .pkl format (numpy arrays under "model") loads through DetectionCheckpointer."""
    import pickle

    baseline = tiny_model("common/models/retinanet.py", seed=3)
    weights = {k: v.numpy() for k, v in baseline.state_dict().items()}
    path = tmp_path / "retinanet.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2 Model Zoo", "matching_heuristics": False}, f)
    model = tiny_model("common/models/dsanet_conf.py", seed=4)
    assert isinstance(model, DSANet)
    DetectionCheckpointer(model).load(str(path))
    for name, value in baseline.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
