"""The measuring lab beside the model: multi-seed studies (:mod:`.study`), what a kept result depends on
(:mod:`.provenance`) and the pages rendered from kept results (:mod:`.pages`).

It imports :mod:`dsanet` and measures it; :mod:`dsanet` never imports it (``tests/test_layout.py``).
Nothing here decides what the model or a config does.
"""
