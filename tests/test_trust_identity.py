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
        blur_similarity, jpeg_similarity = check_identity(photo, blurred, [face], model)[0], \
            check_identity(photo, recompressed, [face], model)[0]
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
