"""What DSA attends to: the attention weights of each DSA branch for chosen query positions.

For a self-attention block the map of a query is the block's own softmax row,
``softmax(q_i . K^T / sqrt(D))`` over all key positions of its level (half-resolution ones for
``self_half_*``), computed from the block's query/key convolutions for the query rows only
(never the L x L matrix). For a CBAM block the map is its sigmoid spatial mask, the same for
every query. The inputs of the blocks are captured with forward pre-hooks during one ordinary
forward pass, so DSA before or after the towers, decoupled or shared, is read as it runs.

Naming: Q queries, C channels, H x W the level's grid, h x w the attention's key grid
(H / stride of the attention), D query/key channels.
"""
import io
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch import nn

from .errors import UserInputError
from .modeling.attention import SelfAttention2d, SpatialAttention2d

__all__ = ["LevelMap", "dsa_blocks", "capture_block_inputs", "query_cells", "self_attention_rows",
           "spatial_mask", "attention_maps"]


@dataclass
class LevelMap:
    """The attention of one DSA branch at one level.

    Attributes:
        level, branch: e.g. "p4", "cls" ("reg", or "shared" for one branch feeding both tasks).
        kind: "self" (maps are softmax rows: each sums to 1) or "cbam" (the sigmoid mask).
        cell: pixels of the network input covered by one map cell along each axis (the level's
            stride, times 2 at half resolution).
        maps: (Q, h, w) for "self", one row per query; (1, H, W) for "cbam".
    """

    level: str
    branch: str
    kind: str
    cell: float
    maps: torch.Tensor


def dsa_blocks(model: nn.Module) -> Dict[Tuple[str, str], nn.Module]:
    """{(branch, level): DSABlock} of a DSANet, in level order; UserInputError when it has no DSA."""
    dsa = getattr(model.head, "dsa", None)
    if dsa is None:
        raise UserInputError("the model has no DSA (model.head.dsa_levels is empty): there is no attention to draw")
    branches = {"shared": dsa.shared_branch} if dsa.shared else {"cls": dsa.cls_branch, "reg": dsa.reg_branch}
    return {(branch, level): blocks[level] for level in dsa.in_features
            for branch, blocks in branches.items() if level in blocks}


def capture_block_inputs(model: nn.Module, inputs: List[dict]) -> Tuple[list, Dict[Tuple[str, str], torch.Tensor]]:
    """Run ``model(inputs)`` (eval, no grad) and record each DSA block's input (N, C, H, W).

    A shared branch placed after the towers runs twice (classification, then box tower): it is
    recorded as ("cls", level) and ("reg", level).
    """
    blocks = dsa_blocks(model)
    captured: Dict[Tuple[str, str], torch.Tensor] = {}
    handles = []
    for (branch, level), block in blocks.items():
        def hook(module, args, branch=branch, level=level):
            if branch == "shared" and model.head.dsa_location == "after":
                branch = "reg" if ("cls", level) in captured else "cls"
            captured[(branch, level)] = args[0].detach()
        handles.append(block.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            outputs = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs, captured


def query_cells(points: torch.Tensor, stride: float, grid: Tuple[int, int]) -> torch.Tensor:
    """Pixel points (Q, 2) as (x, y) in the network input -> (Q, 2) (row, col) cells of a level grid."""
    rows = (points[:, 1] / stride).floor().long().clamp(0, grid[0] - 1)
    cols = (points[:, 0] / stride).floor().long().clamp(0, grid[1] - 1)
    return torch.stack([rows, cols], dim=1)


def self_attention_rows(attention: SelfAttention2d, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """The softmax rows that produce the block's output at the given cells.

    Args:
        attention: the block's SelfAttention2d.
        x: (1, C, H, W) the block's input.
        cells: (Q, 2) (row, col) on the H x W grid. At half resolution the output at a cell is
            the nearest-upsampled one of key-grid cell (floor(row * h / H), floor(col * w / W)),
            as ``F.interpolate(mode="nearest")`` picks it.
    Returns:
        (Q, h, w) attention weights, each map summing to 1.
    """
    with torch.no_grad():
        q, k = attention.query(x)[0], attention.key(x)[0]  # (D, h, w)
    h, w = k.shape[-2:]
    H, W = x.shape[-2:]
    rows = (cells[:, 0] * (h / H)).floor().long().clamp(max=h - 1)
    cols = (cells[:, 1] * (w / W)).floor().long().clamp(max=w - 1)
    q_rows = q[:, rows, cols].t()  # (Q, D)
    logits = q_rows @ k.flatten(1) * attention.scale  # (Q, h*w), paper eq. 5 (or the qk_scale chosen)
    return torch.softmax(logits, dim=-1).reshape(-1, h, w)


def spatial_mask(attention: SpatialAttention2d, x: torch.Tensor) -> torch.Tensor:
    """CBAM's sigmoid spatial mask (paper eq. 4) for x (1, C, H, W) -> (1, H, W)."""
    with torch.no_grad():
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(attention.conv(pooled))[0]


def attention_maps(model: nn.Module, inputs: dict, points: Optional[torch.Tensor] = None,
                   num_queries: int = 3) -> Tuple[object, torch.Tensor, List[LevelMap]]:
    """Detections and every DSA map for query points on one image.

    Args:
        model: a DSANet with DSA, in eval mode.
        inputs: one image in the model's input format (``{"image": (3, H, W), "height", "width"}``).
        points: (Q, 2) (x, y) query points in network-input pixels; by default the box centres of
            the ``num_queries`` top-scoring detections (mapped from output to input coordinates).
    Returns:
        (instances, points (Q, 2), [LevelMap per (level, branch)]).
    """
    outputs, captured = capture_block_inputs(model, [inputs])
    instances = outputs[0]["instances"].to("cpu")
    if points is None:
        centres = instances.pred_boxes.get_centers()[:num_queries]  # sorted by score
        in_h, in_w = inputs["image"].shape[-2:]
        scale = torch.tensor([in_w / inputs.get("width", in_w), in_h / inputs.get("height", in_h)])
        points = centres * scale
    if len(points) == 0:
        raise UserInputError("no query points: the model detected nothing on this image; give --points x,y")
    strides = {name: spec.stride for name, spec in model.backbone.output_shape().items()}
    blocks = dsa_blocks(model)
    maps = []
    for (branch, level), x in captured.items():
        attention = blocks[("shared" if ("shared", level) in blocks else branch, level)].attention
        x = x[:1].float()
        if isinstance(attention, SelfAttention2d):
            rows = self_attention_rows(attention, x, query_cells(points, strides[level], x.shape[-2:]))
            maps.append(LevelMap(level, branch, "self", strides[level] * attention.stride, rows))
        elif isinstance(attention, SpatialAttention2d):
            maps.append(LevelMap(level, branch, "cbam", float(strides[level]), spatial_mask(attention, x)))
        else:
            raise UserInputError(f"DSA level {level} uses {type(attention).__name__}, which has no attention map to draw")
    return instances, points, maps


def draw_attention(image: "numpy.ndarray", point: Sequence[float], maps: List[LevelMap], query: int, path: str,
                   title: str = "", box: Optional[Sequence[float]] = None) -> None:
    """Save one PNG for one query: a row per DSA level, the branches side by side, heat maps over the image.

    Args:
        image: (H, W, 3) uint8 RGB network input.
        point: (x, y) of the query, in its pixels; drawn as a star (and ``box``, when given).
        maps: from :func:`attention_maps`; ``query`` indexes their rows.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    levels = sorted({m.level for m in maps}, key=lambda name: int(name.lstrip("p")) if name.lstrip("p").isdigit() else name)
    branches = [b for b in ("cls", "reg", "shared") if any(m.branch == b for m in maps)]
    by_key = {(m.level, m.branch): m for m in maps}
    height, width = image.shape[:2]
    fig, axes = plt.subplots(len(levels), len(branches), squeeze=False,
                             figsize=(2.6 * len(branches), 2.6 * len(levels) * height / width + 0.4))
    for row, level in enumerate(levels):
        for col, branch in enumerate(branches):
            ax = axes[row][col]
            ax.imshow(image)
            m = by_key.get((level, branch))
            if m is not None:
                heat = m.maps[0 if m.kind == "cbam" else query].numpy()  # (h, w)
                extent = (0, heat.shape[1] * m.cell, heat.shape[0] * m.cell, 0)  # cells over the padded input
                ax.imshow(heat, cmap="jet", alpha=0.55, extent=extent, interpolation="nearest",
                          vmin=0, vmax=max(float(heat.max()), 1e-12))
                what = "CBAM sigmoid mask" if m.kind == "cbam" else f"{heat.shape[0]}x{heat.shape[1]} keys, max {heat.max():.2f}"
                ax.set_title(f"{level} {branch}: {what}", fontsize=7)
            ax.plot([point[0]], [point[1]], marker="*", color="white", markeredgecolor="black", markersize=11)
            if box is not None:
                ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False,
                                       edgecolor="white", linewidth=1))
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100)
    plt.close(fig)
    # A 256-colour palette keeps the PNG small (about a third) with no visible change to the maps.
    with Image.open(buffer) as drawn:
        drawn.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
