"""The recall mode's detector: bundled detectors and test-time passes, merged into one list of faces.

    detector = create_detector("recall")      # what `--mode recall` (the default) runs
    faces = detector.detect(rgb_uint8_array)

Passes, each chosen for a kind of face the others miss (measured with benchmarks/recall):

* CenterFace on the upright photo reduced to at most 1280 px: the strongest single detector here.
* CenterFace on the photo turned by 90, 180 and 270 degrees, at most 640 px: photos stored
  sideways or upside down without EXIF, people lying down. A face in such a photo is large
  enough for the reduced size; the three passes together cost ~3/4 of the upright one.
* YuNet on the photo at full resolution (up to 4096 px) or, for photos under 1280 px, enlarged
  twice: faces too small for the reduced CenterFace pass. YuNet is ~10x cheaper per pixel;
  only its small faces are kept, with a higher threshold, since it reports more false faces.

Boxes are merged by overlap (best score first); the kept face takes the box and landmarks of its
best-scoring detection, mapped back to the upright photo (a turned pass's points turn with the
face, so index 0 stays the person's right eye and the aligner turns the crop upright).

Budget: about the same work whatever the photo's size (at most 1280 px of CenterFace input, 3 x 640 px,
a YuNet pass at 0.75-2x): measured 2.0 CPU-seconds (all threads) for a 12 MP photo, 1.3 for 1 MP,
so about 1-1.5 s on 2 idle cores.
"""

from __future__ import annotations

import numpy as np

from faceanon.faces.detection import (
    CenterFaceDetector,
    Detector,
    YuNetDetector,
    _non_max_suppression,
)


class RecallDetector(Detector):
    """CenterFace upright + CenterFace turned + YuNet for small faces; see the module docstring."""

    name = "recall"

    def __init__(
        self,
        threshold: float = 0.5,
        min_face_size: float = 0.0,
        max_side: int = 1280,
        turned_side: int = 640,
        small_face: float = 40,
        small_threshold: float = 0.7,
        turns: tuple[int, ...] = (1, 2, 3),
        small_side: int = 2048,
    ):
        super().__init__(threshold, min_face_size)
        self.max_side, self.turned_side, self.turns = int(max_side), int(turned_side), tuple(turns)
        self.small_face, self.small_threshold = float(small_face), float(small_threshold)
        self.small_side = int(small_side)
        self._centerface = CenterFaceDetector(threshold=min(self.threshold, 0.3), max_side=max_side)
        self._yunet = YuNetDetector(threshold=min(self.small_threshold, 0.5))

    def _detect(self, bgr):
        found = [self._centerface._detect(bgr)]
        reduced, scale = _reduced(bgr, self.turned_side)  # reduce once, then turn the small copy
        for turns in self.turns:
            boxes, scores, landmarks = self._turned_pass(reduced, turns)
            found.append((boxes / scale, scores, landmarks / scale))
        found.append(self._small_faces(bgr))
        boxes = np.concatenate([f[0] for f in found]).reshape(-1, 4)
        scores = np.concatenate([f[1] for f in found])
        landmarks = np.concatenate([f[2] for f in found]).reshape(-1, 5, 2)
        keep = _non_max_suppression(boxes, scores, max_overlap=0.3)
        return boxes[keep], scores[keep], landmarks[keep]

    def _turned_pass(self, bgr, turns: int):
        """CenterFace on the photo turned counter-clockwise `turns` quarter turns, mapped back."""
        height, width = bgr.shape[:2]
        turned = np.ascontiguousarray(np.rot90(bgr, turns))
        boxes, scores, landmarks = self._centerface.detect_scaled(turned, 1.0, floor=self.threshold)
        points = _unturn(landmarks.reshape(-1, 2), turns, width, height).reshape(-1, 5, 2)
        corners = _unturn(boxes.reshape(-1, 2), turns, width, height).reshape(-1, 2, 2)
        return np.concatenate([corners.min(1), corners.max(1)], 1), scores, points

    def _small_faces(self, bgr):
        """YuNet's faces too small for the reduced CenterFace pass, on the photo resized to
        `small_side` px (enlarged up to twice, reduced to 3/4 at most): small photos get their tiny
        faces enlarged, large ones a pass at a size YuNet still sees 30 px faces at."""
        longest = max(bgr.shape[:2])
        # Large photos: at least 3/4 of full size, or faces of 30-40 px in a 12 MP photo are lost.
        scale = min(2.0, max(self.small_side / longest, 0.75))
        boxes, scores, landmarks = self._yunet._detect_at(bgr, scale)
        # CenterFace sees the photo at max_side: faces under `small_face` px there are YuNet's to add.
        centerface_scale = min(1.0, self.max_side / longest)
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * centerface_scale
        keep = (sizes < self.small_face) & (scores >= self.small_threshold)
        return boxes[keep], scores[keep], landmarks[keep]


def _reduced(bgr: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    import cv2

    scale = min(1.0, side / max(bgr.shape[:2]))
    if scale == 1.0:
        return bgr, 1.0
    return cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale


def _unturn(points: np.ndarray, turns: int, width: int, height: int) -> np.ndarray:
    """Points of np.rot90(photo, turns) back to the photo (width x height) they came from."""
    x, y = points[:, 0], points[:, 1]
    k = turns % 4
    if k == 1:  # turned: (x, y) -> (y, width - 1 - x)
        return np.stack([width - 1 - y, x], 1)
    if k == 2:
        return np.stack([width - 1 - x, height - 1 - y], 1)
    if k == 3:  # turned: (x, y) -> (height - 1 - y, x)
        return np.stack([y, height - 1 - x], 1)
    return points.copy()
