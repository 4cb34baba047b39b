from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

# 1x = 90k iterations at batch 16 = 1.44M images ~ 12 COCO epochs (118k images); lr x0.1 at
# 60k and 80k, linear warmup over the first 1000 iterations. Milestones are relative to
# train.max_iter (the scheduler is scale-invariant), so 2x only doubles max_iter.
lr_multiplier_1x = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[60000, 80000, 90000]),
    warmup_length=1000 / 90000,
    warmup_method="linear",
    warmup_factor=0.001,
)
lr_multiplier_2x = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[120000, 160000, 180000]),
    warmup_length=1000 / 180000,
    warmup_method="linear",
    warmup_factor=0.001,
)
