#!/usr/bin/env python
"""Draw a trained model's detections on images of a registered dataset, with detectron2's Visualizer.

    visualize_predictions.py --config-file output/demo/config.yaml \
        --weights output/demo/model_final.pth --output output/demo/predictions --num-images 8
"""
import argparse
import os
import sys

import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.visualizer import Visualizer

from dsanet.config import load_config
from dsanet.data import register_datasets_for
from dsanet.data.mapper import UNREADABLE_ERRORS, read_image
from dsanet.best_checkpoint import WEIGHTS_HELP, weights_for_tool
from dsanet.checkpoint import CheckedCheckpointer
from dsanet.engine import load_weights
from dsanet.errors import exit_with_status_of
from dsanet.predictor import input_format_of


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    parser.add_argument("--dataset", default=None, help="registered dataset (default: the config's test set)")
    parser.add_argument("--output", required=True, help="folder for the drawn images")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--score-thresh", type=float, default=0.5)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    cfg = load_config(args.config_file, args.opts)
    register_datasets_for(cfg)
    dataset = args.dataset or cfg.dataloader.test.dataset.names
    model = instantiate(cfg.model).to(cfg.train.device).eval()
    load_weights(CheckedCheckpointer(model), weights_for_tool(args.weights, args.config_file, args.opts), resume=False)
    metadata = MetadataCatalog.get(dataset)
    input_format = input_format_of(model, cfg)
    os.makedirs(args.output, exist_ok=True)
    for record in DatasetCatalog.get(dataset)[: args.num_images]:
        try:
            image = read_image(record["file_name"], format=input_format)  # (H, W, 3)
        except UNREADABLE_ERRORS as e:
            print(f"warning: skipped image {record['file_name']}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        tensor = torch.as_tensor(image.transpose(2, 0, 1).copy()).float()
        with torch.no_grad():
            instances = model([{"image": tensor, "height": image.shape[0], "width": image.shape[1]}])[0]["instances"]
        instances = instances[instances.scores >= args.score_thresh].to("cpu")
        rgb = image[:, :, ::-1] if input_format == "BGR" else image
        drawn = Visualizer(rgb, metadata, scale=3.0).draw_instance_predictions(instances)
        path = os.path.join(args.output, os.path.basename(record["file_name"]).rsplit(".", 1)[0] + ".png")
        drawn.save(path)
        print(f"{path}: {len(instances)} detections")


if __name__ == "__main__":
    exit_with_status_of(lambda: main(parse_args()))
