"""Alignment to FFHQ-style crops and paste-back are exact inverses; nothing outside the masks moves."""

import numpy as np
import pytest

from faceanon.faces import align_face, alignment_matrix, create_detector, face_mask, ffhq_quad, paste_face
from faceanon.faces.blending import MASK_FLOOR, match_colors


@pytest.fixture(scope="module")
def detector():
    return create_detector("yunet")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def round_trip(rgb, faces):
    output, union = rgb.copy(), np.zeros(rgb.shape[:2], bool)
    for face in faces:
        aligned = align_face(rgb, face.landmarks)
        union |= paste_face(output, aligned.crop, aligned).full(rgb.shape) > 0
    return output, union


def test_crop_puts_eyes_and_mouth_where_ffhq_does(detector, astronaut_rgb):
    face = detector.detect(astronaut_rgb)[0]
    aligned = align_face(astronaut_rgb, face.landmarks)
    assert aligned.crop.shape == (512, 512, 3) and aligned.crop.dtype == np.uint8
    eyes, mouth = aligned.landmarks[:2], aligned.landmarks[3:]
    assert abs(eyes[:, 1].mean() - mouth[:, 1].mean() + 120) < 25  # eyes ~120 px above the mouth
    assert abs(eyes[0, 1] - eyes[1, 1]) < 8  # upright
    assert abs(eyes[:, 0].mean() - 256) < 12 and 220 < eyes[:, 1].mean() < 265


def test_matrix_maps_the_ffhq_square_onto_the_crop():
    landmarks = np.array([[100, 120], [160, 110], [130, 150], [110, 180], [155, 172]], float)
    quad = ffhq_quad(landmarks)
    matrix = alignment_matrix(landmarks)
    mapped = quad @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(
        mapped, [[-0.5, -0.5], [-0.5, 511.5], [511.5, 511.5], [511.5, -0.5]], atol=1e-3
    )


@pytest.mark.parametrize("photo", ["astronaut_rgb", "grace_hopper_rgb", "group_photo_rgb"])
def test_identity_round_trip_is_exact(detector, request, photo):
    rgb = request.getfixturevalue(photo)
    faces = detector.detect(rgb)
    output, union = round_trip(rgb, faces)
    assert union.sum() > 0
    assert np.array_equal(output[~union], rgb[~union])  # bit for bit outside the masks
    assert psnr(output[union], rgb[union]) >= 40


def test_a_face_cut_by_the_photo_border_is_padded_not_an_error(detector, astronaut_rgb):
    face = detector.detect(astronaut_rgb)[0]
    cut = np.ascontiguousarray(astronaut_rgb[150:, 60:])  # forehead and left side gone
    landmarks = face.landmarks - np.array([60, 150], np.float32)
    aligned = align_face(cut, landmarks)
    assert aligned.crop[:60].std() > 5  # reflected content, not black bars
    output = cut.copy()
    mask = paste_face(output, aligned.crop, aligned).full(cut.shape) > 0
    assert np.array_equal(output[~mask], cut[~mask]) and psnr(output[mask], cut[mask]) >= 35


def test_a_crop_far_larger_than_a_tiny_photo_still_works():
    tiny = np.random.default_rng(0).integers(0, 255, (24, 20, 3), dtype=np.uint8)
    landmarks = np.array([[6, 9], [13, 9], [10, 12], [7, 16], [13, 16]], np.float32)
    aligned = align_face(tiny, landmarks)
    assert aligned.crop.shape == (512, 512, 3)


def test_large_faces_are_shrunk_without_aliasing(detector, astronaut_rgb):
    import cv2

    landmarks = detector.detect(astronaut_rgb)[0].landmarks
    big = cv2.resize(astronaut_rgb, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)
    big_face = align_face(big, (landmarks + 0.5) * 6 - 0.5)
    assert big_face.scale < 0.5
    assert psnr(big_face.crop, align_face(astronaut_rgb, landmarks).crop) > 30


def test_mask_is_soft_covers_the_face_and_vanishes_at_the_border(detector, astronaut_rgb):
    aligned = align_face(astronaut_rgb, detector.detect(astronaut_rgb)[0].landmarks)
    mask = face_mask(aligned.landmarks)
    for x, y in aligned.landmarks.astype(int):
        assert mask[y, x] > 0.97
    assert mask[0].max() < MASK_FLOOR and mask[-1].max() < MASK_FLOOR and mask[:, 0].max() < MASK_FLOOR
    assert ((mask > 0.05) & (mask < 0.95)).sum() > 5000  # a real feathered band


def test_color_matching_moves_colours_toward_the_reference(detector, astronaut_rgb):
    aligned = align_face(astronaut_rgb, detector.detect(astronaut_rgb)[0].landmarks)
    mask = face_mask(aligned.landmarks)
    tinted = np.clip(aligned.crop.astype(int) + [40, -20, -20], 0, 255).astype(np.uint8)
    matched = match_colors(tinted, aligned.crop, mask)
    inside = mask > 0.5
    assert psnr(matched[inside], aligned.crop[inside]) > psnr(tinted[inside], aligned.crop[inside]) + 5
