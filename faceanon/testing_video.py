"""Small test videos made from real photos (no free video clip ships in any package here).

    make_test_clip(tmp_path / "pan.mp4", photo="group", motion="pan")
    make_test_clip(tmp_path / "phone.mov", photo="grace_hopper", rotation=90, vfr=True, audio=True,
                   metadata=True)

Each frame is a moving crop of a real photo (insightface's t1.jpg group photo, skimage's
astronaut, matplotlib's grace_hopper), so detectors see real faces: `pan` slides across the photo,
`zoom` pushes in on its centre, `enter_leave` slides a portrait in from the left and out to the
right over a plain background, `still` holds one framing. `cover` paints a black box over part of
the picture for a few frames (a face briefly hidden). The clip can be stored sideways with a
display rotation (as phones do), have irregular frame times (variable frame rate), a sine-tone
audio track, and the metadata phones write (creation time, ISO 6709 location, make and model,
a title, stream handler names): what the product must not copy to its outputs.

Clips are written with PyAV directly (not faceanon's VideoWriter), so they test the reader and the
writer independently. `ClipSpec` returned says what was written (frames, pts, rotation...).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

PHONE_METADATA = {
    "creation_time": "2024-05-01T10:20:30.000000Z",
    "location": "+48.8584+002.2945+035.000/",
    "location-eng": "+48.8584+002.2945+035.000/",
    "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945+035.000/",
    "com.apple.quicktime.make": "Apple",
    "com.apple.quicktime.model": "iPhone 15 Pro",
    "com.apple.quicktime.software": "17.4.1",
    "com.apple.quicktime.creationdate": "2024-05-01T12:20:30+0200",
    "make": "Apple",
    "model": "iPhone 15 Pro",
    "title": "Family picnic at the Eiffel Tower",
    "comment": "shot by Jane Doe",
    "encoder": "iPhone 15 Pro camera",
}
STREAM_METADATA = {
    "handler_name": "Core Media Video",
    "creation_time": "2024-05-01T10:20:30.000000Z",
    "title": "Jane's phone",
    "language": "fra",
}
# Strings that must never appear in an anonymized output (any tag, any stream).
PRIVATE_STRINGS = ("48.8584", "002.2945", "Apple", "iPhone", "2024-05-01", "Eiffel", "Jane", "Core Media")


@dataclass
class ClipSpec:
    path: Path
    width: int  # as displayed
    height: int
    frame_count: int
    pts: list[int]
    time_base: Fraction
    rotation: int
    audio_seconds: float | None
    frames: list[np.ndarray] = field(default_factory=list, repr=False)  # upright RGB, as encoded


def photo_rgb(photo: str | np.ndarray) -> np.ndarray:
    """'group' (insightface t1.jpg, 6 faces), 'astronaut' (skimage), 'grace_hopper' (matplotlib), or an
    array."""
    if isinstance(photo, np.ndarray):
        return photo
    if photo == "group":
        import insightface

        path = Path(os.path.dirname(insightface.__file__)) / "data" / "images" / "t1.jpg"
    elif photo == "grace_hopper":
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    elif photo == "astronaut":
        from skimage import data

        return data.astronaut()
    else:
        raise ValueError(f"unknown photo {photo!r}: use 'group', 'astronaut' or 'grace_hopper'")
    return np.asarray(Image.open(path).convert("RGB"))


def make_test_clip(
    path: str | Path,
    photo: str | np.ndarray = "group",
    motion: str = "pan",
    size: tuple[int, int] = (320, 240),
    seconds: float = 1.0,
    fps: int = 25,
    rotation: int = 0,
    vfr: bool = False,
    audio: bool = False,
    metadata: bool = False,
    cover: tuple[int, int, tuple[int, int, int, int]] | None = None,
    codec: str | None = None,
    audio_codec: str = "aac",
    keep_frames: bool = False,
) -> ClipSpec:
    """Write a clip and return what it holds. `size` is (width, height) as displayed; `rotation`
    (0/90/180/270, clockwise) stores the frames turned the other way plus a display rotation.
    `cover`: (first frame, last frame, (x0, y0, x1, y1)) painted black. `codec`: default H.264
    (VP9 for .webm, MPEG-4 part 2 for .avi). `audio_codec`: "aac", "libopus", "pcm_s16le"..."""
    path = Path(path)
    width, height = size
    count = max(1, round(seconds * fps))
    time_base, pts = _timing(count, fps, vfr)
    source = photo_rgb(photo)
    frames = [_frame(source, motion, i / max(count - 1, 1), width, height) for i in range(count)]
    if cover is not None:
        first, last, (x0, y0, x1, y1) = cover
        for frame in frames[first : last + 1]:
            frame[y0:y1, x0:x1] = 0
    audio_seconds = float(pts[-1] * time_base + Fraction(1, fps)) if audio else None
    _write(path, frames, pts, time_base, fps, rotation, (audio_seconds, audio_codec), metadata, codec)
    return ClipSpec(
        path=path,
        width=width,
        height=height,
        frame_count=count,
        pts=pts,
        time_base=time_base,
        rotation=rotation,
        audio_seconds=audio_seconds,
        frames=frames if keep_frames else [],
    )


def _timing(count: int, fps: int, vfr: bool) -> tuple[Fraction, list[int]]:
    if not vfr:
        return Fraction(1, fps), list(range(count))
    time_base = Fraction(1, 90000)
    step = 90000 // fps
    factors = (1.0, 1.0, 2.0, 0.5, 1.5, 1.0, 3.0, 0.75)  # a phone dropping and bunching frames
    pts, now = [], 0
    for i in range(count):
        pts.append(now)
        now += round(step * factors[i % len(factors)])
    return time_base, pts


def _frame(source: np.ndarray, motion: str, t: float, width: int, height: int) -> np.ndarray:
    """Frame at time t in [0, 1] of a camera move over `source`."""
    if motion == "enter_leave":
        return _enter_leave(source, t, width, height)
    photo_h, photo_w = source.shape[:2]
    aspect = width / height
    if motion == "zoom":
        scale = 1.0 - 0.45 * t
    else:
        scale = 0.7 if motion == "pan" else 1.0
    crop_h = min(photo_h, photo_w / aspect) * scale
    crop_w = crop_h * aspect
    if motion == "pan":
        x0 = (photo_w - crop_w) * t
        y0 = (photo_h - crop_h) * (0.3 + 0.2 * t)
    else:
        x0, y0 = (photo_w - crop_w) / 2, (photo_h - crop_h) / 2
    # An affine warp gives sub-pixel camera motion (a crop at integer offsets would judder).
    matrix = np.array([[crop_w / width, 0, x0], [0, crop_h / height, y0]], dtype=np.float64)
    return cv2.warpAffine(
        source,
        matrix,
        (width, height),
        flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )


def _enter_leave(source: np.ndarray, t: float, width: int, height: int) -> np.ndarray:
    """The portrait, scaled to 80% of the frame height, crosses from off-left to off-right."""
    canvas = np.full((height, width, 3), (90, 110, 130), dtype=np.uint8)
    portrait_h = int(height * 0.8)
    portrait_w = max(1, int(source.shape[1] * portrait_h / source.shape[0]))
    portrait = cv2.resize(source, (portrait_w, portrait_h), interpolation=cv2.INTER_AREA)
    left = int(round(-portrait_w + (width + portrait_w) * t))
    top = (height - portrait_h) // 2
    x0, x1 = max(left, 0), min(left + portrait_w, width)
    if x1 > x0:
        canvas[top : top + portrait_h, x0:x1] = portrait[:, x0 - left : x1 - left]
    return canvas


def _write(path: Path, frames, pts, time_base, fps, rotation, audio, metadata, codec) -> None:
    audio_seconds, audio_codec = audio
    suffix = path.suffix.lower()
    options = {"movflags": "+use_metadata_tags"} if metadata and suffix in (".mp4", ".mov", ".m4v") else {}
    codec = codec or {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(suffix, "libx264")
    with av.open(str(path), mode="w", options=options) as container:
        if metadata:
            container.metadata.update(PHONE_METADATA)
        stream = container.add_stream(codec, rate=fps)
        stored_h, stored_w = np.rot90(frames[0], k=rotation // 90).shape[:2]
        stream.width, stream.height = stored_w, stored_h
        stream.pix_fmt = "yuv420p" if stored_w % 2 == 0 and stored_h % 2 == 0 else "yuv444p"
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "fast"}  # a phone's quality, roughly
        if rotation:
            stream.set_display_rotation(-rotation)  # PyAV takes the counter-clockwise angle
        if metadata:
            stream.metadata.update(STREAM_METADATA)
        sound = _add_tone(container, audio_codec, metadata) if audio_seconds else None
        for rgb, frame_pts in zip(frames, pts, strict=True):
            stored = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))  # turned back by the player
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts, frame.time_base = frame_pts, time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if sound is not None:
            _write_tone(container, sound, audio_seconds)


def _add_tone(container, codec: str, metadata: bool):
    sound = container.add_stream(codec, rate=48000, layout="mono")
    if metadata:
        sound.metadata.update({"handler_name": "Core Media Audio", "title": "Jane's phone mic"})
    return sound


def _write_tone(container, sound, seconds: float, frequency: float = 440.0) -> None:
    rate, chunk = 48000, 1024
    wanted = sound.codec_context.format.name
    resampler = av.AudioResampler(format=wanted, layout="mono", rate=rate) if wanted != "fltp" else None
    total = round(seconds * rate)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(n) + start) / rate
        samples = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame = resampler.resample(frame)[0] if resampler else frame
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        container.mux(sound.encode(frame))
    container.mux(sound.encode(None))


__all__ = ["make_test_clip", "photo_rgb", "ClipSpec", "PHONE_METADATA", "STREAM_METADATA", "PRIVATE_STRINGS"]
