"""Tables of the per-GPU memory estimates (``benchmarks/gpu_memory.py``): every measured step, and per
recipe the card sizes on which 2 images per GPU fit. Each shows the file's numbers and the file's own
verdicts (its criterion: estimate plus its CUDA overhead under its usable fraction of the card)."""
from typing import Any, Dict, List

from .format import num, table

PRECISION_NAMES = {"fp32": "fp32", "amp": "fp16 AMP"}


def _gib(mib: float) -> str:
    return num(mib / 1024, 1)


def _cards(fits: Dict[str, bool]) -> str:
    """The card sizes (GiB) a verdict dict says fit, or "none"."""
    sizes = [size for size, ok in fits.items() if ok]
    return ", ".join(sizes) if sizes else "none"


def _fits_criterion(data: Dict[str, Any]) -> str:
    return (f"fits: the estimate plus {data['cuda_overhead_gib']:g} GiB (CUDA context, cuDNN workspaces) within "
            f"{data['usable_fraction']:.0%} of the card")


def memory_per_step(data: Dict[str, Any]) -> str:
    """Per recipe and backbone, in fp32 and fp16 AMP: the step's rise + the state held between steps =
    the estimate (GiB), and the cards it fits at 2 images per GPU (and, estimated, at 1)."""
    cells: Dict[tuple, Dict[str, str]] = {}
    for r in data["rows"]:
        estimate = f"{_gib(r['step_rise_mib'])} + {_gib(r['state_mib'])} = **{_gib(r['estimate_mib'])}**"
        fits = f"{_cards(r['fits'])} ({_cards(r['fits_with_1_image'])})"
        cells.setdefault((r["model"], r["depth"]), {})[r["precision"]] = f"{estimate}; {fits}"
    rows = [[model, f"R{depth}", by.get("fp32", "—"), by.get("amp", "—")] for (model, depth), by in cells.items()]
    height, width = data["image_size"]
    return (table(["model", "backbone", "fp32: GiB; fits on", "fp16 AMP: GiB; fits on"], rows)
            + f"\n\nGiB: one training step's rise + weights and momentum = the estimate, at 2 images of {height}x{width} "
              f"per GPU; fits on: the card sizes (of {', '.join(str(c) for c in data['cards_gib'])} GiB) at 2 images "
              f"per GPU (at 1, estimated as half the step's rise); {_fits_criterion(data)}." + _proxy_text(data))


def _proxy_text(data: Dict[str, Any]) -> str:
    """What the fp16 rows ran under, and the file's comparison of the two 2-byte types where both ran."""
    under = {r.get("measured_under") for r in data["rows"] if r["precision"] == "amp"} - {None, "amp"}
    if not under:
        return ""
    checks = data.get("fp16_proxy_check") or []
    compared = "; ".join(f"`{c['config']}` {c['fp16_rise_mib']:.0f} MiB in fp16, {c['bf16_rise_mib']:.0f} MiB in bf16"
                         for c in checks)
    size = f" at {checks[0]['image_size'][0]}x{checks[0]['image_size'][1]}" if checks else ""
    return (f" The fp16 AMP rows ran under CPU {'/'.join(sorted(under))} autocast, which casts the same ops to the same "
            f"2-byte size" + (f"; one step's rise{size}: {compared}." if checks else "."))


def cards_per_recipe(data: Dict[str, Any]) -> str:
    """Per recipe, the smallest card (GiB) that fits 2 images per GPU, for R50 and R101, fp32 and fp16 AMP."""
    columns = [(50, "fp32"), (50, "amp"), (101, "fp32"), (101, "amp")]
    smallest: Dict[str, Dict[tuple, str]] = {}
    for r in data["rows"]:
        sizes = [int(size) for size, ok in r["fits"].items() if ok]
        cell = f"{min(sizes)} GiB" if sizes else f"over {max(data['cards_gib'])} GiB"
        smallest.setdefault(f"`{r['config']}`", {})[(r["depth"], r["precision"])] = cell
    rows = [[config, *(by.get(column, "—") for column in columns)] for config, by in smallest.items()]
    header = ["config (R101: `model.backbone.bottom_up.stages.depth=101`)", "R50 fp32", "R50 fp16 AMP", "R101 fp32",
              "R101 fp16 AMP"]
    return table(header, rows) + f"\n\nThe smallest card that fits 2 images per GPU; {_fits_criterion(data)}."
