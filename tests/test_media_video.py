"""Video in, video out: frames, timing, rotation, audio kept; metadata dropped; bad files explained.

Clips are built from real photos (faceanon.testing_video) with PyAV; the system ffprobe/ffmpeg
(only here, never in the product) double-checks what faceanon wrote.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest

from faceanon.errors import VideoInputError
from faceanon.media.atomic import TEMP_PREFIX
from faceanon.media.video import VIDEO_EXTENSIONS, VideoWriter, open_video, probe_video
from faceanon.testing_video import PRIVATE_STRINGS, make_test_clip

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(FFPROBE is None, reason="the ffprobe binary double-checks outputs")


def _copy(src, dst, **writer_options):
    """Decode src and encode every frame unchanged: the identity round trip."""
    with (
        open_video(src) as reader,
        VideoWriter(dst, like=reader.info, source=src, **writer_options) as writer,
    ):
        for frame in reader:
            writer.write(frame.rgb, like=frame)
    return dst


def _frames(path) -> list[np.ndarray]:
    with open_video(path) as reader:
        return [frame.rgb for frame in reader]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-10))


def _ffprobe(path, *args) -> dict:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-of", "json", *args, str(path)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def _frame_times(path, stream="v:0") -> list[Fraction]:
    """Presentation times of the decoded frames as exact fractions (pts x time base)."""
    info = _ffprobe(path, "-select_streams", stream, "-show_entries", "stream=time_base:frame=pts")
    time_base = Fraction(info["streams"][0]["time_base"])
    return [frame["pts"] * time_base for frame in info["frames"]]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        "pan": make_test_clip(root / "pan.mp4", photo="group", motion="pan", seconds=1.0, keep_frames=True),
        "phone": make_test_clip(
            root / "phone.mov",
            photo="grace_hopper",
            motion="zoom",
            size=(240, 320),
            rotation=90,
            vfr=True,
            audio=True,
            metadata=True,
            seconds=1.2,
            keep_frames=True,
        ),
    }


def test_extensions():
    assert VIDEO_EXTENSIONS == {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"}


@needs_ffprobe
def test_identity_round_trip_keeps_size_frames_timing_and_pixels(clips, tmp_path):
    src = clips["pan"].path
    out = _copy(src, tmp_path / "out.mp4")
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (320, 240, 25)
    assert (info.video_codec, info.container, info.rotation) == ("h264", "mp4", 0)
    assert _frame_times(out) == _frame_times(src)
    stream = _ffprobe(out, "-show_streams", "-select_streams", "v:0")["streams"][0]
    assert stream["pix_fmt"] == "yuv420p" and stream["color_space"] == "bt709"
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), (
        "+faststart: the index comes first (browsers start playing)"
    )
    before, after = _frames(src), _frames(out)
    assert len(after) == len(before) == 25
    psnr = [_psnr(a, b) for a, b in zip(before, after, strict=True)]
    # x264 at crf 18 ("visually lossless") on a detailed group photo: ~35-38 dB; a colour-matrix or
    # range mix-up, a shifted or dropped frame costs 10-20 dB
    assert min(psnr) > 33 and np.mean(psnr) > 35, f"round trip changed pixels beyond codec noise: {psnr}"
    # and the clip is the photo: decoded source vs the frames it was made from
    assert min(_psnr(a, b) for a, b in zip(before, clips["pan"].frames, strict=True)) > 30


@needs_ffprobe
def test_variable_frame_rate_timing_is_kept_exactly(clips, tmp_path):
    src = clips["phone"]
    out = _copy(src.path, tmp_path / "vfr.mp4")
    times = _frame_times(out)
    assert times == [p * src.time_base for p in src.pts]  # irregular steps, to the tick
    assert len(set(np.diff(times))) > 3


@needs_ffprobe
def test_rotated_phone_video_comes_out_upright_with_no_rotation_left(clips, tmp_path):
    src = clips["phone"]
    info = probe_video(src.path)
    assert (info.width, info.height, info.rotation) == (240, 320, 90)
    frames = _frames(src.path)
    assert frames[0].shape == (320, 240, 3)
    assert min(_psnr(a, b) for a, b in zip(frames, src.frames, strict=True)) > 30  # upright, not turned
    # FFmpeg's own autorotation agrees with ours
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(src.path),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert _psnr(np.frombuffer(raw, np.uint8).reshape(320, 240, 3), frames[0]) > 35
    out = _copy(src.path, tmp_path / "upright.mp4")
    stream = _ffprobe(out, "-show_streams", "-select_streams", "v:0")["streams"][0]
    assert (stream["width"], stream["height"]) == (240, 320)
    assert "side_data_list" not in stream and "rotate" not in stream.get("tags", {})
    assert probe_video(out).rotation == 0


@needs_ffprobe
def test_no_input_metadata_reaches_the_output(clips, tmp_path):
    src = clips["phone"].path
    source_tags = json.dumps(_ffprobe(src, "-show_format", "-show_streams"))
    assert all(s in source_tags for s in ("ISO6709", "iPhone", "48.8584", "Core Media")), (
        "the clip has the tags"
    )
    out = _copy(src, tmp_path / "clean.mp4")
    probed = _ffprobe(out, "-show_format", "-show_streams")
    assert set(probed["format"].get("tags", {})) <= {"major_brand", "minor_version", "compatible_brands"}
    for stream in probed["streams"]:
        tags = stream.get("tags", {})
        assert set(tags) <= {"language", "handler_name", "vendor_id"}, tags
        assert tags.get("language", "und") == "und"
    data = out.read_bytes()
    for private in (*PRIVATE_STRINGS, "Lavf", "creation"):
        assert private.encode() not in data, f"{private!r} is in the output file"


@needs_ffprobe
def test_audio_is_kept_within_a_frame(clips, tmp_path):
    src = clips["phone"]
    out = _copy(src.path, tmp_path / "sound.mp4")
    streams = _ffprobe(out, "-show_streams", "-select_streams", "a")["streams"]
    assert [s["codec_name"] for s in streams] == ["aac"]  # AAC in MP4: copied, not re-encoded
    assert abs(float(streams[0]["duration"]) - src.audio_seconds) < 1 / 25
    with av.open(str(out)) as container:  # the tone is there, not silence
        samples = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    assert 0.15 < np.sqrt(np.mean(samples**2)) < 0.3  # a 0.3 amplitude sine: RMS 0.21


@needs_ffprobe
@pytest.mark.parametrize(
    "suffix, audio_codec, out_name, expected",
    [
        (".avi", "pcm_s16le", "o.mp4", ("h264", "aac")),  # PCM does not go in MP4: re-encoded to AAC
        (".webm", "libopus", "o.mp4", ("h264", "opus")),  # Opus does: copied
        (".mkv", "libopus", "o.webm", ("vp9", "opus")),  # WebM output: VP9, Opus copied
        (".mp4", "aac", "o.mkv", ("h264", "aac")),
        (".mov", "aac", "o.mov", ("h264", "aac")),
        (".mp4", "aac", "o.avi", ("h264", "mp3")),  # AVI: AAC re-encoded to MP3
    ],
)
def test_containers_in_and_out(tmp_path, suffix, audio_codec, out_name, expected):
    src = make_test_clip(
        tmp_path / f"in{suffix}",
        photo="astronaut",
        motion="zoom",
        size=(160, 120),
        seconds=0.4,
        audio=True,
        audio_codec=audio_codec,
    )
    assert probe_video(src.path).frame_count == 10
    out = _copy(src.path, tmp_path / out_name)
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (160, 120, 10)
    assert (info.video_codec, info.audio_codec) == expected
    audio = _ffprobe(out, "-show_streams", "-select_streams", "a", "-count_packets")["streams"][0]
    assert int(audio["nb_read_packets"]) > 5


def test_odd_size_keeps_its_size(tmp_path):
    src = make_test_clip(tmp_path / "odd.mkv", photo="astronaut", size=(161, 121), seconds=0.2)
    out = _copy(src.path, tmp_path / "odd.mp4")
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (161, 121, 5)


def test_reading_is_streamed(tmp_path):
    """Python memory stays at a few frames whatever the length (the clip is 150 frames)."""
    src = make_test_clip(tmp_path / "long.mp4", photo="group", seconds=6.0, size=(320, 240))
    frame_bytes = 320 * 240 * 3
    tracemalloc.start()
    with open_video(src.path) as reader:
        count = sum(1 for _ in reader)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 150
    assert peak < 10 * frame_bytes, f"peak {peak / frame_bytes:.1f} frames"


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_nothing(clips, tmp_path, stop):
    dst = tmp_path / "out" / "partial.mp4"
    with (
        pytest.raises(stop),
        open_video(clips["phone"].path) as reader,
        VideoWriter(dst, like=reader.info, source=clips["phone"].path) as writer,
    ):
        for frame in reader:
            writer.write(frame.rgb, like=frame)
            if frame.index == 5:
                raise stop("stopped")
    assert list(dst.parent.iterdir()) == []


def test_interrupted_write_keeps_the_previous_output(clips, tmp_path):
    dst = _copy(clips["pan"].path, tmp_path / "done.mp4")
    before = dst.read_bytes()
    with (
        pytest.raises(RuntimeError),
        open_video(clips["pan"].path) as reader,
        VideoWriter(dst, like=reader.info) as writer,
    ):
        writer.write(next(iter(reader)).rgb)
        raise RuntimeError("disk full")
    assert dst.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_write_refuses_a_wrong_frame_size(clips, tmp_path):
    with open_video(clips["pan"].path) as reader:
        with (
            pytest.raises(ValueError, match="240x320x3 uint8"),
            VideoWriter(tmp_path / "x.mp4", like=reader.info) as w,
        ):
            w.write(np.zeros((100, 100, 3), np.uint8))
    assert not (tmp_path / "x.mp4").exists()


def _bad_files(tmp_path, clips, grace_hopper_path):
    good = clips["pan"].path.read_bytes()
    codec_at = good.find(b"avc1", 32)  # the sample entry, not the brand list
    cases = {
        "text.mp4": (b"not a video, a shopping list\n" * 20, "is not a video faceanon can read"),
        "cut.mp4": (good[: len(good) // 2], "truncated or damaged"),  # index (moov) at the end: gone
        "unknown.mp4": (good[:codec_at] + b"zzzz" + good[codec_at + 4 :], "cannot decode"),
        "photo.jpg": (grace_hopper_path.read_bytes(), "still image"),
    }
    with av.open(str(tmp_path / "sound.m4a"), "w") as container:
        sound = container.add_stream("aac", rate=48000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    cases["sound.m4a"] = ((tmp_path / "sound.m4a").read_bytes(), "no video stream")
    faststart = _copy(clips["pan"].path, tmp_path / "faststart.mp4").read_bytes()  # index first: data cut
    cases["cut-faststart.mp4"] = (faststart[: len(faststart) // 2], "is truncated")
    mkv = make_test_clip(tmp_path / "whole.mkv", seconds=1.0).path.read_bytes()
    cases["cut.mkv"] = (mkv[: len(mkv) // 3], "is truncated")
    return cases


def test_bad_inputs_are_explained(clips, tmp_path, grace_hopper_path):
    for name, (data, message) in _bad_files(tmp_path, clips, grace_hopper_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(VideoInputError, match=message) as caught:
            with open_video(path) as reader:
                list(reader)
        text = str(caught.value)
        assert name in text and str(tmp_path) not in text, text  # the name, not the server path
    with pytest.raises(VideoInputError, match="does not exist"):
        probe_video(tmp_path / "missing.mp4")


def test_clip_maker_faces_enter_leave_and_hide(tmp_path):
    """The clips the tracking tests use hold real, detectable faces where they say."""
    from faceanon.faces.detection import create_detector

    detector = create_detector("yunet")
    clip = make_test_clip(
        tmp_path / "enter.mp4",
        photo="grace_hopper",
        motion="enter_leave",
        seconds=1.0,
        cover=(12, 14, (0, 0, 320, 240)),
    )
    counts = [len(detector.detect(frame)) for frame in _frames(clip.path)]
    assert counts[0] == 0 and counts[-1] == 0  # off screen at both ends
    assert counts[10] == 1 and counts[16] == 1  # in the middle
    assert counts[12:15] == [0, 0, 0]  # hidden
    group = make_test_clip(tmp_path / "group.mp4", photo="group", motion="zoom", size=(480, 360), seconds=0.2)
    assert len(detector.detect(_frames(group.path)[0])) >= 5


@pytest.mark.parametrize("rotation", [180, 270])
def test_other_rotations_match_ffmpegs_autorotation(tmp_path, rotation):
    src = make_test_clip(
        tmp_path / "turned.mp4",
        photo="grace_hopper",
        motion="still",
        size=(120, 160),
        seconds=0.12,
        rotation=rotation,
        keep_frames=True,
    )
    assert probe_video(src.path).rotation == rotation
    frame = _frames(src.path)[0]
    assert frame.shape == (160, 120, 3) and _psnr(frame, src.frames[0]) > 30
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(src.path),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert _psnr(np.frombuffer(raw, np.uint8).reshape(frame.shape), frame) > 35
