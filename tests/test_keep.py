"""Keep-list on real photos: tests/data/people has Obama in two portraits and next to Biden
(US government photos, public domain). Real YuNet, real ArcFace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceanon.anonymizer import FaceAnonymizer
from faceanon.errors import ImageInputError
from faceanon.keep import load_keep_list, match_faces
from faceanon.media.photo import load_image, split_alpha

PEOPLE = Path(__file__).parent / "data" / "people"


@pytest.fixture(scope="module")
def fa():
    return FaceAnonymizer(detector="yunet")  # the similarities below were measured with YuNet landmarks


@pytest.fixture(scope="module")
def two_people():
    return split_alpha(load_image(PEOPLE / "two_people.jpg"))[0]  # face 0 Obama, face 1 Biden


def test_a_kept_person_is_left_untouched_everyone_else_anonymized(fa, two_people):
    result = fa.anonymize(two_people, method="blur", keep=[PEOPLE / "obama.jpg"])
    obama, biden = result.faces
    assert (obama.changed, obama.kept_as, obama.method) == (False, "obama", None)
    assert 0.6 < obama.kept_similarity < 0.8  # measured 0.72
    assert "kept: matches obama (similarity 0.72)" == obama.message
    assert biden.changed and biden.method == "blur" and biden.kept_as is None
    assert "Kept (keep-list): #0 obama (0.72)." in result.message
    output = np.asarray(result.image)
    x0, y0, x1, y1 = (int(v) for v in obama.face.box)
    assert np.array_equal(output[y0:y1, x0:x1], two_people[y0:y1, x0:x1])


def test_a_keep_folder_keeps_everyone_in_it(fa, two_people, tmp_path):
    for name in ("obama2.jpg", "biden.jpg"):
        shutil.copy(PEOPLE / name, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a photo, ignored")
    result = fa.anonymize(two_people, method="blur", keep=tmp_path)
    assert [r.kept_as for r in result.faces] == ["obama2", "biden"]
    assert result.num_changed == 0
    assert np.array_equal(np.asarray(result.image), two_people)


def test_match_faces_per_frame_for_video_code(fa, two_people):
    keep = fa.load_keep([PEOPLE / "biden.jpg"])
    matches = match_faces(two_people, fa.detect_frame(two_people), keep)
    assert matches[0] is None and matches[1].name == "biden" and matches[1].similarity > 0.9  # measured 0.94
    assert match_faces(two_people, [], keep) == []
    assert keep.threshold == 0.40


def test_a_keep_photo_with_several_faces_uses_the_largest_and_says_so(fa):
    keep = fa.load_keep(PEOPLE / "two_people.jpg")
    assert keep.notes == ["two_people: 2 faces in the photo: the largest was used"]


def test_bad_keep_photos_are_refused_before_any_work(fa, tmp_path, two_people, monkeypatch):
    (tmp_path / "fake.jpg").write_text("not an image")
    (tmp_path / "empty").mkdir()
    from PIL import Image

    Image.new("RGB", (200, 200), (120, 130, 140)).save(tmp_path / "wall.png")
    calls = []
    monkeypatch.setattr(fa, "detect_frame", lambda rgb: calls.append(1) or [])
    with pytest.raises(ImageInputError, match="not an image"):
        fa.anonymize(two_people, keep=[PEOPLE / "obama.jpg", tmp_path / "fake.jpg"])
    with pytest.raises(ImageInputError, match="has no photos"):
        fa.anonymize(two_people, keep=tmp_path / "empty")
    with pytest.raises(ImageInputError, match="No face was found in the keep photo 'wall'"):
        fa.anonymize(two_people, keep=[tmp_path / "wall.png"])
    with pytest.raises(ImageInputError, match="empty"):
        load_keep_list([], fa.detector)
    assert calls == []  # nothing of the photo was processed


def run_cli(*argv) -> int:
    from faceanon.cli import main

    return main([str(a) for a in argv])


def test_cli_keep_flag(tmp_path, capsys):
    out = tmp_path / "out.jpg"
    code = run_cli(
        "anonymize",
        PEOPLE / "two_people.jpg",
        "-o",
        out,
        "--method",
        "blur",
        "--keep",
        PEOPLE / "obama2.jpg",
        "--json",
        "--quiet",
    )
    assert code == 0
    faces = json.loads(capsys.readouterr().out)["files"][0]["faces"]
    assert [f["kept_as"] for f in faces] == ["obama2", None] and out.exists()


def test_cli_bad_keep_photo_stops_before_any_output(tmp_path, capsys):
    (tmp_path / "fake.jpg").write_text("not an image")
    out = tmp_path / "out"
    code = run_cli(
        "anonymize",
        PEOPLE / "two_people.jpg",
        PEOPLE / "biden.jpg",
        "-o",
        out,
        "--method",
        "blur",
        "--keep",
        tmp_path / "fake.jpg",
        "--quiet",
    )
    assert code == 1
    assert "Keep photo: The file 'fake.jpg' is not an image" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_app_anonymize_endpoint_takes_keep_photos():
    """The /anonymize handler in process (the Gradio server itself is tested in test_app_*)."""
    import gradio as gr

    from faceanon.webapp import handlers as H
    from faceanon.webapp import limits as L
    from faceanon.webapp.service import ModelHost

    H.configure(ModelHost(), L.Limits())

    def quiet(*args, **kwargs):
        return None

    _, summary, report, _ = H.anonymize(
        str(PEOPLE / "two_people.jpg"), "blur", keep=[str(PEOPLE / "obama.jpg")], progress=quiet
    )
    assert [f["kept_as"] for f in report["faces"]] == ["obama", None]
    with pytest.raises(gr.Error) as error:
        H.anonymize(
            str(PEOPLE / "two_people.jpg"), "blur", keep=[str(PEOPLE / "obama.jpg"), __file__], progress=quiet
        )
    assert "test_keep.py" in error.value.message and str(PEOPLE) not in error.value.message
