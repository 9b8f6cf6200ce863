"""Identity check on real photos shipped in packages: the recognizer tells people apart."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from faceanon.trust.identity import (
    DIFFERENT_PERSON,
    SAME_PERSON,
    IdentityModel,
    align_for_recognition,
    check_identity,
    get_identity_model,
)


@pytest.fixture(scope="module")
def yunet():
    from faceanon.faces import create_detector

    return create_detector("yunet")


@pytest.fixture(scope="module")
def people(yunet, astronaut_rgb, grace_hopper_rgb, group_photo_rgb):
    """(photo, face) for the 8 different people of the three photos."""
    found = []
    for photo in (astronaut_rgb, grace_hopper_rgb, group_photo_rgb):
        found += [(photo, face) for face in yunet.detect(photo)]
    assert len(found) == 8
    return found


@pytest.mark.parametrize("name", ["arcface", "sface"])
def test_same_face_is_same_person_and_different_people_are_not(name, people):
    model = get_identity_model(name)
    embeddings = [model.embed(photo, face.landmarks) for photo, face in people]
    for (photo, face), embedding in zip(people, embeddings, strict=True):
        again = model.embed(photo.copy(), face.landmarks)
        assert model.similarity(embedding, again) == pytest.approx(1.0, abs=1e-5)
        assert model.verdict(model.similarity(embedding, again)) == SAME_PERSON
    cross = [model.similarity(a, b) for a, b in itertools.combinations(embeddings, 2)]
    # Measured: ArcFace max 0.20, SFace max 0.30 over these 28 pairs.
    assert max(cross) < model.threshold
    assert model.verdict(max(cross)) == DIFFERENT_PERSON


@pytest.mark.parametrize("name", ["arcface", "sface"])
def test_strong_blur_is_different_person_light_jpeg_is_same(name, people):
    model = get_identity_model(name)
    for photo, face in people[:2]:
        blurred = cv2.GaussianBlur(photo, (0, 0), face.size / 6)  # faceanon's blur redaction strength
        ok, jpeg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 75])
        recompressed = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
        blur_similarity, jpeg_similarity = (
            check_identity(photo, blurred, [face], model)[0],
            check_identity(photo, recompressed, [face], model)[0],
        )
        assert not model.same_person(blur_similarity), blur_similarity  # measured ArcFace <= 0.13
        assert model.same_person(jpeg_similarity) and jpeg_similarity > 0.9  # measured >= 0.98


def test_alignment_matches_insightface_norm_crop(people):
    import warnings

    from insightface.utils import face_align

    photo, face = people[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # skimage deprecation inside insightface
        theirs = face_align.norm_crop(photo, face.landmarks.astype(np.float32))
    ours = align_for_recognition(photo, face.landmarks)
    assert ours.shape == (112, 112, 3)
    assert np.abs(ours.astype(int) - theirs).mean() < 1.0


def test_default_model_and_override(monkeypatch):
    monkeypatch.delenv("FACEANON_IDENTITY_MODEL", raising=False)
    assert IdentityModel().name == "arcface"
    monkeypatch.setenv("FACEANON_IDENTITY_MODEL", "sface")
    model = IdentityModel()
    assert (model.name, model.threshold, model.licence) == ("sface", 0.363, "Apache-2.0")
    with pytest.raises(ValueError, match="choose one of arcface, sface"):
        IdentityModel("dlib")


def test_sizes_must_match(people):
    from faceanon.errors import ImageInputError

    photo, face = people[0]
    with pytest.raises(ImageInputError, match="same size"):
        check_identity(photo, photo[:100], [face])


def _downscaled(photo, face, size):
    """The photo around `face` shrunk (area averaging) so the face is `size` px, and the face moved along."""
    from faceanon.results import DetectedFace

    scale = size / face.size
    x0, y0 = (max(0, int(v - face.size)) for v in face.box[:2])
    x1, y1 = int(face.box[2] + face.size), int(face.box[3] + face.size)
    region = photo[y0:y1, x0:x1]
    small = cv2.resize(
        region, (round(region.shape[1] * scale), round(region.shape[0] * scale)), interpolation=cv2.INTER_AREA
    )
    landmarks = (face.landmarks - (x0, y0)) * scale
    box = tuple((np.asarray(face.box) - (x0, y0, x0, y0)) * scale)
    return np.ascontiguousarray(small), DetectedFace(
        face.index, box, landmarks.astype(np.float32), face.score
    )


def test_below_the_verifiable_size_there_is_no_verdict(people):
    from faceanon.results import FaceReport
    from faceanon.trust.checks import identity_verdict, measure_reports
    from faceanon.trust.identity import MIN_VERIFIABLE_FACE

    photo, face = people[0]
    for size, verifiable in ((MIN_VERIFIABLE_FACE - 8, False), (MIN_VERIFIABLE_FACE + 8, True)):
        small, moved = _downscaled(photo, face, size)
        blurred = cv2.GaussianBlur(small, (0, 0), size / 3)
        report = FaceReport(face=moved, changed=True, method="blur")
        measure_reports(small, blurred, [report], attributes=False)
        if verifiable:
            assert (
                report.same_person is False
                and report.identity_similarity is not None
                and not report.identity_note
            )
        else:
            assert report.identity_similarity is None and report.same_person is None
            assert identity_verdict(report).startswith("too small to verify")


def test_people_are_told_apart_from_the_verifiable_size_on(people):
    # The reliability table of benchmarks/redaction_strength.py, on the 8 people of the fixtures.
    from faceanon.trust.identity import MIN_VERIFIABLE_FACE

    model = get_identity_model("arcface")
    small = [_downscaled(photo, face, MIN_VERIFIABLE_FACE) for photo, face in people]
    embeddings = [model.embed(image, face.landmarks) for image, face in small]
    impostor = [model.similarity(a, b) for a, b in itertools.combinations(embeddings, 2)]
    assert max(impostor) < model.threshold
    for (image, face), embedding in zip(small, embeddings, strict=True):
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert model.same_person(
            model.similarity(embedding, model.embed(cv2.imdecode(data, 1), face.landmarks))
        )
        blurred = cv2.GaussianBlur(image, (0, 0), MIN_VERIFIABLE_FACE / 3)
        assert not model.same_person(model.compare(image, face.landmarks, blurred, face.landmarks))
