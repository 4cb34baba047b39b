"""Anchor sizes as one number: the smallest anchor, doubled per FPN level, three scales per octave."""
from typing import List

__all__ = ["octave_anchor_sizes"]


def octave_anchor_sizes(smallest: float, num_levels: int = 5, scales_per_octave: int = 3) -> List[List[float]]:
    """RetinaNet's anchor sizes, ``[[s, s*2^(1/3), s*2^(2/3)], [2s, ...], ...]``, one list per level.

    detectron2's RetinaNet uses ``smallest=32`` on P3-P7; smaller objects want a smaller one. Lets a
    config expose a single override (``model.anchor_generator.sizes.smallest=16``).

    Returns:
        ``num_levels`` lists of ``scales_per_octave`` sizes in pixels.
    """
    if smallest <= 0:
        raise ValueError(f"smallest anchor size must be positive, got {smallest}")
    return [[smallest * 2 ** level * 2 ** (scale / scales_per_octave) for scale in range(scales_per_octave)]
            for level in range(num_levels)]
