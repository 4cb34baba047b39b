"""Export (tools/export_model.py) on the real stack: a checkpoint trained here, real image files,
TorchScript and a real onnxruntime session, each compared with eager PyTorch."""
import json

import cv2
import pytest
import torch

from conftest import load_script

onnx = pytest.importorskip("onnx", reason="pip install -e '.[export]'")
pytest.importorskip("onnxruntime", reason="pip install -e '.[export]'")


@pytest.fixture(scope="module")
def exported(trained_demo, tmp_path_factory):
    """tools/export_model.py run on three validation images and one resized to an odd size."""
    out = tmp_path_factory.mktemp("export")
    odd = out / "odd_size.png"  # another size than the traced one: height and width stay dynamic
    cv2.imwrite(str(odd), cv2.resize(cv2.imread(str(trained_demo.images[0])), (100, 76)))
    tool = load_script("tools/export_model.py")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DSANET_CACHE", str(trained_demo.cache))
        args = tool.parse_args(["--config-file", str(trained_demo.config), "--weights", str(trained_demo.weights),
                                "--output", str(out), "--repeats", "1",
                                "--input", *map(str, trained_demo.images[1:4]), str(odd)])
        status = tool.main(args)
    return status, out


def test_exports_equal_eager_in_raw_outputs_and_final_detections(exported):
    status, out = exported
    report = json.loads((out / "parity.json").read_text())
    assert status == 0
    for runtime in ("torchscript", "onnxruntime"):
        parity = report["parity"][runtime]
        assert parity["raw_max_abs"] <= 1e-4
        assert parity["detections"] > 0  # the final comparison is not vacuous
        assert parity["mismatched_images"] == 0
        assert parity["box_max_abs"] <= 1e-3 and parity["score_max_abs"] <= 1e-3
    assert set(report["seconds_per_image"]) >= {"eager", "torchscript", "onnxruntime"}


def test_the_onnx_graph_is_valid_and_holds_the_fused_score(exported, trained_demo):
    from dsanet.config import load_config
    from dsanet.export import OnnxRunner
    from dsanet.modeling.meta_arch import fuse_scores

    _, out = exported
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))
    graph_outputs = [o.name for o in onnx.load(str(out / "model.onnx")).graph.output]
    levels = ["p3", "p4", "p5", "p6", "p7"]
    assert graph_outputs == [f"{kind}_{p}" for kind in ("cls_logits", "box_deltas", "conf_logits", "scores")
                             for p in levels]

    image = torch.as_tensor(cv2.imread(str(trained_demo.images[5])).transpose(2, 0, 1).copy()).float()
    outputs = dict(zip(graph_outputs, OnnxRunner(str(out / "model.onnx"))(image)))
    cfg = load_config(str(trained_demo.config))
    k = cfg.model.num_classes
    for p in levels:
        cls = outputs[f"cls_logits_{p}"].permute(0, 2, 3, 1).reshape(1, -1, k)  # (1, Hi*Wi*A, K): detectron2's order
        conf = outputs[f"conf_logits_{p}"].permute(0, 2, 3, 1).reshape(1, -1, 1)
        expected = fuse_scores(cls, conf, cfg.model.score_fusion_alpha)
        torch.testing.assert_close(outputs[f"scores_{p}"], expected, atol=1e-6, rtol=1e-5)


def test_a_missing_image_is_named(trained_demo, tmp_path, monkeypatch):
    from dsanet.errors import UserInputError

    monkeypatch.setenv("DSANET_CACHE", str(trained_demo.cache))
    tool = load_script("tools/export_model.py")
    args = tool.parse_args(["--config-file", str(trained_demo.config), "--weights", str(trained_demo.weights),
                            "--output", str(tmp_path), "--input", str(tmp_path / "nope.jpg")])
    with pytest.raises(UserInputError, match=f"--input {tmp_path / 'nope.jpg'}: no such file"):
        tool.main(args)
