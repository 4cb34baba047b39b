"""Backbone pretraining (tools/pretrain_backbone.py), the fine-tuning recipe that starts from it, the check
that a checkpoint loads something, and torchvision ResNet weights converted for the GPU recipes."""
import json

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import FrozenBatchNorm2d

from conftest import (CONFIGS, assert_backbone_is_the_torchvision_resnet, converted_random_torchvision_resnet, load_script,
                      tiny_model)
from dsanet.checkpoint import CheckedCheckpointer
from dsanet.data.shapes import draw_synthetic_image
from dsanet.engine import load_weights
from dsanet.errors import UserInputError
from dsanet.pretrain import ShapePresenceImages

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FINETUNE_CONFIG = CONFIGS / "Demo" / "dsanet_conf_synthetic_finetune_cpu.py"
# Seconds, not minutes: 64-pixel images, batch 2, a few iterations, a handful of held-out images.
TINY = ["--batch-size", "2", "--image-size", "64", "--num-held-out", "4", "--num-workers", "0",
        "--checkpoint-period", "2", "--log-period", "1"]
VARIANTS = {  # the study's overrides of DSANet-Conf
    "DSANet-Conf": {}, "DSANet": {"with_confidence": False}, "RetinaNet-Conf": {"dsa_levels": []},
    "RetinaNet": {"dsa_levels": [], "with_confidence": False},
}


@pytest.fixture(scope="module")
def pretrain_tool():
    return load_script("tools/pretrain_backbone.py")


def pretrain(tool, output_dir, *arguments) -> dict:
    return tool.main(tool.parse_args(["--output-dir", str(output_dir), *TINY, *map(str, arguments)]))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, pretrain_tool):
    """A pretraining run of 4 iterations, uninterrupted."""
    out = tmp_path_factory.mktemp("pretrain")
    pretrain(pretrain_tool, out, "--max-iter", 4)
    return out


def finetune_model(**head_overrides) -> torch.nn.Module:
    cfg = LazyConfig.load(str(FINETUNE_CONFIG))
    for key, value in head_overrides.items():
        setattr(cfg.model.head, key, value)
    torch.manual_seed(0)
    return instantiate(cfg.model)


def test_the_run_writes_its_outputs(pretrained):
    for name in ["backbone.pth", "accuracy.json", "model_final.pth", "last_checkpoint", "metrics.json", "log.txt"]:
        assert (pretrained / name).is_file(), name
    accuracy = json.loads((pretrained / "accuracy.json").read_text())
    assert accuracy["num_images"] == 4 and 0 <= accuracy["exact_match"] <= accuracy["label_accuracy"] <= 1
    assert "eta:" in (pretrained / "log.txt").read_text()
    saved = torch.load(pretrained / "backbone.pth", weights_only=True)
    assert saved["matching_heuristics"] is True
    assert all(key.startswith(("stem.", "res")) for key in saved["model"])  # the bottom-up's own names
    assert not any("classifier" in key or "num_batches_tracked" in key for key in saved["model"])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("checkpointer", [DetectionCheckpointer, CheckedCheckpointer])
def test_the_backbone_loads_into_every_bottom_up_weight_and_nothing_else(pretrained, variant, checkpointer):
    weights = torch.load(pretrained / "backbone.pth", weights_only=True)["model"]
    model = finetune_model(**VARIANTS[variant])
    fresh = {key: value.clone() for key, value in model.state_dict().items()}
    checkpointer(model).load(str(pretrained / "backbone.pth"))
    prefix = "backbone.bottom_up."
    bottom_up = {key[len(prefix):] for key in fresh if key.startswith(prefix)}
    assert bottom_up == set(weights)  # every bottom-up weight has its value in the file, and nothing else does
    for key, value in model.state_dict().items():
        if key.startswith(prefix):
            assert torch.equal(value, weights[key[len(prefix):]]), key
            if key.endswith("conv1.weight"):
                assert not torch.equal(value, fresh[key]), key  # the file's values are not the fresh model's
        else:  # FPN, head, DSA, confidence
            assert torch.equal(value, fresh[key]), key


def test_the_finetune_recipe_freezes_like_detectron2_coco_recipes():
    bottom_up = finetune_model().backbone.bottom_up
    assert all(not isinstance(m, torch.nn.BatchNorm2d) for m in bottom_up.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in bottom_up.modules()) > 0
    for name, parameter in bottom_up.named_parameters():
        assert parameter.requires_grad == name.startswith(("res3", "res4", "res5")), name
    cfg = LazyConfig.load(str(FINETUNE_CONFIG))
    assert cfg.train.init_checkpoint == "output/pretrain_backbone/backbone.pth"
    assert load_script("tools/pretrain_backbone.py").parse_args([]).output_dir == "output/pretrain_backbone"


def test_a_checkpoint_that_matches_nothing_is_one_line_naming_it(pretrained, tmp_path):
    unrelated = tmp_path / "classifier_only.pth"
    torch.save({"model": {"classifier.weight": torch.zeros(3, 256)}, "__author__": "x", "matching_heuristics": True},
               unrelated)
    other_width = pretrained / "backbone.pth"  # the demo's widths; tiny_model's ResNet is narrower: no shape fits
    for path, model in [(unrelated, finetune_model()), (other_width, tiny_model())]:
        with pytest.raises(UserInputError) as error:
            load_weights(CheckedCheckpointer(model), str(path), resume=False)
        message = str(error.value)
        assert "\n" not in message and message.startswith(f"checkpoint {path} matches no weight of the model"), message
    load_weights(CheckedCheckpointer(finetune_model()), str(pretrained / "backbone.pth"), resume=False)  # matches: fine


def test_run_again_it_resumes_and_ends_where_the_uninterrupted_run_does(pretrain_tool, tmp_path):
    pretrain(pretrain_tool, tmp_path, "--max-iter", 4)
    uninterrupted = torch.load(tmp_path / "backbone.pth", weights_only=True)["model"]
    # What a run killed after its checkpoint at iteration 1 leaves behind:
    for name in ["model_0000003.pth", "model_final.pth", "backbone.pth", "accuracy.json"]:
        (tmp_path / name).unlink()
    (tmp_path / "last_checkpoint").write_text("model_0000001.pth")
    pretrain(pretrain_tool, tmp_path, "--max-iter", 4)
    assert f"Resuming from {tmp_path / 'model_0000001.pth'}" in (tmp_path / "log.txt").read_text()
    iterations = [json.loads(line)["iteration"] for line in (tmp_path / "metrics.json").read_text().splitlines()
                  if "total_loss" in line]
    assert iterations == [0, 1, 2, 3, 2, 3]
    resumed = torch.load(tmp_path / "backbone.pth", weights_only=True)["model"]
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key  # same images, same schedule, same optimizer state
    with pytest.raises(UserInputError, match=r"other arguments \(--batch-size 2 -> 4\)"):
        pretrain(pretrain_tool, tmp_path, "--max-iter", 4, "--batch-size", 4)


@pytest.mark.parametrize("arguments,message", [
    (["--seed", "0"], "--seed 0 is the seed of the config's detection dataset"),
    (["--config-file", str(FINETUNE_CONFIG)], "its backbone is frozen or has FrozenBN"),
])
def test_bad_pretraining_input_is_refused(pretrain_tool, tmp_path, arguments, message):
    with pytest.raises(UserInputError, match=message):
        pretrain(pretrain_tool, tmp_path, "--max-iter", 1, *arguments)


def test_labels_say_which_shapes_the_image_holds():
    images = ShapePresenceImages(seed=1, stream=0, image_size=64, input_format="BGR")
    for index in range(4):
        image, labels = images[index]
        rgb, objects = draw_synthetic_image(1, 0, index, 64)
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
        assert labels.tolist() == [float(any(c == k for c, _, _ in objects)) for k in (1, 2, 3)]
        # BGR, as the detector reads the dataset's JPEGs (which this image went through too)
        assert (image.flip(0).float() - torch.as_tensor(list(rgb.getdata())).T.reshape(3, 64, 64)).abs().mean() < 8


def test_torchvision_resnet50_weights_start_the_r50_recipe(tmp_path):
    """Every R-50 bottom-up weight comes from the converted file, and the loaded backbone computes what
    torchvision's ResNet-50 computes (with the overrides the converter prints)."""
    resnet, output, converter = converted_random_torchvision_resnet(50, tmp_path)

    cfg = LazyConfig.load(str(CONFIGS / "COCO-Detection" / "dsanet_conf_R_50_FPN_1x.py"))
    cfg = LazyConfig.apply_overrides(cfg, list(converter.TORCHVISION_OVERRIDES))
    model = instantiate(cfg.model).eval()
    fresh = {key: value.clone() for key, value in model.state_dict().items()}
    load_weights(CheckedCheckpointer(model), str(output), resume=False)  # the project's loader: a .pkl without code
    assert_backbone_is_the_torchvision_resnet(model, fresh, output, resnet)


def test_the_converter_refuses_what_is_not_a_torchvision_resnet(tmp_path):
    converter = load_script("tools/convert_torchvision_resnet.py")
    torch.save({"backbone.conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserInputError, match="backbone.conv.weight: not a weight of a torchvision ResNet"):
        converter.main(converter.parse_args([str(tmp_path / "other.pth"), str(tmp_path / "out.pkl")]))
    assert not (tmp_path / "out.pkl").exists()
