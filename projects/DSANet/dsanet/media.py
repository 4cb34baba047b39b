"""Reading images and videos for the demo, naming what cannot be read instead of stopping."""
from typing import Iterator, Optional, Tuple

import cv2
import numpy as np
from detectron2.data.detection_utils import read_image

__all__ = ["read_image_or_problem", "VideoFrames", "open_video_writer"]


def read_image_or_problem(path: str, image_format: str) -> Tuple[Optional[np.ndarray], str]:
    """(H, W, 3) uint8 image in ``image_format`` and "", or None and what is wrong with the file."""
    try:
        return read_image(path, format=image_format), ""
    except FileNotFoundError:
        return None, "no such file"
    except Exception as e:  # PIL raises several types for a file that is not an image
        return None, f"cannot be read as an image ({type(e).__name__})"


class VideoFrames:
    """The frames of a video file as (H, W, 3) uint8 BGR arrays, with its fps and frame count.

    ``problem`` is "" when the file opened and its first frame decodes, else what went wrong.
    """

    def __init__(self, path: str):
        self.capture = cv2.VideoCapture(path)
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0  # some containers store none
        self.count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._first = None
        self.problem = ""
        if not self.capture.isOpened():
            self.problem = "cannot be opened as a video"
        else:
            ok, self._first = self.capture.read()
            if not ok:
                self.problem = "holds no frame that can be decoded"

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.problem:
            return
        yield self._first
        while True:
            ok, frame = self.capture.read()
            if not ok:
                break
            yield frame
        self.capture.release()


def open_video_writer(path: str, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """An mp4 (MPEG-4 Part 2, 'mp4v': encodable by every OpenCV build, pip wheels included)."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write the video {path} with the mp4v codec")
    return writer
