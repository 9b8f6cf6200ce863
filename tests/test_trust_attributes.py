"""Attribute check on real photos: same face -> no change, mirrored face -> yaw flips."""

from __future__ import annotations

import numpy as np
import pytest

from faceanon.results import DetectedFace
from faceanon.trust.attributes import attribute_deltas, check_attributes, euler_angles, get_attribute_model


@pytest.fixture(scope="module")
def group_faces(group_photo_rgb):
    from faceanon.faces import create_detector

    return create_detector("yunet").detect(group_photo_rgb)


def mirrored(photo: np.ndarray, face: DetectedFace) -> tuple[np.ndarray, DetectedFace]:
    width = photo.shape[1]
    x0, y0, x1, y1 = face.box
    return photo[:, ::-1].copy(), DetectedFace(
        face.index, (width - x1, y0, width - x0, y1), face.landmarks, face.score
    )


def test_same_face_has_zero_distances(astronaut_rgb, group_photo_rgb, group_faces):
    from faceanon.faces import create_detector

    faces = create_detector("yunet").detect(astronaut_rgb)
    for photo, photo_faces in ((astronaut_rgb, faces), (group_photo_rgb, group_faces[:2])):
        for entry in check_attributes(photo, photo.copy(), photo_faces):
            assert entry["pose_distance"] == pytest.approx(0, abs=1e-6)
            assert entry["expression_distance"] == pytest.approx(0, abs=1e-6)
            assert entry["gaze_distance"] == pytest.approx(0, abs=1e-6)


def test_mirrored_face_changes_yaw(group_photo_rgb, group_faces):
    model = get_attribute_model()
    # The group photo's 4th face from the left looks ~47 degrees to one side.
    turned = max(group_faces, key=lambda face: abs(model.measure(group_photo_rgb, face).yaw))
    before = model.measure(group_photo_rgb, turned)
    after = model.measure(*mirrored(group_photo_rgb, turned))
    deltas = attribute_deltas(before, after)
    assert abs(before.yaw) > 20
    assert after.yaw == pytest.approx(-before.yaw, abs=8)  # a mirror negates yaw (and roll)
    assert abs(deltas["yaw_delta"]) > 40
    assert deltas["pose_distance"] >= abs(deltas["yaw_delta"])
    assert deltas["expression_distance"] > 0.05  # left/right blendshapes swap
    assert len(before.blendshapes) == 52


def test_faceless_result_is_reported_not_measured(astronaut_rgb):
    from faceanon.faces import create_detector

    faces = create_detector("yunet").detect(astronaut_rgb)
    filled = astronaut_rgb.copy()
    x0, y0, x1, y1 = (int(v) for v in faces[0].box)
    filled[max(y0 - 40, 0) : y1 + 40, max(x0 - 40, 0) : x1 + 40] = 0
    (entry,) = check_attributes(astronaut_rgb, filled, faces)
    assert entry["note"] == "no face landmarks found in the result"
    assert "pose_distance" not in entry and "original_yaw" in entry


def test_euler_angles_of_known_rotations():
    yaw = np.radians(30)
    rotation_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    assert euler_angles(rotation_y) == pytest.approx((30, 0, 0), abs=1e-9)
    roll = np.radians(-10)
    rotation_z = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    assert euler_angles(rotation_z) == pytest.approx((0, 0, -10), abs=1e-9)
