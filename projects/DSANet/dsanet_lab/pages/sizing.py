"""Tables that sized the embedded benchmark: one model's bootstrap std of AP against the validation
size, and training size against the gap between training and validation AP."""
from typing import Any, Dict

from .format import table


def _ap_std(row: Dict[str, Any]) -> str:
    return f"{row['AP']['value']:.1f} ± {row['AP']['std']:.2f}"


def sizing_validation(small: Dict[str, Any], large: Dict[str, Any]) -> str:
    """Per validation size, the bootstrap AP of the model trained on the small and on the large split."""
    by_size = {row["num_images"]: row for row in large["rows"]}
    rows = [[row["num_images"], _ap_std(row), _ap_std(by_size[row["num_images"]]) if row["num_images"] in by_size else "—"]
            for row in small["rows"]]
    return table(["validation images (the first N)", "AP ± bootstrap std, model trained on 600 images",
                  "AP ± bootstrap std, model trained on 4000 images"], rows)


def sizing_training(sizing: Dict[str, Any]) -> str:
    """Per training size: AP on its own images, on the validation images, the gap, and the curve."""
    iterations = sorted(sizing["runs"][0]["val_4000_AP_at_iterations"], key=int)
    rows = []
    for run in sizing["runs"]:
        own, val = run["train_split"]["AP"], run["val_4000_images"]["AP"]
        at = ", ".join(f"{run['val_4000_AP_at_iterations'][k]:.1f}" for k in sorted(run["val_4000_AP_at_iterations"], key=int))
        rows.append([run["train_images"], f"{run['epochs']:.0f}", f"{own:.1f} ({run['train_images_evaluated']} images)",
                     f"{val:.1f}", f"{own - val:.1f}", at])
    return table(["training images", "epochs", "AP on its training images", "AP on 4000 validation images", "gap",
                  "validation AP at iterations " + ", ".join(iterations)], rows) + f"\n\nRecipe: {sizing['recipe']}."
