"""Leak guard: a second detection pass on the output redacts what the first pass missed or left
recognizable, never touches faces left on purpose, and runs exactly once. Real photos, real YuNet.

To make the first pass miss real faces, it runs at a confidence threshold (0.93) above the scores
YuNet gives five of t1.jpg's six faces (0.905-0.928; the sixth scores 0.936)."""

from __future__ import annotations

import numpy as np
import pytest

from faceanon.anonymizer import FaceAnonymizer, Generation
from faceanon.faces.leak_guard import FOUND_ON_SECOND_PASS, guard_detector, new_faces, same_face
from faceanon.results import DetectedFace


def _box_face(index, box):
    return DetectedFace(index, box, np.zeros((5, 2), np.float32), 0.9)


def test_same_face_rule():
    assert same_face((0, 0, 100, 100), (10, 10, 110, 110))  # IoU 0.68
    assert same_face((0, 0, 100, 100), (30, 30, 70, 70))  # a part of the face, inside it
    assert not same_face((0, 0, 100, 100), (80, 80, 180, 180))  # IoU 0.02
    assert not same_face((0, 0, 10, 10), (20, 20, 30, 30))
    known = [_box_face(0, (0, 0, 100, 100))]
    found = [_box_face(0, (5, 5, 95, 95)), _box_face(1, (300, 0, 400, 100))]
    fresh = new_faces(found, known, first_index=1)
    assert [(f.index, f.box) for f in fresh] == [(1, (300, 0, 400, 100))]


@pytest.fixture(scope="module")
def strict():
    return FaceAnonymizer(detector="yunet", detection_threshold=0.93)  # fast mode: misses faces at 0.93


def test_second_pass_uses_the_same_model_at_a_lower_threshold(strict):
    second = guard_detector(strict.detector)
    assert second.threshold == pytest.approx(0.93 * 5 / 6)
    assert second._net is strict.detector._net and strict.detector.threshold == 0.93


def test_faces_found_only_on_the_second_pass_are_blurred_and_reported(strict, group_photo_rgb):
    assert len(strict.detect(group_photo_rgb)) == 1
    result = strict.anonymize(group_photo_rgb, method="pixelate")
    assert len(result.faces) == 6
    first, *missed = result.faces
    assert first.method == "pixelate" and not first.guard
    assert all(
        r.guard == f"{FOUND_ON_SECOND_PASS}: blurred" and r.method == "blur" and r.changed for r in missed
    )
    assert all(r.same_person is False for r in result.faces)  # measured after the guard's redaction
    assert "5 faces found only on the second pass: blurred." in result.message
    assert len({r.face.index for r in result.faces}) == 6
    output = np.asarray(result.image)
    for report in missed:
        x0, y0, x1, y1 = (int(v) for v in report.face.box)
        assert np.abs(output[y0:y1, x0:x1].astype(int) - group_photo_rgb[y0:y1, x0:x1]).mean() > 5


def test_without_the_guard_the_missed_faces_stay(strict, group_photo_rgb):
    result = FaceAnonymizer(detector="yunet", detection_threshold=0.93, leak_guard=False).anonymize(
        group_photo_rgb, method="blur"
    )
    assert len(result.faces) == 1 and "second pass" not in result.message
    assert len(strict.anonymize(group_photo_rgb, method="blur", leak_guard=False).faces) == 1  # one call only
    assert len(strict.anonymize(group_photo_rgb, method="blur").faces) == 6


def test_unselected_faces_are_never_touched(group_photo_rgb):
    fa = FaceAnonymizer()
    result = fa.anonymize(group_photo_rgb, method="blur", faces=[2])
    output = np.asarray(result.image)
    assert [r.changed for r in result.faces] == [False, False, True, False, False, False]
    changed = np.any(output != group_photo_rgb, axis=2)
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = result.faces[2].face.box
    margin = result.faces[2].face.size
    assert (
        xs.min() > x0 - margin
        and xs.max() < x1 + margin
        and ys.min() > y0 - margin
        and ys.max() < y1 + margin
    )


def test_a_selection_leaves_faces_found_only_on_the_second_pass(strict, group_photo_rgb):
    faces = strict.detect(group_photo_rgb)
    result = strict.anonymize(group_photo_rgb, method="blur", faces=faces)
    assert [r.changed for r in result.faces] == [True] + [False] * 5
    assert all(r.guard.startswith(FOUND_ON_SECOND_PASS) and "left" in r.guard for r in result.faces[1:])
    assert (
        "5 faces found only on the second pass: left (only the chosen faces are changed)." in result.message
    )


def test_a_face_still_recognized_is_redacted_by_the_guard(astronaut_rgb, identity_pipeline):
    # The stand-in pipeline gives every face back unchanged: the identity check calls it the same
    # person, and the guard must hide it (the 12 GB diffusion weights cannot exist here).
    fa = FaceAnonymizer(pipeline=identity_pipeline, watermark=False)
    result = fa.anonymize(astronaut_rgb, method="diffusion", steps=1)
    (face,) = result.faces
    assert face.guard == "still the same person after diffusion (similarity 1.00): blurred"
    assert face.method == "blur" and face.same_person is False and face.identity_similarity < 0.3
    assert "1 face still looked like the same person: blurred." in result.message


def test_frames_get_the_guard_and_it_runs_once(strict, group_photo_rgb, monkeypatch):
    calls = []
    detect = strict._second_pass.detect
    monkeypatch.setattr(strict._second_pass, "detect", lambda rgb: calls.append(1) or detect(rgb))
    faces = strict.detect_frame(group_photo_rgb)
    plans = strict.plan_faces(faces, "blur")
    via_seam = strict.finish_frame(strict.prepare_frame(group_photo_rgb, plans), [])
    whole = strict.anonymize_frame(group_photo_rgb, plans, Generation())
    assert calls == [1, 1]
    assert len(via_seam.faces) == len(whole.faces) == 6
    assert np.array_equal(via_seam.image, whole.image)


def test_cli_no_leak_guard_flag(group_photo_path, tmp_path, capsys):
    import json

    from faceanon.cli import main

    base = [
        "anonymize",
        str(group_photo_path),
        "--method",
        "blur",
        "--detector",
        "yunet",
        "--detection-threshold",
        "0.93",
        "--json",
        "-q",
    ]
    assert main([*base, "-o", str(tmp_path / "guarded.jpg")]) == 0
    guarded = json.loads(capsys.readouterr().out)["files"][0]
    assert main([*base, "-o", str(tmp_path / "plain.jpg"), "--no-leak-guard"]) == 0
    plain = json.loads(capsys.readouterr().out)["files"][0]
    assert (guarded["num_faces"], plain["num_faces"]) == (6, 1)
    assert sum(f["guard"].startswith(FOUND_ON_SECOND_PASS) for f in guarded["faces"]) == 5
