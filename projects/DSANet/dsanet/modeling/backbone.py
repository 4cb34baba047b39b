"""Backbone pieces the configs need beyond detectron2's: a narrow ResNet for CPU training, and
FPN without its top-down path (the paper's "DSANet*", Table 5)."""
from typing import Dict, List, Sequence

import torch
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock, ResNet

__all__ = ["make_resnet_stages", "FPNWithoutTopDown"]


def make_resnet_stages(*, depth: int = 18, stem_width: int = 64, widths: Sequence[int] = (64, 128, 256, 512),
                       norm: str = "BN") -> List[list]:
    """ResNet stages of a standard depth at any width (``ResNet.make_default_stages`` fixes widths).

    Args:
        depth: 18 or 34 (basic blocks) or 50 / 101 (bottlenecks, widths are the stage outputs).
        stem_width: output channels of the stem (input of the first stage).
        widths: output channels of res2..res5.
    Returns:
        stages for :class:`ResNet`; stage strides 1, 2, 2, 2 after the stem's 4.
    """
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    in_widths = [stem_width] + list(widths[:-1])
    stages = []
    for num_blocks, stride, in_ch, out_ch in zip(blocks, [1, 2, 2, 2], in_widths, widths):
        extra = {"bottleneck_channels": out_ch // 4} if depth >= 50 else {}
        stages.append(ResNet.make_stage(
            block_class=BottleneckBlock if depth >= 50 else BasicBlock, num_blocks=num_blocks,
            stride_per_block=[stride] + [1] * (num_blocks - 1), in_channels=in_ch, out_channels=out_ch,
            norm=norm, **extra))
    return stages


class FPNWithoutTopDown(FPN):
    """FPN's lateral and output convs on each ResNet stage, without the top-down additions.

    Every level sees only its own stage (plus P6/P7 from the top block), as in the paper's
    DSANet* that puts DSA on ResNet features instead of FPN ones. Parameter names equal FPN's.
    """

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, 3, H, W) -> {"p3": (N, C, H/8, W/8), ...} as FPN.forward."""
        bottom_up_features = self.bottom_up(x)
        # lateral_convs / output_convs are stored from the coarsest level to the finest.
        results = [
            output_conv(lateral_conv(bottom_up_features[name]))
            for name, lateral_conv, output_conv in zip(
                reversed(self.in_features), self.lateral_convs, self.output_convs)
        ][::-1]
        names = list(self.output_shape())  # FPN's level names, finest first ("p3", ..., "p7")
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_input = bottom_up_features[self.top_block.in_feature]
            else:
                top_input = results[names.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_input))
        return dict(zip(names, results))
