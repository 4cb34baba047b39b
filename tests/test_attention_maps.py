"""Attention maps (dsanet.attention_maps, tools/attention_maps.py): the drawn weights are the DSA
blocks' own, on a checkpoint trained here and on half-resolution and CBAM levels."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, load_script, make_inputs, tiny_model
from dsanet.attention_maps import attention_maps, capture_block_inputs, dsa_blocks, query_cells
from dsanet.errors import UserInputError
from dsanet.predictor import Predictor


def dense_rows_and_output(attention, x: torch.Tensor):
    """The block's full L x L softmax from its own projections, and its actual forward output."""
    q, k, v = attention.query(x)[0].flatten(1), attention.key(x)[0].flatten(1), attention.value(x)[0].flatten(1)
    weights = torch.softmax(q.t() @ k * attention.scale, dim=-1)  # (l, l), paper eq. 5 at the block's scale
    return weights, v, attention(x)[0]  # (l, l), (C, l), (C, H, W)


def check_maps_are_the_blocks_own(model, inputs, points):
    """Every drawn row sums to 1, equals the dense recomputation, and reproduces the block's output."""
    _, _, maps = attention_maps(model, inputs, points)
    _, captured = capture_block_inputs(model, [inputs])
    strides = {name: spec.stride for name, spec in model.backbone.output_shape().items()}
    blocks = dsa_blocks(model)
    checked = 0
    for m in maps:
        attention = blocks[(m.branch, m.level)].attention
        x = captured[(m.branch, m.level)][:1]
        if m.kind != "self":
            continue
        weights, v, output = dense_rows_and_output(attention, x)
        h, w = attention.key(x).shape[-2:]
        cells = query_cells(points, strides[m.level], x.shape[-2:])
        for qi, (row, col) in enumerate(cells.tolist()):
            drawn = m.maps[qi]
            assert drawn.shape == (h, w)
            torch.testing.assert_close(drawn.sum(), torch.tensor(1.0))
            key_index = math.floor(row * h / x.shape[-2]) * w + math.floor(col * w / x.shape[-1])
            torch.testing.assert_close(drawn.flatten(), weights[key_index], atol=1e-6, rtol=1e-5)
            # These weights, applied to the block's values, give the block's output at the query.
            torch.testing.assert_close(v @ drawn.flatten(), output[:, row, col], atol=1e-4, rtol=1e-4)
            checked += 1
    return maps, checked


def test_maps_of_the_trained_demo_model_are_its_softmax_rows(trained_demo, monkeypatch):
    monkeypatch.setenv("DSANET_CACHE", str(trained_demo.cache))
    predictor = Predictor(str(trained_demo.config), str(trained_demo.weights))
    from detectron2.data.detection_utils import read_image

    inputs = predictor.preprocess(read_image(str(trained_demo.images[0]), format="BGR"))
    del inputs["transform"]
    points = torch.tensor([[10.0, 20.0], [64.0, 64.0], [127.0, 3.0]])
    maps, checked = check_maps_are_the_blocks_own(predictor.model, inputs, points)
    assert {(m.level, m.branch) for m in maps} == {(p, b) for p in ("p4", "p5", "p6", "p7") for b in ("cls", "reg")}
    assert checked == 8 * 3


@pytest.mark.parametrize("qk_scale", ["query_dim", "channels"])
def test_half_resolution_levels_draw_the_rows_that_produce_the_output(qk_scale):
    model = tiny_model("common/models/dsanet_conf.py", dsa_levels={"p3": "self_half_k3", "p5": "self_half_k1"},
                       dsa_qk_scale=qk_scale).eval()
    inputs = make_inputs(with_gt=False)[1]  # 80 x 72, padded to 96 x 96: P3 12 x 12, P5 3 x 3 (odd)
    points = torch.tensor([[5.0, 5.0], [70.0, 41.0], [33.0, 79.0]])
    maps, checked = check_maps_are_the_blocks_own(model, inputs, points)
    shapes = {m.level: (tuple(m.maps.shape[-2:]), m.cell) for m in maps}
    assert shapes == {"p3": ((6, 6), 16), "p5": ((2, 2), 64)}  # key grids at half resolution, ceil(3 / 2) = 2
    assert checked == 2 * 2 * 3


def test_cbam_draws_its_sigmoid_mask_and_no_dsa_is_a_clear_error():
    model = tiny_model("common/models/dsanet.py", dsa_levels={"p4": "cbam"}).eval()
    inputs = make_inputs(with_gt=False)[0]
    _, _, maps = attention_maps(model, inputs, torch.tensor([[3.0, 4.0]]))
    _, captured = capture_block_inputs(model, [inputs])
    for m in maps:
        assert m.kind == "cbam"
        x = captured[(m.branch, "p4")][:1]
        attention = dsa_blocks(model)[(m.branch, "p4")].attention
        torch.testing.assert_close(x * m.maps, attention(x))  # CBAM is x * mask: the drawn mask is the block's
    with pytest.raises(UserInputError, match="the model has no DSA"):
        attention_maps(tiny_model("common/models/dsanet.py", dsa_levels=[]).eval(), inputs)


def test_the_tool_writes_one_png_per_query(trained_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSANET_CACHE", str(trained_demo.cache))
    tool = load_script("tools/attention_maps.py")
    common = ["--config-file", str(trained_demo.config), "--weights", str(trained_demo.weights),
              "--input", str(trained_demo.images[2])]
    paths = tool.main(tool.parse_args([*common, "--output", str(tmp_path / "top"), "--num-queries", "2"]))
    paths += tool.main(tool.parse_args([*common, "--output", str(tmp_path / "points"), "--points", "30,40"]))
    assert len(paths) == 3
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
            assert np.asarray(image).std() > 0
    assert "p4: self-attention over 8x8 positions" in capsys.readouterr().out

    # The same run with CBAM on P4 (its weights are absent from the checkpoint: freshly initialised).
    cbam = tmp_path / "cbam.yaml"
    text = trained_demo.config.read_text()
    assert "dsa_levels: [p4, p5, p6, p7]" in text
    cbam.write_text(text.replace("dsa_levels: [p4, p5, p6, p7]", "dsa_levels: {p4: cbam}"))
    tool.main(tool.parse_args([*common, "--output", str(tmp_path / "cbam"), "--points", "30,40",
                               "--config-file", str(cbam)]))
    assert "p4: CBAM, drawn is its sigmoid spatial mask" in capsys.readouterr().out
    with pytest.raises(UserInputError, match="the model has no DSA"):
        tool.main(tool.parse_args([*common, "--output", str(tmp_path), "--opts", "model.head.dsa_levels=[]"]))
    with pytest.raises(UserInputError, match="--points 30;40: expected x,y"):
        tool.main(tool.parse_args([*common, "--output", str(tmp_path), "--points", "30;40"]))


def test_the_command_exits_0_after_writing_its_pngs(trained_demo, tmp_path):
    """Run as a command (not main()): success is exit status 0 with the PNG on disk; a malformed
    point is exit status 2 with one error line."""
    env = dict(os.environ, DSANET_CACHE=str(trained_demo.cache), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [sys.executable, str(ROOT / "tools" / "attention_maps.py"), "--config-file", str(trained_demo.config),
               "--weights", str(trained_demo.weights), "--input", str(trained_demo.images[2])]
    ok = subprocess.run([*command, "--output", str(tmp_path / "ok"), "--points", "30,40"],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert len(list((tmp_path / "ok").glob("*.png"))) == 1
    bad = subprocess.run([*command, "--output", str(tmp_path / "bad"), "--points", "30;40"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "error: --points 30;40: expected x,y in pixels, such as 40,52"
