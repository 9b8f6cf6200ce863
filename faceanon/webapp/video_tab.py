"""The Video tab and its named endpoints (/find_people, /anonymize_video).

Upload a clip, find the people in it (one thumbnail per face track), choose whom to anonymize,
and get the result in a player with a download. Limits (duration, resolution, frames) are checked
from the file's header before any decoding; on a ZeroGPU Space the GPU time asked for is computed
from the frame count.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import gradio as gr
import spaces  # noqa: F401  (before torch touches CUDA: ZeroGPU patches it)

from faceanon.errors import FaceAnonError
from faceanon.webapp import handlers as H


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


@dataclass(frozen=True)
class VideoLimits:
    """What one video request may ask of the server (env FACEANON_MAX_VIDEO_S / _SIDE / _FRAMES)."""

    max_duration_s: float = 60.0
    max_side: int = 1920  # the longer side, as displayed
    max_frames: int = 1800
    max_gpu_s: int = 600  # ZeroGPU time one request may reserve

    @classmethod
    def from_env(cls) -> VideoLimits:
        return cls(
            max_duration_s=_env_number("FACEANON_MAX_VIDEO_S", cls.max_duration_s),
            max_side=int(_env_number("FACEANON_MAX_VIDEO_SIDE", cls.max_side)),
            max_frames=int(_env_number("FACEANON_MAX_VIDEO_FRAMES", cls.max_frames)),
            max_gpu_s=int(_env_number("FACEANON_MAX_VIDEO_GPU_S", cls.max_gpu_s)),
        )


def check_video(path: str | None, limits: VideoLimits | None = None):
    """The upload's VideoInfo, or a gr.Error naming the limit it breaks and what to do."""
    from faceanon.media.video import probe_video

    limits = limits or VideoLimits.from_env()
    if not path:
        raise gr.Error("Upload a video first.", title="No video")
    try:
        info = probe_video(path)
    except FaceAnonError as error:
        raise gr.Error(
            str(error).replace(os.path.dirname(path) + os.sep, ""), title="Cannot read the video"
        ) from None
    if info.frame_count > limits.max_frames:
        raise gr.Error(
            f"The video has {info.frame_count:,} frames; this server takes at most {limits.max_frames:,} "
            "per request. Cut it into shorter clips, or run `faceanon anonymize` on your own machine.",
            title="Video too long",
        )
    if info.duration_s > limits.max_duration_s:
        raise gr.Error(
            f"The video lasts {info.duration_s:.0f} s; this server takes at most "
            f"{limits.max_duration_s:.0f} s. Cut it into shorter clips.",
            title="Video too long",
        )
    if max(info.width, info.height) > limits.max_side:
        raise gr.Error(
            f"The video is {info.width}×{info.height}; this server takes at most {limits.max_side} pixels "
            "on the longer side. Scale it down (e.g. to 1080p) and try again.",
            title="Video too large",
        )
    return info


def gpu_seconds(video, method, degree, seed, tracks, steps, progress=None) -> int:
    """ZeroGPU time to reserve: start-up plus, per frame, ~1.5 faces' denoising steps (0.04 s a step
    on an H200 in fp16, with margin), capped by the limit."""
    limits = VideoLimits.from_env()
    try:
        from faceanon.media.video import probe_video

        frames = probe_video(video).frame_count
    except Exception:
        frames = limits.max_frames
    return int(min(limits.max_gpu_s, 30 + frames * 1.5 * (0.5 + 0.06 * int(steps))))


@spaces.GPU(duration=gpu_seconds)
def _run_diffusion(video, method, degree, seed, tracks, steps, progress=None):
    with H.host().using(diffusion=True) as anonymizer:
        return _render(anonymizer, video, method, degree, seed, tracks, steps, progress)


def _render(anonymizer, video, method, degree, seed, tracks, steps, progress):
    from gradio.utils import get_upload_folder

    folder = tempfile.mkdtemp(prefix="faceanon-video-", dir=get_upload_folder())
    target = os.path.join(folder, "anonymized.mp4")
    report = anonymizer.anonymize_video(
        video, target, method=method, degree=degree, seed=seed, steps=steps, tracks=tracks, progress=progress
    )
    return target, report


def find_people(video: str | None):
    """Finds and follows the faces of a video: one picture per person, to choose whom to anonymize.

    Args:
        video: the video (MP4, MOV, MKV, WebM or AVI).

    Returns:
        a gallery of (thumbnail, "Person N") and the list of tracks (id, frames, first/last frame, keyframe).
    """
    from faceanon.media.video_anonymize import keyframe_thumbnails, scan_video

    check_video(video)
    with H.host().using(diffusion=False) as anonymizer:
        scan = H._call(lambda: scan_video(anonymizer, video))
    thumbs = keyframe_thumbnails(scan)
    gallery = [(thumbs[t.track_id], f"Person {t.track_id}") for t in scan.tracks]
    tracks = [
        {
            "id": t.track_id,
            "frames": len(t.points),
            "first_frame": t.first_frame,
            "last_frame": t.last_frame,
            "keyframe": scan.keyframes[t.track_id],
        }
        for t in scan.tracks
    ]
    return gallery, tracks


def anonymize_video(
    video: str | None,
    method: str = "blur",
    degree: float = 1.25,
    seed: float = 0,
    tracks: str = "all",
    steps: float = 25,
    progress=gr.Progress(),  # noqa: B008  (Gradio's documented way to receive a progress tracker)
):
    """Anonymizes the faces of a video, one new identity per person (diffusion) or redacted.

    Args:
        video: the video (MP4, MOV, MKV, WebM or AVI), within the server's duration, size and frame limits.
        method: "diffusion" (new identities; needs the model), "blur", "pixelate" or "solid".
        degree: anonymization degree d for diffusion (1.2-1.3 recommended).
        seed: picks the new faces (each person gets a seed derived from it).
        tracks: "all", or the people to anonymize as numbered by /find_people, e.g. "0, 2".
        steps: denoising steps per face (diffusion).

    Returns:
        the anonymized video (MP4, audio kept, no metadata), a summary, and the per-person report.
    """
    check_video(video)
    chosen = H.parse_faces(tracks)
    steps = int(steps)
    report_progress = H._progress_callback(progress)
    if method == "diffusion":
        H._require_diffusion(progress)
        target, report = H._call(
            lambda: _run_diffusion(video, method, degree, int(seed), chosen, steps, report_progress)
        )
    else:
        with H.host().using(diffusion=False) as anonymizer:
            target, report = H._call(
                lambda: _render(anonymizer, video, method, degree, int(seed), chosen, steps, report_progress)
            )
    return target, summary_markdown(report), report.to_dict()


def summary_markdown(report) -> str:
    lines = [
        report.message,
        "",
        "| person | frames | first-last | keyframe | method | covered by interpolation |",
        "|---|---|---|---|---|---|",
    ]
    for t in report.tracks:
        lines.append(
            f"| {t.track_id} | {t.frames} | {t.first_frame}-{t.last_frame} | {t.keyframe} | "
            f"{t.method or 'kept'} | {len(t.interpolated_frames)} |"
        )
    return "\n".join(lines)


def _choices(tracks):
    ids = [t["id"] for t in tracks or []]
    return gr.CheckboxGroup(
        choices=[(f"Person {i}", i) for i in ids],
        value=ids,
        label="People to anonymize" if ids else "People to anonymize (none found)",
    )


def _spec(selected):
    return "all" if selected is None else ", ".join(map(str, selected)) or "none"


def video_tab() -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            video = gr.Video(label="Video", sources=["upload"], elem_id="video-input")
            method = gr.Radio(H.METHODS, value="blur", label="Method", elem_id="video-method")
            degree = gr.Slider(0.0, 2.0, value=1.25, step=0.05, label="Anonymization degree d")
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=H.MAX_SEED, label="Seed")
            steps = gr.Slider(1, H._LIMITS.max_steps, value=25, step=1, label="Steps (diffusion)")
            people = gr.Gallery(label="People found", columns=6, height=180, elem_id="video-people")
            choose = gr.CheckboxGroup(label="People to anonymize", elem_id="video-choose")
            tracks = gr.Textbox(value="all", visible=False)
            tracks_json = gr.JSON(visible=False)
            run = gr.Button("Anonymize video", variant="primary", elem_id="video-button")
        with gr.Column(scale=1):
            result = gr.Video(
                label="Anonymized", interactive=False, buttons=["download"], elem_id="video-output"
            )
            summary = gr.Markdown()
            with gr.Accordion("Report (JSON)", open=False):
                report = gr.JSON(label="Per-person report")
    video.change(
        find_people,
        video,
        [people, tracks_json],
        api_name="find_people",
        api_description=find_people.__doc__,
        concurrency_limit=2,
    )
    tracks_json.change(_choices, tracks_json, choose, api_visibility="private", queue=False)
    tracks_json.change(lambda _: "all", tracks_json, tracks, api_visibility="private", queue=False)
    choose.input(_spec, choose, tracks, api_visibility="private", queue=False)
    run.click(
        anonymize_video,
        [video, method, degree, seed, tracks, steps],
        [result, summary, report],
        api_name="anonymize_video",
        api_description=anonymize_video.__doc__,
        concurrency_id="model",
        concurrency_limit=H._LIMITS.gpu_jobs,
    )


__all__ = ["video_tab", "find_people", "anonymize_video", "check_video", "gpu_seconds", "VideoLimits"]
