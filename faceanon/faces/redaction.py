"""Redaction methods that need no diffusion weights: blur, pixelate, solid fill.

Each one computes a redacted version of the face's neighbourhood and mixes it in through the
same soft face mask the diffusion path uses, so pixels outside the mask stay bit for bit.
`strength` in (0, 1] scales how much is hidden; 1 (the default) hides the most, and even the
weakest strength leaves no face the identity model still calls the same person (see BLUR_SIGMA).
"""

from __future__ import annotations

import cv2
import numpy as np

from faceanon.faces.alignment import AlignedFace
from faceanon.faces.blending import PhotoMask, blend, face_mask, warp_mask_to_photo
from faceanon.registry import REDACTION_METHODS


def redact_face(
    image: np.ndarray,
    aligned: AlignedFace,
    method: str = "blur",
    strength: float = 1.0,
    color: tuple[int, int, int] = (0, 0, 0),
    mask: np.ndarray | None = None,
) -> PhotoMask:
    """Redact one face of `image` (RGB/RGBA uint8, modified in place); returns the mask used."""
    if method not in REDACTORS:
        raise ValueError(
            f"Unknown redaction method {method!r}; choose one of {', '.join(REDACTION_METHODS)}."
        )
    if not 0 < strength <= 1:
        raise ValueError(f"Redaction strength must be in (0, 1], got {strength}.")
    if mask is None:
        mask = face_mask(aligned.landmarks, aligned.size)
    photo_mask = warp_mask_to_photo(mask, aligned, image.shape)
    if photo_mask.values.size == 0:
        return photo_mask
    face_size = aligned.size / aligned.scale / 2  # the FFHQ square is about twice the face
    replacement, photo_mask = REDACTORS[method](image[..., :3], photo_mask, face_size, strength, color)
    blend(image, replacement, photo_mask)
    return photo_mask


# How much each method hides, from the weakest strength (-> 0) to the strongest (1). Chosen with
# benchmarks/redaction_strength.py (ArcFace over 13 real faces at 64-512 px, threshold 0.30): the
# weakest setting must still make every face "different person". Measured highest similarity per
# setting: blur sigma = face/6: 0.28 (the old default, too close), face/4: 0.22, face/3: 0.21;
# pixelate 8 blocks across the face: 0.44, 6: 0.39, 5: 0.31, 4: 0.28, 3: 0.27; solid at opacity 0.5 / 0.8:
# 0.97 / 0.91 (a see-through fill hides nothing from a recognizer), opaque: 0.14.
BLUR_SIGMA = (1 / 4, 1 / 3)  # times the face size
PIXELATE_BLOCKS = (4, 3)  # blocks across the face


def _blur(
    rgb, photo_mask: PhotoMask, face_size: float, strength: float, color
) -> tuple[np.ndarray, PhotoMask]:
    weakest, strongest = BLUR_SIGMA
    sigma = max(1.0, (weakest + (strongest - weakest) * strength) * face_size)
    # Blur a margin around the box too, so the result does not smear in the box's borders.
    margin = int(3 * sigma)
    x0, y0, x1, y1 = photo_mask.box
    height, width = rgb.shape[:2]
    bx0, by0, bx1, by1 = (
        max(x0 - margin, 0),
        max(y0 - margin, 0),
        min(x1 + margin, width),
        min(y1 + margin, height),
    )
    blurred = _gaussian(np.ascontiguousarray(rgb[by0:by1, bx0:bx1]), sigma)
    return blurred[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0], photo_mask


def _gaussian(region: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur; wide ones run on a reduced copy (a blur of sigma s leaves nothing finer than
    s / 4 px to lose), which keeps a 500 px face at milliseconds instead of seconds."""
    factor = max(1.0, sigma / 8)
    if factor == 1.0:
        return cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)
    height, width = region.shape[:2]
    small = cv2.resize(
        region, (max(1, round(width / factor)), max(1, round(height / factor))), interpolation=cv2.INTER_AREA
    )
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma / factor, borderType=cv2.BORDER_REFLECT_101)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _pixelate(
    rgb, photo_mask: PhotoMask, face_size: float, strength: float, color
) -> tuple[np.ndarray, PhotoMask]:
    region = np.ascontiguousarray(rgb[photo_mask.slices])
    most, fewest = PIXELATE_BLOCKS
    block = max(2, int(round(face_size / (most - (most - fewest) * strength))))
    height, width = region.shape[:2]
    small = cv2.resize(
        region, (max(1, -(-width // block)), max(1, -(-height // block))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(
        small, (small.shape[1] * block, small.shape[0] * block), interpolation=cv2.INTER_NEAREST
    )[:height, :width], photo_mask


def _solid(
    rgb, photo_mask: PhotoMask, face_size: float, strength: float, color
) -> tuple[np.ndarray, PhotoMask]:
    # Always opaque, whatever the strength: at opacity 0.8 faces still matched their person (0.91).
    replacement = np.empty(photo_mask.values.shape + (3,), np.uint8)
    replacement[:] = np.asarray(color, dtype=np.uint8)
    return replacement, photo_mask


# The registry of redaction methods: name (faceanon.registry.REDACTION_METHODS) -> function
# (photo RGB, its PhotoMask, face size px, strength, colour) -> (replacement for the mask box,
# mask to blend with).
REDACTORS = {"blur": _blur, "pixelate": _pixelate, "solid": _solid}
