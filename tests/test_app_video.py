"""The Video tab's endpoints on a real app server (no diffusion weights: redaction), called with
gradio_client as a user's script would; the keep-list; limits with clear errors; the ZeroGPU duration."""

from __future__ import annotations

import uuid

import av
import cv2
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from faceanon.faces.detection import create_detector
from faceanon.media.video import VideoWriter, open_video, probe_video
from faceanon.testing_video import PRIVATE_STRINGS, make_test_clip, photo_rgb
from faceanon.webapp.testing import running_app

WEIGHT_VARS = (
    "FACEANON_FACE_MODEL",
    "FACEANON_VAE",
    "FACEANON_IMAGE_ENCODER",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    env = {"HF_HOME": str(tmp_path_factory.mktemp("empty-hf-home")), "FACEANON_MAX_VIDEO_FRAMES": "40"}
    with running_app(env, unset=WEIGHT_VARS, workdir=tmp_path_factory.mktemp("app")) as url:
        client = Client(url, verbose=False)
        client.workdir = url.workdir
        yield client


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_test_clip(
        tmp_path_factory.mktemp("clip") / "two.mp4",
        photo="group",
        motion="pan",
        size=(320, 224),
        seconds=0.8,
        fps=20,
        audio=True,
        metadata=True,
    )


def test_find_people_then_anonymize_the_chosen_ones(client, clip):
    gallery, tracks = client.predict(handle_file(clip.path), api_name="/find_people")
    assert len(gallery) == len(tracks) >= 3
    chosen = [t["id"] for t in tracks[:2]]
    video, summary, report = client.predict(
        handle_file(clip.path),
        method="pixelate",
        tracks=", ".join(map(str, chosen)),
        api_name="/anonymize_video",
    )
    path = video["video"] if isinstance(video, dict) else video
    info = probe_video(path)
    assert info.frame_count == clip.frame_count and info.has_audio
    assert [t["track_id"] for t in report["tracks"] if t["method"]] == chosen
    assert all(t["method"] is None for t in report["tracks"] if t["track_id"] not in chosen)
    data = open(path, "rb").read()
    assert not [s for s in PRIVATE_STRINGS if s.encode() in data]
    assert "pixelate" in summary


def test_a_video_over_the_frame_limit_gets_a_clear_error(client, tmp_path):
    long_clip = make_test_clip(
        tmp_path / "long.mp4", photo="astronaut", motion="still", size=(64, 64), seconds=3, fps=20
    )
    with pytest.raises(Exception) as error:
        client.predict(handle_file(long_clip.path), method="blur", api_name="/anonymize_video")
    assert "60 frames" in str(error.value) and "at most 40" in str(error.value)
    assert "shorter clips" in str(error.value)


def test_not_a_video_gets_a_clear_error(client, tmp_path):
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(Exception) as error:
        client.predict(handle_file(fake), method="blur", api_name="/anonymize_video")
    assert "not a video faceanon can read" in str(error.value)
    assert str(tmp_path) not in str(error.value)  # no server paths


def test_twenty_thousand_frames_are_refused_before_decoding(tmp_path, monkeypatch):
    """A 20,000-frame video (tiny frames, so it is quick to write) against the default limits."""
    import gradio as gr

    from faceanon.webapp.video_tab import VideoLimits, check_video, gpu_seconds

    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width = stream.height = 16
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for i in range(20_000):
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    monkeypatch.delenv("FACEANON_MAX_VIDEO_FRAMES", raising=False)
    with pytest.raises(gr.Error) as error:
        check_video(str(path))
    assert "20,000 frames" in str(error.value) and f"{VideoLimits.max_frames:,}" in str(error.value)
    # ZeroGPU time grows with the frame count and stays within its cap.
    assert gpu_seconds(str(path), "diffusion", 1.25, 0, "all", 25) == VideoLimits.max_gpu_s
    short = make_test_clip(
        tmp_path / "short.mp4", photo="astronaut", motion="still", size=(64, 64), seconds=0.5, fps=20
    )
    assert (
        30
        < gpu_seconds(str(short.path), "diffusion", 1.25, 0, "all", 25)
        < gpu_seconds(str(short.path), "diffusion", 1.25, 0, "all", 50)
        < VideoLimits.max_gpu_s
    )


# -- keep-list ------------------------------------------------------------------------------------
def _two_people_clip(path):
    """The astronaut (left) and Grace Hopper (right), held still for 5 frames."""
    two_people = np.concatenate(
        [cv2.resize(photo_rgb("astronaut"), (300, 300)), cv2.resize(photo_rgb("grace_hopper"), (225, 300))],
        axis=1,
    )
    return make_test_clip(path, photo=two_people, motion="still", size=(350, 200), seconds=0.5, fps=10)


def _keep_photo(folder) -> tuple:
    """Grace Hopper's portrait (the photo, not a frame of the clip) with a camera make in its EXIF."""
    marker = f"SecretCam-{uuid.uuid4().hex[:8]}"
    exif = Image.Exif()
    exif[0x010F] = marker
    path = folder / "grace.jpg"
    Image.fromarray(photo_rgb("grace_hopper")).save(path, exif=exif, quality=92)
    assert marker.encode() in path.read_bytes()
    return path, marker


def _frames(path) -> list[np.ndarray]:
    with open_video(path) as reader:
        return [frame.rgb.astype(np.int16) for frame in reader]


def _face_change(before, after, box) -> float:
    """Mean absolute pixel change inside a face box, over all frames."""
    x0, y0, x1, y1 = (int(v) for v in box)
    pairs = zip(before, after, strict=True)
    return float(np.mean([np.abs(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).mean() for a, b in pairs]))


def _codec_noise(clip, box) -> float:
    """What one more H.264 encode (the app's crf) changes in the box when nothing is anonymized."""
    again = clip.path.with_name("again.mp4")
    with open_video(clip.path) as reader, VideoWriter(again, like=reader.info, source=clip.path) as writer:
        for frame in reader:
            writer.write(frame.rgb, like=frame)
    return _face_change(_frames(clip.path), _frames(again), box)


def _video_path(video) -> str:
    return video["video"] if isinstance(video, dict) else video


def test_a_kept_person_is_marked_and_left_untouched(client, tmp_path):
    clip = _two_people_clip(tmp_path / "two.mp4")
    grace, marker = _keep_photo(tmp_path)
    original = _frames(clip.path)
    astronaut, hopper = (f.box for f in create_detector("yunet").detect(original[0].astype(np.uint8)))

    gallery, tracks = client.predict(handle_file(clip.path), [handle_file(grace)], api_name="/find_people")
    assert len(tracks) == len(gallery) == 2
    [kept] = [t for t in tracks if t["kept_as"]]
    assert kept["kept_as"] == "grace" and kept["kept_similarity"] >= 0.4
    assert sorted(item["caption"] for item in gallery) == sorted(
        [f"Person {t['id']}" for t in tracks if not t["kept_as"]] + [f"Person {kept['id']}: kept (grace)"]
    )

    video, summary, report = client.predict(
        handle_file(clip.path), method="solid", keep=[handle_file(grace)], api_name="/anonymize_video"
    )
    out = _frames(_video_path(video))
    assert len(out) == clip.frame_count
    noise = _codec_noise(clip, hopper)  # ~2.1 levels of 255
    assert _face_change(original, out, hopper) <= 1.25 * noise  # as it was, up to codec noise
    assert _face_change(original, out, astronaut) > 10 * noise  # filled
    [kept_report] = [t for t in report["tracks"] if t["kept_as"]]
    assert kept_report["track_id"] == kept["id"] and kept_report["method"] is None
    assert "kept (grace)" in summary and "Kept (keep-list)" in summary

    # Without keep photos, called as before the keep parameter existed (positional, six inputs): she changes.
    video, _, report = client.predict(
        handle_file(clip.path), "solid", 1.25, 0, "all", 25, api_name="/anonymize_video"
    )
    assert _face_change(original, _frames(_video_path(video)), hopper) > 10 * noise
    assert not any(t["kept_as"] for t in report["tracks"])

    # The keep photo was cleaned on arrival, like any photo upload: its EXIF is nowhere on the server.
    stored = [p for p in client.workdir.rglob("*") if p.is_file() and p.name != "server.log"]
    assert any(p.name == "grace.jpg" for p in stored)
    assert not [p for p in stored if marker.encode() in p.read_bytes()]


def test_a_keep_photo_without_a_face_gets_a_clear_error(client, tmp_path):
    clip = _two_people_clip(tmp_path / "two.mp4")
    Image.new("RGB", (200, 200), (120, 160, 200)).save(tmp_path / "sky.png")
    for endpoint in ("/find_people", "/anonymize_video"):
        with pytest.raises(Exception) as error:
            client.predict(
                handle_file(clip.path), keep=[handle_file(tmp_path / "sky.png")], api_name=endpoint
            )
        assert "No face was found in the keep photo 'sky'" in str(error.value)
        assert "/tmp" not in str(error.value) and str(tmp_path) not in str(error.value)


def test_a_video_is_scanned_once_for_new_keep_photos_and_again_when_it_changes(tmp_path):
    from faceanon.webapp.video_tab import _ScanCache

    path = tmp_path / "clip.mp4"
    path.write_bytes(b"first upload")
    cache, scans = _ScanCache(size=2), []

    def scan():
        scans.append(path.read_bytes())
        return len(scans)

    assert cache.get(str(path), scan) == cache.get(str(path), scan) == 1  # keep photos changed: no rescan
    path.write_bytes(b"another video, same name")
    assert cache.get(str(path), scan) == 2
    assert scans == [b"first upload", b"another video, same name"]


def test_the_video_endpoints_keep_their_inputs_and_add_keep_last(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    inputs = [p["parameter_name"] for p in api["/anonymize_video"]["parameters"]]
    assert inputs == ["video", "method", "degree", "seed", "tracks", "steps", "keep"]  # old calls still fit
    assert [p["parameter_name"] for p in api["/find_people"]["parameters"]] == ["video", "keep"]
    assert all(p["parameter_has_default"] for p in api["/anonymize_video"]["parameters"][1:])
    assert "keep: photos of people to leave untouched" in api["/anonymize_video"]["description"]
    assert not [name for name in api if "page" in name]  # the page's own events stay private


@pytest.mark.slow
def test_diffusion_with_a_keep_photo_on_tiny_checkpoints(tmp_path_factory, tmp_path):
    """The GPU path (_run_diffusion, @spaces.GPU) with keep photos, on tiny random checkpoints (the real
    12 GB weights cannot exist here): the kept person is untouched, the other one is generated."""
    from faceanon.testing import tiny_pipeline_env

    env = tiny_pipeline_env(tmp_path_factory.mktemp("tiny-weights"))
    clip = _two_people_clip(tmp_path / "two.mp4")
    grace, _ = _keep_photo(tmp_path)
    original = _frames(clip.path)
    astronaut, hopper = (f.box for f in create_detector("yunet").detect(original[0].astype(np.uint8)))
    with running_app(env, workdir=tmp_path_factory.mktemp("app")) as url:
        client = Client(url, verbose=False)
        video, summary, report = client.predict(
            handle_file(clip.path),
            method="diffusion",
            steps=1,
            keep=[handle_file(grace)],
            api_name="/anonymize_video",
        )
    out = _frames(_video_path(video))
    by_method = {t["method"]: t for t in report["tracks"]}
    assert set(by_method) == {"diffusion", None} and by_method[None]["kept_as"] == "grace"
    noise = _codec_noise(clip, hopper)
    assert _face_change(original, out, hopper) <= 1.25 * noise
    assert _face_change(original, out, astronaut) > 5 * noise  # a random tiny model's face
    assert "kept (grace)" in summary
