#!/usr/bin/env python
"""Run a trained DSANet (or DSA-FCOS, RetinaNet, FCOS) on images, folders or a video, in detectron2's demo conventions.

    demo/demo.py --config-file output/demo/config.yaml --input photos/ 'more/*.jpg' one.png \
        --output output/demo/drawn --opts train.init_checkpoint=output/demo/model_final.pth
    demo/demo.py --config-file output/demo/config.yaml --video-input clip.mp4 --output output/demo/drawn \
        --opts train.init_checkpoint=output/demo/model_final.pth

For every image, ``<output>/<name>.png`` (detections drawn with detectron2's Visualizer, class
names from the config's test dataset) and ``<output>/<name>.json`` (the detections); for a video,
``<output>/<name>.mp4`` and one JSON with the detections of every frame. The weights come from
``--weights``, or ``train.init_checkpoint`` given in ``--opts`` (as in ``train_net.py --eval-only``), else
from the config's training output folder: ``model_best.pth`` (the best evaluated model) when it exists,
else ``model_final.pth``, else the config's own ``train.init_checkpoint``. An input that is
missing or unreadable gets one line naming it; the others go on (exit status 1 at the end).
"""
import argparse
import glob
import json
import os
import sys
from typing import Iterator, List, Tuple

import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
import numpy as np
from tqdm import tqdm

from dsanet.errors import UserInputError, exit_with_status_of
from dsanet.media import VideoFrames, open_video_writer, read_image_or_problem
from dsanet.predictor import Predictor
from dsanet.visualization import detections_to_json, draw_detections

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", help="image files, globs ('dir/*.jpg') or folders")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument("--output", required=True, help="folder for drawn images/videos and JSON detections")
    parser.add_argument("--weights", default=None,
                        help="checkpoint; default: train.init_checkpoint when given in --opts, else model_best.pth "
                             "(the best evaluated model) of the config's training output folder (train.output_dir, "
                             "or the folder of a config.yaml that training saved) when it exists, else model_final.pth "
                             "there, else the config's train.init_checkpoint, else the trained model that ships for "
                             "the config (configs/Demo/dsanet_conf_synthetic_cpu.py has one)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5,
                        help="minimum score to keep: with object confidence the fused score cls^(1-a) * conf^a, "
                             "on FCOS sqrt(cls * centerness)")
    parser.add_argument("--scale", type=float, default=1.0, help="size of the drawn output relative to the input")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="key=value config overrides")
    args = parser.parse_args(argv)
    if bool(args.input) == bool(args.video_input):
        parser.error("give either --input or --video-input")
    return args


def expand_inputs(patterns: List[str]) -> Iterator[Tuple[str, str]]:
    """Files, globs and folders -> (path, problem) pairs in order; problem is "" for a file to read."""
    for pattern in patterns:
        if os.path.isdir(pattern):
            files = sorted(f for f in glob.glob(os.path.join(pattern, "*")) if f.lower().endswith(IMAGE_EXTENSIONS))
            yield from ((f, "") for f in files) if files else [(pattern, "folder holds no image files")]
        elif glob.has_magic(pattern):
            files = sorted(glob.glob(pattern))
            yield from ((f, "") for f in files) if files else [(pattern, "no file matches")]
        else:
            yield pattern, "" if os.path.isfile(pattern) else "no such file"


def build_predictor(args: argparse.Namespace) -> Predictor:
    """The model of --config-file with its weights (see --weights) and the threshold applied."""
    from dsanet.best_checkpoint import weights_for_tool

    weights = weights_for_tool(args.weights, args.config_file, args.opts, init_checkpoint_last=True)
    predictor = Predictor(args.config_file, weights, args.opts)
    # As detectron2's demo: the threshold also filters candidates inside the model, before NMS.
    predictor.model.test_score_thresh = args.confidence_threshold
    return predictor


def run_images(predictor: Predictor, args: argparse.Namespace) -> int:
    """Predict, draw and save every input image; returns the number of inputs that failed."""
    failed = 0
    inputs = list(expand_inputs(args.input))
    for path, problem in tqdm(inputs, desc="images", unit="img", file=sys.stderr):
        image = None
        if not problem:
            image, problem = read_image_or_problem(path, predictor.input_format)
        if problem:
            tqdm.write(f"skipped {path}: {problem}", file=sys.stderr)
            failed += 1
            continue
        instances = predictor(image)
        stem = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
        draw_detections(image, instances, predictor.metadata, predictor.input_format, args.scale).save(stem + ".png")
        with open(stem + ".json", "w") as f:
            json.dump({"file_name": path, "height": image.shape[0], "width": image.shape[1],
                       "detections": detections_to_json(instances, predictor.metadata)}, f, indent=1)
    return failed


def run_video(predictor: Predictor, args: argparse.Namespace) -> int:
    """Predict on every frame; writes <name>.mp4 and <name>.json. Returns 1 if the video cannot be read."""
    frames = VideoFrames(args.video_input)
    if frames.problem:
        print(f"skipped {args.video_input}: {frames.problem}", file=sys.stderr)
        return 1
    stem = os.path.join(args.output, os.path.splitext(os.path.basename(args.video_input))[0])
    writer, records = None, []
    for index, bgr in enumerate(tqdm(frames, total=frames.count or None, desc="frames", unit="frame",
                                     file=sys.stderr)):
        frame = bgr[:, :, ::-1] if predictor.input_format == "RGB" else bgr
        instances = predictor(frame)
        drawn = draw_detections(frame, instances, predictor.metadata, predictor.input_format,
                                args.scale).get_image()  # RGB
        if writer is None:
            writer = open_video_writer(stem + ".mp4", frames.fps, drawn.shape[1], drawn.shape[0])
        writer.write(np.ascontiguousarray(drawn[:, :, ::-1]))
        records.append({"frame": index, "detections": detections_to_json(instances, predictor.metadata)})
    if writer is not None:
        writer.release()
    with open(stem + ".json", "w") as f:
        json.dump({"file_name": args.video_input, "fps": frames.fps, "frames": records}, f, indent=1)
    return 0


def main(args: argparse.Namespace) -> int:
    """Returns the exit status: 0, or 1 when some input was skipped."""
    predictor = build_predictor(args)
    os.makedirs(args.output, exist_ok=True)
    failed = run_video(predictor, args) if args.video_input else run_images(predictor, args)
    return 1 if failed else 0


if __name__ == "__main__":
    exit_with_status_of(lambda: main(parse_args()))
