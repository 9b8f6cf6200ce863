"""faceanon: face anonymization made simple (Kung et al., WACV 2025) on stock diffusers."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Heavy modules (torch, diffusers, onnxruntime) are imported on first use so that
# `import faceanon` and the CLI's --help stay fast.
_LAZY = {
    "FaceAnonPipeline": "faceanon.pipeline",
    "FaceAnonymizer": "faceanon.anonymizer",
    "WeightsNotFoundError": "faceanon.errors",
    "AnonymizationResult": "faceanon.results",
    "DetectedFace": "faceanon.results",
    "FaceReport": "faceanon.results",
}

__all__ = [*_LAZY, "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from faceanon.anonymizer import FaceAnonymizer  # noqa: F401
    from faceanon.errors import WeightsNotFoundError  # noqa: F401
    from faceanon.pipeline import FaceAnonPipeline  # noqa: F401
    from faceanon.results import AnonymizationResult, DetectedFace, FaceReport  # noqa: F401


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'faceanon' has no attribute {name!r}")
