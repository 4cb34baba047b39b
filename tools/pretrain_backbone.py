#!/usr/bin/env python
"""Pretrain a CPU detector config's ResNet as an image classifier, to fine-tune a detector from it.

    tools/pretrain_backbone.py                     # configs/Demo/dsanet_conf_synthetic_cpu.py's ResNet
    train_net.py --config-file configs/Demo/dsanet_conf_synthetic_finetune_cpu.py

The classifier is the config's ``model.backbone.bottom_up`` as built for detection, a global average
pool and a linear layer, trained on "which shapes does this image hold" over synthetic images drawn on
the fly (another seed than the detection dataset's; see :mod:`dsanet.pretrain`). The output folder
gets the trainer's checkpoints (``model_*.pth``: classifier included, for resuming), ``metrics.json``,
``log.txt``, then ``backbone.pth`` (the bottom-up alone, what ``train.init_checkpoint`` takes) and
``accuracy.json`` (held-out images). Run again on the same folder, it resumes from its last checkpoint.
Bad input ends with one line naming what is wrong and exit status 2.
"""
import argparse
import json
import logging
import os
from pathlib import Path

import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
import torch
from detectron2.config import instantiate
from detectron2.engine import default_writers, hooks
from detectron2.layers import FrozenBatchNorm2d
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params
from detectron2.utils.logger import setup_logger
from fvcore.common.param_scheduler import CosineParamScheduler

from dsanet.checkpoint import CheckedCheckpointer, remove_stale_temporary_files
from dsanet.config import load_config
from dsanet.data.shapes import CLASS_NAMES
from dsanet.engine import CheckedSimpleTrainer
from dsanet.errors import UserInputError, exit_with_status_of
from dsanet.fileio import write_json
from dsanet.pretrain import (HELD_OUT_STREAM, TRAIN_STREAM, BackboneClassifier, IndexStream, ShapePresenceImages,
                             evaluate_classifier, save_backbone)
from dsanet.solver import SGDWithGradientClipping

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "Demo" / "dsanet_conf_synthetic_cpu.py"
# What must not change when a run is resumed (max_iter may: a run can be extended).
RUN_ARGUMENTS = ("config_file", "opts", "seed", "batch_size", "lr", "image_size")
logger = logging.getLogger("dsanet")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG),
                        help="a detector config whose model.backbone.bottom_up is pretrained (default: the demo's)")
    parser.add_argument("--output-dir", default="output/pretrain_backbone")
    # 3000 x 32 = 96k images, each drawn once (the command and its accuracy: projects/DSANet/docs/PRETRAINING.md).
    parser.add_argument("--max-iter", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05, help="SGD lr (cosine to 2%%, 100 warm-up iterations)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed of the synthetic images and of the initial weights; not the detection dataset's")
    parser.add_argument("--image-size", type=int, default=None, help="default: the config's synthetic image size")
    parser.add_argument("--num-held-out", type=int, default=1000, help="held-out images for the final accuracy")
    parser.add_argument("--checkpoint-period", type=int, default=500)
    parser.add_argument("--log-period", type=int, default=20)
    parser.add_argument("--num-workers", type=int, default=1, help="processes drawing images (0: in this one)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value overrides of the config")
    args = parser.parse_args(argv)
    for name in ("max_iter", "batch_size", "num_held_out", "checkpoint_period", "log_period"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def build_bottom_up(cfg, config_file: str) -> torch.nn.Module:
    """The config's bottom-up network, refused when frozen (it would not learn)."""
    bottom_up = instantiate(cfg.model.backbone.bottom_up)
    frozen = [name for name, module in bottom_up.named_modules() if isinstance(module, FrozenBatchNorm2d)]
    frozen += [name for name, p in bottom_up.named_parameters() if not p.requires_grad]
    if frozen:
        raise UserInputError(f"--config-file {config_file}: its backbone is frozen or has FrozenBN ({frozen[0]}); "
                             f"pretrain with the from-scratch recipe it fine-tunes from, e.g. {DEFAULT_CONFIG.relative_to(ROOT)}")
    return bottom_up


def check_run_arguments(args: argparse.Namespace, output_dir: Path) -> None:
    """Record the run's arguments; a resumed run must have the same ones (but for --max-iter)."""
    path = output_dir / "pretrain_args.json"
    arguments = {name: getattr(args, name) for name in RUN_ARGUMENTS}
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = [f"--{k.replace('_', '-')} {recorded.get(k)} -> {v}" for k, v in arguments.items() if recorded.get(k) != v]
        if changed:
            raise UserInputError(f"{output_dir} holds a pretraining run with other arguments ({'; '.join(changed)}): "
                                 f"resume it with its own, or choose another --output-dir")
    else:
        write_json(path, arguments)


def main(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config_file, args.opts)
    synthetic = cfg.dataloader.get("synthetic", {})
    if args.seed == synthetic.get("seed", 0):
        raise UserInputError(f"--seed {args.seed} is the seed of the config's detection dataset: pick another, "
                             f"so that no pretraining image is a detection image")
    args.image_size = args.image_size or synthetic.get("image_size", 128)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    setup_logger(str(output_dir))  # detectron2's, where the progress lines come from
    setup_logger(str(output_dir), name="dsanet", abbrev_name="dsanet")
    check_run_arguments(args, output_dir)

    torch.manual_seed(args.seed)
    model = BackboneClassifier(build_bottom_up(cfg, args.config_file), num_classes=len(CLASS_NAMES),
                               pixel_mean=cfg.model.pixel_mean, pixel_std=cfg.model.pixel_std)
    input_format = cfg.model.get("input_format", "BGR")
    sampler = IndexStream()
    loader = torch.utils.data.DataLoader(
        ShapePresenceImages(seed=args.seed, stream=TRAIN_STREAM, image_size=args.image_size,
                            input_format=input_format, flip=True),
        batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers)
    # As the demo recipe trains from scratch: SGD, no weight decay on norms, gradients clipped.
    optimizer = SGDWithGradientClipping(get_default_optimizer_params(model, weight_decay_norm=0.0), lr=args.lr,
                                        momentum=0.9, weight_decay=1e-4, max_grad_norm=5.0)
    trainer = CheckedSimpleTrainer(model, loader, optimizer)
    checkpointer = CheckedCheckpointer(model, str(output_dir), trainer=trainer)
    schedule = WarmupParamScheduler(CosineParamScheduler(1.0, 0.02), warmup_factor=0.01,
                                    warmup_length=min(1.0, 100 / args.max_iter), warmup_method="linear")
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=schedule),
        hooks.PeriodicCheckpointer(checkpointer, args.checkpoint_period, max_iter=args.max_iter),
        hooks.PeriodicWriter(default_writers(str(output_dir), args.max_iter), period=args.log_period),
    ])
    for name in remove_stale_temporary_files(str(output_dir)):
        logger.info("Removed %s, left half-written by an interrupted run", name)

    start_iter = 0
    if checkpointer.has_checkpoint():
        logger.info("Resuming from %s", checkpointer.get_checkpoint_file())
        checkpointer.resume_or_load("", resume=True)
        start_iter = trainer.iter + 1
    sampler.start = start_iter * args.batch_size  # the images the uninterrupted run would see next
    if start_iter < args.max_iter:
        trainer.train(start_iter, args.max_iter)
    else:
        logger.info("Nothing to train: resumed at iteration %d of %d", start_iter, args.max_iter)

    backbone_path = output_dir / "backbone.pth"
    save_backbone(model.bottom_up, str(backbone_path))
    held_out = ShapePresenceImages(seed=args.seed, stream=HELD_OUT_STREAM, image_size=args.image_size,
                                   input_format=input_format)
    accuracy = evaluate_classifier(model, held_out, num_images=args.num_held_out, batch_size=args.batch_size)
    accuracy["iterations"] = max(start_iter, args.max_iter)
    write_json(output_dir / "accuracy.json", accuracy)
    per_class = ", ".join(f"{name} {100 * value:.1f}%" for name, value in accuracy["per_class"].items())
    print(f"held-out accuracy ({args.num_held_out} images): all labels right {100 * accuracy['exact_match']:.1f}% "
          f"(majority guess {100 * accuracy['majority_exact_match']:.1f}%), per label "
          f"{100 * accuracy['label_accuracy']:.1f}% (majority guess {100 * accuracy['majority_label_accuracy']:.1f}%; "
          f"{per_class})", flush=True)
    print(f"backbone for train.init_checkpoint: {backbone_path}", flush=True)
    return accuracy


if __name__ == "__main__":
    exit_with_status_of(lambda: main(parse_args()) and None)
