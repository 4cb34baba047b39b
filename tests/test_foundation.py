"""The real detectron2 stack works here: RetinaNet trains and infers, COCO evaluation scores,
a trainer's checkpoint loads back under torch's default (weights_only) loading."""
import json

import pytest
import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import SimpleTrainer, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from detectron2.solver import LRMultiplier
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from conftest import make_inputs
from dsanet.modeling import make_resnet_stages


def tiny_detectron2_retinanet():
    """detectron2's own RetinaNet LazyConfig, narrowed to run on CPU in a second."""
    cfg = model_zoo.get_config("common/models/retinanet.py").model
    cfg.backbone.bottom_up.stem.out_channels = 16
    cfg.backbone.bottom_up.stem.norm = "BN"
    cfg.backbone.bottom_up.stages = make_resnet_stages(depth=18, stem_width=16, widths=[16, 32, 64, 128], norm="BN")
    cfg.backbone.out_channels = 32
    cfg.backbone.top_block.in_channels = 128
    # L(ShapeSpec): v0.6's ShapeSpec is a namedtuple, main's a dataclass (which omegaconf turns into a dict).
    cfg.head.input_shape = [L(ShapeSpec)(channels=32)] * 5
    cfg.head.conv_dims = [32, 32]
    cfg.num_classes = 3
    return instantiate(cfg)


def test_retinanet_trains_a_step_with_finite_losses():
    torch.manual_seed(0)
    model = tiny_detectron2_retinanet().train()
    with EventStorage():
        losses = model(make_inputs())
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_retinanet_inference_returns_instances_inside_the_image():
    torch.manual_seed(0)
    model = tiny_detectron2_retinanet().eval()
    model.test_score_thresh = 0.0  # an untrained model: keep every candidate
    inputs = make_inputs()
    with torch.no_grad():
        outputs = model(inputs)
    assert len(outputs) == len(inputs)
    for item, out in zip(inputs, outputs):
        instances = out["instances"]
        assert isinstance(instances, Instances) and len(instances) > 0
        boxes = instances.pred_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= item["width"]).all() and (boxes[:, 3] <= item["height"]).all()
        assert ((instances.scores >= 0) & (instances.scores <= 1)).all()
        assert ((instances.pred_classes >= 0) & (instances.pred_classes < 3)).all()


GT_BOXES_XYWH = {1: [[10, 10, 30, 20], [50, 40, 20, 30]], 2: [[5, 5, 40, 40]]}


@pytest.fixture
def tiny_coco_dataset(tmp_path):
    """A registered dataset backed by a COCO-format json with three boxes on two images."""
    images, annotations = [], []
    for image_id, boxes in GT_BOXES_XYWH.items():
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 100, "width": 120})
        for box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                     "categories": [{"id": 1, "name": "thing"}]}))
    name = f"tiny_coco_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(json_file=str(json_file), thing_classes=["thing"],
                                  thing_dataset_id_to_contiguous_id={1: 0})
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def evaluate_boxes(dataset_name: str, output_dir, shift: float) -> dict:
    evaluator = COCOEvaluator(dataset_name, output_dir=str(output_dir), use_fast_impl=False)
    evaluator.reset()
    for image_id, boxes in GT_BOXES_XYWH.items():
        xyxy = torch.tensor([[x + shift, y + shift, x + w + shift, y + h + shift] for x, y, w, h in boxes])
        instances = Instances((100, 120), pred_boxes=Boxes(xyxy), scores=torch.ones(len(boxes)),
                              pred_classes=torch.zeros(len(boxes), dtype=torch.int64))
        evaluator.process([{"image_id": image_id}], [{"instances": instances}])
    return evaluator.evaluate()["bbox"]


def test_coco_evaluator_scores_perfect_and_shifted_predictions(tiny_coco_dataset, tmp_path):
    perfect = evaluate_boxes(tiny_coco_dataset, tmp_path / "perfect", shift=0.0)
    assert set(perfect) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert perfect["AP"] == pytest.approx(100.0)
    shifted = evaluate_boxes(tiny_coco_dataset, tmp_path / "shifted", shift=4.0)
    assert 0.0 <= shifted["AP"] < perfect["AP"]
    assert (tmp_path / "perfect" / "coco_instances_results.json").is_file()


def infinite_batches():
    while True:
        yield make_inputs()


def test_trainer_checkpoint_loads_under_default_weights_only(tmp_path):
    torch.manual_seed(0)
    model = tiny_detectron2_retinanet().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    trainer = SimpleTrainer(model, infinite_batches(), optimizer)
    scheduler = LRMultiplier(optimizer, MultiStepParamScheduler([1.0, 0.1], milestones=[2], num_updates=4),
                             max_iter=4)
    checkpointer = DetectionCheckpointer(model, str(tmp_path), trainer=trainer)
    trainer.register_hooks([hooks.IterationTimer(), hooks.LRScheduler(scheduler=scheduler),
                            hooks.PeriodicCheckpointer(checkpointer, period=3)])
    trainer.train(0, 3)

    path = tmp_path / "model_0000002.pth"
    assert path.is_file()
    saved = torch.load(path)  # torch's default: weights_only=True on torch >= 2.6
    assert {"model", "trainer", "iteration"} <= set(saved)
    assert saved["iteration"] == 2 and "optimizer" in saved["trainer"]
    assert "LRScheduler" in saved["trainer"]["hooks"]

    fresh = tiny_detectron2_retinanet()
    fresh_trainer = SimpleTrainer(fresh, infinite_batches(),
                                  torch.optim.SGD(fresh.parameters(), lr=0.001, momentum=0.9))
    loaded = DetectionCheckpointer(fresh, str(tmp_path), trainer=fresh_trainer).resume_or_load(
        str(path), resume=True)
    assert loaded["iteration"] == 2 and fresh_trainer.iter == 2
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
