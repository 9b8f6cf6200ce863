"""FFHQ-style alignment: a 512x512 crop of a face from its 5 landmarks, and the way back.

The model was trained on FFHQ / CelebA-HQ crops. FFHQ's recipe (NVlabs/ffhq-dataset) builds an
oriented square from the eyes and the mouth:

    eye_avg, mouth_avg        centres of the two eyes and of the two mouth corners
    eye_to_eye, eye_to_mouth  eye_right - eye_left, mouth_avg - eye_avg
    x = eye_to_eye - rot90(eye_to_mouth), normalised, scaled by
        max(2.0 * |eye_to_eye|, 1.8 * |eye_to_mouth|)
    y = rot90(x);  centre c = eye_avg + 0.1 * eye_to_mouth
    square corners c - x - y (top-left), c - x + y, c + x + y, c + x - y

The map photo -> crop is therefore a similarity transform (rotation, uniform scale, shift). The
crop may reach outside the photo; that part is filled by reflection so the model sees plausible
context instead of black bars. The inverse transform is kept for paste-back.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_SIZE = 512


@dataclass
class AlignedFace:
    """A face warped to the model's crop, with the transforms both ways (OpenCV 2x3 matrices,
    pixel centres at integer coordinates)."""

    crop: np.ndarray  # (size, size, 3) uint8 RGB
    matrix: np.ndarray  # photo -> crop
    inverse: np.ndarray  # crop -> photo
    landmarks: np.ndarray  # (5, 2) landmarks in crop coordinates
    scale: float  # crop pixels per photo pixel

    @property
    def size(self) -> int:
        return self.crop.shape[0]


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ square around a face: (4, 2) corners top-left, bottom-left, bottom-right, top-right."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_left, eye_right, _, mouth_left, mouth_right = points
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x /= max(np.hypot(*x), 1e-6)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    centre = eye_avg + eye_to_mouth * 0.1
    return np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])


def alignment_matrix(landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The similarity transform (2x3) mapping the FFHQ square of a face onto [0, size]^2."""
    quad = ffhq_quad(landmarks)
    # Corners of the crop as continuous coordinates, in OpenCV's pixel-centre convention.
    target = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    return cv2.getAffineTransform(quad[:3].astype(np.float32), target.astype(np.float32)).astype(np.float64)


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(matrix)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> AlignedFace:
    """Cut the aligned crop of one face out of an RGB uint8 photo."""
    matrix = alignment_matrix(landmarks, size)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    crop = _warp_to_crop(image[:, :, :3], matrix, scale, size)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    crop_points = points @ matrix[:, :2].T + matrix[:, 2]
    return AlignedFace(
        crop=crop,
        matrix=matrix,
        inverse=invert(matrix),
        landmarks=crop_points.astype(np.float32),
        scale=scale,
    )


def _warp_to_crop(image: np.ndarray, matrix: np.ndarray, scale: float, size: int) -> np.ndarray:
    """Warp only the photo region the crop needs; shrink large faces with area averaging first,
    since a bilinear warp that shrinks more than 2x aliases."""
    x0, y0, x1, y1 = _source_region(matrix, size, image.shape)
    region = _padded_region(image, x0, y0, x1, y1)
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], dtype=np.float64)
    local = np.vstack([matrix, [0, 0, 1]]) @ shift
    if scale < 0.5:
        factor = scale * 1.5  # leave the final warp a mild 1.5x reduction
        new_size = (max(1, round(region.shape[1] * factor)), max(1, round(region.shape[0] * factor)))
        fx, fy = new_size[0] / region.shape[1], new_size[1] / region.shape[0]
        region = cv2.resize(region, new_size, interpolation=cv2.INTER_AREA)
        # Map resized pixel centres back to the region's pixel centres.
        unshrink = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5], [0, 0, 1]])
        local = local @ unshrink
    return cv2.warpAffine(
        region, local[:2], (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    )


def _source_region(matrix: np.ndarray, size: int, shape) -> tuple[int, int, int, int]:
    """Integer photo box (may extend beyond the photo) covering the crop, with a margin."""
    corners = np.array([[0, 0], [0, size], [size, size], [size, 0]], dtype=np.float64) - 0.5
    points = corners @ invert(matrix)[:, :2].T + invert(matrix)[:, 2]
    x0, y0 = np.floor(points.min(0)).astype(int) - 3
    x1, y1 = np.ceil(points.max(0)).astype(int) + 4
    return int(x0), int(y0), int(x1), int(y1)


def _padded_region(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """image[y0:y1, x0:x1], with the parts outside the photo filled by reflection (then edge
    replication once the reflection itself runs out, for crops far larger than the photo)."""
    height, width = image.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx0 >= cx1 or cy0 >= cy1:  # the face box lies outside the photo: nothing to reflect
        cx0, cy0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
        cx1, cy1 = cx0 + 1, cy0 + 1
    inside = image[cy0:cy1, cx0:cx1]
    pads = [cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1]
    while any(p > 0 for p in pads):
        step = [
            min(p, max(1, n - 1))
            for p, n in zip(pads, [inside.shape[0]] * 2 + [inside.shape[1]] * 2, strict=True)
        ]
        mode = cv2.BORDER_REFLECT_101 if min(inside.shape[:2]) > 1 else cv2.BORDER_REPLICATE
        inside = cv2.copyMakeBorder(inside, *step, borderType=mode)
        pads = [p - s for p, s in zip(pads, step, strict=True)]
    return inside
