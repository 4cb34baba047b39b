"""Parameters and FLOPs (fvcore) of RetinaNet and the DSANet variants at R50, for one image,
with each model's ratios against its baseline (benchmarks.models.MODELS).

fvcore counts one multiply-add as one flop. PyTorch's fused attention op
(``aten::scaled_dot_product_attention``) and the blockwise attention Function are unknown to
fvcore, which would count them as zero; they are counted here (:func:`sdpa_flop_jit`,
:func:`blockwise_flop_jit`) as the matrix products of softmax(Q K^T) V at the true query width,
the same as fvcore counts the two ``bmm`` of the dense path, so every path gets the same count.

    python -m benchmarks.model_cost --output output/bench [--quick]
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from benchmarks import cli, machine
from benchmarks.models import FULL_IMAGE_SIZE, QUICK_IMAGE_SIZE, ModelSpec, build_model, check_models, synthetic_image
from dsanet.compat import tracing_adapter_class
from dsanet.fileio import write_json

SDPA_OP = "aten::scaled_dot_product_attention"
# dsanet.modeling.blockwise's autograd Function, which the tracer records as one Python op.
BLOCKWISE_OP = "prim::PythonOp._BlockwiseAttention"
# Keys of flops_by_operator under which the attention's matrix products are counted, per path.
ATTENTION_OPERATORS = ("scaled_dot_product_attention", "bmm", "PythonOp._BlockwiseAttention")
# Ops between a zero-padding and the attention call that keep the last dimension as it is.
_LAST_DIM_KEEPING_OPS = {"aten::contiguous", "aten::unsqueeze", "aten::clone", "aten::to", "aten::squeeze"}
_PAD_OPS = {"aten::pad", "aten::constant_pad_nd"}


def _constant(value: torch._C.Value) -> Any:
    """The constant a traced value holds (lists of constants too), or raise ValueError."""
    node = value.node()
    if node.kind() == "prim::Constant":
        return value.toIValue()
    if node.kind() == "prim::ListConstruct":
        return [_constant(item) if item.node().kind() == "prim::Constant" else None for item in node.inputs()]
    raise ValueError(f"not a constant: {node.kind()}")


def _is_zero_padding_of_last_dim(node: torch._C.Node) -> bool:
    """True for ``F.pad(x, (left, right))`` with zeros: padding only the last dim, with value 0."""
    inputs = list(node.inputs())
    try:
        pad = _constant(inputs[1])
        if node.kind() == "aten::pad":
            mode, value = _constant(inputs[2]), _constant(inputs[3])
            if mode != "constant":
                return False
        else:  # aten::constant_pad_nd(self, pad, value)
            value = _constant(inputs[2])
    except (ValueError, IndexError, RuntimeError):
        return False
    return len(pad) == 2 and (value is None or value == 0)


def true_last_dim(value: torch._C.Value) -> int:
    """Last dim of a traced tensor as the math sees it: when it was zero-padded on its last dim
    (as :func:`benchmarks.attention_reference.sdpa_padded` pads q and k from D to C), the dim before
    the padding. Zero columns add nothing to Q K^T, so they are no work of the model's."""
    dim = get_shape(value)[-1]
    node = value.node()
    while node.kind() in _LAST_DIM_KEEPING_OPS:
        source = next(node.inputs())
        shape = get_shape(source)
        if not shape or shape[-1] != dim:
            return dim
        node = source.node()
    if node.kind() in _PAD_OPS and _is_zero_padding_of_last_dim(node):
        shape = get_shape(next(node.inputs()))
        if shape:
            return shape[-1]
    return dim


def sdpa_flop_jit(inputs: List[torch._C.Value], outputs: List[torch._C.Value]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: the multiply-adds of
    softmax(Q K^T) V, i.e. B * Lq * Lk * (Dq + Dv) for q (..., Lq, Dq), k (..., Lk, Dq) and
    v (..., Lk, Dv), B the product of the leading dims (batch, heads).

    Dq is the true query dim (zero-padding undone, see :func:`true_last_dim`). Softmax, scaling
    and masks are not counted, as fvcore/detectron2 count no softmax either; a causal mask is
    not halved (DSANet uses none).
    """
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    batch = math.prod(q_shape[:-2])
    return batch * q_shape[-2] * k_shape[-2] * (true_last_dim(inputs[0]) + v_shape[-1])


def blockwise_flop_jit(inputs: List[torch._C.Value], outputs: List[torch._C.Value]) -> int:
    """fvcore handle for the blockwise attention Function (inputs q, k, v): the same count as
    :func:`sdpa_flop_jit`, B * L * L * (D + C); q and k are never padded on this path."""
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    return math.prod(q_shape[:-2]) * q_shape[-2] * k_shape[-2] * (q_shape[-1] + v_shape[-1])


def configure(analysis: FlopCountAnalysis) -> FlopCountAnalysis:
    """Count the attention ops and mute fvcore's warnings about ops it skips."""
    analysis.set_op_handle(SDPA_OP, sdpa_flop_jit)
    analysis.set_op_handle(BLOCKWISE_OP, blockwise_flop_jit)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the tracer's warnings about Python control flow (the traced path is the one we want)."""
    fvcore_logger = logging.getLogger("fvcore")
    previous_level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        fvcore_logger.setLevel(previous_level)  # leave the caller's logging as it was


def module_flops(module: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> Counter:
    """fvcore flops per operator of a plain module called as ``module(*inputs)`` (eval mode)."""
    was_training = module.training
    module.eval()
    try:
        with _quiet_tracing(), torch.no_grad():
            return Counter(configure(FlopCountAnalysis(module, inputs)).by_operator())
    finally:
        module.train(was_training)


def detector_flops(model: nn.Module, image: torch.Tensor) -> Counter:
    """fvcore flops per operator of a detectron2 detector on one image (3, H, W), eval mode,
    including pre- and post-processing.

    The detector is traced through detectron2's ``TracingAdapter`` (tensors in and out), as
    ``detectron2.utils.analysis.FlopCountAnalysis`` does; that class itself needs
    ``detectron2.export``, which v0.6 cannot import (see ``dsanet.compat.tracing_adapter_class``).
    Its ignore list changes nothing fvcore counts (a None handle does not replace fvcore's
    batch_norm handle).
    """
    adapter = tracing_adapter_class()(model, [{"image": image}], allow_non_tensor=True)
    was_training = model.training
    try:
        return module_flops(adapter, adapter.flattened_inputs)
    finally:
        model.train(was_training)


def parameter_count(model: nn.Module) -> int:
    """All parameters, frozen ones (FrozenBN has none; frozen stem/res2 convs do) included."""
    return sum(p.numel() for p in model.parameters())


def model_cost_of(model: nn.Module, image_size: Tuple[int, int] = FULL_IMAGE_SIZE) -> Dict[str, Any]:
    """Parameters and flops of an instantiated detector on one synthetic image of ``image_size``."""
    by_operator = detector_flops(model, synthetic_image(image_size).to(next(model.parameters()).device))
    return {"params": parameter_count(model), "flops": int(sum(by_operator.values())),
            "flops_by_operator": dict(by_operator), "image_size": list(image_size)}


def model_cost(config_path: str, image_size: Tuple[int, int] = FULL_IMAGE_SIZE) -> Dict[str, Any]:
    """Parameters and flops (fvcore: one multiply-add = one flop) of a config's model on one image.

    Args:
        config_path: a config, relative to configs/ (``dsanet.model_zoo``).
        image_size: (H, W) of the image.
    Returns:
        dict with ``params``, ``flops``, ``flops_by_operator`` and ``image_size``.
    """
    return model_cost_of(build_model(config_path, "cpu"), image_size)


def run(output: Path, quick: bool = False, device: str = "cpu") -> Dict[str, Any]:
    """Count all compared models, print the table, write model_cost.json.

    Counting always runs on CPU: the count does not depend on the device.
    """
    started = time.perf_counter()
    image_size = QUICK_IMAGE_SIZE if quick else FULL_IMAGE_SIZE
    print(f"\n== Parameters and FLOPs, R50, one {image_size[0]}x{image_size[1]} image "
          f"(fvcore: 1 multiply-add = 1 flop; attention counted as softmax(QK^T)V matmuls) ==", flush=True)
    models = check_models()
    costs: Dict[str, Dict[str, Any]] = {}
    for name, spec in models.items():
        costs[name] = model_cost(spec.config, image_size)
        costs[name]["config"] = spec.config
    add_cost_ratios(costs, models)
    print_table(costs)
    result = {"image_size": list(image_size), "quick": quick, "flop_unit": "multiply-add (fvcore)",
              "models": costs, "provenance": machine.record("cpu"), "elapsed_s": time.perf_counter() - started}
    write_json(output / "model_cost.json", result)
    print(f"wrote {output / 'model_cost.json'} ({result['elapsed_s']:.0f} s)", flush=True)
    return result


def add_cost_ratios(costs: Dict[str, Dict[str, Any]],
                    models: Optional[Mapping[str, ModelSpec]] = None) -> None:
    """Add each model's ``baseline`` name, ``flop_ratio`` and ``param_ratio`` (against that
    baseline's flops and params, see :class:`ModelSpec`) to its ``costs`` entry, in place."""
    models = check_models(models)
    for name, cost in costs.items():
        base = costs[models[name].baseline]
        cost["baseline"] = models[name].baseline
        cost["flop_ratio"] = cost["flops"] / base["flops"]
        cost["param_ratio"] = cost["params"] / base["params"]


def print_table(costs: Dict[str, Dict[str, Any]]) -> None:
    """One row per model: params, GFLOPs, ratios, and the attention's share (and each model's
    baseline when not all share one)."""
    several = len({cost["baseline"] for cost in costs.values()}) > 1
    rows = []
    for name, cost in costs.items():
        ops = cost["flops_by_operator"]
        attention = sum(ops.get(op, 0) for op in ATTENTION_OPERATORS)  # whichever path ran
        rows.append([name] + ([cost["baseline"]] if several else []) +
                    [cli.fmt(cost["params"] / 1e6, 2), cli.fmt(cost["param_ratio"], 3),
                     cli.fmt(cost["flops"] / 1e9, 1), cli.fmt(cost["flop_ratio"], 3),
                     cli.fmt(attention / 1e9, 1)])
    print(cli.format_table(["model"] + (["baseline"] if several else []) +
                              ["params (M)", "param ratio", "GFLOPs", "FLOP ratio", "attention GFLOPs"], rows))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: count and print."""
    cli.main_from_command_line(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
