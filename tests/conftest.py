"""Shared helpers for the test suite: tiny CPU models and inputs built from the real stack."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path

import dsanet
import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, Instances

from dsanet.modeling import make_resnet_stages

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY_IMAGE_SIZES = ((64, 96), (80, 72))  # odd (H, W) sizes: padding to the FPN stride must work

# The paper's DSA variants as head overrides of common/models/dsanet.py (and dsa_fcos.py, which
# shares its DSA settings): every detector with DSA trains and infers with each.
DSA_VARIANTS = {
    "cbam_p3_p7": dict(dsa_levels={f"p{i}": "cbam" for i in range(3, 8)}),
    "self_p4_p7": dict(),
    "shared": dict(dsa_shared=True),
    "after_towers": dict(dsa_location="after"),
    "shared_after_towers": dict(dsa_shared=True, dsa_location="after"),
    "gamma_fixed_1": dict(dsa_learn_gamma=False),
    "p3_half_k1": dict(dsa_levels={"p3": "self_half_k1", "p4": "self", "p5": "self", "p6": "self", "p7": "self"}),
    "p3_half_k3": dict(dsa_levels={"p3": "self_half_k3", "p4": "self", "p5": "self", "p6": "self", "p7": "self"}),
    "self_p3_p7_full_resolution": dict(dsa_levels=["p3", "p4", "p5", "p6", "p7"]),
}


def make_inputs(num_classes: int = 3, with_gt: bool = True, seed: int = 0) -> list:
    """Two images in detectron2's input format, with boxes that lie inside them."""
    generator = torch.Generator().manual_seed(seed)
    inputs = []
    for height, width in TINY_IMAGE_SIZES:
        image = torch.randint(0, 256, (3, height, width), generator=generator).float()
        instances = Instances((height, width))
        if with_gt:
            instances.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 60.0, 40.0]]))
            instances.gt_classes = torch.tensor([0, num_classes - 1])
        else:
            instances.gt_boxes = Boxes(torch.zeros((0, 4)))
            instances.gt_classes = torch.zeros((0,), dtype=torch.int64)
        inputs.append({"image": image, "instances": instances, "height": height, "width": width})
    return inputs


@pytest.fixture(autouse=True)
def quiet_internal_warnings():
    """Each test quiets torch's, fvcore's and detectron2's internal warnings as the commands do (pytest
    restores the warning filters around every test, so a filter installed at import would not last)."""
    dsanet.silence_internal_warnings()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """DSANET_CACHE for train_net.py subprocesses: the synthetic dataset is generated once per session."""
    return tmp_path_factory.mktemp("dsanet_cache")


@pytest.fixture
def tiny_inputs() -> list:
    return make_inputs()


def narrow_model_config(model, width: int = 16, num_classes: int = 3, norm: str = "BN"):
    """Shrink a project model config (R50-FPN, 256 channels) to a ResNet-18-like CPU toy in place."""
    model.backbone.bottom_up.stem.out_channels = width
    model.backbone.bottom_up.stem.norm = norm
    model.backbone.bottom_up.stages = L(make_resnet_stages)(
        depth=18, stem_width=width, widths=[width, 2 * width, 4 * width, 8 * width], norm=norm)
    model.backbone.out_channels = 2 * width
    # P6/P7 from C5 (RetinaNet) or from P5 (FCOS)
    from_p5 = model.backbone.top_block.get("in_feature", "res5") == "p5"
    model.backbone.top_block.in_channels = 2 * width if from_p5 else 8 * width
    model.head.input_shape = [ShapeSpec(channels=2 * width)] * 5
    model.head.conv_dims = [2 * width, 2 * width]
    model.num_classes = num_classes
    return model


def tiny_model(config: str = "common/models/dsanet.py", seed: int = 0, norm: str = "BN", **head_overrides):
    """Instantiate a project model config, narrowed, with head overrides (e.g. dsa_levels=[])."""
    model = narrow_model_config(LazyConfig.load(str(CONFIGS / config)).model, norm=norm)
    for key, value in head_overrides.items():
        setattr(model.head, key, value)
    torch.manual_seed(seed)
    return instantiate(model)


def detectron2_retinanet(seed: int = 0):
    """detectron2's own RetinaNet class on the baseline config's network, narrowed like :func:`tiny_model`."""
    from detectron2.modeling.meta_arch import RetinaNet

    model = narrow_model_config(LazyConfig.load(str(CONFIGS / "common/models/retinanet.py")).model)
    model._target_ = RetinaNet
    torch.manual_seed(seed)
    return instantiate(model)


ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """A command-line script of the repository (tools/..., demo/...) as a module, to call its main()."""
    import importlib.util

    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trained_demo(tmp_path_factory):
    """The Demo config trained by train_net.py for 30 iterations (batch 4, no warm-up, so that its
    scores already separate objects from background), with its real synthetic images.

    Returns a namespace: config (the saved config.yaml), weights (model_final.pth), cache
    (the DSANET_CACHE it used) and images (validation JPEGs).
    """
    import subprocess
    import sys
    from types import SimpleNamespace

    out, cache = tmp_path_factory.mktemp("demo_run"), tmp_path_factory.mktemp("demo_cache")
    overrides = [f"train.output_dir={out}", "train.max_iter=30", "dataloader.train.total_batch_size=4",
                 "lr_multiplier.warmup_length=0.0", "dataloader.train.num_workers=0",
                 "dataloader.test.num_workers=0", "train.eval_period=0", "train.seed=0"]
    env = dict(os.environ, DSANET_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, str(ROOT / "train_net.py"), "--config-file",
                             str(CONFIGS / "Demo" / "dsanet_conf_synthetic_cpu.py"), *overrides],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    images = sorted((cache / "synthetic_shapes").glob("*/val/*.jpg"))
    return SimpleNamespace(config=out / "config.yaml", weights=out / "model_final.pth", cache=cache, images=images)


def head_outputs_with_one_branch(model, features, branch_gamma: str):
    """The head's outputs with the DSA gammas of ``branch_gamma``'s branch ("cls", "reg" or "none") set
    to 1 and the other's to 0: what that branch alone changes."""
    with torch.no_grad():
        for name, p in model.head.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0 if f".{branch_gamma}_branch." in name else 0.0)
        return model.head(features)


def converted_random_torchvision_resnet(depth: int, folder: Path):
    """A randomly initialised torchvision ResNet-``depth`` (no download) with BN statistics that are not the
    identity, so that misplaced ones show, converted by tools/convert_torchvision_resnet.py.

    Returns:
        (the torchvision model in eval mode, the converted ``R-<depth>-torchvision.pkl``, the converter module).
    """
    import torchvision

    converter = load_script("tools/convert_torchvision_resnet.py")
    torch.manual_seed(0)
    resnet = getattr(torchvision.models, f"resnet{depth}")().eval()
    for module in resnet.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    torch.save(resnet.state_dict(), folder / f"resnet{depth}.pth")
    output = folder / f"R-{depth}-torchvision.pkl"
    converter.main(converter.parse_args([str(folder / f"resnet{depth}.pth"), str(output)]))
    return resnet, output, converter


def assert_backbone_is_the_torchvision_resnet(model, fresh_state, converted_file, resnet):
    """Every ``backbone.bottom_up`` weight came from ``converted_file`` (a converted torchvision ResNet),
    nothing else moved from ``fresh_state``, and res5 computes what ``resnet`` computes."""
    import pickle

    with open(converted_file, "rb") as f:
        converted = pickle.load(f)["model"]
    prefix = "backbone.bottom_up."
    assert {key[len(prefix):] for key in fresh_state if key.startswith(prefix)} == set(converted)
    for key, value in model.state_dict().items():
        if key.startswith(prefix):
            assert torch.equal(value, torch.from_numpy(converted[key[len(prefix):]])), key
        else:
            assert torch.equal(value, fresh_state[key]), key
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(resnet.maxpool(resnet.relu(
            resnet.bn1(resnet.conv1(image))))))))
        ours = model.backbone.bottom_up(image)["res5"]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
