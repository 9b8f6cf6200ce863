"""`faceanon anonymize` on videos: one clip, folders mixing photos and videos, bad inputs, Ctrl-C."""

from __future__ import annotations

import json
import shutil

import pytest

from faceanon.cli import main
from faceanon.media.atomic import TEMP_PREFIX
from faceanon.media.video import probe_video
from faceanon.testing_video import make_test_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_test_clip(
        tmp_path_factory.mktemp("clip") / "clip.mp4",
        photo="grace_hopper",
        motion="zoom",
        size=(160, 208),
        seconds=0.5,
        fps=20,
        audio=True,
    )


def test_one_clip_with_a_json_report(clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    code = main(["anonymize", str(clip.path), "-o", str(out), "--method", "blur", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    entry = report["files"][0]
    assert entry["status"] == "done" and entry["frames"] == clip.frame_count
    assert entry["num_tracks"] == 1 and entry["tracks"][0]["method"] == "blur"
    assert probe_video(out).frame_count == clip.frame_count and probe_video(out).has_audio


def test_a_folder_mixing_photos_and_videos(clip, tmp_path, capsys, grace_hopper_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(clip.path, folder / "sub" / "clip.mp4")
    shutil.copy(grace_hopper_path, folder / "portrait.jpg")
    code = main(["anonymize", str(folder), "-o", str(tmp_path / "out"), "--method", "pixelate", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["done"] == 2 and report["faces_changed"] == 2
    assert (tmp_path / "out" / "sub" / "clip.mp4").is_file() and (tmp_path / "out" / "portrait.jpg").is_file()


def test_bad_videos_get_clear_errors(tmp_path, clip, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "notes.mp4").write_text("not a video at all")
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(clip.path.read_bytes()[:1500])
    code = main(["anonymize", str(folder), "-o", str(tmp_path / "out"), "--method", "blur", "--json"])
    assert code == 1
    errors = {e["input"].rsplit("/", 1)[-1]: e["error"] for e in json.loads(capsys.readouterr().out)["files"]}
    assert "is not a video faceanon can read" in errors["notes.mp4"]
    assert "truncated" in errors["truncated.mp4"] or "damaged" in errors["truncated.mp4"]
    assert not list(tmp_path.glob("out/**/*.mp4"))  # nothing written for a failed video


def test_ctrl_c_leaves_no_half_written_output(clip, tmp_path, monkeypatch):
    from faceanon.media import video_anonymize

    written = []
    real = video_anonymize._render_window

    def interrupted(*args, **kwargs):
        if written:
            raise KeyboardInterrupt  # the second window: part of the video is already written
        written.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(video_anonymize, "_render_window", interrupted)
    out = tmp_path / "out.mp4"
    code = main(["anonymize", str(clip.path), "-o", str(out), "--method", "blur", "--window", "2", "--quiet"])
    assert code == 130
    assert written and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_keep_leaves_the_kept_person_in_every_frame_of_a_video(clip, tmp_path, capsys, grace_hopper_path):
    pytest.importorskip("faceanon.trust.identity")
    out = tmp_path / "kept.mp4"
    code = main(
        [
            "anonymize",
            str(clip.path),
            "-o",
            str(out),
            "--method",
            "solid",
            "--keep",
            str(grace_hopper_path),
            "--detector",
            "yunet",
            "--json",
        ]
    )
    assert code == 0
    entry = json.loads(capsys.readouterr().out)["files"][0]
    track = entry["tracks"][0]
    assert track["method"] is None and track["kept_as"] == grace_hopper_path.stem
    assert entry["num_changed"] == 0 and "Kept (keep-list)" in entry["message"]
