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
from dsanet.modeling import DSANet, FPNWithoutTopDown, SelfAttention2d, SpatialAttention2d

EXPERIMENT_CONFIGS = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/*.py") if p.parent.name != "common")
FIVE_NAMES = {"model", "dataloader", "optimizer", "lr_multiplier", "train"}

# What makes each COCO and ablation config its variant, as read off the built model and schedule
# (see variant_of). Defaults: R50, FPN with its top-down path, the 1x schedule (90k iterations at
# batch 16, lr x0.1 at 60k and 80k), no confidence; DSA (paper Table 1-4 defaults) on P4-P7.
SELF_P4_P7 = {f"p{i}": "self" for i in range(4, 8)}
DSA = dict(dsa=SELF_P4_P7, shared=False, location="before", gamma="learned")
NO_DSA = dict(dsa={}, shared=None, location=None, gamma=None)
R50_1X = dict(depth=50, top_down=True, max_iter=90000, milestones=[60000, 80000], batch=16, confidence=False)
R101 = dict(R50_1X, depth=101)
TWO_X = dict(max_iter=180000, milestones=[120000, 160000])
P3_HALF = {"p3": "self_half_k1", **SELF_P4_P7}
EXPECTED_VARIANTS = {
    "COCO-Detection/retinanet_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **NO_DSA),
    "COCO-Detection/retinanet_R_101_FPN_1x.py": dict(R101, detector="DSANet", **NO_DSA),
    "COCO-Detection/retinanet_conf_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **NO_DSA, confidence=True),
    "COCO-Detection/retinanet_conf_R_101_FPN_1x.py": dict(R101, detector="DSANet", **NO_DSA, confidence=True),
    "COCO-Detection/dsanet_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **DSA),
    "COCO-Detection/dsanet_R_101_FPN_1x.py": dict(R101, detector="DSANet", **DSA),
    "COCO-Detection/dsanet_conf_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **DSA, confidence=True),
    "COCO-Detection/dsanet_conf_R_101_FPN_1x.py": dict(R101, detector="DSANet", **DSA, confidence=True),
    "COCO-Detection/dsanet_conf_R_50_FPN_2x.py": dict(R50_1X, **TWO_X, detector="DSANet", **DSA, confidence=True),
    "COCO-Detection/dsanet_conf_R_101_FPN_2x.py": dict(R101, **TWO_X, detector="DSANet", **DSA, confidence=True),
    "COCO-Detection/fcos_R_50_FPN_1x.py": dict(R50_1X, detector="DSAFCOS", **NO_DSA),
    "COCO-Detection/dsa_fcos_R_50_FPN_1x.py": dict(R50_1X, detector="DSAFCOS", **DSA),
    # Table 1: attention kind and levels
    "Ablations/dsanet_cbam_p3-p7_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **dict(
        DSA, dsa={f"p{i}": "cbam" for i in range(3, 8)})),
    "Ablations/dsanet_self_p4-p7_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **DSA),
    "Ablations/dsanet_self_p3-p7_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **dict(
        DSA, dsa={"p3": "self", **SELF_P4_P7})),
    # Table 2: decoupled or shared
    "Ablations/dsanet_decoupled_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **DSA),
    "Ablations/dsanet_shared_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **dict(DSA, shared=True)),
    # Table 3: placement
    "Ablations/dsanet_before_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **DSA),
    "Ablations/dsanet_after_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **dict(DSA, location="after")),
    # Table 4: gamma
    "Ablations/dsanet_gamma1_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **dict(DSA, gamma="fixed_1")),
    # Table 5: P3 at half resolution, with and without FPN's top-down path (DSANet*)
    "Ablations/dsanet_p3half_k1_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **dict(DSA, dsa=P3_HALF)),
    "Ablations/dsanet_p3half_k3_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", **dict(
        DSA, dsa={**P3_HALF, "p3": "self_half_k3"})),
    "Ablations/dsanet_star_p3half_k1_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", top_down=False, **dict(
        DSA, dsa=P3_HALF)),
    "Ablations/dsanet_star_p3half_k3_R_50_FPN_1x.py": dict(R50_1X, detector="DSANet", top_down=False, **dict(
        DSA, dsa={**P3_HALF, "p3": "self_half_k3"})),
}


def attention_kind(module) -> str:
    """The ATTENTION_KINDS name a built attention module is an instance of."""
    if isinstance(module, SpatialAttention2d):
        return "cbam"
    assert isinstance(module, SelfAttention2d), type(module)
    if module.stride == 1:
        return "self_dense" if module.impl == "dense" else "self"
    return f"self_half_k{module.query.kernel_size[0]}"


def lr_drops(multiplier, max_iter: int, coarse: int = 1000) -> list:
    """Iterations at which the learning-rate multiplier falls (after warm-up), found on the curve itself."""
    value = lambda it: multiplier(it / max_iter)  # noqa: E731
    drops = []
    for start in range(coarse, max_iter, coarse):
        if value(start) < value(start - coarse):
            drops.append(next(it for it in range(start - coarse + 1, start + 1) if value(it) < value(it - 1)))
    return drops


def variant_of(model, cfg) -> dict:
    """What distinguishes a config, read off its built model and its instantiated schedule."""
    bottom_up = model.backbone.bottom_up
    bottleneck = type(bottom_up.res4[0]).__name__ == "BottleneckBlock"
    depth = ({6: 50, 23: 101} if bottleneck else {2: 18, 6: 34})[len(bottom_up.res4)]
    dsa = model.head.dsa if hasattr(model.head, "dsa") else None
    branch = None if dsa is None else (dsa.shared_branch if dsa.shared else dsa.cls_branch)
    max_iter = cfg.train.max_iter
    return {
        "detector": type(model).__name__, "depth": depth,
        "top_down": not isinstance(model.backbone, FPNWithoutTopDown),
        "dsa": {} if dsa is None else {level: attention_kind(block.attention) for level, block in branch.items()},
        "shared": None if dsa is None else dsa.shared,
        "location": None if dsa is None else model.head.dsa_location,
        "gamma": None if dsa is None else (
            "learned" if isinstance(next(iter(branch.values())).gamma, torch.nn.Parameter) else "fixed_1"),
        "confidence": getattr(model, "with_confidence", False),
        "max_iter": max_iter, "milestones": lr_drops(instantiate(cfg.lr_multiplier), max_iter),
        "batch": cfg.dataloader.train.total_batch_size,
    }


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
    if config in EXPECTED_VARIANTS:
        assert variant_of(model, cfg) == EXPECTED_VARIANTS[config]


def test_every_coco_and_ablation_config_says_what_makes_it_its_variant():
    listed = [c for c in EXPERIMENT_CONFIGS if c.startswith(("COCO-Detection/", "Ablations/"))]
    assert sorted(EXPECTED_VARIANTS) == listed


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
    with pytest.raises(UserInputError, match="no trained weights ship for"):
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


def test_a_command_line_dict_of_levels_replaces_the_default_list():
    """`model.head.dsa_levels={p3:self_half_k1,...}` on the command line gives P3 at half resolution
    (detectron2's merging update alone refuses a dict over a list)."""
    from dsanet.config import load_config

    config = str(CONFIGS / "Demo" / "dsanet_conf_synthetic_cpu.py")
    cfg = load_config(config, ["model.head.dsa_levels={p3:self_half_k1,p4:self,p5:self,p6:self,p7:self}"])
    assert dict(cfg.model.head.dsa_levels) == P3_HALF
    cfg = load_config(config, ["model.head.dsa_levels=[p3,p4]"])
    assert list(cfg.model.head.dsa_levels) == ["p3", "p4"]
