"""`faceanon detect` on real photos with the real bundled detectors."""

import json

import numpy as np
import pytest
from PIL import Image

from faceanon.cli import main


@pytest.fixture
def sideways_photo(tmp_path, astronaut_rgb):
    """The astronaut stored sideways with EXIF orientation 6 (how phones save portrait photos)."""
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown after turning 90 degrees clockwise
    Image.fromarray(astronaut_rgb).transpose(Image.Transpose.ROTATE_90).save(
        path, exif=exif.tobytes(), quality=95
    )
    return path


def _report(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_json_lists_faces_in_upright_pixels(sideways_photo, group_photo_path, tmp_path, capsys):
    code = main(
        ["detect", str(sideways_photo), str(group_photo_path), str(tmp_path / "missing.jpg"), "--json"]
    )
    report = _report(capsys)
    assert code == 1 and report["detector"] == "recall" and (report["done"], report["error"]) == (2, 1)
    missing, phone, group = report["files"]
    assert missing["status"] == "error" and "does not exist" in missing["error"]
    assert (phone["width"], phone["height"]) == (512, 512)  # EXIF applied: the upright photo
    (face,) = phone["faces"]
    x0, y0, x1, y1 = face["box"]
    assert 160 < x0 < 200 and 40 < y0 < 80 and 250 < x1 < 290 and 160 < y1 < 200  # where the upright face is
    eyes, mouth = np.array(face["landmarks"][:2]), np.array(face["landmarks"][3:])
    assert eyes[0, 0] < eyes[1, 0] and mouth[:, 1].mean() > eyes[:, 1].mean()
    assert [f["index"] for f in group["faces"]] == list(range(6)) and report["faces_found"] == 7
    assert all(0.5 <= f["score"] <= 1 for f in group["faces"])


def test_mode_and_detector_pick_the_detector(group_photo_path, capsys):
    assert main(["detect", str(group_photo_path), "--mode", "fast", "--json"]) == 0
    assert _report(capsys)["detector"] == "yunet"
    # --detector wins over --mode, whatever their order
    assert (
        main(["detect", str(group_photo_path), "--detector", "centerface", "--mode", "fast", "--json"]) == 0
    )
    fast = _report(capsys)
    assert fast["detector"] == "centerface" and fast["faces_found"] == 6


def test_plain_output_numbers_the_faces(group_photo_path, capsys):
    assert main(["detect", str(group_photo_path), "--mode", "fast"]) == 0
    out = capsys.readouterr().out
    assert "6 face(s) (1280x886)" in out and "    5  box [" in out and "6 face(s) found" in out


@pytest.mark.parametrize("flags", [["--detector", "nope"], ["--mode", "slow"]])
def test_unknown_names_stop_before_any_photo(group_photo_path, flags, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["detect", str(group_photo_path), *flags, "--json"])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "invalid choice" in captured.err and "recall" in captured.err


def test_anonymize_takes_the_same_flags(tmp_path, group_photo_path, capsys):
    out = tmp_path / "out.jpg"
    assert (
        main(
            [
                "anonymize",
                str(group_photo_path),
                "-o",
                str(out),
                "--method",
                "solid",
                "--mode",
                "fast",
                "--json",
            ]
        )
        == 0
    )
    assert _report(capsys)["faces_changed"] == 6


def test_folders_are_read_recursively(tmp_path, grace_hopper_path, capsys):
    import shutil

    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(grace_hopper_path, tmp_path / "a" / "b" / "hopper.jpg")
    (tmp_path / "a" / "notes.txt").write_text("not a photo")
    assert main(["detect", str(tmp_path / "a"), "--mode", "fast", "--json"]) == 0
    report = _report(capsys)
    assert [f["input"].endswith("hopper.jpg") for f in report["files"]] == [True] and report[
        "faces_found"
    ] == 1
