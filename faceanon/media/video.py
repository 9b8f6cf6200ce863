"""Videos in and out, streamed, with PyAV (FFmpeg in its wheel; no ffmpeg binary needed).

    info = probe_video(path)                      # size (as displayed), frames, fps, rotation, audio
    with open_video(path) as reader, VideoWriter(dst, like=reader.info, source=path) as writer:
        for frame in reader:                      # one decoded frame at a time: memory does not grow
            writer.write(process(frame.rgb), like=frame)

Reading applies the display rotation (a phone video stored sideways comes out upright) and keeps
every frame's source timestamp, so the writer reproduces the timing exactly, variable frame rate
included. Writing encodes H.264 (yuv420p, BT.709, +faststart: every browser plays it) into MP4 by
default, or into the container the destination's extension names (.mov, .mkv, .m4v, .avi; .webm
gets VP9 + Opus). The source's audio streams are copied as they are when the output container
takes their codec, else re-encoded (AAC; Opus in WebM, MP3 in AVI), interleaved with the video as
it is written.

Nothing of the input's metadata is written: no creation time, location (ISO 6709), device make or
model, title, handler or encoder strings, at container or stream level; subtitle and data tracks
(e.g. a phone's timed-metadata track) are dropped. The output goes to a temporary name and is moved
into place only when complete (faceanon.media.atomic): after an error or Ctrl-C nothing is at `dst`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.codec.context import Flags as CodecFlags
from av.stream import Disposition
from av.video.reformatter import ColorRange, Colorspace

from faceanon.errors import VideoInputError
from faceanon.media.atomic import atomic_output

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})

# Output container (FFmpeg muxer name) for each extension, and the codecs written into it.
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
_CONTAINER_ALIASES = {
    "mp4": "mp4",
    "m4v": "mp4",
    "mov": "mov",
    "mkv": "matroska",
    "matroska": "matroska",
    "webm": "webm",
    "avi": "avi",
}
_MUXER_SUFFIX = {"mp4": ".mp4", "mov": ".mov", "matroska": ".mkv", "webm": ".webm", "avi": ".avi"}
_VIDEO_ENCODER = {"webm": "libvpx-vp9"}  # H.264 (libx264) everywhere else
_AUDIO_ENCODER = {"webm": "libopus", "avi": "libmp3lame"}  # AAC everywhere else
# Audio codecs copied without re-encoding, per container: those its players (browsers) handle.
_AUDIO_COPY = {
    "mp4": {"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"},
    "matroska": None,  # None: whatever the muxer accepts
    "webm": {"opus", "vorbis"},
    "avi": {"mp3", "ac3", "pcm_s16le"},
}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)
_MP3_RATES = (48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_AUDIO_AHEAD_S = 0.5  # audio muxed this far ahead of the last written frame keeps the file interleaved


@dataclass(frozen=True)
class VideoInfo:
    """What a video is, as it will be shown: `width` x `height` after the display rotation.

    `rotation` is the clockwise turn (0, 90, 180, 270) the player applies to the stored frames,
    as phones' "rotate" tag says; frames read by `open_video` already have it applied.
    `frame_count` is the container's count when it states one, else counted (demuxed, not decoded).
    `time_base` is the source video stream's time unit (frame pts are in it); `average_rate` the
    exact average frame rate (`fps` is its float value)."""

    width: int
    height: int
    frame_count: int
    fps: float
    duration_s: float
    rotation: int
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    container: str
    time_base: Fraction = Fraction(1, 90000)
    average_rate: Fraction = Fraction(30)
    audio_streams: int = 0


@dataclass(frozen=True)
class Frame:
    """One decoded frame: `rgb` (H x W x 3 uint8, upright), its position and source timing."""

    index: int
    rgb: np.ndarray
    pts: int
    time_base: Fraction

    @property
    def time_s(self) -> float:
        return float(self.pts * self.time_base)


def probe_video(path: str | Path) -> VideoInfo:
    """A video's size, frame count, timing, rotation and streams, without decoding it all."""
    with _open_input(path) as container:
        return _info(container, Path(path))


def open_video(path: str | Path, threads: int = 0) -> VideoReader:
    """A streamed reader (context manager, iterable of `Frame`). `threads`: 0 = FFmpeg decides."""
    return VideoReader(path, threads=threads)


class VideoReader:
    """Decodes one frame at a time; iterate it once. Use as a context manager (closes the file)."""

    def __init__(self, path: str | Path, threads: int = 0):
        self.path = Path(path)
        self.info = probe_video(self.path)  # its own pass over the first frame: this one starts clean
        self._container = _open_input(self.path)
        try:
            self._stream = _video_stream(self._container)
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = threads
        except BaseException:
            self._container.close()
            raise
        self._turns = _quarter_turns(self.info.rotation)
        self.frames_read = 0

    def __iter__(self) -> Iterator[Frame]:
        index, last_pts = 0, None
        for decoded in self._decoded_frames():
            pts = _frame_pts(decoded, index, last_pts, self.info)
            rgb = decoded.to_ndarray(format="rgb24")
            if self._turns:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=-self._turns))  # clockwise
            yield Frame(index=index, rgb=rgb, pts=pts, time_base=self.info.time_base)
            index, last_pts = index + 1, pts
        if index == 0:
            raise VideoInputError(
                f"{_name(self.path)} has a video stream but no frame could be decoded; the file "
                "is probably truncated or damaged. Re-export or re-download it."
            )
        self.frames_read = index

    def _decoded_frames(self) -> Iterator[av.VideoFrame]:
        try:
            for packet in self._container.demux(self._stream):
                yield from packet.decode()
        except av.error.FFmpegError as error:
            raise VideoInputError(
                f"{_name(self.path)} could not be decoded past some point ({_reason(error)}); "
                "the file is probably truncated or damaged. Re-export or re-download it."
            ) from None

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class VideoWriter:
    """Encodes frames to `dst` (H.264/AAC MP4 unless `container` or the extension says otherwise).

    `like`: the VideoInfo of the source (size, rate, time base). `source`: the input file whose audio
    streams are copied. `container`: "mp4", "mov", "mkv", "webm" or "avi" (default: from `dst`'s
    extension, MP4 when it is not a video extension). `crf` / `preset`: x264's quality (lower is
    better; 18 is visually lossless) and speed."""

    def __init__(
        self,
        dst: str | Path,
        like: VideoInfo,
        source: str | Path | None = None,
        container: str | None = None,
        crf: int = 18,
        preset: str = "medium",
    ):
        self.dst = Path(dst)
        self.like = like
        self.source = Path(source) if source is not None else None
        self.muxer = _muxer_for(self.dst, container)
        self.crf, self.preset = crf, preset
        # AVI has one tick per frame (no variable frame rate): frames go to the nearest tick.
        rate = _sane_rate(like.average_rate)
        self.time_base = 1 / rate if self.muxer == "avi" else like.time_base
        self.frames_written = 0
        self._last_pts: int | None = None
        self._output = None
        self._atomic = None
        self._audio: _AudioCopier | None = None

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_output(self.dst, suffix=_MUXER_SUFFIX[self.muxer])
        temporary = self._atomic.__enter__()
        try:
            options = {"movflags": "+faststart"} if self.muxer in ("mp4", "mov") else {}
            self._output = av.open(str(temporary), mode="w", format=self.muxer, options=options)
            self._output.flags |= _BITEXACT_FORMAT  # no "encoder: Lavf..." tag
            self._video = self._add_video_stream()
            if self.source is not None:
                self._audio = _AudioCopier(self.source, self._output, self.muxer)
        except BaseException as error:
            self._abort(error)
            raise
        return self

    def write(self, rgb: np.ndarray, like: Frame | None = None) -> None:
        """Append one frame (H x W x 3 uint8 RGB); `like`: the source frame whose timing it keeps."""
        frame = self._video_frame(rgb)
        frame.pts = self._next_pts(like)
        frame.time_base = self.time_base
        for packet in self._video.encode(frame):
            self._output.mux(packet)
        self.frames_written += 1
        if self._audio is not None:
            self._audio.copy_until(float(frame.pts * self.time_base) + _AUDIO_AHEAD_S)

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self._abort(exc)
            return
        try:
            for packet in self._video.encode(None):
                self._output.mux(packet)
            if self._audio is not None:
                self._audio.finish()
            self._output.close()
        except BaseException as error:
            self._abort(error)
            raise
        self._atomic.__exit__(None, None, None)

    def _abort(self, error: BaseException) -> None:
        """Close everything and let atomic_output remove the temporary file."""
        for closable in (self._audio, self._output):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        with contextlib.suppress(BaseException):
            self._atomic.__exit__(type(error), error, error.__traceback__)

    def _add_video_stream(self):
        width, height = self.like.width, self.like.height
        encoder = _VIDEO_ENCODER.get(self.muxer, "libx264")
        stream = self._output.add_stream(encoder, rate=_sane_rate(self.like.average_rate))
        stream.width, stream.height = width, height
        # 4:2:0 needs even sides; odd-sized videos keep their exact size in 4:4:4 instead.
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.codec_context.time_base = self.time_base
        stream.time_base = self.time_base
        context = stream.codec_context
        context.color_range, context.colorspace = _COLOR_RANGE_MPEG, _COLORSPACE_BT709
        context.color_primaries, context.color_trc = _PRIMARIES_BT709, _TRC_BT709
        context.flags |= CodecFlags.bitexact  # no encoder string in the stream tags
        if encoder == "libx264":
            stream.options = {"crf": str(self.crf), "preset": self.preset}
        else:
            stream.options = {
                "crf": str(self.crf + 14),
                "b": "0",
                "row-mt": "1",
                "deadline": "good",
                "cpu-used": "4",
            }
        return stream

    def _video_frame(self, rgb: np.ndarray) -> av.VideoFrame:
        rgb = np.asarray(rgb)
        expected = (self.like.height, self.like.width, 3)
        if rgb.shape != expected or rgb.dtype != np.uint8:
            raise ValueError(
                f"VideoWriter.write expects {expected[0]}x{expected[1]}x3 uint8 RGB frames (the "
                f"source's display size); got {rgb.shape} {rgb.dtype}."
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        return frame.reformat(
            format=self._video.pix_fmt, dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
        )

    def _next_pts(self, like: Frame | None) -> int:
        """The source frame's pts in our time base; strictly increasing (encoders require it)."""
        if like is not None:
            pts = round(like.pts * like.time_base / self.time_base)
        else:
            pts = round(self.frames_written / self.like.average_rate / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts


class _AudioCopier:
    """Moves the source's audio streams into the output, in step with the video being written."""

    def __init__(self, source: Path, output, muxer: str):
        self._input = _open_input(source)
        self._routes = {}
        for stream in self._input.streams.audio:
            self._routes[stream.index] = _audio_route(stream, output, muxer)
        self._output = output
        self._packets = self._input.demux(*self._input.streams.audio) if self._routes else iter(())
        self._pending = None

    def copy_until(self, time_s: float) -> None:
        """Mux source audio packets that start before `time_s` (seconds)."""
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            if packet.pts is not None and float(packet.pts * packet.time_base) > time_s:
                self._pending = packet
                return
            self._routes[packet.stream.index].send(packet)

    def finish(self) -> None:
        self.copy_until(math.inf)
        for route in self._routes.values():
            route.flush()
        self.close()

    def close(self) -> None:
        self._input.close()


def _audio_route(stream, output, muxer: str):
    codec = _codec_name(stream)
    allowed = _AUDIO_COPY[muxer]
    fits = codec in output.supported_codecs and (allowed is None or codec in allowed)
    return (
        _AudioRemux(stream, output)
        if fits
        else _AudioReencode(stream, output, _AUDIO_ENCODER.get(muxer, "aac"))
    )


class _AudioRemux:
    def __init__(self, stream, output):
        self._output = output
        self._stream = output.add_stream_from_template(stream)
        self._stream.metadata.clear()  # no language/handler/title of the source

    def send(self, packet) -> None:
        if packet.dts is None:  # flush packets of the demuxer carry nothing
            return
        packet.stream = self._stream
        self._output.mux(packet)

    def flush(self) -> None:
        pass


class _AudioReencode:
    def __init__(self, stream, output, encoder: str):
        self._output = output
        rates = {"libopus": _OPUS_RATES, "libmp3lame": _MP3_RATES}.get(encoder, _AAC_RATES)
        rate = stream.codec_context.sample_rate
        rate = rate if rate in rates else 48000
        layout = _output_layout(stream.codec_context.channels, encoder)
        self._stream = output.add_stream(encoder, rate=rate, layout=layout)
        self._stream.codec_context.flags |= CodecFlags.bitexact
        self._resampler = av.AudioResampler(
            format=self._stream.codec_context.format.name, layout=layout, rate=rate
        )
        self._decoder = stream.codec_context

    def send(self, packet) -> None:
        try:
            frames = self._decoder.decode(packet)
        except av.error.InvalidDataError:
            return  # one damaged audio packet: a few ms of silence, not a failed video
        for frame in frames:
            self._encode(self._resampler.resample(frame))

    def flush(self) -> None:
        self._encode(self._resampler.resample(None))
        self._encode([None])

    def _encode(self, frames) -> None:
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._output.mux(packet)


def _output_layout(channels: int, encoder: str) -> str:
    """Mono and stereo stay as they are, 5.1 too in AAC; other layouts are downmixed to stereo."""
    if channels == 6 and encoder == "aac":
        return "5.1"
    return "mono" if channels == 1 else "stereo"


def _open_input(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise VideoInputError(f"{_name(path)} does not exist or is not a file. Check the path.")
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as error:
        raise VideoInputError(
            f"{_name(path)} is not a video faceanon can read ({_reason(error)}). Use an MP4, MOV, "
            "MKV, WebM or AVI file; if it is one, it is probably truncated or damaged "
            "(re-export or re-download it)."
        ) from None
    try:
        _check_video_stream(container, path)
    except BaseException:
        container.close()
        raise
    return container


def _check_video_stream(container, path: Path) -> None:
    if _is_still_image(container):
        raise VideoInputError(f"{_name(path)} is a still image, not a video. Anonymize it as a photo.")
    stream = _video_stream(container)
    if stream is None:
        raise VideoInputError(f"{_name(path)} has no video stream (only audio or data). Choose a video file.")
    codec = _codec_name(stream)
    if not codec or not _can_decode(codec):
        raise VideoInputError(
            f"{_name(path)} uses a video codec faceanon cannot decode ({codec or 'unknown'}). "
            "Convert it to H.264 MP4 (e.g. with HandBrake or ffmpeg) and try again."
        )
    _check_not_truncated(stream, path)


def _video_stream(container):
    """The first real video stream: cover art in music files is a one-picture 'video' stream."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    return None


def _codec_name(stream) -> str | None:
    """FFmpeg's codec name ("h264", "mp3"), not its decoder's ("mp3float"); None when unknown."""
    context = stream.codec_context
    if context is None or context.codec is None:
        return None
    return context.codec.canonical_name or context.name


def _is_still_image(container) -> bool:
    name = container.format.name
    return name == "image2" or name.endswith("_pipe") or name in ("gif", "webp", "apng")


def _can_decode(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "r")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def _check_not_truncated(stream, path: Path) -> None:
    """MP4/MOV index every frame up front: data indexed past the end of the file means the file
    was cut (an interrupted copy or upload), and its frame count is not what it says."""
    entries = stream.index_entries
    if not entries or not len(entries):
        return
    end = max(entry.pos + entry.size for entry in entries)
    size = path.stat().st_size
    if end > size:
        raise VideoInputError(
            f"{_name(path)} is truncated: it ends at {size} bytes but its index expects at least "
            f"{end}. The copy or upload was probably interrupted; re-copy or re-download it."
        )


def _info(container, path: Path) -> VideoInfo:
    stream = _video_stream(container)
    rotation = _rotation(container, stream, path)
    width, height = stream.codec_context.width, stream.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    rate = stream.average_rate or stream.guessed_rate or Fraction(30)
    frame_count = stream.frames or _count_packets(path)
    audio = container.streams.audio
    return VideoInfo(
        width=width,
        height=height,
        frame_count=frame_count,
        fps=float(rate),
        duration_s=_duration(container, stream, frame_count, rate),
        rotation=rotation,
        has_audio=bool(audio),
        video_codec=_codec_name(stream),
        audio_codec=_codec_name(audio[0]) if audio else None,
        container=_container_name(container, path),
        time_base=stream.time_base or Fraction(1, 90000),
        average_rate=Fraction(rate),
        audio_streams=len(audio),
    )


def _rotation(container, stream, path: Path) -> int:
    """Clockwise display rotation, read from the first frame's display matrix (FFmpeg attaches
    the stream's matrix to decoded frames); 0 when the file has none."""
    try:
        for frame in container.decode(stream):  # the first frame says it
            return round(-(frame.rotation or 0) / 90) % 4 * 90  # PyAV reports counter-clockwise
    except av.error.FFmpegError as error:
        raise VideoInputError(
            f"{_name(path)} could not be decoded ({_reason(error)}); the file may be truncated "
            "or damaged, or use a codec faceanon cannot read. Convert it to H.264 MP4."
        ) from None
    raise VideoInputError(
        f"{_name(path)} has a video stream but no frame could be decoded; the file is probably "
        "truncated or damaged. Re-export or re-download it."
    )


def _count_packets(path: Path) -> int:
    """Frames of a container that does not state its count (Matroska, WebM), by demuxing (no
    decoding). The packets of all streams are read, so a file cut short of the duration its
    header states is told apart from a video whose audio simply runs longer."""
    frames, end_s = 0, 0.0
    with av.open(str(path), metadata_errors="ignore") as container:
        video = _video_stream(container)
        for packet in container.demux():
            if packet.pts is not None and packet.time_base:
                end_s = max(end_s, float((packet.pts + (packet.duration or 0)) * packet.time_base))
            frames += packet.stream is video and packet.size > 0
        stated_s = container.duration / av.time_base if container.duration else None
        start_s = container.start_time / av.time_base if container.start_time else 0.0
    if stated_s and end_s - start_s < stated_s - max(0.5, 0.05 * stated_s):
        raise VideoInputError(
            f"{_name(path)} is truncated: its header says {stated_s:.1f} s but the data stops at "
            f"{end_s - start_s:.1f} s. The copy or upload was probably interrupted; re-copy or "
            "re-download it."
        )
    return frames


def _duration(container, stream, frame_count: int, rate: Fraction) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return float(frame_count / rate)


def _container_name(container, path: Path) -> str:
    """A short name: the extension when the demuxer claims it (mp4, mov, webm...), else FFmpeg's."""
    names = container.format.name.split(",")
    suffix = path.suffix.lower().lstrip(".")
    extensions = set(container.format.extensions or ()) | set(names)
    if suffix and suffix in extensions:
        return "mkv" if suffix == "mkv" else suffix
    return names[0]


def _frame_pts(frame: av.VideoFrame, index: int, last_pts: int | None, info: VideoInfo) -> int:
    pts = frame.pts
    if pts is None:  # some AVI / raw streams: derive from the frame rate
        pts = round(index / info.average_rate / info.time_base)
    if last_pts is not None and pts <= last_pts:
        pts = last_pts + 1
    return pts


def _quarter_turns(rotation: int) -> int:
    return (rotation // 90) % 4


def _sane_rate(rate: Fraction) -> Fraction:
    """Encoders want a modest rational rate; the exact timing comes from each frame's pts."""
    return Fraction(rate).limit_denominator(1001) if rate else Fraction(30)


def _muxer_for(dst: Path, container: str | None) -> str:
    if container is not None:
        key = container.lower().lstrip(".")
        if key not in _CONTAINER_ALIASES:
            raise ValueError(f"Unknown output container {container!r}: use one of mp4, mov, mkv, webm, avi.")
        return _CONTAINER_ALIASES[key]
    return _MUXERS.get(dst.suffix.lower(), "mp4")


def _name(path: Path) -> str:
    return f"The file {path.name!r}"


def _reason(error: av.error.FFmpegError) -> str:
    return (error.strerror or type(error).__name__).rstrip(".")


_BITEXACT_FORMAT = 0x0400  # AVFMT_FLAG_BITEXACT
_COLOR_RANGE_MPEG = 1
_COLORSPACE_BT709 = 1
_PRIMARIES_BT709 = 1
_TRC_BT709 = 1

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "Frame",
    "VideoReader",
    "VideoWriter",
    "probe_video",
    "open_video",
]
