"""What ``train.seed`` changes at the start of a training, in one or more checkouts of this repository:
a hash of the initial weights and of the first training batch (file names and image tensors, flips
included) of the embedded benchmark's config, built in train_net.py's order (its ``setup``, detectron2's
``default_setup``, which seeds torch, numpy and python, then the model, then the train loader).

    git worktree add /tmp/headline dbd6009       # the commit that kept the first headline study
    python -m benchmarks.seed_first_step --checkout /tmp/headline --checkout . --seeds 0 1 \\
        --output benchmarks/results/study_headline/seed_check.json

Each (checkout, seed) runs in a fresh process with that checkout's code first on the path and a data cache
of its own (a checkout's generator must not rewrite the cache that other trainings read).
"""
import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

CONFIG = "configs/Demo/dsanet_conf_synthetic_study_cpu.py"


def first_step(root: Path, seed: int) -> Dict[str, str]:
    """Hashes of the initial weights and the first batch of ``root``'s train_net.py with ``train.seed=seed``."""
    spec = importlib.util.spec_from_file_location("train_net", root / "train_net.py")
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    from detectron2.config import instantiate
    from detectron2.engine import default_setup

    with tempfile.TemporaryDirectory() as output:
        args = train_net.parse_args(["--config-file", str(root / CONFIG), f"train.seed={seed}",
                                     f"train.output_dir={output}"])
        cfg = train_net.setup(args)
        default_setup(cfg, args)
        model = instantiate(cfg.model)
        weights = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            weights.update(name.encode())
            weights.update(tensor.detach().float().numpy().tobytes())
        batch = next(iter(instantiate(cfg.dataloader.train)))
    images = hashlib.sha256()
    for item in batch:
        images.update(Path(item["file_name"]).name.encode())
        images.update(item["image"].numpy().tobytes())
    return {"weights": weights.hexdigest()[:16], "first_batch": images.hexdigest()[:16],
            "first_images": [Path(item["file_name"]).name for item in batch[:3]]}


def run(checkouts: List[Path], seeds: List[int]) -> List[Dict]:
    rows = []
    for root in checkouts:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "projects" / "DSANet"), str(root)]),
                       DSANET_CACHE=cache)
            for seed in seeds:
                done = subprocess.run([sys.executable, __file__, "--one", str(root), str(seed)], env=env,
                                      capture_output=True, text=True, check=True)
                rows.append({"commit": commit, "seed": seed, **json.loads(done.stdout.strip().splitlines()[-1])})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", action="append", type=Path, default=[], help="a checkout's root (repeat)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--output", type=Path)
    parser.add_argument("--one", nargs=2, metavar=("ROOT", "SEED"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(first_step(Path(args.one[0]).resolve(), int(args.one[1]))))
        return
    rows = run([c.resolve() for c in args.checkout], args.seeds)
    if args.output:
        from dsanet.fileio import write_json
        from dsanet_lab.provenance import provenance
        write_json(args.output, {"config": CONFIG, "rows": rows, "provenance": provenance()})


if __name__ == "__main__":
    main()
