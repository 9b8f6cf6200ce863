"""`faceanon anonymize` on videos: one clip, folders mixing photos and videos, bad inputs, Ctrl-C."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from faceanon.cli import main
from faceanon.media.atomic import TEMP_PREFIX
from faceanon.media.video import VideoWriter, open_video, probe_video
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


def _frames(path) -> list[np.ndarray]:
    with open_video(path) as reader:
        return [frame.rgb for frame in reader]


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
    assert track["frames"] == clip.frame_count  # one track over the whole clip: kept in every frame
    assert entry["num_changed"] == 0 and "Kept (keep-list)" in entry["message"]
    # Her face is in every frame as it was: the frames are the input's through the same writer.
    baseline = tmp_path / "baseline.mp4"
    with open_video(clip.path) as reader, VideoWriter(baseline, like=reader.info, source=clip.path) as writer:
        for frame in reader:
            writer.write(frame.rgb, like=frame)
    for before, after in zip(_frames(baseline), _frames(out), strict=True):
        assert np.array_equal(before, after)


class _UnchangedFaces:
    """Stands in for the diffusion model (its 12 GB weights cannot exist here) as one that fails to
    change anyone: every face comes back as its driving face. The real identity check then calls it
    the same person, which is what --on-same-person is for. Records each call's seeds and degree."""

    def __init__(self):
        self.calls = []

    def __call__(self, source_image, conditioning_image, **kwargs):
        from types import SimpleNamespace

        seeds = [g.initial_seed() for g in kwargs["generator"]]
        self.calls.append({"seeds": seeds, "degree": kwargs["anonymization_degree"]})
        return SimpleNamespace(images=[image.copy() for image in conditioning_image])


def test_on_same_person_retry_on_a_video_and_its_json_report(clip, tmp_path, capsys, monkeypatch):
    from faceanon.anonymizer import FaceAnonymizer, face_seed
    from faceanon.trust.identity import get_identity_model

    pytest.importorskip("faceanon.trust.identity")
    model = _UnchangedFaces()
    monkeypatch.setattr(FaceAnonymizer, "_load_pipeline", lambda self: model)
    out = tmp_path / "retry.mp4"
    assert main(_retry_diffusion_args(clip.path, out)) == 0
    entry = json.loads(capsys.readouterr().out)["files"][0]
    assert entry["status"] == "done" and entry["on_same_person"] == "retry"
    track = entry["tracks"][0]
    retried = face_seed(3, 0, attempt=1)
    assert model.calls[1] == {"seeds": [retried], "degree": pytest.approx(1.35)}  # the keyframe, once more
    assert track["seed"] == retried and track["degree"] == pytest.approx(1.35)
    assert track["keyframe_similarity"] >= get_identity_model().threshold
    assert "generated again with a new seed" in track["message"] and "still recognizable" in track["message"]
    # Still the person after the retry: the leak guard blurs the face in every frame where it can tell.
    assert track["guard_frames"] and entry["guard_redactions"] == len(track["guard_frames"])
    assert "still looked like the person" in entry["message"]
    identity = get_identity_model()
    for index, (before, after) in enumerate(zip(_frames(clip.path), _frames(out), strict=True)):
        if index in track["guard_frames"]:
            landmarks = np.asarray(_landmarks(before))
            assert identity.compare(before, landmarks, after, landmarks) < identity.threshold


def _retry_diffusion_args(src, out) -> list[str]:
    """`faceanon anonymize` of a clip with diffusion (seed 3, 1 step), --on-same-person retry, --json."""
    return [
        *("anonymize", str(src), "-o", str(out), "--method", "diffusion", "--seed", "3", "--steps", "1"),
        *("--on-same-person", "retry", "--detector", "yunet", "--json"),
    ]


def _landmarks(rgb):
    from faceanon.faces.detection import create_detector

    return create_detector("yunet").detect(rgb)[0].landmarks


def test_on_same_person_with_the_tiny_engine_reports_the_keyframe_check(tmp_path, capsys, monkeypatch):
    """The real engine on tiny random checkpoints (at 64 px): its faces are noise, a different person
    to the identity check, so nothing is retried, and the report says what was measured."""
    import faceanon.cli.anonymize as anonymize_command
    from faceanon.anonymizer import face_seed
    from faceanon.cli.common import make_anonymizer
    from faceanon.testing import tiny_pipeline_env

    pytest.importorskip("faceanon.trust.identity")
    for name, value in tiny_pipeline_env(tmp_path / "tiny").items():
        monkeypatch.setenv(name, value)

    def at_64_px(args):
        anonymizer = make_anonymizer(args)
        anonymizer.resolution = 64
        return anonymizer

    monkeypatch.setattr(anonymize_command, "make_anonymizer", at_64_px)
    short = make_test_clip(
        tmp_path / "short.mp4", photo="grace_hopper", size=(160, 208), seconds=0.15, fps=20
    )
    out = tmp_path / "tiny.mp4"
    assert main(_retry_diffusion_args(short.path, out)) == 0
    entry = json.loads(capsys.readouterr().out)["files"][0]
    track = entry["tracks"][0]
    assert entry["on_same_person"] == "retry" and track["method"] == "diffusion"
    assert track["seed"] == face_seed(3, 0) and track["degree"] == 1.25 and track["message"] == ""
    assert track["keyframe_similarity"] is not None and track["guard_frames"] == []
    assert probe_video(out).frame_count == short.frame_count == 3
