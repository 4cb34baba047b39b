"""DSA on detectron2's FCOS: with DSA off it is FCOS; with DSA on it starts as FCOS, learns gamma,
and each paper variant trains and infers; the configs and the tools take DSA-FCOS."""
import copy
import json

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead

from conftest import (CONFIGS, DSA_VARIANTS, head_outputs_with_one_branch, load_script, make_inputs,
                      narrow_model_config, tiny_model)
from dsanet.config import load_config
from dsanet.modeling import DSAFCOS, DSAFCOSHead, DecoupledSelfAttention
from test_model import assert_same_detections, assert_trains_a_step_and_infers, detections_of, losses_of

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FCOS_CONFIG = "common/models/fcos.py"
DSA_FCOS_CONFIG = "common/models/dsa_fcos.py"
DEMO_CONFIG = CONFIGS / "Demo" / "dsa_fcos_synthetic_cpu.py"


def tiny_fcos(config: str = DSA_FCOS_CONFIG, seed: int = 0, **head):
    """conftest's tiny model, with 64-channel towers: GN's 32 groups then hold 2 channels each, so a
    1x1 level (P7 of a 64x96 image) still passes its input on (one channel per group would not)."""
    return tiny_model(config, seed=seed, conv_dims=[64, 64], **head)


def detectron2_fcos(seed: int = 0):
    """The FCOS config, narrowed as :func:`tiny_fcos`, built as detectron2's own FCOS class."""
    model = narrow_model_config(LazyConfig.load(str(CONFIGS / FCOS_CONFIG)).model)
    model._target_ = FCOS  # the config's DSAFCOS differs only under autocast
    model.head.conv_dims = [64, 64]
    torch.manual_seed(seed)
    return instantiate(model)


def test_the_fcos_recipe_trains_under_cpu_bf16_autocast():
    """train.amp.enabled=True on a CPU runs the network under bf16 autocast; detectron2's FCOS class
    then stops in its GIoU loss, the config's DSAFCOS keeps losses and decoding fp32 and trains."""
    from detectron2.utils.events import EventStorage

    model = tiny_fcos(FCOS_CONFIG).train()
    assert isinstance(model, DSAFCOS)
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(make_inputs())
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_with_dsa_off_it_is_fcos():
    baseline = detectron2_fcos()
    model = tiny_fcos(seed=1, dsa_levels=[])
    assert type(baseline) is FCOS and type(baseline.head) is FCOSHead
    assert isinstance(model, DSAFCOS) and isinstance(model.head, DSAFCOSHead) and model.head.dsa is None
    assert list(model.state_dict()) == list(baseline.state_dict())
    model.load_state_dict(baseline.state_dict())
    inputs = make_inputs()
    model_losses = losses_of(model, inputs)
    baseline_losses = losses_of(baseline, inputs)
    assert set(model_losses) == set(baseline_losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    for name, value in baseline_losses.items():
        assert torch.equal(model_losses[name], value), name
    assert baseline_losses["loss_fcos_ctr"] > 0  # there are positives: the comparison covers every loss
    assert_same_detections(detections_of(model, inputs), detections_of(baseline, inputs))


def test_dsa_starts_as_fcos_then_learns_gamma():
    baseline = detectron2_fcos()
    model = tiny_fcos(seed=1)  # DSA on p4-p7, gamma = 0
    assert isinstance(model.head.dsa, DecoupledSelfAttention)
    missing, unexpected = model.load_state_dict(baseline.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("head.dsa.") for k in missing)
    inputs = make_inputs()
    assert_same_detections(detections_of(model, inputs), detections_of(baseline, inputs))
    model_losses = losses_of(model, inputs)
    for name, value in losses_of(baseline, inputs).items():
        torch.testing.assert_close(model_losses[name], value)

    gammas = {n: p for n, p in model.named_parameters() if n.endswith("gamma")}
    assert len(gammas) == 8  # 4 levels x 2 decoupled branches
    sum(losses_of(model, inputs).values()).backward()
    assert all(g.grad is not None for g in gammas.values())
    # Every level has negatives, so each classification gamma gets gradient; box gammas only on
    # levels holding positives.
    cls_gammas = [g for n, g in gammas.items() if ".cls_branch." in n]
    assert len(cls_gammas) == 4 and all(g.grad.abs().sum() > 0 for g in cls_gammas)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(g.item() != 0 for g in cls_gammas)


@pytest.mark.parametrize("location", ["before", "after"])
def test_the_cls_branch_reaches_only_the_logits_and_the_box_branch_box_and_centerness(location):
    """Before the towers the box branch feeds the box tower, which predicts box and centerness; after
    them it sits between that tower and both its predictors. The classification branch reaches only
    the classification logits."""
    model = tiny_fcos(dsa_location=location).eval()
    features = [f.detach() for f in model.backbone(torch.randn(1, 3, 64, 96)).values()]
    baseline = head_outputs_with_one_branch(model, features, branch_gamma="none")
    for branch, changed in [("cls", {0}), ("reg", {1, 2})]:
        outputs = head_outputs_with_one_branch(model, features, branch_gamma=branch)
        for i, (x, y) in enumerate(zip(outputs, baseline)):
            same = all(torch.equal(a, b) for a, b in zip(x, y))
            assert same != (i in changed), (branch, ["logits", "bbox_reg", "ctrness"][i])


@pytest.mark.parametrize("variant", sorted(DSA_VARIANTS))
def test_every_variant_trains_a_step_and_infers(variant):
    assert_trains_a_step_and_infers(tiny_fcos(**DSA_VARIANTS[variant]))


def test_the_demo_recipe_gives_plain_fcos_with_dsa_levels_empty():
    """``model.head.dsa_levels=[]`` on the CPU recipe is detectron2's FCOS and FCOSHead, parameter for
    parameter, as the study needs its baseline."""
    cfg = load_config(str(DEMO_CONFIG), ["model.head.dsa_levels=[]"])
    plain = copy.deepcopy(cfg.model)
    plain._target_, plain.head._target_ = FCOS, FCOSHead
    for key in ["in_features", *[k for k in plain.head if k.startswith("dsa_")]]:
        del plain.head[key]
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    torch.manual_seed(0)
    baseline = instantiate(plain)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in baseline.state_dict().items()}
    assert model.head.dsa is None and model.num_classes == 3 and model.backbone.output_shape()["p3"].channels == 64
    with_dsa = instantiate(load_config(str(DEMO_CONFIG)).model)
    assert sorted(with_dsa.head.dsa.cls_branch) == ["p3", "p4", "p5", "p6", "p7"]  # every object of the data is on P3
    study = load_config(str(CONFIGS / "Demo" / "dsa_fcos_synthetic_study_cpu.py"))
    assert (study.dataloader.synthetic.num_train, study.dataloader.synthetic.num_val) == (4000, 2000)
    assert study.model == load_config(str(DEMO_CONFIG)).model


@pytest.fixture(scope="module")
def fcos_checkpoint(tmp_path_factory):
    """The DSA-FCOS demo config (with a tiny synthetic split, so generating it takes a second) and an
    untrained checkpoint of it with gamma 0.5, so that attention reaches every output."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig

    out, cache = tmp_path_factory.mktemp("fcos_tools"), tmp_path_factory.mktemp("fcos_cache")
    cfg = load_config(str(DEMO_CONFIG), ["dataloader.synthetic.num_train=4", "dataloader.synthetic.num_val=3"])
    config = out / "config.yaml"
    LazyConfig.save(cfg, str(config))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.data.fill_(0.5)
    DetectionCheckpointer(model, str(out)).save("model_final")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSANET_CACHE", str(cache))
        from dsanet.data import register_datasets_for

        register_datasets_for(cfg)
    images = sorted(cache.glob("synthetic_shapes/*/val/*.jpg"))
    assert images
    return config, out / "model_final.pth", cache, images


def test_demo_draws_dsa_fcos_detections(fcos_checkpoint, tmp_path, monkeypatch):
    config, weights, cache, images = fcos_checkpoint
    monkeypatch.setenv("DSANET_CACHE", str(cache))
    demo = load_script("demo/demo.py")
    # detectron2's FCOS keeps no input_format: the predictor takes the test loader's image_format.
    assert not hasattr(DSAFCOS, "input_format")
    status = demo.main(demo.parse_args(["--config-file", str(config), "--weights", str(weights), "--input",
                                        str(images[0]), "--output", str(tmp_path), "--confidence-threshold", "0.0"]))
    assert status == 0
    detections = json.loads((tmp_path / (images[0].stem + ".json")).read_text())["detections"]
    assert detections and (tmp_path / (images[0].stem + ".png")).is_file()


def test_attention_maps_of_dsa_fcos(fcos_checkpoint, tmp_path, monkeypatch):
    config, weights, cache, images = fcos_checkpoint
    monkeypatch.setenv("DSANET_CACHE", str(cache))
    tool = load_script("tools/attention_maps.py")
    paths = tool.main(tool.parse_args(["--config-file", str(config), "--weights", str(weights), "--input",
                                       str(images[0]), "--output", str(tmp_path), "--points", "40,52", "90,20"]))
    assert len(paths) == 2 and all(p.endswith(".png") for p in paths)

    from dsanet.attention_maps import attention_maps
    from dsanet.predictor import Predictor

    predictor = Predictor(str(config), str(weights))
    inputs = {k: v for k, v in predictor.preprocess(predictor_image(predictor, images[0])).items() if k != "transform"}
    _, _, maps = attention_maps(predictor.model, inputs, torch.tensor([[40.0, 52.0]]))
    assert {(m.branch, m.level) for m in maps} == {(b, f"p{i}") for b in ("cls", "reg") for i in range(3, 8)}
    for m in maps:
        torch.testing.assert_close(m.maps.sum(dim=(-2, -1)), torch.ones(len(m.maps)))


def predictor_image(predictor, path):
    from detectron2.data.detection_utils import read_image

    return read_image(str(path), format=predictor.input_format)


def test_exports_of_dsa_fcos_equal_eager_and_a_1x1_p7_is_named_for_the_program(fcos_checkpoint, tmp_path, monkeypatch):
    """torch.export and TorchScript of DSA-FCOS: the graph holds FCOS's score sqrt(cls * centerness),
    and the detections after the shared post-processing equal eager FCOS's. The program stops on a
    128-pixel image (P7 1x1 under the one-channel centerness conv) and the tool says so in one line."""
    import cv2

    from dsanet import export
    from dsanet.predictor import load_model

    config, weights, cache, images = fcos_checkpoint
    monkeypatch.setenv("DSANET_CACHE", str(cache))
    larger = tmp_path / "larger.png"  # P7 of 2x2
    cv2.imwrite(str(larger), cv2.resize(cv2.imread(str(images[0])), (200, 150)))
    tool = load_script("tools/export_model.py")
    status = tool.main(tool.parse_args(["--config-file", str(config), "--weights", str(weights), "--output",
                                        str(tmp_path / "out"), "--repeats", "1", "--format", "export", "torchscript",
                                        "--input", str(larger), str(images[1]), "--opts", "model.test_score_thresh=0.01"]))
    report = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert status == 1 and list(report["failures"]) == ["exported_program"]
    line = report["failures"]["exported_program"]
    assert "\n" not in line and "(128, 128)" in line and "head.ctrness" in line and "p7" in line
    parity = report["parity"]["torchscript"]
    assert parity["detections"] > 0 and parity["mismatched_images"] == 0
    assert parity["raw_max_abs"] <= 1e-4 and parity["box_max_abs"] <= 1e-3 and parity["score_max_abs"] <= 1e-3
    levels = ["p3", "p4", "p5", "p6", "p7"]
    assert report["outputs"] == [f"{kind}_{p}" for kind in ("cls_logits", "box_deltas", "ctrness_logits", "scores")
                                 for p in levels]

    model = load_model(load_config(str(config)), str(weights), device="cpu")
    image = torch.rand(3, 150, 200) * 255
    with torch.no_grad():
        eager = torch.utils._pytree.tree_leaves(export.raw_head_outputs(model, image))
    program = export.load_program(str(tmp_path / "out" / "model.pt2"))
    assert tool.max_abs_difference(eager, program(image)) <= 1e-4
    out = export.unflatten(model, torch.jit.load(str(tmp_path / "out" / "model.ts"))(image))
    for cls, ctr, scores in zip(out["cls_logits"], out["ctrness_logits"], out["scores"]):
        cls = cls.permute(0, 2, 3, 1).reshape(1, -1, 3)
        ctr = ctr.permute(0, 2, 3, 1).reshape(1, -1, 1)
        torch.testing.assert_close(scores, torch.sqrt(cls.sigmoid() * ctr.sigmoid()), atol=1e-6, rtol=1e-5)
