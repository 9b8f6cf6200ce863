"""Blur, pixelate and solid fill hide the face inside the soft mask and touch nothing else."""

import numpy as np
import pytest

from faceanon.faces import REDACTION_METHODS, align_face, create_detector, redact_face


@pytest.fixture(scope="module")
def astronaut_face(astronaut_rgb):
    face = create_detector("yunet").detect(astronaut_rgb)[0]
    return align_face(astronaut_rgb, face.landmarks), face


@pytest.mark.parametrize("method", REDACTION_METHODS)
def test_redaction_changes_the_face_and_nothing_outside_the_mask(astronaut_rgb, astronaut_face, method):
    aligned, face = astronaut_face
    output = astronaut_rgb.copy()
    mask = redact_face(output, aligned, method).full(output.shape)
    assert np.array_equal(output[mask == 0], astronaut_rgb[mask == 0])
    x0, y0, x1, y1 = (int(v) for v in face.box)
    core = (slice(y0 + 20, y1 - 20), slice(x0 + 20, x1 - 20))
    assert (mask[core] > 0.9).all()
    difference = np.abs(output[core].astype(int) - astronaut_rgb[core]).mean()
    assert difference > 8, f"{method} barely changed the face"


def test_strength_scales_how_much_is_hidden(astronaut_rgb, astronaut_face):
    aligned, face = astronaut_face
    x0, y0, x1, y1 = (int(v) for v in face.box)
    changes = []
    for strength in (0.2, 1.0):
        output = astronaut_rgb.copy()
        redact_face(output, aligned, "blur", strength)
        changes.append(np.abs(output[y0:y1, x0:x1].astype(int) - astronaut_rgb[y0:y1, x0:x1]).mean())
    assert changes[1] > changes[0]


def test_registry_is_one_dict_named_as_the_registry():
    from faceanon.faces.redaction import REDACTORS

    assert tuple(REDACTORS) == REDACTION_METHODS


@pytest.fixture(scope="module")
def real_faces(astronaut_rgb, grace_hopper_rgb, group_photo_rgb):
    """5 real people: the astronaut, Grace Hopper, and the three largest faces of t1.jpg."""
    detector = create_detector("yunet")
    group = sorted(detector.detect(group_photo_rgb), key=lambda f: -f.size)[:3]
    return [
        (astronaut_rgb, detector.detect(astronaut_rgb)[0]),
        (grace_hopper_rgb, detector.detect(grace_hopper_rgb)[0]),
        *((group_photo_rgb, face) for face in group),
    ]


@pytest.mark.parametrize("method", REDACTION_METHODS)
@pytest.mark.parametrize("strength", [0.01, 1.0])
def test_every_method_hides_the_person_from_the_recognizer(real_faces, method, strength):
    # benchmarks/redaction_strength.py measures the same over 13 faces at 64-512 px.
    from faceanon.trust.identity import get_identity_model

    model = get_identity_model("arcface")
    for photo, face in real_faces:
        output = photo.copy()
        redact_face(output, align_face(photo, face.landmarks), method, strength)
        similarity = model.compare(photo, face.landmarks, output, face.landmarks)
        assert similarity < model.threshold, (method, strength, face.size, similarity)


def test_solid_is_opaque_at_any_strength(astronaut_rgb, astronaut_face):
    aligned, face = astronaut_face
    weak, strong = astronaut_rgb.copy(), astronaut_rgb.copy()
    redact_face(weak, aligned, "solid", 0.1)
    redact_face(strong, aligned, "solid", 1.0)
    assert np.array_equal(weak, strong)


def test_solid_fill_uses_the_colour_and_keeps_alpha(astronaut_rgb, astronaut_face):
    aligned, face = astronaut_face
    rgba = np.dstack([astronaut_rgb, np.full(astronaut_rgb.shape[:2], 200, np.uint8)])
    redact_face(rgba, aligned, "solid", color=(255, 0, 255))
    cx, cy = (int(v) for v in face.landmarks[2])
    assert tuple(rgba[cy, cx]) == (255, 0, 255, 200)


def test_bad_arguments_are_refused(astronaut_rgb, astronaut_face):
    with pytest.raises(ValueError, match="blur"):
        redact_face(astronaut_rgb.copy(), astronaut_face[0], "smudge")
    with pytest.raises(ValueError, match="strength"):
        redact_face(astronaut_rgb.copy(), astronaut_face[0], "blur", strength=0)
