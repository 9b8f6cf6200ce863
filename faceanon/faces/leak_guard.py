"""Leak guard: look for faces again on the anonymized frame, and hide what is still there.

After the faces of a frame are replaced or redacted, the guard runs ONE more detection pass on the
output, with the same detector at a lower confidence threshold (GUARD_THRESHOLD_FACTOR times the
detector's, so faces the first pass just missed are found too). Two kinds of leak are redacted
(blur by default, at full strength):

* a face found only on the second pass: a detection on the output that is not the same face as
  any face of the first pass (`same_face`: IoU >= 0.3, or half of the smaller box inside the other).
  Faces of the first pass that were deliberately left (a kept person, a face not selected, a small
  face with small_face_method=None) count as faces of the first pass: the guard never touches them.
  When the caller chose faces (`faces=[...]`), new faces are reported but left: only chosen faces
  change.
* a changed face the identity check still calls the original person, where the face is at least
  MIN_VERIFIABLE_FACE px (below that the identity model cannot tell people apart).

The guard's redactions use a face mask GUARD_MASK_GROW times larger than the first pass's (what
was missed may be a face whose landmarks are a little off). The guard never loops: its own
redactions are measured (identity) but not detected again.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from faceanon.faces.detection import Detector
from faceanon.results import DetectedFace

GUARD_THRESHOLD_FACTOR = 5 / 6  # YuNet 0.6 -> 0.5; SCRFD 0.5 -> 0.42
GUARD_MASK_GROW = 1.2  # the guard's redactions cover more than the first pass's mask: it missed something
SAME_FACE_IOU = 0.3
SAME_FACE_INSIDE = 0.5
FOUND_ON_SECOND_PASS = "found only on the second pass"
STILL_SAME_PERSON = "still the same person"


def guard_mask(aligned) -> np.ndarray:
    """The soft face mask the guard redacts with (aligned-crop coordinates)."""
    from faceanon.faces.blending import face_mask

    return face_mask(aligned.landmarks, aligned.size, grow=GUARD_MASK_GROW)


def guard_detector(detector: Detector, factor: float = GUARD_THRESHOLD_FACTOR) -> Detector:
    """The second pass's detector: `detector` itself (its loaded model and lock are shared) with a
    lower reporting threshold."""
    second = copy.copy(detector)
    second.threshold = detector.threshold * factor
    return second


def same_face(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two boxes (x0, y0, x1, y1) are the same face: IoU >= SAME_FACE_IOU, or at least
    SAME_FACE_INSIDE of the smaller box lies inside the other (a detection of part of a face, or
    of a blurred face whose box shrank)."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    area_a, area_b = max(ax1 - ax0, 0) * max(ay1 - ay0, 0), max(bx1 - bx0, 0) * max(by1 - by0, 0)
    if inter <= 0:
        return False
    return (
        inter / (area_a + area_b - inter) >= SAME_FACE_IOU or inter / min(area_a, area_b) >= SAME_FACE_INSIDE
    )


def new_faces(
    found: Sequence[DetectedFace], known: Sequence[DetectedFace], first_index: int
) -> list[DetectedFace]:
    """The faces of `found` (second pass) that are none of `known` (first pass), re-indexed from
    `first_index` on so that the frame's face numbers stay unique."""
    fresh = [face for face in found if not any(same_face(face.box, other.box) for other in known)]
    return [
        DetectedFace(first_index + i, face.box, np.asarray(face.landmarks, np.float32), face.score)
        for i, face in enumerate(fresh)
    ]


__all__ = [
    "FOUND_ON_SECOND_PASS",
    "GUARD_THRESHOLD_FACTOR",
    "STILL_SAME_PERSON",
    "GUARD_MASK_GROW",
    "guard_detector",
    "guard_mask",
    "new_faces",
    "same_face",
]
