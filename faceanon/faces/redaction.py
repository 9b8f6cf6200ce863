"""Redaction methods that need no diffusion weights: blur, pixelate, solid fill.

Each one computes a redacted version of the face's neighbourhood and mixes it in through the
same soft face mask the diffusion path uses, so pixels outside the mask stay bit for bit.
`strength` in (0, 1] scales how much is hidden; 1 (the default) hides the most.
"""

from __future__ import annotations

import cv2
import numpy as np

from faceanon.faces.alignment import AlignedFace
from faceanon.faces.blending import PhotoMask, blend, face_mask, warp_mask_to_photo
from faceanon.registry import REDACTION_METHODS


def redact_face(image: np.ndarray, aligned: AlignedFace, method: str = "blur", strength: float = 1.0,
                color: tuple[int, int, int] = (0, 0, 0), mask: np.ndarray | None = None) -> PhotoMask:
    """Redact one face of `image` (RGB/RGBA uint8, modified in place); returns the mask used."""
    if method not in REDACTORS:
        raise ValueError(f"Unknown redaction method {method!r}; choose one of {', '.join(REDACTION_METHODS)}.")
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


def _blur(rgb, photo_mask: PhotoMask, face_size: float, strength: float, color) -> tuple[np.ndarray, PhotoMask]:
    # Blur a margin around the box too, so the result does not smear in the box's borders.
    sigma = max(1.0, strength * face_size / 6)
    margin = int(3 * sigma)
    x0, y0, x1, y1 = photo_mask.box
    height, width = rgb.shape[:2]
    bx0, by0, bx1, by1 = max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, width), min(y1 + margin, height)
    blurred = cv2.GaussianBlur(np.ascontiguousarray(rgb[by0:by1, bx0:bx1]), (0, 0), sigmaX=sigma,
                               borderType=cv2.BORDER_REFLECT_101)
    return blurred[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0], photo_mask


def _pixelate(rgb, photo_mask: PhotoMask, face_size: float, strength: float, color) -> tuple[np.ndarray, PhotoMask]:
    region = np.ascontiguousarray(rgb[photo_mask.slices])
    # strength 1 -> ~6 blocks across the face, strength 0.1 -> ~30.
    blocks_per_face = 6 + (1 - strength) * 27
    block = max(2, int(round(face_size / blocks_per_face)))
    height, width = region.shape[:2]
    small = cv2.resize(region, (max(1, -(-width // block)), max(1, -(-height // block))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (small.shape[1] * block, small.shape[0] * block),
                      interpolation=cv2.INTER_NEAREST)[:height, :width], photo_mask


def _solid(rgb, photo_mask: PhotoMask, face_size: float, strength: float, color) -> tuple[np.ndarray, PhotoMask]:
    replacement = np.empty(photo_mask.values.shape + (3,), np.uint8)
    replacement[:] = np.asarray(color, dtype=np.uint8)
    return replacement, PhotoMask(photo_mask.values * strength, photo_mask.box)  # strength = opacity


# The registry of redaction methods: name (faceanon.registry.REDACTION_METHODS) -> function
# (photo RGB, its PhotoMask, face size px, strength, colour) -> (replacement for the mask box, mask to blend with).
REDACTORS = {"blur": _blur, "pixelate": _pixelate, "solid": _solid}
