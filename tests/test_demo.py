"""demo/demo.py on the real stack: a checkpoint trained here, real image files and a real video."""
import json
import os
import subprocess
import sys

import cv2
from PIL import Image

from conftest import ROOT, load_script
from dsanet.predictor import Predictor


def test_images_globs_and_folders_with_bad_inputs_named(trained_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSANET_CACHE", str(trained_demo.cache))
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in (3, 4):
        (folder / f"f{i}.jpg").write_bytes(trained_demo.images[i].read_bytes())
    (folder / "notes.txt").write_text("not an image, and not picked from a folder")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    val = trained_demo.images[0].parent
    demo = load_script("demo/demo.py")
    args = demo.parse_args([
        "--config-file", str(trained_demo.config), "--output", str(tmp_path / "out"),
        "--confidence-threshold", "0.1",
        "--input", str(trained_demo.images[0]), str(val / "00000[12].jpg"), str(tmp_path / "missing.jpg"),
        str(broken), str(folder),
        "--opts", f"train.init_checkpoint={trained_demo.weights}"])
    assert demo.main(args) == 1  # some inputs were skipped, the others were done
    err = capsys.readouterr().err
    assert f"skipped {tmp_path / 'missing.jpg'}: no such file" in err
    assert f"skipped {broken}: cannot be read as an image" in err

    written = sorted(os.listdir(tmp_path / "out"))
    stems = ["000000", "000001", "000002", "f3", "f4"]
    assert written == sorted([s + ".json" for s in stems] + [s + ".png" for s in stems])
    predictor = Predictor(str(trained_demo.config), str(trained_demo.weights))
    total = 0
    for stem, source in zip(stems, trained_demo.images[:5]):
        record = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
        expected = predictor(cv2.imread(str(source)))
        expected = expected[expected.scores >= 0.1]
        assert len(record["detections"]) == len(expected)
        assert all(d["score"] >= 0.1 and d["category"] in ("circle", "square", "triangle")
                   for d in record["detections"])
        total += len(expected)
        with Image.open(tmp_path / "out" / f"{stem}.png") as drawn:
            assert drawn.size == (128, 128)
    assert total > 0


def test_video_through_the_command_line(trained_demo, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 128))
    for path in trained_demo.images[:3]:
        writer.write(cv2.imread(str(path)))
    writer.release()
    env = dict(os.environ, DSANET_CACHE=str(trained_demo.cache), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "demo.py"), "--config-file", str(trained_demo.config),
         "--weights", str(trained_demo.weights), "--video-input", str(video), "--output", str(tmp_path / "out"),
         "--confidence-threshold", "0.1", "--scale", "2"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "frames: 100%" in result.stderr  # the progress bar
    drawn = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    frames = 0
    while True:
        ok, frame = drawn.read()
        if not ok:
            break
        assert frame.shape == (256, 256, 3)
        frames += 1
    assert frames == 3
    record = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert [f["frame"] for f in record["frames"]] == [0, 1, 2]


def test_a_missing_video_is_named(trained_demo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSANET_CACHE", str(trained_demo.cache))
    demo = load_script("demo/demo.py")
    args = demo.parse_args(["--config-file", str(trained_demo.config), "--weights", str(trained_demo.weights),
                            "--video-input", str(tmp_path / "none.mp4"), "--output", str(tmp_path)])
    assert demo.main(args) == 1
    assert f"skipped {tmp_path / 'none.mp4'}: cannot be opened as a video" in capsys.readouterr().err
