#!/usr/bin/env python
"""Train or evaluate DSANet (or RetinaNet) from a LazyConfig file, with detectron2's usual flags.

    train_net.py --config-file configs/COCO-Detection/dsanet_conf_R_50_FPN_1x.py --num-gpus 8
    train_net.py --config-file CONFIG --eval-only train.init_checkpoint=model_final.pth
    train_net.py --config-file CONFIG --resume            # continue from the output folder
    train_net.py --config-file CONFIG train.device=cpu --num-gpus 2   # 2 processes over gloo

A config that sets ``train.epochs`` has its iterations computed from its training set's size
(``dsanet.schedule``; logged at the start); one that sets ``train.best_metric`` keeps the best
evaluated model as ``model_best.pth`` (``dsanet.best_checkpoint``) and ends with its evaluation.

Flags may also follow the ``key=value`` overrides. On one machine without ``--dist-url`` the
processes meet through a file in a fresh temporary folder, not a TCP port.
Bad input (missing config or checkpoint, unknown override key, unregistered dataset, a broken
annotation file, a dataset whose category count differs from model.num_classes, a CUDA config on
a machine without CUDA, an unreachable checkpoint URL, a bad ``train.epochs``) ends with one line
naming what is wrong and exit status 2.
"""
import logging
import sys
from typing import List, Optional

import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
from detectron2.config import instantiate
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from dsanet import compat
from dsanet.config import check_device, load_config
from dsanet.data import check_num_classes, dataset_fingerprints, register_datasets_for
from dsanet.engine import do_test, do_train, load_weights, make_checkpointer
from dsanet.errors import UserInputError, one_line
from dsanet.launch import launch
from dsanet_lab.provenance import record_invocation
from dsanet.schedule import EpochSchedule, resolve_epoch_schedule

logger = logging.getLogger("dsanet")


def setup(args):
    """Load and check the config, register its datasets; raises UserInputError on bad input."""
    cfg = load_config(args.config_file, args.opts)
    check_device(cfg)
    register_datasets_for(cfg, splits=("test",) if args.eval_only else ("train", "test"))
    if not args.eval_only:
        check_num_classes(cfg)
        schedule = resolve_epoch_schedule(cfg)  # train.epochs -> train.max_iter, warm-up, eval period
        if schedule is not None:
            cfg.train.epoch_schedule = schedule.as_dict()  # kept in the output folder's config.yaml
    return cfg


def main(args) -> None:
    cfg = setup(args)
    default_setup(cfg, args)
    # default_setup sets up detectron2's and fvcore's loggers; ours goes to the same console and log.txt.
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="dsanet", abbrev_name="dsanet")
    if comm.is_main_process():  # what the results of this output folder depend on (dsanet_lab.provenance)
        record_invocation(cfg.train.output_dir, world_size=comm.get_world_size(), eval_only=args.eval_only,
                          data=dataset_fingerprints(cfg, ("test",) if args.eval_only else ("train", "test")))
    if not args.eval_only and cfg.train.get("epoch_schedule"):
        logger.info(EpochSchedule(**cfg.train.epoch_schedule).describe())
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = compat.create_ddp_model(model)
        checkpointer = make_checkpointer(cfg, model)
        load_weights(checkpointer, cfg.train.init_checkpoint, resume=args.resume)
        do_test(cfg, model)
    else:
        do_train(cfg, resume=args.resume)


def main_or_exit(args) -> None:
    try:
        main(args)
    except UserInputError as e:
        if comm.is_main_process():
            print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
        sys.exit(2)


def parse_args(argv: Optional[List[str]] = None):
    """detectron2's arguments, where flags may also follow the first ``key=value`` override
    (argparse would pass them on as overrides), and ``dist_url`` is None unless given on one machine."""
    parser = default_argument_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if any(opt.startswith("-") for opt in args.opts):
        overrides = [opt for opt in args.opts if not opt.startswith("-") and ("=" in opt or opt.startswith("~"))]
        flags = [opt for opt in args.opts if opt not in overrides]
        args = parser.parse_args(argv[:len(argv) - len(args.opts)] + flags + overrides)
    if args.num_machines == 1 and args.dist_url == parser.get_default("dist_url"):
        args.dist_url = None  # detectron2's default is a fixed port, which anything else may hold
    return args


if __name__ == "__main__":
    args = parse_args()
    if args.num_gpus * args.num_machines > 1:
        setup_logger(name="dsanet", abbrev_name="dsanet")  # the launcher's own messages
        try:
            setup(args)  # fail fast, before processes are launched (one process checks in main)
        except UserInputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    launch(main_or_exit, args.num_gpus, num_machines=args.num_machines,
           machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
