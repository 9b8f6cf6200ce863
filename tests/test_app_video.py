"""The Video tab's endpoints on a real app server (no diffusion weights: redaction), called with
gradio_client as a user's script would; limits with clear errors; the ZeroGPU duration."""

from __future__ import annotations

import av
import numpy as np
import pytest
from gradio_client import Client, handle_file

from faceanon.media.video import probe_video
from faceanon.testing_video import PRIVATE_STRINGS, make_test_clip
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
        yield Client(url, verbose=False)


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
