"""The classification-pretrained backbone's held-out accuracy beside a majority guess."""
from typing import Any, Dict

from .format import percent, table


def pretrain_accuracy(accuracy: Dict[str, Any], args: Dict[str, Any]) -> str:
    """What the pretraining ran (its arguments file) and how often its labels are right."""
    per_class = ", ".join(f"{name} {percent(value)}" for name, value in accuracy["per_class"].items())
    return table(["measure", "value"], [
        ["iterations x batch, lr, seed", f"{accuracy['iterations']} x {args['batch_size']}, {args['lr']}, {args['seed']}"],
        ["held-out images", accuracy["num_images"]],
        ["all labels right", f"{percent(accuracy['exact_match'])} (majority guess {percent(accuracy['majority_exact_match'])})"],
        ["per label", f"{percent(accuracy['label_accuracy'])} (majority guess {percent(accuracy['majority_label_accuracy'])})"],
        ["per class", per_class],
    ])
