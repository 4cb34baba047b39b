# The paper's regime on a CPU: the study's DSANet-Conf (dsanet_conf_synthetic_study_cpu.py) fine-tuned
# from a backbone pretrained as a classifier, the way the COCO recipes start from ImageNet weights.
# The other variants: model.head.dsa_levels=[] and/or model.head.with_confidence=False. Two commands:
#     .venv/bin/python tools/pretrain_backbone.py        # writes output/pretrain_backbone/backbone.pth
#     .venv/bin/python train_net.py --config-file configs/Demo/dsanet_conf_synthetic_finetune_cpu.py
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from .dsanet_conf_synthetic_study_cpu import dataloader, model, optimizer, train

# Model: as detectron2's COCO recipes treat ImageNet weights: the backbone's BN becomes FrozenBN (the
# pretrained statistics and affine fixed, as batch-8 statistics would be noisy), stem and res2 frozen.
model.backbone.bottom_up.stem.norm = "FrozenBN"
model.backbone.bottom_up.stages.norm = "FrozenBN"
model.backbone.bottom_up.freeze_at = 2
train.init_checkpoint = "output/pretrain_backbone/backbone.pth"  # tools/pretrain_backbone.py's default output

# Schedule: the COCO 1x shape (lr x0.1 at 2/3 and 8/9 of the run, short warm-up; milestones are relative
# to train.max_iter) over the study's 3000 iterations x 8 images, so the two regimes get the same budget.
# lr 0.01, half the from-scratch recipe's 0.02: that lr was needed to move random BN'd weights; here it
# would wash out pretrained features whose FrozenBN no longer re-normalises what a large step does. It is
# RetinaNet's ImageNet fine-tuning lr (batch 16); not halved again for batch 8, as FPN and head start random.
optimizer.lr = 0.01
train.output_dir = "output/finetune"
