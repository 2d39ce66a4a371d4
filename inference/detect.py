"""The face detector: facenet-pytorch's MTCNN (Zhang et al., 2016), whose weights ship inside its
wheel (``facenet_pytorch/data/{pnet,rnet,onet}.pt``); nothing is downloaded.

`make` installs it from requirements-nodeps.txt with ``pip install --no-deps``: the package pins an
old torch, but runs on ours. Its own imports (requests, torchvision, tqdm) come from requirements.txt;
:func:`make_detector` checks that they import and says what to install when one does not.

A photo is searched on a copy whose long side is at most ``detect_side`` pixels (faces of a
24-megapixel photo are large; searching the full photo would cost seconds and gigabytes), and the
boxes and landmarks are scaled back to the photo's pixels (centre of the top-left pixel = (0, 0)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
from PIL import Image

from inference.errors import InferenceInputError

#: Long side of the copy a photo is searched on.
DETECT_SIDE = 1024

INSTALL = "pip install requests && pip install --no-deps facenet-pytorch==2.6.0"


@dataclass
class Face:
    """One face of a photo, in the photo's pixel coordinates."""
    landmarks: np.ndarray              # [5, 2]: left eye, right eye, nose tip, left / right mouth corner
    box: np.ndarray                    # [4]: x0, y0, x1, y1
    score: Optional[float] = None      # the detector's confidence (None for given landmarks)
    source: str = "detector"           # "detector" or the landmark file it came from

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray, source: str) -> "Face":
        """A face known by its landmarks only; its box is the FFHQ-style square around them (the
        eye-mouth extent grown as the aligned crop grows it), for display."""
        pts = np.asarray(landmarks, np.float64)
        centre = pts.mean(0)
        half = 1.2 * np.abs(pts - centre).max()
        return cls(pts, np.array([*(centre - half), *(centre + half)]), None, source)

    def record(self) -> dict:
        return {"landmarks": np.round(self.landmarks, 3).tolist(), "box": np.round(self.box, 2).tolist(),
                "score": None if self.score is None else round(float(self.score), 5), "source": self.source}


class Detector:
    """MTCNN returning every face of a photo, largest first."""

    def __init__(self, device: torch.device | str = "cpu", detect_side: int = DETECT_SIDE):
        from facenet_pytorch import MTCNN  # optional dependency: imported only when a detector is made
        self.mtcnn = MTCNN(keep_all=True, device=torch.device(device))
        self.detect_side = detect_side

    def __call__(self, image: np.ndarray) -> List[Face]:
        h, w = image.shape[:2]
        img = Image.fromarray(image)
        factor = max(h, w) / self.detect_side
        if factor > 1:
            img = img.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.BILINEAR)
        sx, sy = w / img.width, h / img.height
        with torch.no_grad():
            boxes, scores, points = self.mtcnn.detect(img, landmarks=True)
        if boxes is None:
            return []
        boxes = np.asarray(boxes, np.float64)
        points = np.asarray(points, np.float64)
        # Detector pixel u (centre at u) -> photo pixel (u + 0.5) * s - 0.5.
        boxes = (boxes + 0.5) * [sx, sy, sx, sy] - 0.5
        points = (points + 0.5) * [sx, sy] - 0.5
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return [Face(points[i], boxes[i], float(scores[i])) for i in np.argsort(-area, kind="stable")]


class DetectorUnavailable(InferenceInputError):
    """The detector cannot be used; ``reason`` says why in a few words (for callers that phrase their
    own sentence, like the editor)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def make_detector(device: torch.device | str = "cpu", detect_side: int = DETECT_SIDE) -> Detector:
    """The detector, or one sentence saying what to install (or to pass landmark files instead)."""
    try:
        # optional dependency, imported only here: the check that it and its imports work with our torch
        import facenet_pytorch  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "facenet_pytorch":
            reason = f"facenet-pytorch is installed but cannot be imported (no module {e.name!r})"
            raise DetectorUnavailable(f"the face detector {reason}; install it with `pip install {e.name}`, or "
                                      f"pass --landmarks.", reason) from None
        raise DetectorUnavailable(f"no --landmarks given and the face detector is not installed; run `make "
                                  f"venv` (or `{INSTALL}`), or pass --landmarks (5 points per image: left "
                                  f"eye, right eye, nose tip, left and right mouth corners).",
                                  "facenet-pytorch is not installed") from None
    except ImportError as e:
        reason = f"facenet-pytorch cannot be imported with this PyTorch ({e})"
        raise DetectorUnavailable(f"the face detector {reason}; reinstall it with `{INSTALL}`, or pass "
                                  f"--landmarks.", reason) from None
    return Detector(device, detect_side)
