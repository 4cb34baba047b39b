#!/usr/bin/env python
"""Draw what each DSA branch attends to, for query points on one image (one PNG per query).

    tools/attention_maps.py --config-file output/demo/config.yaml --weights output/demo/model_final.pth \
        --input image.jpg --output output/demo/attention [--points 40,52 90,20 | --num-queries 3]

A row per DSA level, the classification and regression branches side by side: the heat map is
the block's own softmax row of the query position over all positions of the level (for CBAM,
its sigmoid spatial mask, which does not depend on the query). Without --points, the queries
are the centres of the top detections. Points are (x, y) pixels of the input image.
"""
import argparse
import os

import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
import numpy as np
import torch
from detectron2.data.detection_utils import read_image

from dsanet.attention_maps import attention_maps, draw_attention
from dsanet.best_checkpoint import WEIGHTS_HELP, weights_for_tool
from dsanet.errors import UserInputError, exit_with_status_of
from dsanet.predictor import Predictor


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    parser.add_argument("--input", required=True, help="an image file")
    parser.add_argument("--output", required=True, help="folder for the PNGs")
    parser.add_argument("--points", nargs="*", default=None, metavar="X,Y", help="query points in image pixels")
    parser.add_argument("--num-queries", type=int, default=3, help="top detections queried when --points is absent")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="key=value config overrides")
    return parser.parse_args(argv)


def parse_points(texts) -> np.ndarray:
    """["40,52", ...] -> (Q, 2) float (x, y); UserInputError naming a malformed point."""
    points = []
    for text in texts:
        try:
            x, y = (float(v) for v in text.split(","))
        except ValueError:
            raise UserInputError(f"--points {text}: expected x,y in pixels, such as 40,52") from None
        points.append((x, y))
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def main(args: argparse.Namespace) -> list:
    """Write the PNGs; returns their paths."""
    predictor = Predictor(args.config_file, weights_for_tool(args.weights, args.config_file, args.opts), args.opts)
    if not os.path.isfile(args.input):
        raise UserInputError(f"--input {args.input}: no such file")
    try:
        image = read_image(args.input, format=predictor.input_format)  # (H, W, 3)
    except Exception as e:  # PIL raises several types for a file that is not an image
        raise UserInputError(f"--input {args.input}: cannot be read as an image ({type(e).__name__})") from e
    inputs = predictor.preprocess(image)
    points = None
    if args.points:
        points = torch.from_numpy(inputs["transform"].apply_coords(parse_points(args.points))).float()
    inputs = {k: v for k, v in inputs.items() if k != "transform"}
    instances, points, maps = attention_maps(predictor.model, inputs, points, args.num_queries)
    for m in sorted({(m.level, m.kind, m.maps.shape[-2:]) for m in maps}):
        level, kind, grid = m
        print(f"{level}: CBAM, drawn is its sigmoid spatial mask (the same for every query)" if kind == "cbam"
              else f"{level}: self-attention over {grid[0]}x{grid[1]} positions")

    shown = inputs["image"].permute(1, 2, 0).numpy().astype(np.uint8)
    rgb = shown[:, :, ::-1] if predictor.input_format == "BGR" else shown
    scale = np.array([rgb.shape[1] / image.shape[1], rgb.shape[0] / image.shape[0]] * 2)
    names = predictor.metadata.get("thing_classes", None)
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.input))[0]
    paths = []
    for q, point in enumerate(points.tolist()):
        box, title = None, f"query ({point[0]:.0f}, {point[1]:.0f})"
        if not args.points:  # the query is the centre of detection q
            box = instances.pred_boxes.tensor[q].numpy() * scale
            label = int(instances.pred_classes[q])
            title += f": {names[label] if names else label} {float(instances.scores[q]):.2f}"
        path = os.path.join(args.output, f"{stem}_query{q}.png")
        draw_attention(rgb, point, maps, q, path, title=title, box=box)
        print(path)
        paths.append(path)
    return paths


def run_command() -> None:
    """The command: main() returns the PNG paths for callers, which are not an exit status."""
    main(parse_args())


if __name__ == "__main__":
    exit_with_status_of(run_command)
