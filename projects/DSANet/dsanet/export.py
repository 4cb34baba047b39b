"""Export DSANet or DSA-FCOS (torch.export, TorchScript, ONNX by either exporter), and run the
exported graphs with the model's own post-processing.

What is inside the exported graph, for one image (3, H, W) of any size, float, in the model's
input format (BGR for the configs of this project):
    normalisation and padding (the model's ``preprocess_image``) -> backbone + FPN -> DSA -> head
    towers -> per level: classification logits (1, A*K, Hi, Wi), box deltas (1, A*4, Hi, Wi), then
    with object confidence, confidence logits (1, A, Hi, Wi), on FCOS (A = 1), centerness logits
    (1, 1, Hi, Wi): whatever the model's ``head_outputs`` name; then the score the detector
    ranks by as (1, Hi*Wi*A, K), from the model's own ``per_anchor_scores`` (the fused
    confidence score, FCOS's ``sqrt(cls * centerness)``, ...) on the outputs made anchor-major by
    ``transpose_dense_predictions``. Eager inference runs these same functions, each exportable.
What is post-processing, in Python, shared with eager PyTorch (:func:`postprocess` calls the
model's own ``inference_single_image``): anchors (FCOS's anchor points), score threshold, top-k, box decoding,
per-class NMS (detectron2's ``batched_nms``) and rescaling to the requested output size.
Keeping NMS out of the graph is what makes the exported model give the same detections as eager
(detectron2 issue 5431: RetinaNet exported with its own decoding gives wrong or no boxes).
Self-attention in every exported graph is one ``scaled_dot_product_attention`` op
(:data:`export_attention`, set on the model's attention modules while they are exported by
:func:`exportable_attention`), not the eager dense/blockwise paths.
"""
import contextlib
import functools
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances

from . import compat
from .errors import UserInputError
from .modeling.attention import AttentionFn, SelfAttention2d, SpatialAttention2d, sdpa_attention
from .modeling.dense_detector import transpose_dense_predictions

__all__ = [
    "export_attention",
    "exportable_attention",
    "output_names",
    "raw_head_outputs",
    "tracing_adapter",
    "export_torchscript",
    "export_program",
    "load_program",
    "program_limits",
    "export_onnx",
    "export_onnx_dynamo",
    "OnnxRunner",
    "unflatten",
    "postprocess",
]

# The attention inside exported graphs (torch.export, the ONNX exporters, TorchScript tracing):
# one ``scaled_dot_product_attention`` op, q and k zero-padded to v's width on CPU so that PyTorch's
# runtime takes its fused kernel (memory linear in L); onnxruntime computes it as
# MatMul-Softmax-MatMul. Why not the eager paths: blockwise attention is a Python loop whose block
# count depends on H * W (a graph would keep the count of the traced image), and the
# dense/blockwise choice is a branch on the shape.
# (q (N, L, D), k (N, L, D), v (N, L, C), scale) -> (N, L, C).
export_attention: AttentionFn = functools.partial(sdpa_attention, pad_qk_on_cpu=True)


@contextlib.contextmanager
def exportable_attention(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within it, every self-attention of ``model`` computes :data:`export_attention`.

    Attention fixed to the dense path (the ``self_dense`` kind) keeps it: two matmuls and a
    softmax are already a fixed graph. Each module gets its own implementation back on exit.
    """
    modules = [m for m in model.modules() if isinstance(m, SelfAttention2d) and m.impl != "dense"]
    previous = [m.impl for m in modules]
    try:
        for module in modules:
            module.impl = export_attention
        yield model
    finally:
        for module, impl in zip(modules, previous):
            module.impl = impl


def _output_kinds(model: torch.nn.Module) -> Tuple[str, ...]:
    """The graph's output kinds: the model's head outputs, then its per-anchor scores."""
    if not hasattr(model, "head_outputs") or not hasattr(model, "per_anchor_scores"):
        raise UserInputError(
            f"{type(model).__name__} does not say what its head returns (head_outputs) nor how those make "
            "scores (per_anchor_scores): export takes the project's detectors (dsanet.modeling's DSANet, DSAFCOS); "
            "for detectron2's RetinaNet network use configs/COCO-Detection/retinanet_R_50_FPN_1x.py (a DSANet on "
            "detectron2's RetinaNetHead), which loads the same weights")
    return (*(name for name, _ in model.head_outputs), "scores")


def raw_head_outputs(model: torch.nn.Module, image: torch.Tensor) -> Tuple[List[torch.Tensor], ...]:
    """The part of the detector's inference that is exported: image -> per-level head outputs and scores.

    Args:
        model: a detector with ``head_outputs`` and ``per_anchor_scores`` (DSANet, DSAFCOS), in eval mode.
        image: (3, H, W) float, in the model's input format, unnormalised (0-255).
    Returns:
        lists over levels, in :func:`output_names` order: per entry of ``model.head_outputs``
        the head's output as it is (cls logits (1, A*K, Hi, Wi), box deltas (1, A*4, Hi, Wi),
        [conf logits (1, A, Hi, Wi) | centerness logits (1, 1, Hi, Wi)]), then scores (1, Hi*Wi*A, K).
    """
    images = model.preprocess_image([{"image": image}])  # (1, 3, H', W') normalised and padded
    features = model.backbone(images.tensor)
    predictions = list(model.head([features[f] for f in model.head_in_features]))
    anchor_major = transpose_dense_predictions(predictions, [width for _, width in model.head_outputs])
    return (*predictions, model.per_anchor_scores(anchor_major))


def output_names(model: torch.nn.Module) -> List[str]:
    """Names of the flattened graph outputs, e.g. ``cls_logits_p3``, ..., ``scores_p7``."""
    return [f"{kind}_{level}" for kind in _output_kinds(model) for level in model.head_in_features]


def tracing_adapter(model: torch.nn.Module, image: torch.Tensor) -> torch.nn.Module:
    """detectron2's TracingAdapter around :func:`raw_head_outputs`: flat tensor inputs and outputs."""
    adapter = compat.tracing_adapter_class()(model, image, inference_func=raw_head_outputs)
    # A new module is in training mode; torch.onnx.export restores the mode it finds, recursively.
    return adapter.train(model.training)


def export_torchscript(model: torch.nn.Module, image: torch.Tensor, path: str) -> torch.jit.ScriptModule:
    """Trace :func:`raw_head_outputs` on ``image`` and save it; shapes stay dynamic (H, W)."""
    with torch.no_grad(), exportable_attention(model):
        traced = torch.jit.trace(tracing_adapter(model, image), (image,), check_trace=False)
    traced.save(path)
    return traced


# Image sizes an exported program accepts: any height and width in this range (pixels).
EXPORT_MIN_SIZE, EXPORT_MAX_SIZE = 2, 4096


def export_program(model: torch.nn.Module, image: torch.Tensor, path: str) -> "torch.export.ExportedProgram":
    """``torch.export`` of :func:`raw_head_outputs` with dynamic image height and width, saved as ``.pt2``.

    ``image`` (3, H, W) gives the channel count and dtype; the program takes any H, W in
    [EXPORT_MIN_SIZE, EXPORT_MAX_SIZE].

    Shape checks torch.export cannot prove for every size (the FPN's upsampled and lateral maps
    agreeing, for one) become assertions inside the program rather than a failed export
    (``prefer_deferred_runtime_asserts_over_guards``); they hold for any padded image.
    """
    # The example's size only seeds the symbolic shapes. One whose smallest level map is 1x1 (a
    # 128-pixel image at P7) would make export specialise on that, and equal sides would tie the
    # two dims together: so a blank example of an unequal size where every level has 2+ positions.
    image = image.new_zeros(image.shape[0], 320, 448)
    height = torch.export.Dim("height", min=EXPORT_MIN_SIZE, max=EXPORT_MAX_SIZE)
    width = torch.export.Dim("width", min=EXPORT_MIN_SIZE, max=EXPORT_MAX_SIZE)
    with torch.no_grad(), _sizes_may_be_one(), exportable_attention(model):
        program = torch.export.export(tracing_adapter(model, image), (image,),
                                      dynamic_shapes=(({1: height, 2: width},),),  # TracingAdapter takes *args
                                      strict=False, prefer_deferred_runtime_asserts_over_guards=True)
    torch.export.save(program, path)
    return program


def _sizes_may_be_one():
    """torch.export with size-oblivious shape reasoning: a dim is not assumed to be 1 or not 1.

    Reason: otherwise the program asserts that no level map is 1x1 (from the contiguity checks of
    views), and a 128-pixel image (1x1 at P7) fails; views mean the same at size 1 anyway.
    A no-op on a torch without the option.
    """
    import torch.fx.experimental._config as fx_config

    if not hasattr(fx_config, "backed_size_oblivious"):
        return contextlib.nullcontext()
    return fx_config.patch(backed_size_oblivious=True)


def load_program(path: str) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    """A saved ``.pt2`` as a callable with the traced model's signature: image -> flat outputs."""
    module = torch.export.load(path).module()

    def run(image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return tuple(module(image))
    return run


def program_limits(model: torch.nn.Module) -> List[str]:
    """Parts of ``model`` whose torch.export program cannot run on every image size, one line each.

    A convolution with one output channel (CBAM's 7x7 spatial attention; a head predictor of one
    channel, such as FCOS's centerness) has its output layout decided from the map's size, so the
    program asserts that each such map has more than one position (a 128-pixel image has a 1x1 P7)
    and stops on smaller maps. The ONNX formats and TorchScript take such maps.
    """
    limits = []
    levels = sorted({name.split(".")[-2] for name, m in model.named_modules() if isinstance(m, SpatialAttention2d)})
    if levels:
        stride = max(int(level[1:]) for level in levels)
        limits.append(f"CBAM attention on {', '.join(levels)} needs more than one position per map (an image over "
                      f"{2 ** stride} pixels on one side for {levels[-1]})")
    last = model.head_in_features[-1]
    stride = model.backbone.output_shape()[last].stride
    for name, module in model.head.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.out_channels == 1 and ".attention." not in f".{name}.":
            limits.append(f"head.{name} (a conv with one output channel) needs more than one position per map (an "
                          f"image over {stride} pixels on one side for {last})")
    return limits


def export_onnx_dynamo(program: "torch.export.ExportedProgram", model: torch.nn.Module, path: str) -> None:
    """ONNX from an exported program, by torch's dynamo-based exporter (needs ``onnxscript``).

    Height and width stay dynamic: they are symbolic in ``program`` (see :func:`export_program`).
    """
    onnx_program = torch.onnx.export(program, input_names=["image"], output_names=output_names(model),
                                     dynamo=True, verbose=False)
    onnx_program.save(path)


def export_onnx(model: torch.nn.Module, image: torch.Tensor, path: str, opset: int = 17) -> None:
    """Export :func:`raw_head_outputs` to ONNX with dynamic image height and width.

    Uses the TorchScript-based exporter (``dynamo=False``): it takes TracingAdapter's traced
    graph as it is and needs no onnxscript.
    """
    names = output_names(model)
    dynamic_axes = {"image": {1: "height", 2: "width"}}
    with torch.no_grad(), exportable_attention(model):
        torch.onnx.export(tracing_adapter(model, image), (image,), path, input_names=["image"],
                          output_names=names, dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)


class OnnxRunner:
    """An onnxruntime CPU session with the call signature of the traced model: image -> flat outputs."""

    def __init__(self, path: str, num_threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """image: (3, H, W) float -> tuple of output tensors, in :func:`output_names` order."""
        outputs = self.session.run(None, {"image": image.detach().cpu().numpy()})
        return tuple(torch.from_numpy(x) for x in outputs)


def unflatten(model: torch.nn.Module, flat: Sequence[torch.Tensor]) -> Dict[str, List[torch.Tensor]]:
    """Flat graph outputs -> {kind: per-level list}, e.g. ``out["scores"][0]`` for P3."""
    kinds, num_levels = _output_kinds(model), len(model.head_in_features)
    assert len(flat) == len(kinds) * num_levels, f"expected {len(kinds) * num_levels} outputs, got {len(flat)}"
    return {kind: list(flat[i * num_levels:(i + 1) * num_levels]) for i, kind in enumerate(kinds)}


@torch.no_grad()
def postprocess(model: torch.nn.Module, flat: Sequence[torch.Tensor], image_size: Tuple[int, int],
                output_size: Tuple[int, int]) -> Instances:
    """Detections from the graph's outputs, with the eager model's own post-processing.

    Args:
        flat: the graph's outputs for one image, in :func:`output_names` order.
        image_size: (H, W) of the image given to the graph.
        output_size: (height, width) to rescale boxes to (the original image's size).
    Returns:
        Instances with pred_boxes, scores, pred_classes, as ``model([...])[0]["instances"]``.
    """
    out = unflatten(model, flat)
    anchors = model.anchor_generator(out["cls_logits"])  # uses only the level shapes
    deltas = transpose_dense_predictions([out["box_deltas"]], [4])[0]  # per level (1, Hi*Wi*A, 4)
    result = model.inference_single_image(anchors, [s[0] for s in out["scores"]], [d[0] for d in deltas],
                                          tuple(image_size))
    return detector_postprocess(result, *output_size)

