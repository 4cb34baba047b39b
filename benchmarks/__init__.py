"""Benchmarks of DSANet against RetinaNet: attention memory/time, parameters/FLOPs, step speed.

Each module is runnable alone (``python benchmarks/<name>.py --output DIR [--quick]``);
``benchmarks/run_all.py`` runs them in order and writes ``summary.json``.
"""
