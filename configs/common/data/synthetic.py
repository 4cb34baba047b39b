# The embedded synthetic-shapes dataset (dsanet.data.synthetic): 128x128 images, 3 classes,
# generated on first use into ~/.cache/dsanet (or $DSANET_CACHE). CPU-sized loaders.
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.data import get_detection_dataset_dicts

from dsanet.data.mapper import RobustDatasetMapper  # DatasetMapper that skips unreadable images
from dsanet.evaluation import COCOEvaluatorWithRecall

dataloader = OmegaConf.create()

# The generator's parameters (dsanet.data.synthetic.ensure_synthetic_dataset): each size is cached in a
# folder of its own. The demo's split; configs/Demo/dsanet_conf_synthetic_study_cpu.py sizes the study's.
dataloader.synthetic = dict(num_train=600, num_val=100)

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_shapes_train"),
    mapper=L(RobustDatasetMapper)(
        is_train=True,
        augmentations=[L(T.RandomFlip)(horizontal=True)],
        image_format="BGR",
    ),
    total_batch_size=8,
    num_workers=1,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="synthetic_shapes_val", filter_empty=False),
    mapper=L(RobustDatasetMapper)(is_train=False, augmentations=[], image_format="${...train.mapper.image_format}"),
    num_workers=1,
)

dataloader.evaluator = L(COCOEvaluatorWithRecall)(dataset_name="${..test.dataset.names}")
