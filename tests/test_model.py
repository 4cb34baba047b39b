"""DSANet is RetinaNet plus things: with them off it is RetinaNet; with them on they behave as
the paper describes."""
import copy
import logging

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.events import EventStorage

from conftest import DSA_VARIANTS, detectron2_retinanet, head_outputs_with_one_branch, make_inputs, tiny_model
from dsanet.modeling import DSABlock, DSANet, SelfAttention2d, SpatialAttention2d, fuse_scores
from dsanet.modeling.dense_detector import transpose_dense_predictions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def losses_of(model, inputs):
    model.train()
    with EventStorage():
        return model(copy.deepcopy(inputs))


def detections_of(model, inputs, score_thresh=0.0):
    model.eval()
    model.test_score_thresh = score_thresh
    with torch.no_grad():
        return [out["instances"] for out in model(copy.deepcopy(inputs))]


def assert_same_detections(a, b):
    for x, y in zip(a, b):
        assert len(x) == len(y) > 0
        torch.testing.assert_close(x.pred_boxes.tensor, y.pred_boxes.tensor)
        torch.testing.assert_close(x.scores, y.scores)
        assert torch.equal(x.pred_classes, y.pred_classes)


@pytest.mark.parametrize("config, head", [("common/models/dsanet.py", dict(dsa_levels=[], with_confidence=False)),
                                          ("common/models/retinanet.py", {})],
                         ids=["dsanet_everything_off", "retinanet_baseline_config"])
def test_with_everything_off_it_is_detectron2s_retinanet(config, head):
    """DSANet with DSA and confidence off, and the RetinaNet baseline config (DSANet on detectron2's
    RetinaNetHead), load detectron2 RetinaNet's weights and give its losses and detections exactly."""
    reference = detectron2_retinanet()
    model = tiny_model(config, seed=1, **head)
    assert isinstance(model, DSANet) and type(reference).__name__ == "RetinaNet"
    assert list(model.state_dict()) == list(reference.state_dict())
    model.load_state_dict(reference.state_dict())
    inputs = make_inputs()
    model_losses = losses_of(model, inputs)
    for name, value in losses_of(reference, inputs).items():
        assert torch.equal(model_losses[name], value), name
    assert_same_detections(detections_of(model, inputs), detections_of(reference, inputs))


def test_dsa_starts_as_identity_then_learns_gamma():
    baseline = tiny_model("common/models/retinanet.py")
    model = tiny_model()  # DSA on p4-p7, gamma = 0
    missing, unexpected = model.load_state_dict(baseline.state_dict(), strict=False)
    assert not unexpected and missing and all(".dsa." in k for k in missing)
    inputs = make_inputs()
    assert_same_detections(detections_of(model, inputs), detections_of(baseline, inputs))
    model_losses = losses_of(model, inputs)
    for name, value in losses_of(baseline, inputs).items():
        torch.testing.assert_close(model_losses[name], value)

    gammas = [p for n, p in model.named_parameters() if n.endswith("gamma")]
    assert len(gammas) == 8  # 4 levels x 2 decoupled branches
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sum(losses_of(model, inputs).values()).backward()
    assert all(g.grad is not None for g in gammas)
    # Every level has negatives, so each classification gamma gets gradient; box gammas only
    # on levels holding positive anchors.
    cls_gammas = [p for n, p in model.named_parameters() if "cls_branch" in n and n.endswith("gamma")]
    assert len(cls_gammas) == 4 and all(g.grad.abs().sum() > 0 for g in cls_gammas)
    optimizer.step()
    assert all(g.item() != 0 for g in cls_gammas)
    baseline_boxes = detections_of(baseline, inputs)[0].pred_boxes.tensor
    model_boxes = detections_of(model, inputs)[0].pred_boxes.tensor
    assert baseline_boxes.shape != model_boxes.shape or not torch.allclose(baseline_boxes, model_boxes)


def output_change_map(block, x, position=(2, 3)):
    """Which output positions change when one input position changes: (H, W) bool."""
    y = block(x)
    x2 = x.clone()
    x2[:, :, position[0], position[1]] += 5.0
    return (block(x2) - y).abs().amax(dim=(0, 1)) > 1e-6


def test_self_attention_mixes_every_position_and_cbam_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 12, 14)
    self_attention = DSABlock(SelfAttention2d(16, reduction=8))
    with torch.no_grad():
        self_attention.gamma.fill_(1.0)
    assert output_change_map(self_attention, x).all()

    cbam = DSABlock(SpatialAttention2d(16))
    with torch.no_grad():
        cbam.gamma.fill_(1.0)
    changed = output_change_map(cbam, x)
    assert changed[2, 3] and not changed[2 + 4:, :].any() and not changed[:, 3 + 4:].any()


def test_decoupled_branches_have_separate_parameters_and_shared_has_one_set():
    decoupled = tiny_model().head.dsa
    shared = tiny_model(dsa_shared=True).head.dsa
    cls_params = {id(p) for p in decoupled.cls_branch.parameters()}
    reg_params = {id(p) for p in decoupled.reg_branch.parameters()}
    assert cls_params and not cls_params & reg_params
    assert sum(p.numel() for p in shared.parameters()) * 2 == sum(p.numel() for p in decoupled.parameters())
    assert all(k.startswith("shared_branch.") for k in shared.state_dict())


def conf_training_pieces(model, inputs):
    """Everything DSANet.forward_training computes before its losses, from a real forward pass."""
    model.train()
    images = model.preprocess_image(inputs)
    features = [model.backbone(images.tensor)[f] for f in model.head_in_features]
    logits, deltas, conf = transpose_dense_predictions(model.head(features), [model.num_classes, 4, 1])
    anchors = model.anchor_generator(features)
    gt_labels, gt_boxes = model.label_anchors(anchors, [x["instances"] for x in inputs])
    with EventStorage():
        model.losses(anchors, logits, gt_labels, deltas, gt_boxes)  # updates the loss normaliser
    return anchors, deltas, conf, gt_labels, gt_boxes


def box_iou_by_hand(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_confidence_target_is_iou_of_decoded_box_with_its_ground_truth():
    model = tiny_model(with_confidence=True)
    anchors, deltas, conf, gt_labels, gt_boxes = conf_training_pieces(model, make_inputs())
    pos_mask, iou = model.confidence_targets(anchors, deltas, gt_labels, gt_boxes)
    assert pos_mask.any() and ((iou >= 0) & (iou <= 1)).all()
    all_anchors = torch.cat([a.tensor for a in anchors])
    all_deltas = torch.cat(deltas, dim=1)
    for k, (image, anchor) in enumerate(pos_mask.nonzero().tolist()):
        decoded = model.box2box_transform.apply_deltas(all_deltas[image, anchor][None], all_anchors[anchor][None])[0]
        expected = box_iou_by_hand(decoded.tolist(), gt_boxes[image][anchor].tolist())
        assert iou[k].item() == pytest.approx(expected, abs=1e-5)


def test_confidence_loss_ignores_negative_anchors():
    model = tiny_model(with_confidence=True)
    anchors, deltas, conf, gt_labels, gt_boxes = conf_training_pieces(model, make_inputs())
    loss = model.confidence_loss(anchors, deltas, conf, gt_labels, gt_boxes)
    pos_mask = torch.stack(gt_labels) != model.num_classes
    pos_mask &= torch.stack(gt_labels) >= 0
    sizes = [c.shape[1] for c in conf]
    changed = torch.cat(conf, dim=1).detach().clone()
    changed[~pos_mask] = 50.0
    loss_changed = model.confidence_loss(anchors, deltas, list(changed.split(sizes, dim=1)), gt_labels, gt_boxes)
    assert torch.isfinite(loss) and loss > 0
    torch.testing.assert_close(loss_changed, loss.detach())


def test_a_batch_without_ground_truth_gives_finite_losses():
    model = tiny_model(with_confidence=True)
    losses = losses_of(model, make_inputs(with_gt=False))
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_conf"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_conf"] == 0


def test_alpha_zero_ranks_like_retinanet_and_fused_scores_stay_in_unit_range():
    baseline = tiny_model("common/models/retinanet.py")
    model = tiny_model(dsa_levels=[], with_confidence=True)
    model.load_state_dict(baseline.state_dict(), strict=False)
    with torch.no_grad():
        model.head.object_confidence.bias.fill_(-3.0)  # confidence far from 1, so fusion changes scores
    inputs = make_inputs()
    model.score_fusion_alpha = 0.0
    assert_same_detections(detections_of(model, inputs), detections_of(baseline, inputs))
    model.score_fusion_alpha = 0.4
    fused = detections_of(model, inputs)
    assert all(((d.scores >= 0) & (d.scores <= 1)).all() for d in fused)
    assert not torch.allclose(fused[0].scores[:5], detections_of(baseline, inputs)[0].scores[:5])


def test_fuse_scores_matches_the_formula():
    cls_logits, conf_logits = torch.randn(50, 3) * 6, torch.randn(50, 1) * 6
    expected = cls_logits.sigmoid() ** 0.6 * conf_logits.sigmoid() ** 0.4
    torch.testing.assert_close(fuse_scores(cls_logits, conf_logits, alpha=0.4), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(fuse_scores(cls_logits, conf_logits, alpha=0.0), cls_logits.sigmoid())
    product_rank = (cls_logits.sigmoid() * conf_logits.sigmoid()).flatten().argsort()
    assert torch.equal(fuse_scores(cls_logits, conf_logits, 0.5).flatten().argsort(), product_rank)


class RecordingHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_retinanet_checkpoint_initialises_dsanet(tmp_path):
    baseline = tiny_model("common/models/retinanet.py", seed=1)
    DetectionCheckpointer(baseline, str(tmp_path)).save("retinanet")
    model = tiny_model("common/models/dsanet_conf.py", seed=2)
    new_params = {k: v.clone() for k, v in model.state_dict().items() if ".dsa." in k or "object_confidence" in k}
    checkpointer = DetectionCheckpointer(model)
    handler = RecordingHandler()  # on the checkpointer's own logger: detectron2 may stop propagation
    checkpointer.logger.addHandler(handler)
    try:
        checkpointer.load(str(tmp_path / "retinanet.pth"), checkpointables=[])
    finally:
        checkpointer.logger.removeHandler(handler)
    report = "\n".join(handler.messages)
    assert "not found in the checkpoint" in report
    assert "head.dsa.cls_branch.p4" in report and "head.object_confidence" in report
    for name, value in baseline.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    for name, value in new_params.items():
        assert torch.equal(model.state_dict()[name], value), name
    assert any(".dsa." in k for k in new_params) and any("object_confidence" in k for k in new_params)


VARIANTS = {**DSA_VARIANTS, "confidence": dict(with_confidence=True)}


def set_gammas(model, value: float) -> None:
    """Every learned DSA gamma to ``value`` (at 0 the attention convs' gradients are exactly zero)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(value)


def assert_trains_a_step_and_infers(model) -> None:
    """With gamma 0.5: finite losses that give every DSA parameter a gradient (DDP needs one), a
    non-zero gradient on every DSA parameter from the head's outputs, detections on every image.

    Why two gradients: the box losses see only positive anchors, and a level without positives
    (P6/P7 of a 64x96 image) gives its box branch an exactly zero loss gradient. The head's
    outputs are taken on a 256x384 image, whose P7 has 2x3 positions: on a 1x1 map attention
    is V whatever Q and K are, so their gradient is exactly zero there.
    """
    set_gammas(model, 0.5)
    losses = losses_of(model, make_inputs())
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    dsa = {n: p for n, p in model.named_parameters() if ".dsa." in n}
    assert dsa and all(p.requires_grad and p.grad is not None for p in dsa.values())
    features = [f.detach() for f in model.backbone(torch.randn(1, 3, 256, 384)).values()]
    outputs = [x for per_kind in model.head(features) for x in per_kind]
    grads = torch.autograd.grad(sum(x.square().sum() for x in outputs), list(dsa.values()))
    assert [n for n, g in zip(dsa, grads) if not g.abs().sum() > 0] == []
    detections = detections_of(model, make_inputs())
    assert all(len(d) > 0 for d in detections)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_a_step_and_infers(variant):
    assert_trains_a_step_and_infers(tiny_model(**VARIANTS[variant]))


def fpn_levels(backbone, image, res5_noise=None):
    """The backbone's levels, with ``res5_noise`` added to the ResNet's res5 output if given."""
    def perturb(module, args, out):
        return {**out, "res5": out["res5"] + res5_noise} if res5_noise is not None else out

    handle = backbone.bottom_up.register_forward_hook(perturb)
    try:
        with torch.no_grad():
            return backbone(image), backbone.bottom_up(image)
    finally:
        handle.remove()


def test_dsanet_star_has_fpn_laterals_but_no_top_down_path():
    """DSANet* (Table 5): each of P3-P5 sees only its own ResNet stage through FPN's lateral and
    output convs; a change in res5 reaches P5 (and P6/P7), never P3 or P4, where FPN's top-down
    path carries it down to P3."""
    from detectron2.config import LazyConfig, instantiate

    from conftest import CONFIGS, narrow_model_config
    from dsanet.modeling import FPNWithoutTopDown

    cfg = narrow_model_config(LazyConfig.load(str(CONFIGS / "common/models/dsanet.py")).model)
    torch.manual_seed(0)
    fpn = instantiate(cfg.backbone).eval()
    cfg.backbone._target_ = FPNWithoutTopDown
    star = instantiate(cfg.backbone).eval()
    star.load_state_dict(fpn.state_dict())  # FPN's parameter names, and here its weights
    image = torch.randn(1, 3, 64, 96)
    levels, stages = fpn_levels(star, image)
    assert [tuple(f.shape[-2:]) for f in levels.values()] == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    for i, (level, stage) in enumerate([("p3", "res3"), ("p4", "res4"), ("p5", "res5")]):
        lateral, output = star.lateral_convs[2 - i], star.output_convs[2 - i]  # stored coarsest first
        with torch.no_grad():
            torch.testing.assert_close(levels[level], output(lateral(stages[stage])))
    noise = torch.randn_like(stages["res5"])
    moved = {name: fpn_levels(backbone, image, noise)[0] for name, backbone in (("fpn", fpn), ("star", star))}
    unmoved = {"fpn": fpn_levels(fpn, image)[0], "star": levels}
    changed = {name: [k for k in levels if not torch.equal(moved[name][k], unmoved[name][k])] for name in moved}
    assert changed == {"fpn": ["p3", "p4", "p5", "p6", "p7"], "star": ["p5", "p6", "p7"]}


def test_dsa_on_a_backbone_without_the_fpn_top_down_path_trains():
    from detectron2.config import LazyConfig, instantiate

    from conftest import CONFIGS, narrow_model_config
    from dsanet.modeling import FPNWithoutTopDown

    cfg = narrow_model_config(LazyConfig.load(str(CONFIGS / "common/models/dsanet.py")).model)
    cfg.backbone._target_ = FPNWithoutTopDown
    model = instantiate(cfg)
    losses = losses_of(model, make_inputs())
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("location", ["before", "after"])
def test_the_cls_branch_reaches_only_class_and_confidence_logits_and_the_box_branch_only_deltas(location):
    """DSANet's decoupling (paper Fig. 1): the classification branch feeds the classification tower,
    whose output gives the class and the confidence logits; the box branch feeds the box tower and
    the deltas alone; before the towers or after them."""
    model = tiny_model(dsa_location=location, with_confidence=True).eval()
    features = [f.detach() for f in model.backbone(torch.randn(1, 3, 64, 96)).values()]
    baseline = head_outputs_with_one_branch(model, features, branch_gamma="none")
    for branch, changed in [("cls", {0, 2}), ("reg", {1})]:
        outputs = head_outputs_with_one_branch(model, features, branch_gamma=branch)
        for i, (x, y) in enumerate(zip(outputs, baseline)):
            same = all(torch.equal(a, b) for a, b in zip(x, y))
            assert same != (i in changed), (branch, ["cls_logits", "box_deltas", "conf_logits"][i])


def test_gamma_fixed_1_is_a_constant_one_that_no_optimizer_step_moves():
    """Table 4's gamma = 1: the residual is x + attention(x), gamma is no parameter (so no optimizer
    holds it) nor a checkpoint entry, and after training steps it is still exactly 1."""
    model = tiny_model(dsa_learn_gamma=False)
    blocks = [m for m in model.modules() if isinstance(m, DSABlock)]
    assert len(blocks) == 8
    assert not [n for n, _ in model.named_parameters() if "gamma" in n]
    assert not [k for k in model.state_dict() if "gamma" in k]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        sum(losses_of(model, make_inputs()).values()).backward()
        optimizer.step()
    assert all(torch.equal(b.gamma, torch.ones(1)) for b in blocks)
    x = torch.randn(1, 32, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(blocks[0](x), x + blocks[0].attention(x))
