"""Paste a new face back into the photo without seams.

The soft mask is an ellipse fitted to the face's landmarks in the aligned crop (forehead to chin,
cheek to cheek), grown and feathered with a Gaussian so that the whole face is fully replaced and
the transition lies on skin and hair around it. It is warped into the photo with the same inverse
similarity transform as the new face (bilinear). Where the warped mask is zero the output pixel
is the input pixel, bit for bit: `blend` only writes inside the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from faceanon.faces.alignment import AlignedFace

# Mask values below this are treated as zero: they could not change an 8-bit pixel anyway
# (|difference| <= 255, 255 / 512 < 0.5 rounds away), and a hard zero keeps the "outside the
# mask, bit for bit" promise exact.
MASK_FLOOR = 1 / 512


@dataclass
class PhotoMask:
    """A face mask warped into the photo: `values` (float32 in [0, 1]) covers photo[y0:y1, x0:x1]."""

    values: np.ndarray
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), inside the photo

    @property
    def slices(self) -> tuple[slice, slice]:
        x0, y0, x1, y1 = self.box
        return slice(y0, y1), slice(x0, x1)

    def full(self, shape) -> np.ndarray:
        """The mask as an array the size of the photo (zero outside the box)."""
        out = np.zeros(shape[:2], dtype=np.float32)
        out[self.slices] = self.values
        return out


def face_mask(landmarks: np.ndarray, size: int = 512, grow: float = 1.0, feather: float = 1.0) -> np.ndarray:
    """Soft face mask (float32, size x size) in aligned-crop coordinates from 5 crop landmarks.

    `grow` scales the ellipse, `feather` the width of the soft edge (both relative to defaults).
    The mask fades to zero before the crop's border, so no hard edge can appear there.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_avg = (points[0] + points[1]) / 2
    eye_to_mouth = (points[3] + points[4]) / 2 - eye_avg
    eye_mouth = max(np.hypot(*eye_to_mouth), 1.0)
    eye_eye = np.hypot(*(points[1] - points[0]))
    # The forehead reaches ~1.0 eye-mouth distance above the eyes, the chin ~0.8 below the mouth.
    centre = eye_avg + 0.4 * eye_to_mouth
    sigma = 0.1 * eye_mouth * feather
    half_height = 1.45 * eye_mouth * grow + 2 * sigma
    half_width = max(1.1 * eye_eye, 0.9 * eye_mouth) * grow + 2 * sigma
    angle = np.degrees(np.arctan2(eye_to_mouth[1], eye_to_mouth[0])) - 90.0
    supersample = 4  # draw with sub-pixel precision
    hard = np.zeros((size, size), dtype=np.uint8)
    cv2.ellipse(
        hard,
        (tuple(int(round(v * supersample)) for v in centre)),
        (int(round(half_width * supersample)), int(round(half_height * supersample))),
        angle,
        0,
        360,
        255,
        thickness=-1,
        lineType=cv2.LINE_AA,
        shift=2,
    )
    mask = cv2.GaussianBlur(hard.astype(np.float32) / 255.0, (0, 0), sigmaX=sigma)
    return mask * _border_fade(size, width=max(8, size // 24))


def _border_fade(size: int, width: int) -> np.ndarray:
    ramp = np.clip((np.arange(size) + 0.5) / width, 0, 1)
    ramp = np.minimum(ramp, ramp[::-1])
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
    return np.outer(ramp, ramp).astype(np.float32)


def warp_mask_to_photo(mask: np.ndarray, aligned: AlignedFace, shape) -> PhotoMask:
    """Carry a crop-space mask into the photo with the inverse alignment transform."""
    box = _photo_box(mask, aligned.inverse, shape)
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return PhotoMask(np.zeros((0, 0), np.float32), (0, 0, 0, 0))
    values = cv2.warpAffine(
        mask,
        _shifted(aligned.inverse, x0, y0),
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    values[values < MASK_FLOOR] = 0
    return PhotoMask(np.clip(values, 0, 1), box)


def warp_crop_to_photo(crop: np.ndarray, aligned: AlignedFace, photo_mask: PhotoMask) -> np.ndarray:
    """The new face crop, inverse-warped (bilinear) onto the mask's photo box."""
    x0, y0, x1, y1 = photo_mask.box
    return cv2.warpAffine(
        np.ascontiguousarray(crop),
        _shifted(aligned.inverse, x0, y0),
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def blend(image: np.ndarray, replacement: np.ndarray, photo_mask: PhotoMask) -> np.ndarray:
    """Mix `replacement` (the size of the mask box) into `image` (RGB or RGBA uint8) in place
    through the soft mask; only RGB changes, only where the mask is positive. Returns `image`."""
    if photo_mask.values.size == 0:
        return image
    region = image[photo_mask.slices][..., :3]
    alpha = photo_mask.values[..., None]
    mixed = region.astype(np.float32) * (1 - alpha) + replacement[..., :3].astype(np.float32) * alpha
    mixed = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    inside = photo_mask.values > 0
    region[inside] = mixed[inside]
    return image


def paste_face(
    image: np.ndarray,
    new_crop: np.ndarray,
    aligned: AlignedFace,
    mask: np.ndarray | None = None,
    color_match: bool = False,
) -> PhotoMask:
    """Paste a generated crop back into `image` (modified in place); returns the mask used."""
    if mask is None:
        mask = face_mask(aligned.landmarks, aligned.size)
    new_crop = np.asarray(new_crop, dtype=np.uint8)[..., :3]
    if new_crop.shape[:2] != (aligned.size, aligned.size):
        new_crop = cv2.resize(new_crop, (aligned.size, aligned.size), interpolation=cv2.INTER_LANCZOS4)
    if color_match:
        new_crop = match_colors(new_crop, aligned.crop, mask)
    photo_mask = warp_mask_to_photo(mask, aligned, image.shape)
    if photo_mask.values.size:
        blend(image, warp_crop_to_photo(new_crop, aligned, photo_mask), photo_mask)
    return photo_mask


def match_colors(source: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift `source`'s colours (mean and spread per Lab channel, weighted by the mask) to
    `reference`'s, so a generated face takes the photo's lighting and white balance."""
    weights = mask.reshape(-1, 1).astype(np.float64)
    total = weights.sum()
    if total < 1:
        return source
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
    ref = (
        cv2.cvtColor(np.ascontiguousarray(reference[..., :3]), cv2.COLOR_RGB2LAB)
        .reshape(-1, 3)
        .astype(np.float64)
    )
    src_mean, ref_mean = (weights * src).sum(0) / total, (weights * ref).sum(0) / total
    src_std = np.sqrt((weights * (src - src_mean) ** 2).sum(0) / total) + 1e-3
    ref_std = np.sqrt((weights * (ref - ref_mean) ** 2).sum(0) / total) + 1e-3
    ratio = np.clip(ref_std / src_std, 0.5, 2.0)  # never amplify noise wildly
    out = (src - src_mean) * ratio + ref_mean
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(source.shape)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB)


def _photo_box(mask: np.ndarray, inverse: np.ndarray, shape) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask >= MASK_FLOOR)
    if rows.size == 0:
        return (0, 0, 0, 0)
    corners = np.array(
        [
            [cols.min(), rows.min()],
            [cols.min(), rows.max()],
            [cols.max(), rows.max()],
            [cols.max(), rows.min()],
        ],
        dtype=np.float64,
    )
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    height, width = shape[:2]
    x0, y0 = np.floor(points.min(0)).astype(int) - 2
    x1, y1 = np.ceil(points.max(0)).astype(int) + 3
    return (int(max(x0, 0)), int(max(y0, 0)), int(min(x1, width)), int(min(y1, height)))


def _shifted(inverse: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The crop -> photo transform re-expressed for a destination box starting at (x0, y0)."""
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    return shifted
