"""What faceanon reports about each face it found and what it did to it.

These plain dataclasses are the contract between the face tooling, the engine, the trust checks,
the CLI and the web app: every layer fills in its part, every front end reads the same fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image


@dataclass
class DetectedFace:
    """One face found in a photo, in the photo's pixel coordinates (after EXIF orientation)."""

    index: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    # (5, 2) float32, insightface order, image-left first: left eye, right eye, nose tip,
    # left mouth corner, right mouth corner.
    landmarks: np.ndarray
    score: float

    @property
    def size(self) -> float:
        """Face size in pixels: the larger side of the box."""
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, y1 - y0))

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": np.round(np.asarray(self.landmarks, dtype=float), 2).tolist(),
            "score": round(float(self.score), 4),
        }


@dataclass
class FaceReport:
    """What happened to one detected face."""

    face: DetectedFace
    changed: bool = False
    method: str | None = None  # "diffusion", "blur", "pixelate", "solid", or None if untouched
    seed: int | None = None  # the per-face seed actually used (diffusion only)
    degree: float | None = None
    message: str = ""  # why a face was skipped or redacted instead, for people
    # Filled by the trust checks (faceanon.trust) when they run.
    identity_similarity: float | None = None
    same_person: bool | None = None
    identity_note: str = ""  # e.g. "too small to verify (18 px; ...)": no verdict where the model is noise
    attributes: dict = field(default_factory=dict)  # e.g. yaw/pitch/roll and expression deltas
    # Filled by the anonymizer's leak guard (faceanon.faces.leak_guard) and keep-list (faceanon.keep).
    guard: str = ""  # e.g. "found only on the second pass": what the leak guard found and did
    kept_as: str | None = None  # the kept person this face matched (left untouched)
    kept_similarity: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["face"] = self.face.to_dict()
        return out


@dataclass
class AnonymizationResult:
    """The output photo and the per-face report."""

    image: Image.Image
    faces: list[FaceReport]
    message: str = ""

    @property
    def num_changed(self) -> int:
        return sum(f.changed for f in self.faces)

    def to_dict(self) -> dict:
        return {
            "message": self.message,
            "num_faces": len(self.faces),
            "num_changed": self.num_changed,
            "faces": [f.to_dict() for f in self.faces],
        }
