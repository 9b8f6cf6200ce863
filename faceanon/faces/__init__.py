"""Faces in photos: detection, FFHQ-style alignment, seamless paste-back, redaction."""

from faceanon.faces.alignment import CROP_SIZE, AlignedFace, align_face, alignment_matrix, ffhq_quad
from faceanon.faces.blending import PhotoMask, blend, face_mask, match_colors, paste_face
from faceanon.faces.detection import (
    DETECTOR_NAMES,
    Detector,
    DetectorUnavailableError,
    InsightFaceDetector,
    ScrfdDetector,
    YuNetDetector,
    create_detector,
)
from faceanon.faces.redaction import REDACTION_METHODS, redact_face

__all__ = [
    "CROP_SIZE",
    "AlignedFace",
    "align_face",
    "alignment_matrix",
    "ffhq_quad",
    "PhotoMask",
    "blend",
    "face_mask",
    "match_colors",
    "paste_face",
    "DETECTOR_NAMES",
    "Detector",
    "DetectorUnavailableError",
    "InsightFaceDetector",
    "ScrfdDetector",
    "YuNetDetector",
    "create_detector",
    "REDACTION_METHODS",
    "redact_face",
]
