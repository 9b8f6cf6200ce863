"""The Video tab and its named endpoints (/find_people, /anonymize_video).

Upload a clip, find the people in it (one thumbnail per face track), choose whom to anonymize,
optionally upload photos of people to keep (their tracks stay untouched in every frame), and get
the result in a player with a download. Limits (duration, resolution, frames) are checked from the
file's header before any decoding; on a ZeroGPU Space the GPU time asked for is computed from the
frame count. Keep photos are uploads like any other: cleaned on arrival (webapp.uploads).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass

import gradio as gr
import spaces  # noqa: F401  (before torch touches CUDA: ZeroGPU patches it)

from faceanon.errors import FaceAnonError
from faceanon.webapp import handlers as H
from faceanon.webapp.components import KeepPhotos
from faceanon.webapp.shutdown import JOBS


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


def gpu_seconds(video, method, degree, seed, tracks, steps, keep=None, progress=None) -> int:
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
def _run_diffusion(video, method, degree, seed, tracks, steps, keep=None, progress=None):
    with H.host().using(diffusion=True) as anonymizer:
        return _render(anonymizer, video, method, degree, seed, tracks, steps, keep, progress)


def _render(anonymizer, video, method, degree, seed, tracks, steps, keep, progress):
    from gradio.utils import get_upload_folder

    folder = tempfile.mkdtemp(prefix="faceanon-video-", dir=get_upload_folder())
    target = os.path.join(folder, "anonymized.mp4")
    report = anonymizer.anonymize_video(
        video,
        target,
        method=method,
        degree=degree,
        seed=seed,
        steps=steps,
        tracks=tracks,
        keep=keep,
        progress=progress,
    )
    return target, report


class _ScanCache:
    """The last few scans (tracks only, no pixels) by file, so that changing the keep photos marks
    the kept people again without detecting every frame again."""

    def __init__(self, size: int = 8):
        self._scans: OrderedDict[tuple, object] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, path: str, scan):
        key = _file_key(path)
        with self._lock:
            if key in self._scans:
                self._scans.move_to_end(key)
                return self._scans[key]
        found = scan()
        with self._lock:
            self._scans[key] = found
            while len(self._scans) > self._size:
                self._scans.popitem(last=False)
        return found


def _file_key(path: str) -> tuple:
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


_SCANS = _ScanCache()


@JOBS.endpoint
def find_people(video: str | None, keep: list[str] | None = None):
    """Finds and follows the faces of a video: one picture per person, to choose whom to anonymize.

    Args:
        video: the video (MP4, MOV, MKV, WebM or AVI).
        keep: photos of people to leave untouched (one face each); their tracks are marked as kept.

    Returns:
        a gallery of (thumbnail, "Person N", or "Person N: kept (name)") and the list of tracks (id, frames, first/last frame, keyframe, kept_as, kept_similarity).
    """
    from faceanon.media.video_anonymize import keep_matches, keyframe_thumbnails, scan_video

    check_video(video)
    keep_list = H._keep_list(keep)
    with H.host().using(diffusion=False) as anonymizer:
        stoppable = _check_only  # no progress bar here, but a shutdown still stops the scan
        scan = H._call(lambda: _SCANS.get(video, lambda: scan_video(anonymizer, video, progress=stoppable)))
    kept = H._call(lambda: keep_matches(scan, keep_list)) if keep_list else {}
    thumbs = keyframe_thumbnails(scan)
    names = {track_id: match.name for track_id, match in kept.items()}
    gallery = [(thumbs[t.track_id], _person_label(t.track_id, names.get(t.track_id))) for t in scan.tracks]
    tracks = [
        {
            "id": t.track_id,
            "frames": len(t.points),
            "first_frame": t.first_frame,
            "last_frame": t.last_frame,
            "keyframe": scan.keyframes[t.track_id],
            "kept_as": kept[t.track_id].name if t.track_id in kept else None,
            "kept_similarity": round(kept[t.track_id].similarity, 3) if t.track_id in kept else None,
        }
        for t in scan.tracks
    ]
    return gallery, tracks


def _check_only(_fraction: float, _description: str = "") -> None:
    JOBS.check()


def _person_label(track_id: int, kept_as: str | None = None) -> str:
    return f"Person {track_id}" + (f": kept ({kept_as})" if kept_as else "")


@JOBS.endpoint
def anonymize_video(
    video: str | None,
    method: str = "blur",
    degree: float = 1.25,
    seed: float = 0,
    tracks: str = "all",
    steps: float = 25,
    keep: list[str] | None = None,
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
        keep: photos of people to leave untouched (one face each); a person whose best face in the video matches one is kept in every frame.

    Returns:
        the anonymized video (MP4, audio kept, no metadata), a summary, and the per-person report.
    """
    check_video(video)
    chosen = H.parse_faces(tracks)
    keep_list = H._keep_list(keep)  # every keep photo checked before any work
    settings = (video, method, degree, int(seed), chosen, int(steps), keep_list)
    report_progress = H._progress_callback(progress)
    if method == "diffusion":
        H._require_diffusion(progress)
        target, report = H._call(lambda: _run_diffusion(*settings, report_progress))
    else:
        with H.host().using(diffusion=False) as anonymizer:
            target, report = H._call(lambda: _render(anonymizer, *settings, report_progress))
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
            f"{_track_method(t)} | {len(t.interpolated_frames)} |"
        )
    return "\n".join(lines)


def _track_method(track) -> str:
    if track.kept_as:
        return f"kept ({track.kept_as})"
    return track.method or "left as is"


def _choices(tracks):
    tracks = tracks or []
    return gr.CheckboxGroup(
        choices=[(_person_label(t["id"], t.get("kept_as")), t["id"]) for t in tracks],
        value=[t["id"] for t in tracks],
        label="People to anonymize" if tracks else "People to anonymize (none found)",
    )


def _spec(selected):
    return "all" if selected is None else ", ".join(map(str, selected)) or "none"


# -- what the page's events run: errors in the tab's message box (one message, no toast or badges) --
def page_find_people(video: str | None, keep: list[str] | None = None):
    """find_people for the page: (gallery, tracks, message); a cleared video clears the people."""
    if not video:
        return [], None, H.message()
    try:
        gallery, tracks = find_people(video, keep)
    except gr.Error as error:
        return [], None, H.message(error.message)
    return gallery, tracks, H.message()


def page_anonymize_video(
    video,
    method,
    degree,
    seed,
    tracks,
    steps,
    keep=None,
    progress=gr.Progress(),  # noqa: B008
):
    """anonymize_video for the page: (video, summary, report, message); on an error only the message."""
    try:
        outputs = anonymize_video(video, method, degree, seed, tracks, steps, keep, progress=progress)
    except gr.Error as error:
        return gr.skip(), gr.skip(), gr.skip(), H.message(error.message)
    return *outputs, H.message()


# The input player's own "Video not playable" toast is stopped before Gradio sees it: browsers
# cannot play many videos faceanon reads (AVI, HEVC, MKV), and for a file that is no video at all
# the server's message box already says what is wrong and what to do (one message, not two).
QUIET_INPUT_PLAYER = """
if (!window.faceanonQuietVideoInput) {
  window.faceanonQuietVideoInput = true;
  document.addEventListener('error', (event) => {
    if (event.target instanceof HTMLVideoElement && event.target.closest('#video-input')) {
      event.stopImmediatePropagation();
    }
  }, true);
}
"""


def video_tab() -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            video = gr.Video(label="Video", sources=["upload"], elem_id="video-input")
            method = gr.Radio(H.METHODS, value="blur", label="Method", elem_id="video-method")
            # As in the Anonymize tab: the button and its message near the top, level with the result.
            run = gr.Button("Anonymize video", variant="primary", elem_id="video-button")
            error = gr.Markdown(visible=False, elem_id="video-message", elem_classes=["faceanon-message"])
            people = gr.Gallery(label="People found", columns=6, height=180, elem_id="video-people")
            choose = gr.CheckboxGroup(label="People to anonymize", elem_id="video-choose")
            keep = KeepPhotos(
                "Keep these people (a photo of each; they stay untouched in every frame)", "video-keep"
            )
            degree = gr.Slider(0.0, 2.0, value=1.25, step=0.05, label="Anonymization degree d")
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=H.MAX_SEED, label="Seed")
            steps = gr.Slider(1, H._LIMITS.max_steps, value=25, step=1, label="Steps (diffusion)")
            tracks = gr.Textbox(value="all", visible=False)
            tracks_json = gr.JSON(visible=False)
        with gr.Column(scale=1):
            result = gr.Video(
                label="Anonymized", interactive=False, buttons=["download"], elem_id="video-output"
            )
            summary = gr.Markdown(elem_id="video-summary")
            with gr.Accordion("Report (JSON)", open=False):
                report = gr.JSON(label="Per-person report")
            api_find = gr.Button(visible=False)  # the named API endpoints' triggers (no UI)
            api_anonymize = gr.Button(visible=False)
    gr.HTML("", js_on_load=QUIET_INPUT_PLAYER, elem_id="video-quiet-player")
    scanning = dict(concurrency_id="video-scan", concurrency_limit=2)
    for trigger in (video.change, keep.change):  # a new video, or new keep photos: mark the people again
        trigger(
            page_find_people,
            [video, keep],
            [people, tracks_json, error],
            api_visibility="private",
            show_progress_on=[people],
            **scanning,
        )
    api_find.click(
        find_people,
        [video, keep],
        [people, tracks_json],
        api_name="find_people",
        api_description=find_people.__doc__,
        **scanning,
    )
    tracks_json.change(_choices, tracks_json, choose, api_visibility="private", queue=False)
    tracks_json.change(lambda _: "all", tracks_json, tracks, api_visibility="private", queue=False)
    choose.input(_spec, choose, tracks, api_visibility="private", queue=False)
    # Redaction renders borrow a CPU slot and diffusion renders the one diffusion instance (ModelHost.using
    # serializes them), so a blur job never waits in a queue behind a diffusion job.
    rendering = dict(concurrency_id="video-render", concurrency_limit=H._LIMITS.cpu_jobs + H._LIMITS.gpu_jobs)
    inputs, outputs = [video, method, degree, seed, tracks, steps, keep], [result, summary, report]
    run.click(
        page_anonymize_video,
        inputs,
        [*outputs, error],
        api_visibility="private",
        show_progress_on=[result],
        **rendering,
    )
    api_anonymize.click(
        anonymize_video,
        inputs,
        outputs,
        api_name="anonymize_video",
        api_description=anonymize_video.__doc__,
        **rendering,
    )


__all__ = ["video_tab", "find_people", "anonymize_video", "check_video", "gpu_seconds", "VideoLimits"]
