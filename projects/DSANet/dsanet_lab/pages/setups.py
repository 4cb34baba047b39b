"""How far a setup (processor, thread count) moves a study's results: the runs replicated on other
setups, each result's setup part, and what a rerun elsewhere should expect."""
from typing import Any, Dict, List

from ..study.report import setup_label
from .format import bracket, num, signed, table


def _replicated_runs(study: Dict[str, Any]) -> List[List[Any]]:
    """Every run that has replicates on other setups, then each replicate, with its setup and AP."""
    rows = []
    for run in study["runs"]:
        replicas = [r for r in study.get("setup_replicates", [])
                    if r["variant"] == run["variant"] and r["seed"] == run["seed"]]
        if not replicas:
            continue
        rows.append([run["variant"], run["seed"], f"kept study: {setup_label(run.get('setup'))}", num(run["metrics"]["AP"])])
        rows += [[run["variant"], run["seed"], f"{r['setup_name']}: {setup_label(r.get('setup'))}",
                  num(r["metrics"]["AP"])] for r in replicas]
    return rows


def _setup_parts(study: Dict[str, Any]) -> List[List[Any]]:
    """Each model's and each difference's spread between setups."""
    rows = [[f"{name} AP", len(s["setups"]), num(s["max_shift"]), f"±{num(s['half'])}"]
            for name, s in study["setup_spread"].items() if s]
    rows += [[f"{d['variant']} - {d['against']} ΔAP", len(d["setup"]["setups"]), num(d["setup"]["max_shift"]),
              f"±{num(d['setup']['half'])}"] for d in study["differences"] if d.get("setup")]
    return rows


def _interval_parts(study: Dict[str, Any]) -> List[List[Any]]:
    """Each decomposed difference's seeds, validation and setup parts and its total interval."""
    rows = []
    for d in study["differences"]:
        dec = d.get("decomposition")
        if dec:
            rows.append([f"{d['variant']} - {d['against']}", d["AP"]["n"], signed(d["AP"]["mean"]),
                         f"±{num(dec['training_half'])}", f"±{num(dec['validation_half'])}",
                         f"±{num(dec['setup_half'])}", bracket(dec["total_low"], dec["total_high"])])
    return rows


def study_setup(study: Dict[str, Any]) -> str:
    """Seed 0 of each model on every setup, each result's spread between setups, and the headline
    difference's interval with its setup part."""
    return "\n\n".join([
        table(["variant", "seed", "setup", "AP"], _replicated_runs(study)),
        table(["result", "setups", "largest shift", "setup part (95%)"], _setup_parts(study)),
        table(["difference", "seeds", "ΔAP", "seeds part", "validation part", "setup part", "total [95%]"],
              _interval_parts(study)),
    ])


def reproduction(study: Dict[str, Any]) -> str:
    """What a user should expect before rerunning: how close their numbers should land."""
    model = max((s for s in study["setup_spread"].values() if s), key=lambda s: s["half"])
    [difference] = [d for d in study["differences"] if d.get("setup")]
    dec, setup = difference["decomposition"], difference["setup"]
    return (f"Rerunning a study gives the same digits on the same processor model with the same thread count "
            f"(fp32; the bf16 study's fp32 control retrained a kept run to the same digits). On another processor or "
            f"thread count, expect one model's AP within ±{num(model['half'], 1)} AP of the kept one and the "
            f"{difference['variant']} - {difference['against']} difference within ±{num(setup['half'], 1)} "
            f"AP (95%, measured from {len(setup['setups'])} setups of seed 0: the largest shifts were "
            f"{num(model['max_shift'], 2)} and {num(setup['max_shift'], 2)} AP). With that setup part, the "
            f"headline difference is {signed(difference['AP']['mean'])} AP, 95% interval "
            f"{bracket(dec['total_low'], dec['total_high'])}.")
