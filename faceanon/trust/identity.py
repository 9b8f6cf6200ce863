"""Identity check: does an anonymized face still look like the same person to a face recognizer?

Two offline recognizers, both fed the standard 112x112 ArcFace crop aligned from 5 landmarks:

* `arcface` (default when installed): model InsightFace ArcFace MobileFaceNet `w600k_mbf.onnx`
  (buffalo_s), 512-d; licence of the weights: non-commercial (InsightFace model terms); threshold 0.30.
* `sface`: model OpenCV Zoo SFace `face_recognition_sface_2021dec_int8bq.onnx`, 128-d; licence of the
  weights: Apache-2.0; threshold 0.363.

The verdict is "same person" when the cosine similarity is at or above the model's threshold.
ArcFace 0.30 is a little below DeepFace's ArcFace setting (cosine distance 0.68, i.e. similarity 0.32):
erring low calls more faces "same person", the safe side for an anonymizer. Measured margins (ArcFace /
SFace): the same person in two different photos (Obama x3, Biden x2) 0.66-0.94 / 0.73-0.93; a face
against itself after JPEG q=75 or a half-size resize >= 0.97 / >= 0.98; pairs of 10 different
people (astronaut, Grace Hopper, insightface t1.jpg, US government photos) <= 0.20 / <= 0.30;
13 faces at 64-512 px under faceanon's blur / pixelate / solid redaction, any strength, <= 0.23 / 0.27 / 0.14
(ArcFace; benchmarks/redaction_strength.py). SFace 0.363 is the threshold OpenCV publishes
with the model (its `FaceRecognizerSF` sample); it separates people less well.

ArcFace is the default because an identity check must not call a still-recognizable face
"different": it separates identities better. Its weights are for non-commercial use only; set
`FACEANON_IDENTITY_MODEL=sface` (or pass `IdentityModel("sface")`) for the Apache-2.0 model.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from faceanon.bundled import ARCFACE_FILE, SFACE_FILE, BundledFile, ModelFileUnavailableError
from faceanon.errors import ImageInputError
from faceanon.results import DetectedFace

SAME_PERSON = "same person"
DIFFERENT_PERSON = "different person"
TOO_SMALL_TO_VERIFY = "too small to verify"
# Below this face size (pixels, the larger side of the detector's box) verdicts are noise. Measured with
# benchmarks/redaction_strength.py (13 real faces downscaled, landmarks as YuNet finds them at that size,
# ArcFace): at 8-12 px different people reach 0.43 (7 of 74 pairs "same person"); a face against its
# own blur scores 0.57 at 12 px, 0.46 at 16, 0.31-0.34 at 28-32 px, and stays under 0.30 from 40 px on,
# where different people stay <= 0.22 and the same face resampled >= 0.74. No verdict is given below.
MIN_VERIFIABLE_FACE = 40
ENV_VAR = "FACEANON_IDENTITY_MODEL"

# InsightFace's ArcFace template: where the 5 landmarks go in the 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class RecognizerSpec:
    name: str
    file: BundledFile
    threshold: float
    licence: str
    description: str
    keep_threshold: float  # faceanon.keep: stricter, a false match would leave a stranger visible


RECOGNIZERS = {
    "arcface": RecognizerSpec(
        "arcface",
        ARCFACE_FILE,
        0.30,
        "non-commercial (InsightFace model terms)",
        "ArcFace MobileFaceNet (InsightFace buffalo_s w600k_mbf)",
        0.40,
    ),
    "sface": RecognizerSpec("sface", SFACE_FILE, 0.363, "Apache-2.0", "SFace (OpenCV Zoo, int8)", 0.50),
}


def default_model_name() -> str:
    """`FACEANON_IDENTITY_MODEL` if set, else ArcFace when its file is installed, else SFace."""
    chosen = os.environ.get(ENV_VAR, "").strip().lower()
    if chosen:
        return chosen
    return "arcface" if ARCFACE_FILE.available() else "sface"


def align_for_recognition(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace crop (same transform as insightface.utils.face_align.norm_crop)."""
    import cv2
    from skimage.transform import SimilarityTransform

    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    transform = SimilarityTransform.from_estimate(points, ARCFACE_TEMPLATE)
    if not transform:  # degenerate landmarks (all in one point)
        raise ImageInputError(
            "The face's landmarks are degenerate; it cannot be aligned for the identity check."
        )
    return cv2.warpAffine(_rgb_uint8(image), transform.params[:2], (112, 112), borderValue=0)


def _rgb_uint8(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageInputError(
            f"The identity check needs an RGB image with 8 bits per channel, got shape {array.shape}, "
            f"type {array.dtype}."
        )
    return np.ascontiguousarray(array[:, :, :3])


class IdentityModel:
    """An identity embedding: `embed(image, landmarks)` -> unit vector, `similarity(a, b)` -> cosine."""

    def __init__(self, name: str | None = None):
        name = (name or default_model_name()).lower()
        if name not in RECOGNIZERS:
            raise ValueError(f"Unknown identity model {name!r}; choose one of {', '.join(RECOGNIZERS)}.")
        self.spec = RECOGNIZERS[name]
        self._run = _load_arcface() if name == "arcface" else _load_sface()
        self._lock = threading.Lock()  # neither runtime promises thread safety for one session

    name = property(lambda self: self.spec.name)
    threshold = property(lambda self: self.spec.threshold)
    keep_threshold = property(lambda self: self.spec.keep_threshold)
    licence = property(lambda self: self.spec.licence)

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        crop = align_for_recognition(image, landmarks)
        with self._lock:
            vector = np.asarray(self._run(crop), dtype=np.float64).ravel()
        return vector / max(np.linalg.norm(vector), 1e-12)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

    def same_person(self, similarity: float) -> bool:
        return similarity >= self.threshold

    def verdict(self, similarity: float) -> str:
        return SAME_PERSON if self.same_person(similarity) else DIFFERENT_PERSON

    def compare(self, image_a, landmarks_a, image_b, landmarks_b) -> float:
        return self.similarity(self.embed(image_a, landmarks_a), self.embed(image_b, landmarks_b))

    def __repr__(self) -> str:
        return f"IdentityModel({self.name!r}, threshold={self.threshold})"


def verifiable(face_size: float) -> bool:
    """Whether a face of this size (px) is large enough for an identity verdict to mean something."""
    return face_size >= MIN_VERIFIABLE_FACE


def too_small_note(face_size: float) -> str:
    return f"{TOO_SMALL_TO_VERIFY} ({face_size:.0f} px; identity verdicts need {MIN_VERIFIABLE_FACE} px)"


def _load_arcface():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    path = str(ARCFACE_FILE.path())
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ModelFileUnavailableError(f"The ArcFace identity model could not be loaded: {error}") from error
    input_name = session.get_inputs()[0].name

    def run(crop: np.ndarray) -> np.ndarray:
        blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]  # RGB, [-1, 1]
        return session.run(None, {input_name: blob})[0]

    return run


def _load_sface():
    # onnxruntime rejects this int8 file (its weights are declared as graph inputs); OpenCV reads it.
    # OpenCV 5's new graph engine also trips on it, so ask for the classic one where it exists.
    import cv2

    path = str(SFACE_FILE.path())
    try:
        engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
        net = (
            cv2.dnn.readNetFromONNX(path, engine=engine)
            if engine is not None
            else cv2.dnn.readNetFromONNX(path)
        )
    except cv2.error as error:
        raise ModelFileUnavailableError(f"The SFace identity model could not be loaded: {error}") from error

    def run(crop: np.ndarray) -> np.ndarray:
        net.setInput(crop.astype(np.float32).transpose(2, 0, 1)[None].copy())  # RGB, 0..255
        return net.forward()

    return run


@lru_cache(maxsize=4)
def get_identity_model(name: str | None = None) -> IdentityModel:
    """A shared, loaded model (loading takes ~0.1 s; one per process is enough)."""
    return IdentityModel(name)


def check_identity(
    original: np.ndarray,
    result: np.ndarray,
    faces: Sequence[DetectedFace],
    model: IdentityModel | None = None,
) -> list[float]:
    """Cosine similarity between each original face and the same place in `result`.

    The original landmarks align both crops: anonymization keeps pose and position, and a
    redacted face has no landmarks of its own left to find."""
    model = model or get_identity_model()
    original, result = np.asarray(original), np.asarray(result)
    if original.shape[:2] != result.shape[:2]:
        raise ImageInputError(
            f"The original ({original.shape[1]}x{original.shape[0]}) and the result "
            f"({result.shape[1]}x{result.shape[0]}) must have the same size for the identity check."
        )
    return [model.compare(original, face.landmarks, result, face.landmarks) for face in faces]
