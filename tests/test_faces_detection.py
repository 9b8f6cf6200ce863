"""Detection on real photos, offline, with the model files that ship in installed packages."""

import time

import numpy as np
import pytest

from faceanon.bundled import YUNET_FILE, BundledFile, ModelFileUnavailableError
from faceanon.errors import ImageInputError
from faceanon.faces.detection import Detector, create_detector


@pytest.fixture(scope="module")
def yunet():
    return create_detector("yunet")


@pytest.mark.parametrize(
    "photo, expected", [("astronaut_rgb", 1), ("grace_hopper_rgb", 1), ("group_photo_rgb", 6)]
)
def test_yunet_finds_the_faces_of_real_photos(yunet, request, photo, expected):
    faces = yunet.detect(request.getfixturevalue(photo))
    assert len(faces) == expected
    for i, face in enumerate(faces):
        assert face.index == i and face.score >= 0.6
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        x0, y0, x1, y1 = face.box
        # insightface order: image-left eye first, mouth below the eyes, all inside the box
        assert face.landmarks[0, 0] < face.landmarks[1, 0]
        assert face.landmarks[3:, 1].mean() > face.landmarks[:2, 1].mean()
        assert (face.landmarks[:, 0] > x0).all() and (face.landmarks[:, 0] < x1).all()


def test_faces_are_numbered_left_to_right(yunet, group_photo_rgb):
    centres = [(f.box[0] + f.box[2]) / 2 for f in yunet.detect(group_photo_rgb)]
    assert centres == sorted(centres)


def test_scrfd_option_finds_the_group_and_a_frame_filling_face(group_photo_rgb, astronaut_rgb):
    scrfd = create_detector("scrfd")
    assert len(scrfd.detect(group_photo_rgb)) == 6
    close_up = astronaut_rgb[40:330, 130:350]  # the face fills the frame: needs the padding
    faces = scrfd.detect(close_up)
    assert len(faces) == 1 and faces[0].landmarks[0, 0] < faces[0].landmarks[1, 0]


def test_threshold_and_min_face_size_filter(group_photo_rgb):
    assert create_detector("yunet", min_face_size=1000).detect(group_photo_rgb) == []
    assert create_detector("yunet", threshold=0.999).detect(group_photo_rgb) == []


def test_no_face_in_a_blank_image(yunet):
    assert yunet.detect(np.full((300, 400, 3), 128, np.uint8)) == []


def test_downscaled_detection_reports_full_resolution_coordinates(astronaut_rgb):
    full = create_detector("yunet").detect(astronaut_rgb)[0]
    reduced = create_detector("yunet", max_side=256).detect(astronaut_rgb)[0]
    assert np.abs(np.array(full.box) - np.array(reduced.box)).max() < 12


def test_small_faces_in_a_large_photo_are_found_once(yunet, group_photo_rgb):
    import cv2

    small = cv2.resize(group_photo_rgb, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)  # ~38 px faces
    canvas = np.full((2000, 2600, 3), 120, np.uint8)
    canvas[1500 : 1500 + small.shape[0], 2000 : 2000 + small.shape[1]] = small
    faces = yunet.detect(canvas)
    assert len(faces) == 6 and all(f.box[0] > 2000 and f.box[1] > 1500 for f in faces)


def test_detection_is_fast(yunet, group_photo_rgb):
    yunet.detect(group_photo_rgb)
    start = time.perf_counter()
    yunet.detect(group_photo_rgb)
    assert time.perf_counter() - start < 1.0  # ~50 ms on one core


def test_bad_inputs_and_names_give_clear_errors(yunet):
    with pytest.raises(ImageInputError, match="8 bits"):
        yunet.detect(np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="yunet"):
        create_detector("nope")


def test_a_tampered_model_file_is_refused():
    with pytest.raises(ModelFileUnavailableError, match="checksum"):
        BundledFile(YUNET_FILE.package, YUNET_FILE.resource, "0" * 64, "the YuNet face detector").path()
    with pytest.raises(ModelFileUnavailableError, match="not installed"):
        BundledFile("no_such_package_here", YUNET_FILE.resource, "0" * 64, "a model").path()


def test_a_custom_detector_plugs_in():
    class Fixed(Detector):
        def _detect(self, bgr):
            points = np.array([[[30, 40], [60, 40], [45, 55], [35, 70], [55, 70]]], float)
            return np.array([[20, 20, 70, 90]], float), np.array([0.99]), points

    assert create_detector(Fixed()).detect(np.zeros((100, 100, 3), np.uint8))[0].size == 70
