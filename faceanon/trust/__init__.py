"""Trust: show that each face really changed, measure anonymization, mark what was generated.

* identity: `IdentityModel`, `check_identity` (ArcFace by default, SFace as the Apache-2.0 option)
* attributes: `AttributeModel`, `check_attributes` (MediaPipe pose and blendshapes)
* checks: `check_result` fills FaceReport.identity_similarity / same_person / attributes
* watermark: `add_watermark`, `detect_watermark`, `read_watermark`, `add_face_watermark`,
  `face_watermark_score`, `FACE_THRESHOLD`, `provenance_pnginfo`, `provenance_for`, `read_provenance`
(Evaluation, which drives the anonymizer, lives above it: faceanon.evaluation.)

Submodules load their models (onnxruntime, mediapipe) on first use; importing this is cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "IdentityModel": "faceanon.trust.identity",
    "check_identity": "faceanon.trust.identity",
    "get_identity_model": "faceanon.trust.identity",
    "SAME_PERSON": "faceanon.trust.identity",
    "DIFFERENT_PERSON": "faceanon.trust.identity",
    "AttributeModel": "faceanon.trust.attributes",
    "check_attributes": "faceanon.trust.attributes",
    "get_attribute_model": "faceanon.trust.attributes",
    "check_result": "faceanon.trust.checks",
    "measure_reports": "faceanon.trust.checks",
    "still_recognizable": "faceanon.trust.checks",
    "identity_verdict": "faceanon.trust.checks",
    "add_watermark": "faceanon.trust.watermark",
    "detect_watermark": "faceanon.trust.watermark",
    "read_watermark": "faceanon.trust.watermark",
    "add_face_watermark": "faceanon.trust.watermark",
    "generated_face_landmarks": "faceanon.trust.watermark",
    "face_watermark_score": "faceanon.trust.watermark",
    "FACE_THRESHOLD": "faceanon.trust.watermark",
    "WatermarkReading": "faceanon.trust.watermark",
    "provenance_for": "faceanon.trust.watermark",
    "provenance_pnginfo": "faceanon.trust.watermark",
    "read_provenance": "faceanon.trust.watermark",
    "ModelFileUnavailableError": "faceanon.bundled",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'faceanon.trust' has no attribute {name!r}")
