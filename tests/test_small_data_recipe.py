"""The own-data CPU recipe for small datasets: a schedule in epochs of the registered training set, the
best evaluated model kept (and loaded by the tools), scale jitter and flips, and the start from
torchvision's ImageNet ResNet-18 weights (a randomly initialised one here: nothing can be downloaded)."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data.transforms import RandomFlip
from detectron2.layers import FrozenBatchNorm2d

from conftest import CONFIGS, assert_backbone_is_the_torchvision_resnet, converted_random_torchvision_resnet, load_script
from dsanet.best_checkpoint import BEST_RECORD, BEST_WEIGHTS, default_weights
from dsanet.checkpoint import CheckedCheckpointer
from dsanet.config import load_config
from dsanet.data import register_coco_format_datasets
from dsanet.engine import load_weights
from dsanet.errors import UserInputError
from dsanet.schedule import resolve_epoch_schedule
from test_custom_recipe import ROOT, write_one_class_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RECIPE = CONFIGS / "Custom" / "dsanet_conf_small_custom_cpu.py"
IMAGENET_RECIPE = CONFIGS / "Custom" / "dsanet_conf_small_custom_cpu_imagenet.py"


def dataset_config(tmp_path: Path, num_images: int, *overrides: str):
    """The recipe reading a one-class dataset of ``num_images`` images, registered under a name of its own."""
    root = tmp_path / f"images{num_images}"
    root.mkdir(parents=True)
    json_file = write_one_class_dataset(root, num_images=num_images)
    name = f"schedule_test_{num_images}_{tmp_path.name}"
    register_coco_format_datasets({name: {"json_file": str(json_file), "image_root": str(root)}})
    return load_config(str(RECIPE), [f"dataloader.train.dataset.names={name}", *overrides])


@pytest.mark.parametrize("num_images,batch", [(4, 8), (10, 8), (17, 8), (17, 4)])
def test_iterations_follow_the_training_set_size(tmp_path, num_images, batch):
    cfg = dataset_config(tmp_path, num_images, f"dataloader.train.total_batch_size={batch}")
    schedule = resolve_epoch_schedule(cfg)
    per_epoch = math.ceil(num_images / batch)
    assert (schedule.num_images, schedule.iters_per_epoch) == (num_images, per_epoch)
    assert cfg.train.max_iter == 200 * per_epoch  # the recipe's 200 epochs
    assert cfg.train.eval_period == cfg.train.checkpointer.period == 20 * per_epoch
    # the warm-up is 5 epochs of this set, whatever its size; the cosine decay spans max_iter
    assert round(cfg.lr_multiplier.warmup_length * cfg.train.max_iter) == schedule.warmup_iters == 5 * per_epoch
    scheduler = instantiate(cfg.lr_multiplier)
    # halfway through the warm-up about half the lr; at its end the cosine's (just under the full lr)
    assert scheduler(0.5 * schedule.warmup_iters / cfg.train.max_iter) < 0.6
    assert scheduler(schedule.warmup_iters / cfg.train.max_iter) > 0.99
    assert f"{num_images} training images at batch {batch} = {per_epoch} iterations per epoch" in schedule.describe()


def test_epochs_are_overridable_and_iterations_remain_available(tmp_path):
    cfg = dataset_config(tmp_path, 10, "train.epochs=30", "train.eval_epochs=10")
    assert resolve_epoch_schedule(cfg).max_iter == cfg.train.max_iter == 60
    assert cfg.train.eval_period == 20
    cfg = dataset_config(tmp_path / "iters", 10, "train.epochs=null", "train.max_iter=7",
                         "train.eval_epochs=null", "train.eval_period=7", "train.warmup_epochs=null")
    assert resolve_epoch_schedule(cfg) is None and cfg.train.max_iter == 7


@pytest.mark.parametrize("overrides,message", [
    (["train.epochs=0"], "train.epochs=0: must be a number > 0"),
    (["train.epochs=-3"], "train.epochs=-3: must be a number > 0"),
    (["train.epochs=ten"], "train.epochs='ten': must be a number > 0"),
    (["train.eval_epochs=0"], "train.eval_epochs=0: must be a number > 0"),
    (["train.warmup_epochs=200"], "train.warmup_epochs=200: must be shorter than the run"),
    (["train.max_iter=500"], "train.epochs=200 and train.max_iter=500 are both set"),
    (["train.epochs=null"], "train.epochs and train.max_iter are both null"),
])
def test_bad_schedule_values_name_the_key(tmp_path, overrides, message):
    cfg = dataset_config(tmp_path, 4, *overrides)
    with pytest.raises(UserInputError, match=re.escape(message)):
        resolve_epoch_schedule(cfg)


def test_scale_jitter_and_flips_are_in_the_recipe():
    augmentations = LazyConfig.load(str(RECIPE)).dataloader.train.mapper.augmentations
    resize = augmentations[0]
    assert resize.sample_style == "choice" and len(set(resize.short_edge_length)) > 1  # sizes drawn at random
    flips = [a for a in augmentations if a._target_ is RandomFlip]
    assert [(f.horizontal, f.vertical) for f in flips] == [(True, False), (False, True)]


@pytest.fixture(scope="module")
def trained_with_best(tmp_path_factory):
    """The recipe trained for real: 4 images at batch 2, 6 epochs (12 iterations), evaluated every epoch."""
    data = tmp_path_factory.mktemp("best_data")
    json_file = write_one_class_dataset(data)
    output = tmp_path_factory.mktemp("best_run")
    command = [sys.executable, str(ROOT / "train_net.py"), "--config-file", str(RECIPE),
               f"datasets.custom_train.json_file={json_file}", f"datasets.custom_train.image_root={data}",
               f"datasets.custom_val.json_file={json_file}", f"datasets.custom_val.image_root={data}",
               "dataloader.train.mapper.augmentations.0.short_edge_length=[80,96,112]",
               "dataloader.test.mapper.augmentations.0.short_edge_length=96",
               "train.epochs=6", "train.eval_epochs=1", "train.warmup_epochs=1", "dataloader.train.total_batch_size=2",
               "dataloader.train.num_workers=0", "dataloader.test.num_workers=0", "optimizer.lr=0.05",
               "train.log_period=1", "train.seed=0", f"train.output_dir={output}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return output, result.stdout + result.stderr


def evaluations(output: Path) -> list:
    """Each evaluation's bbox/AP from metrics.json, in order (NaN: nothing detected)."""
    records = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    return [r["bbox/AP"] for r in records if "bbox/AP" in r]


def test_the_log_states_the_computed_schedule(trained_with_best):
    _, log = trained_with_best
    assert ("epoch schedule: 6 epochs of 4 training images at batch 2 = 2 iterations per epoch -> "
            "train.max_iter=12, warm-up 2 iterations, evaluation every 2 iterations") in log


def test_the_kept_model_is_the_best_evaluated_one(trained_with_best):
    output, log = trained_with_best
    aps = evaluations(output)
    assert len(aps) == 6  # every epoch, the last at the end
    record = json.loads((output / BEST_RECORD).read_text())
    finite = [ap for ap in aps if not math.isnan(ap)]
    assert record["metric"] == "bbox/AP" and record["value"] == pytest.approx(max(finite))
    first_best = next(i for i, ap in enumerate(aps) if ap == max(finite))
    assert record["iteration"] == 2 * (first_best + 1)  # evaluated after 2 iterations per epoch
    assert f"Best model so far: iteration {record['iteration']}" in log
    # model_best.pth holds the weights that were evaluated: those of the checkpoint at that iteration
    at_that_iteration = output / ("model_final.pth" if record["iteration"] == 12
                                  else f"model_{record['iteration'] - 1:07d}.pth")
    best, periodic = torch.load(output / BEST_WEIGHTS)["model"], torch.load(at_that_iteration)["model"]
    assert best.keys() == periodic.keys() and all(torch.equal(best[k], periodic[k]) for k in best)
    # the run's results are the kept model's: evaluated again when it is not the last iteration's
    final = json.loads((output / "inference" / "coco_eval_results.json").read_text())["bbox"]["AP"]
    assert final == pytest.approx(record["value"], abs=1e-6)
    assert ("evaluating it" in log) == (record["iteration"] < 12)
    # --resume continues from the latest checkpoint, not from the kept one
    assert (output / "last_checkpoint").read_text().strip() == "model_final.pth"


def test_the_saved_config_resolves_to_the_same_schedule(trained_with_best, tmp_path):
    """config.yaml holds the computed iterations beside the epochs: loaded again (--resume, a new
    output folder), it resolves to the same numbers instead of counting them twice."""
    output, _ = trained_with_best
    cfg = load_config(str(output / "config.yaml"))
    register_coco_format_datasets(dict(cfg.datasets))
    assert resolve_epoch_schedule(cfg).max_iter == cfg.train.max_iter == 12 and cfg.train.eval_period == 2


def test_tools_load_the_kept_model_by_default(trained_with_best):
    output, _ = trained_with_best
    assert default_weights(None, str(output / "config.yaml"))[0] == str(output / BEST_WEIGHTS)
    assert default_weights(str(output))[0] == str(output / BEST_WEIGHTS)
    (output / BEST_RECORD).rename(output / "moved.json")
    try:  # no record: not a kept model, the last one then
        assert default_weights(str(output))[0] == str(output / "model_final.pth")
    finally:
        (output / "moved.json").rename(output / BEST_RECORD)


@pytest.mark.parametrize("script", ["demo/demo.py", "tools/visualize_predictions.py", "tools/export_model.py",
                                    "tools/attention_maps.py"])
def test_tools_say_so_in_their_help(script, capsys):
    tool = load_script(script)
    with pytest.raises(SystemExit):
        tool.parse_args(["--help"])
    assert "model_best.pth" in " ".join(capsys.readouterr().out.split())


def test_torchvision_resnet18_weights_load_into_every_backbone_weight_of_the_imagenet_recipe(tmp_path):
    """Convert a randomly initialised torchvision ResNet-18 and load it into the recipe's model: every
    bottom-up weight comes from the file and nothing else does, and the backbone computes torchvision's res5."""
    resnet, output, _ = converted_random_torchvision_resnet(18, tmp_path)

    cfg = load_config(str(IMAGENET_RECIPE))
    assert cfg.train.init_checkpoint == "output/R-18-torchvision.pkl"  # where the documented command writes it
    model = instantiate(cfg.model).eval()
    fresh = {key: value.clone() for key, value in model.state_dict().items()}
    load_weights(CheckedCheckpointer(model), str(output), resume=False)
    assert_backbone_is_the_torchvision_resnet(model, fresh, output, resnet)

    # what the weights need: RGB read and fed, torchvision's normalisation, frozen BN, stem and res2 frozen
    assert model.input_format == cfg.dataloader.train.mapper.image_format == "RGB"
    assert cfg.dataloader.test.mapper.image_format == "RGB"
    torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))
    torch.testing.assert_close(model.pixel_std.flatten(), torch.tensor([58.395, 57.12, 57.375]))
    bottom_up = model.backbone.bottom_up
    norms = [m for name, m in bottom_up.named_modules() if name.endswith(".norm")]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    frozen = {name for name, p in bottom_up.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in bottom_up.named_parameters() if name.startswith(("stem.", "res2."))}
