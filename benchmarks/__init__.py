"""Benchmarks of DSANet against RetinaNet: attention memory/time, parameters/FLOPs, step speed.

Each script runs as a module from the repository root (``python -m benchmarks.<name> --output DIR
[--quick]``); ``python -m benchmarks.run_all`` runs attention, model_cost and speed in order and
writes ``summary.json``. The shared pieces: :mod:`.models` (what is measured), :mod:`.timing`,
:mod:`.memory`, :mod:`.machine` (what it was measured on) and :mod:`.cli` (options and tables).
"""
import dsanet  # applies only the version shims the installed detectron2 needs

dsanet.silence_internal_warnings()  # a command prints no torch/fvcore/detectron2-internal warning
