"""Tables of the per-GPU memory estimates (``benchmarks/gpu_memory.py``): every measured step, and per
recipe the card sizes on which 2 images per GPU fit. Each shows the file's numbers and the file's own
verdicts (its rule: estimate plus its CUDA overhead under its usable fraction of the card)."""
from typing import Any, Dict, List

from .format import num, table

PRECISION_NAMES = {"fp32": "fp32", "amp": "fp16 AMP"}


def _gib(mib: float) -> str:
    return num(mib / 1024, 1)


def _cards(fits: Dict[str, bool]) -> str:
    """The card sizes (GiB) a verdict dict says fit, or "none"."""
    sizes = [size for size, ok in fits.items() if ok]
    return ", ".join(sizes) if sizes else "none"


def _rule(data: Dict[str, Any]) -> str:
    return (f"fits: the estimate plus {data['cuda_overhead_gib']:g} GiB (CUDA context, cuDNN workspaces) within "
            f"{data['usable_fraction']:.0%} of the card")


def memory_per_step(data: Dict[str, Any]) -> str:
    """Every measured step: its rise, the state held between steps, their sum, and the cards it fits."""
    rows: List[List[Any]] = []
    for r in data["rows"]:
        rows.append([r["model"], f"R{r['depth']}", PRECISION_NAMES.get(r["precision"], r["precision"]),
                     _gib(r["step_rise_mib"]), _gib(r["state_mib"]), f"**{_gib(r['estimate_mib'])}**",
                     _cards(r["fits"]), _cards(r["fits_with_1_image"])])
    height, width = data["image_size"]
    header = ["model", "backbone", "precision", "step GiB", "weights + momentum GiB", "estimate GiB",
              "fits 2 images/GPU on (GiB)", "fits 1 image/GPU on (GiB, estimated)"]
    return (table(header, rows) + f"\n\nOne training step at 2 images of {height}x{width} per GPU; {_rule(data)}; "
            f"cards: {', '.join(str(c) for c in data['cards_gib'])} GiB.")


def cards_per_recipe(data: Dict[str, Any]) -> str:
    """Per recipe and backbone, the smallest card (GiB) that fits 2 images per GPU, in fp32 and in fp16 AMP."""
    smallest: Dict[tuple, Dict[str, str]] = {}
    for r in data["rows"]:
        sizes = [int(size) for size, ok in r["fits"].items() if ok]
        cell = f"{min(sizes)} GiB" if sizes else f"none of {max(data['cards_gib'])} GiB or less"
        smallest.setdefault((r["config"], r["depth"], r["model"]), {})[r["precision"]] = cell
    rows = [[f"`{config}`" + ("" if depth == 50 else " (R101)"), model, cells.get("fp32", "—"), cells.get("amp", "—")]
            for (config, depth, model), cells in smallest.items()]
    return table(["config", "model", "smallest card, fp32", "smallest card, fp16 AMP"], rows) + f"\n\n{_rule(data)}."
