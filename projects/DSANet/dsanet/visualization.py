"""Detections as pictures (detectron2's Visualizer) and as JSON records."""
from typing import List

import numpy as np
from detectron2.structures import Instances
from detectron2.utils.visualizer import VisImage, Visualizer

__all__ = ["draw_detections", "detections_to_json"]


def draw_detections(image: np.ndarray, instances: Instances, metadata, input_format: str = "BGR",
                    scale: float = 1.0) -> VisImage:
    """Draw boxes, class names and scores on an (H, W, 3) uint8 image given in ``input_format``."""
    rgb = image[:, :, ::-1] if input_format == "BGR" else image
    return Visualizer(rgb, metadata, scale=scale).draw_instance_predictions(instances.to("cpu"))


def detections_to_json(instances: Instances, metadata) -> List[dict]:
    """Instances -> [{"bbox": [x0, y0, x1, y1], "score", "category_id", "category"}], by score.

    ``category_id`` is the model's contiguous class index; ``category`` its name from the
    dataset metadata (``thing_classes``), when the metadata has one.
    """
    names = metadata.get("thing_classes", None) if metadata is not None else None
    records = []
    boxes = instances.pred_boxes.tensor.tolist()
    for box, score, label in zip(boxes, instances.scores.tolist(), instances.pred_classes.tolist()):
        record = {"bbox": [round(v, 3) for v in box], "score": round(score, 5), "category_id": label}
        if names is not None and label < len(names):
            record["category"] = names[label]
        records.append(record)
    return records
