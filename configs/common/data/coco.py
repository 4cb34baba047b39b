# COCO 2017 detection data, from $DETECTRON2_DATASETS/coco (detectron2's standard names).
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.data import get_detection_dataset_dicts

from dsanet.data.mapper import RobustDatasetMapper  # DatasetMapper that skips unreadable images
from dsanet.evaluation import COCOEvaluatorWithRecall

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train"),
    mapper=L(RobustDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(640, 672, 704, 736, 768, 800),
                                    sample_style="choice", max_size=1333),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=False,
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(RobustDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

# The paper's ten numbers: AP, AP50, AP75, APs, APm, APl, AR, ARs, ARm, ARl.
dataloader.evaluator = L(COCOEvaluatorWithRecall)(dataset_name="${..test.dataset.names}")
