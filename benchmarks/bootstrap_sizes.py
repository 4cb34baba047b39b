"""How the validation split's size sets the bootstrap spread of one model's AP.

    python -m benchmarks.bootstrap_sizes --ground-truth VAL.json --detections RUN/inference/coco_instances_results.json \\
        --sizes 100,500,1000,2000 --output output/bench/bootstrap_sizes.json

For each N, the first N images of the ground truth (and their detections) are evaluated as a split of
their own, and the image-level bootstrap (dsanet_lab.study.bootstrap) gives the std of AP, AP50 and AP75.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

from dsanet.errors import UserInputError, exit_with_status_of
from dsanet.fileio import write_json
from dsanet_lab.provenance import provenance
from dsanet_lab.study.bootstrap import bootstrap_metrics, match_detections


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ground-truth", required=True, help="COCO json of the validation split")
    parser.add_argument("--detections", required=True, help="detectron2's coco_instances_results.json of one model")
    parser.add_argument("--sizes", required=True, help="comma-separated numbers of images, e.g. 100,500,2000")
    parser.add_argument("--output", help="write the results here as JSON")
    args = parser.parse_args(argv)
    for flag, path in (("--ground-truth", args.ground_truth), ("--detections", args.detections)):
        if not Path(path).is_file():
            raise UserInputError(f"{flag} {path}: no such file")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        raise UserInputError(f"--sizes {args.sizes!r}: expected comma-separated integers") from None
    gt = json.loads(Path(args.ground_truth).read_text())
    if max(sizes) > len(gt["images"]):
        raise UserInputError(f"--sizes {args.sizes}: {args.ground_truth} holds only {len(gt['images'])} images")
    detections = json.loads(Path(args.detections).read_text())
    rows = []
    print("images\tAP\tstd\tAP50\tstd\tAP75\tstd\tseconds", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            images = sorted(gt["images"], key=lambda im: im["id"])[:n]
            ids = {im["id"] for im in images}
            subset = {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
            path = Path(folder) / f"first{n}.json"
            path.write_text(json.dumps(subset))
            start = time.time()
            summary, _ = bootstrap_metrics(match_detections(str(path), [d for d in detections if d["image_id"] in ids]))
            summary["seconds"] = time.time() - start
            rows.append(summary)
            print(f"{n}\t" + "\t".join(f"{summary[m]['value']:.2f}\t{summary[m]['std']:.3f}" for m in ("AP", "AP50", "AP75"))
                  + f"\t{summary['seconds']:.0f}", flush=True)
    if args.output:
        write_json(args.output, {"ground_truth": args.ground_truth, "detections": args.detections, "rows": rows,
                                 "provenance": provenance()})
    return 0


if __name__ == "__main__":
    exit_with_status_of(main)
