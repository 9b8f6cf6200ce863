"""Anonymize a video: faces tracked, one new identity per person, written as it goes.

    fa = FaceAnonymizer()
    report = fa.anonymize_video("clip.mp4", "out.mp4", method="blur")          # no weights needed
    report = fa.anonymize_video("clip.mp4", "out.mp4", degree=1.25, seed=0)   # diffusion
    for track in report.tracks: print(track.track_id, track.frames, track.keyframe, track.identity_max)

Or in steps (the web app shows the people found before it renders):

    scan = scan_video(fa, "clip.mp4")                  # pass 1: detect every frame, track
    thumbs = keyframe_thumbnails(scan)                 # one picture per person
    report = render_video(fa, scan, "out.mp4", VideoSettings(method="diffusion", tracks=[0, 2]))

Memory stays bounded whatever the length: pass 1 decodes each frame once and keeps only boxes,
landmarks and scores; tracks are then built (faceanon.faces.tracking: gaps interpolated, ends
extended, landmarks smoothed); pass 2 decodes again and renders windows of `window` frames,
writing each frame as soon as it is done (VideoWriter: timing and audio kept, no metadata, the
output appears only when complete).

Diffusion, one identity per track: each track's keyframe is its best face (detector score x
frontality x size); the keyframes of all tracks are generated in one batched call, with the
user's degree and the track's seed `face_seed(seed, track_id)`. Every other frame of the track is
the method's swap (degree 0, the generated keyframe face as the source, the frame's face as the
driving image) with the same seed, so the same initial noise; a window's frames of one track go
through the pipeline in one batched call. The source is the same for the whole track: it is
encoded once (`pipe.encode_source`: CLIP, VAE and reference-net passes and the reference
keys/values) and reused by every call, which returns exactly what encoding it each time returns.
`per_frame=True` instead anonymizes every frame on its own with the track's seed (to compare).

Redaction (blur, pixelate, solid) uses the same tracks and masks and runs without weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from faceanon.anonymizer import (
    CropRequest,
    FaceAnonymizer,
    FacePlan,
    FrameResult,
    Generation,
    PreparedFrame,
    face_seed,
)
from faceanon.errors import FaceAnonError
from faceanon.faces.alignment import CROP_SIZE, AlignedFace, align_face, alignment_matrix, invert
from faceanon.faces.blending import face_mask, paste_face
from faceanon.faces.leak_guard import guard_mask
from faceanon.faces.redaction import redact_face
from faceanon.faces.tracking import DETECTED, EXTENDED, INTERPOLATED, FaceTrack, FaceTracker, TrackingOptions
from faceanon.media.video import VideoInfo, VideoWriter, open_video, probe_video
from faceanon.registry import DEFAULTS, DIFFUSION, METHODS
from faceanon.results import FaceReport

Progress = Callable[[float, str], None]
FrameProgress = Callable[[str, int, int], None]  # (stage, frames done, frames in all)
Notify = Callable[[str], None]

SCAN, RENDER = "Finding faces", "Rendering"
MASK_REUSE_PX = 2.0  # redaction: a track's mask is redrawn when its aligned landmarks move more
# Prior seconds per face per denoising step at 512x512, before a measurement replaces it:
# H200 fp16 0.97 s / 25 steps (README); CPU from benchmarks/video.py on the SD 2.1-size model.
PRIOR_SECONDS_PER_FACE_STEP = {"cuda": 0.04, "mps": 0.5, "cpu": 6.0}


# ---------------------------------------------------------------------------------------------
# Types


@dataclass
class VideoSettings:
    """What to do with the faces of a video."""

    method: str | None = None  # None: diffusion when the weights are there, else blur
    degree: float = DEFAULTS.degree
    seed: int = DEFAULTS.seed
    steps: int = DEFAULTS.steps
    guidance: float = DEFAULTS.guidance
    scheduler: str | None = None
    strength: float = DEFAULTS.strength
    tracks: Iterable[int] | None = None  # track ids to anonymize (None: every track)
    per_frame: bool = False  # diffusion: anonymize each frame alone (same seed) instead of keyframe + swap
    reuse_source: bool = True  # diffusion: encode each track's source once (exact; False re-encodes per call)
    window: int = 16  # frames rendered together (their swaps of one track share a pipeline call)
    identity_check: bool = (
        True  # diffusion: per-track similarity to the person and frame-to-frame consistency
    )
    keep: object = (
        None  # faceanon.keep.KeepList (or photos for fa.load_keep): tracks of kept people stay untouched
    )


@dataclass
class VideoScan:
    """Pass 1's result: the video and its face tracks (no pixels kept)."""

    path: Path
    info: VideoInfo
    tracks: list[FaceTrack]
    frame_count: int  # frames actually decoded
    seconds: float
    keyframes: dict[int, int] = field(default_factory=dict)  # track id -> frame index


@dataclass
class TrackReport:
    """What happened to one person's face over the video."""

    track_id: int
    frames: int
    first_frame: int
    last_frame: int
    keyframe: int
    method: str | None
    seed: int | None = None
    degree: float | None = None
    detected_frames: int = 0
    interpolated_frames: list[int] = field(default_factory=list)  # detector misses inside the track
    extended_frames: list[int] = field(default_factory=list)  # covered before / after the detections
    identity_max: float | None = None  # generated vs original face, over the track's frames
    identity_mean: float | None = None
    consistency_min: float | None = None  # generated face vs the previous frame's generated face
    consistency_mean: float | None = None
    same_person: bool | None = None  # identity_max at or above the identity model's threshold
    keyframe_similarity: float | None = None  # the keyframe face after its method vs the person: the
    # generated face (on_same_person) or the redacted one (the leak guard's check of redacted tracks)
    guard_frames: list[int] = field(default_factory=list)  # leak guard: still the person there, redacted
    # (a redacted track still the person at its keyframe: every frame of the track)
    kept_as: str | None = None  # the keep-list person the keyframe face matched (track left untouched)
    kept_similarity: float | None = None
    message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoReport:
    """The output video and the per-track report."""

    source: str
    output: str
    frames: int
    width: int
    height: int
    fps: float
    duration_s: float
    has_audio: bool
    method: str
    mode: str  # "keyframe+swap", "per-frame" (diffusion) or "redaction"
    tracks: list[TrackReport]
    generated_faces: int = 0  # pipeline rows run (keyframes + swaps, or per-frame faces)
    guard_redactions: int = 0  # faces the leak guard redacted, all frames: found only on its second pass,
    # generated faces still the same person in that frame, or every face of a redacted track still the
    # person at its keyframe (TrackReport.guard_frames)
    on_same_person: str | None = None  # the anonymizer's setting, applied per track at the keyframe
    seconds: dict = field(default_factory=dict)  # scan, keyframes, render, total
    message: str = ""

    @property
    def num_changed(self) -> int:
        return sum(t.method is not None for t in self.tracks)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["num_tracks"] = len(self.tracks)
        out["num_changed"] = self.num_changed
        return out


# ---------------------------------------------------------------------------------------------
# Pass 1: detect and track


def scan_video(
    anonymizer: FaceAnonymizer,
    src: str | Path,
    tracking: TrackingOptions | None = None,
    progress: Progress | None = None,
    on_frames: FrameProgress | None = None,
) -> VideoScan:
    """Decode every frame once, detect its faces and follow them (boxes and landmarks only)."""
    started = time.perf_counter()
    info = probe_video(src)
    tracker = FaceTracker(fps=info.fps, threshold=anonymizer.detector.threshold, options=tracking)
    count = 0
    with open_video(src) as reader:
        for frame in reader:
            tracker.update(frame.index, frame.time_s, anonymizer.detect_frame(frame.rgb))
            count = frame.index + 1
            _tell(progress, on_frames, SCAN, count, info.frame_count, 0.0, 0.3)
    tracks = tracker.finish(count, (info.width, info.height))
    scan = VideoScan(
        path=Path(src), info=info, tracks=tracks, frame_count=count, seconds=time.perf_counter() - started
    )
    scan.keyframes = {track.track_id: choose_keyframe(track) for track in tracks}
    return scan


def choose_keyframe(track: FaceTrack) -> int:
    """The frame of the track's best detected face: detector score x frontality x size (capped)."""
    detected = track.frames_of(DETECTED) or track.frames
    return max(detected, key=lambda i: _keyframe_quality(track.points[i]))


def _keyframe_quality(point) -> float:
    return point.score * frontality(point.landmarks) * min(point.size, 256.0) ** 0.5


def frontality(landmarks: np.ndarray) -> float:
    """1 for a face looking at the camera, towards 0 as it turns: how far the nose tip sits from
    the middle of the eyes, along the eye line, relative to the eye distance."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_vector = points[1] - points[0]
    distance = max(float(np.hypot(*eye_vector)), 1e-6)
    offset = abs(float(np.dot(points[2] - (points[0] + points[1]) / 2, eye_vector / distance))) / distance
    return max(0.05, 1.0 - 2.0 * offset)


def keyframe_crops(
    scan: VideoScan, track_ids: Iterable[int] | None = None
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Decode up to the last keyframe needed: track id -> (aligned 512x512 crop, frame RGB thumbnail).
    (A short decode-only pass: keyframes are known once tracks are final.)"""
    wanted = {t: scan.keyframes[t] for t in (scan.keyframes if track_ids is None else track_ids)}
    by_frame: dict[int, list[int]] = {}
    for track_id, frame in wanted.items():
        by_frame.setdefault(frame, []).append(track_id)
    tracks = {t.track_id: t for t in scan.tracks}
    crops: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for frame in _frames_at(scan.path, by_frame):
        for track_id in by_frame[frame.index]:
            point = tracks[track_id].points[frame.index]
            crops[track_id] = (
                align_face(frame.rgb, point.landmarks).crop,
                _thumbnail(frame.rgb, point.box),
            )
    return crops


def _frames_at(path: Path, indices: Iterable[int]):
    """The decoded frames of `indices` in order, decoding no further than the last of them."""
    wanted = set(indices)
    if not wanted:
        return
    last = max(wanted)
    with open_video(path) as reader:
        for frame in reader:
            if frame.index in wanted:
                yield frame
            if frame.index >= last:
                break


def keyframe_thumbnails(scan: VideoScan, size: int = 160) -> dict[int, np.ndarray]:
    """One square picture per track (its keyframe's face with some margin), for choosing people."""
    return {track_id: _resize(thumb, size) for track_id, (_, thumb) in keyframe_crops(scan).items()}


def _thumbnail(rgb: np.ndarray, box: np.ndarray, margin: float = 0.35) -> np.ndarray:
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    right, bottom = int(min(cx + side / 2, width)), int(min(cy + side / 2, height))
    return rgb[top : max(bottom, top + 1), left : max(right, left + 1)].copy()


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    import cv2

    scale = size / max(rgb.shape[:2])
    return cv2.resize(
        rgb,
        (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
    )


# ---------------------------------------------------------------------------------------------
# Planning: what each track gets


@dataclass
class _TrackPlan:
    track: FaceTrack
    method: str | None
    seed: int | None = None
    degree: float = 0.0
    keyframe: int = 0
    message: str = ""
    key_crop: np.ndarray | None = None  # the generated keyframe face (diffusion)
    reference: object = None  # the engine's encoding of key_crop, reused by every swap
    original_embeddings: list = field(default_factory=list)
    similarities: list = field(default_factory=list)
    consistencies: list = field(default_factory=list)
    previous_embedding: np.ndarray | None = None
    mask: np.ndarray | None = None  # redaction: the last face mask drawn, and its landmarks' key
    mask_key: np.ndarray | None = None
    kept: object = None  # faceanon.keep.KeepMatch of the keyframe face
    keyframe_similarity: float | None = None  # on_same_person's measurement of the generated keyframe face
    guard_frames: list = field(default_factory=list)  # frames where the leak guard redacted the new face
    guard_track: bool = False  # a redacted track still the person at its keyframe: guarded in every frame


def plan_tracks(
    anonymizer: FaceAnonymizer, scan: VideoScan, settings: VideoSettings, method: str
) -> dict[int, _TrackPlan]:
    chosen = None if settings.tracks is None else {int(t) for t in settings.tracks}
    unknown = sorted((chosen or set()) - {t.track_id for t in scan.tracks})
    if unknown:
        raise ValueError(
            f"This video has {len(scan.tracks)} tracked face(s), numbered 0 to {len(scan.tracks) - 1}; "
            f"there is no track {', '.join(map(str, unknown))}."
        )
    kept = keep_matches(scan, settings.keep)
    plans = {}
    for track in scan.tracks:
        keyframe = scan.keyframes[track.track_id]
        if chosen is not None and track.track_id not in chosen:
            plans[track.track_id] = _TrackPlan(track, None, keyframe=keyframe, message="not selected")
        elif track.track_id in kept:
            match = kept[track.track_id]
            plans[track.track_id] = _TrackPlan(
                track,
                None,
                keyframe=keyframe,
                kept=match,
                message=f"{match.message}, in every frame of the track",
            )
        elif method == DIFFUSION and track.points[keyframe].size < anonymizer.min_face_size:
            small = anonymizer.small_face_method
            plans[track.track_id] = _TrackPlan(
                track,
                small,
                keyframe=keyframe,
                message=(
                    f"the face is at most {track.points[keyframe].size:.0f} px at its best, smaller than "
                    f"{anonymizer.min_face_size:.0f} px: too small for a new identity, "
                    f"{'redacted' if small else 'left unchanged'} with {small or 'nothing'}"
                ),
            )
        elif method == DIFFUSION:
            plans[track.track_id] = _TrackPlan(
                track,
                DIFFUSION,
                seed=face_seed(settings.seed, track.track_id),
                degree=float(settings.degree),
                keyframe=keyframe,
            )
        else:
            plans[track.track_id] = _TrackPlan(track, method, keyframe=keyframe)
    return plans


def keep_matches(scan: VideoScan, keep) -> dict:
    """Track id -> faceanon.keep.KeepMatch for the tracks whose keyframe face (the track's best
    face) is a kept person: the whole track is then left as it is, so a kept person is kept in
    every frame, including frames where the face is turned or blurred and would not match alone."""
    if not keep or not scan.tracks:
        return {}
    from faceanon.keep import match_faces

    by_frame: dict[int, list[FaceTrack]] = {}
    for track in scan.tracks:
        by_frame.setdefault(scan.keyframes[track.track_id], []).append(track)
    matches = {}
    for frame in _frames_at(scan.path, by_frame):
        tracks = by_frame[frame.index]
        faces = [track.face_at(frame.index) for track in tracks]
        for track, match in zip(tracks, match_faces(frame.rgb, faces, keep), strict=True):
            if match is not None:
                matches[track.track_id] = match
    return matches


def diffusion_faces(plans: dict[int, _TrackPlan], per_frame: bool) -> tuple[int, int]:
    """(keyframes to generate, frames to generate after them)."""
    tracks = [p for p in plans.values() if p.method == DIFFUSION]
    frames = sum(len(p.track.points) for p in tracks)
    return (0, frames) if per_frame else (len(tracks), frames - len(tracks))


def estimate_seconds(
    anonymizer: FaceAnonymizer, faces: int, steps: int, measured: float | None = None
) -> float:
    """Seconds the diffusion of `faces` faces will take: from a measured seconds-per-face when
    there is one, else from a prior for the device (see PRIOR_SECONDS_PER_FACE_STEP)."""
    if measured is not None:
        return faces * measured
    per_step = PRIOR_SECONDS_PER_FACE_STEP.get(
        pipeline_device(anonymizer), PRIOR_SECONDS_PER_FACE_STEP["cpu"]
    )
    return faces * steps * per_step * (anonymizer.resolution / 512) ** 2


def pipeline_device(anonymizer: FaceAnonymizer) -> str:
    device = getattr(anonymizer.pipeline, "device", None)
    return getattr(device, "type", str(device or "cpu"))


# ---------------------------------------------------------------------------------------------
# Pass 2: render


def render_video(
    anonymizer: FaceAnonymizer,
    scan: VideoScan,
    dst: str | Path,
    settings: VideoSettings | None = None,
    progress: Progress | None = None,
    on_frames: FrameProgress | None = None,
    notify: Notify | None = None,
    crf: int = 18,
) -> VideoReport:
    """Keyframes (diffusion), then every frame rendered and written to `dst`."""
    settings = settings or VideoSettings()
    method, note = anonymizer.resolve_method(settings.method)
    if settings.keep is not None:
        settings = replace(settings, keep=anonymizer.load_keep(settings.keep))
    plans = plan_tracks(anonymizer, scan, settings, method)
    generation = Generation(settings.steps, settings.guidance, settings.scheduler)
    seconds = {"scan": round(scan.seconds, 3)}
    started = time.perf_counter()
    keys, rest = diffusion_faces(plans, settings.per_frame)
    if keys + rest:
        _warn_estimate(anonymizer, keys + rest, settings.steps, notify)
    keyframed = _keyframe_tracks(anonymizer, plans, settings)
    generated = 0
    if keyframed:
        per_face = _generate_keyframes(anonymizer, scan, keyframed, settings, generation)
        generated = len(keyframed) + _on_same_person(anonymizer, scan, keyframed, settings, generation)
        seconds["keyframes"] = round(time.perf_counter() - started, 3)
        rest = diffusion_faces(plans, settings.per_frame)[1]  # a track redacted instead has none left
        if rest and notify:
            notify(
                f"The keyframes took {per_face:.1f} s per face; the other {rest} frame face(s) should take "
                f"about {_duration(estimate_seconds(anonymizer, rest, settings.steps, per_face))}."
            )
    _check_redacted_tracks(anonymizer, scan, plans, settings)
    render_start = time.perf_counter()
    guarded: list[int] = []
    generated += _render(
        anonymizer, scan, plans, settings, generation, dst, crf, progress, on_frames, guarded
    )
    seconds["render"] = round(time.perf_counter() - render_start, 3)
    seconds["total"] = round(scan.seconds + time.perf_counter() - started, 3)
    reports = [_track_report(plan, anonymizer) for plan in plans.values()]
    mode = ("per-frame" if settings.per_frame else "keyframe+swap") if method == DIFFUSION else "redaction"
    report = VideoReport(
        source=scan.path.name,
        output=str(dst),
        frames=scan.frame_count,
        width=scan.info.width,
        height=scan.info.height,
        fps=round(scan.info.fps, 3),
        duration_s=round(scan.info.duration_s, 3),
        has_audio=scan.info.has_audio,
        method=method,
        mode=mode,
        tracks=reports,
        generated_faces=generated,
        guard_redactions=sum(guarded),
        on_same_person=anonymizer.on_same_person,
        seconds=seconds,
    )
    report.message = _summary(report, note)
    _tell(progress, None, RENDER, 1, 1, 1.0, 0.0)
    return report


def anonymize_video(
    anonymizer: FaceAnonymizer,
    src: str | Path,
    dst: str | Path,
    settings: VideoSettings | None = None,
    tracking: TrackingOptions | None = None,
    progress: Progress | None = None,
    on_frames: FrameProgress | None = None,
    notify: Notify | None = None,
    crf: int = 18,
) -> VideoReport:
    """scan_video + render_video."""
    settings = settings or VideoSettings()
    anonymizer.resolve_method(settings.method)  # the weights' error before a long scan
    if settings.keep is not None:  # every keep photo checked before the scan too
        settings = replace(settings, keep=anonymizer.load_keep(settings.keep))
    scan = scan_video(anonymizer, src, tracking, progress, on_frames)
    return render_video(anonymizer, scan, dst, settings, progress, on_frames, notify, crf)


def _warn_estimate(anonymizer: FaceAnonymizer, faces: int, steps: int, notify: Notify | None) -> None:
    if notify is None:
        return
    device = pipeline_device(anonymizer)
    text = (
        f"Diffusion will generate {faces} face(s) at {steps} steps: about "
        f"{_duration(estimate_seconds(anonymizer, faces, steps))} on this {device.upper()}."
    )
    if device == "cpu":
        text += (
            " It runs on the CPU, which is very slow for the diffusion model: use a GPU, fewer steps, or "
            "--method blur for a fast redaction."
        )
    notify(text)


def _keyframe_tracks(
    anonymizer: FaceAnonymizer, plans: dict[int, _TrackPlan], settings: VideoSettings
) -> list[_TrackPlan]:
    """The diffusion tracks whose keyframe face is generated first: all of them for keyframe + swap;
    in per-frame mode only when on_same_person has to judge it (it is the face per-frame mode gives
    the keyframe: same crop, seed and degree)."""
    if settings.per_frame and not _checks_keyframes(anonymizer):
        return []
    return [p for p in plans.values() if p.method == DIFFUSION]


def _checks_keyframes(anonymizer: FaceAnonymizer) -> bool:
    return bool(anonymizer.on_same_person and anonymizer.identity_check)


def _generate_keyframes(
    anonymizer: FaceAnonymizer,
    scan: VideoScan,
    diffused: list[_TrackPlan],
    settings: VideoSettings,
    generation: Generation,
) -> float:
    """Generate the keyframe faces of `diffused` (with each plan's seed and degree) in one batched
    call; encode each as a source for the swaps. Returns the seconds per face it took."""
    crops = keyframe_crops(scan, [p.track.track_id for p in diffused])
    started = time.perf_counter()
    requests = [
        CropRequest(condition=crops[p.track.track_id][0], degree=p.degree, seed=p.seed) for p in diffused
    ]
    for plan, crop in zip(diffused, anonymizer.generate(requests, generation), strict=True):
        plan.key_crop = crop
        if settings.reuse_source and not settings.per_frame:
            plan.reference = _encode_source(anonymizer, crop, plan.seed)
    return (time.perf_counter() - started) / max(len(diffused), 1)


def _on_same_person(
    anonymizer: FaceAnonymizer,
    scan: VideoScan,
    diffused: list[_TrackPlan],
    settings: VideoSettings,
    generation: Generation,
) -> int:
    """FaceAnonymizer(on_same_person=...) per track, at the keyframe, by the photo rule
    (FaceAnonymizer._handle_still_recognizable): a track whose generated keyframe face the identity
    check still calls the person is generated again once ("retry": seed face_seed(seed, track,
    attempt=1), d + 0.1 up to DEFAULTS.unrealistic_degree; the swaps then use the new face and seed),
    or redacted with that method in every frame. Returns the faces generated again."""
    if not _checks_keyframes(anonymizer):
        return 0
    measured = _keyframe_identity(anonymizer, scan, diffused)
    for plan in diffused:
        report = measured.get(plan.track.track_id)
        plan.keyframe_similarity = report.identity_similarity if report else None
    still = [p for p in diffused if getattr(measured.get(p.track.track_id), "same_person", False)]
    if not still:
        return 0
    action = anonymizer.on_same_person
    if action != "retry":
        for plan in still:
            plan.method, plan.seed, plan.degree, plan.key_crop, plan.reference = action, None, 0.0, None, None
            plan.message = (
                "the new keyframe face still matched the person "
                f"(similarity {plan.keyframe_similarity:.2f}); "
                f"{_INSTEAD[action]} in every frame of the track"
            )
        return 0
    for plan in still:
        plan.seed = face_seed(settings.seed, plan.track.track_id, attempt=1)
        plan.degree = max(plan.degree, min(plan.degree + 0.1, DEFAULTS.unrealistic_degree))
    _generate_keyframes(anonymizer, scan, still, settings, generation)
    again = _keyframe_identity(anonymizer, scan, still)
    for plan in still:
        report = again.get(plan.track.track_id)
        outcome = (
            f"similarity now {report.identity_similarity:.2f}"
            if report and report.identity_similarity is not None
            else "not measured again"
        )
        if report and report.same_person:
            outcome = f"still recognizable after the retry ({outcome}): the leak guard redacts it where it is"
        plan.message = (
            f"the new keyframe face still matched the person (similarity {plan.keyframe_similarity:.2f}); "
            f"generated again with a new seed and degree {plan.degree:.2f}, {outcome}"
        )
    return len(still)


def _keyframe_identity(
    anonymizer: FaceAnonymizer, scan: VideoScan, diffused: list[_TrackPlan]
) -> dict[int, FaceReport]:
    """Track id -> the identity check of its generated keyframe face, pasted into its frame as
    finish_frame pastes it (less the watermark, which is invisible to the recognizer); {} without
    the identity model."""

    def paste(output, rgb, plan, face) -> str:
        aligned = align_face(rgb, face.landmarks)
        paste_face(output, plan.key_crop, aligned, color_match=anonymizer.color_match)
        return DIFFUSION

    return _keyframe_checks(scan, diffused, paste) or {}


def _keyframe_checks(scan: VideoScan, plans: list[_TrackPlan], change) -> dict[int, FaceReport] | None:
    """Track id -> the identity check (faceanon.trust.checks.measure_reports, the photos' filler:
    faces too small to verify get no verdict) of each plan's keyframe face after `change(output, rgb,
    plan, face)` (which returns the method applied). Decodes up to the last keyframe; None without
    the identity model (optional, or its file missing or altered)."""
    try:
        from faceanon.trust.checks import measure_reports
    except ImportError:
        return None
    by_frame: dict[int, list[_TrackPlan]] = {}
    for plan in plans:
        by_frame.setdefault(plan.keyframe, []).append(plan)
    measured = {}
    for frame in _frames_at(scan.path, by_frame):
        output, reports = frame.rgb.copy(), []
        for plan in by_frame[frame.index]:
            face = plan.track.face_at(frame.index)
            method = change(output, frame.rgb, plan, face)
            reports.append(FaceReport(face=face, changed=True, method=method))
        try:
            measure_reports(frame.rgb, output, reports, attributes=False)
        except FaceAnonError:
            return None
        measured.update({report.face.index: report for report in reports})
    return measured


def _encode_source(anonymizer: FaceAnonymizer, crop: np.ndarray, seed: int):
    """The engine's reusable encoding of a track's source face, or None when it has none. It is
    drawn with the track's seed: a swap call seeded the same then equals the plain call."""
    import torch
    from PIL import Image

    pipe = anonymizer.pipeline
    encode = getattr(pipe, "encode_source", None)
    if encode is None:
        return None
    size = anonymizer.resolution
    return encode(
        Image.fromarray(crop), generator=torch.Generator().manual_seed(seed), height=size, width=size
    )


def _render(
    anonymizer: FaceAnonymizer,
    scan: VideoScan,
    plans: dict[int, _TrackPlan],
    settings: VideoSettings,
    generation: Generation,
    dst,
    crf: int,
    progress,
    on_frames,
    guarded: list[int],
) -> int:
    window = max(1, int(settings.window))
    total = scan.frame_count
    generated = 0
    # The guard's identity rule needs the identity check, which _no_frame_checks turns off per frame
    # (finish_frame's) so that the faces are measured once, by _measure_identity.
    identity_guard = bool(anonymizer.leak_guard and anonymizer.identity_check)
    with (
        _no_frame_checks(anonymizer),
        open_video(scan.path) as reader,
        VideoWriter(dst, like=reader.info, source=scan.path, crf=crf) as writer,
    ):
        batch = []
        for frame in reader:
            batch.append(frame)
            if len(batch) == window:
                generated += _render_window(
                    anonymizer, batch, plans, settings, generation, writer, guarded, identity_guard
                )
                _tell(progress, on_frames, RENDER, batch[-1].index + 1, total, 0.3, 0.7)
                batch = []
        if batch:
            generated += _render_window(
                anonymizer, batch, plans, settings, generation, writer, guarded, identity_guard
            )
            _tell(progress, on_frames, RENDER, batch[-1].index + 1, total, 0.3, 0.7)
    return generated


def _render_window(
    anonymizer: FaceAnonymizer,
    frames: list,
    plans: dict[int, _TrackPlan],
    settings: VideoSettings,
    generation: Generation,
    writer: VideoWriter,
    guarded: list[int],
    identity_guard: bool = False,
) -> int:
    """Prepare every frame of the window, generate each track's faces in one call, finish (the leak
    guard included, when the anonymizer's is on: its second pass in finish_frame, its identity rule
    here on the similarities measured per frame), write."""
    frame_plans = [_frame_plans(plans, f.index, settings) for f in frames]
    if not any(p.method == DIFFUSION for face_plans in frame_plans for p in face_plans):
        for frame, face_plans in zip(frames, frame_plans, strict=True):
            output = _redact_frame(frame.rgb, face_plans, plans)
            output, still = _guard_tracks(anonymizer, output, face_plans, plans, frame.index)
            output = _guard_redacted(anonymizer, frame.rgb, output, face_plans, settings, guarded, still)
            writer.write(output, like=frame)
        return 0
    chosen = (
        settings.tracks is not None
    )  # the leak guard then reports new faces but leaves them, as for photos
    prepared = [
        anonymizer.prepare_frame(f.rgb, face_plans, only_planned=chosen)
        for f, face_plans in zip(frames, frame_plans, strict=True)
    ]
    requests: dict[int, list[tuple[int, int]]] = {}  # track id -> (frame in window, request index)
    for w, frame in enumerate(prepared):
        for r, plan in enumerate(frame.generated):
            if plan.source is not None or settings.per_frame:
                requests.setdefault(plan.face.index, []).append((w, r))
    crops: list[list] = [[None] * len(frame.requests) for frame in prepared]
    for w, frame in enumerate(prepared):  # keyframe frames: the generated keyframe face itself
        for r, plan in enumerate(frame.generated):
            if plan.source is None and not settings.per_frame:
                crops[w][r] = plans[plan.face.index].key_crop
    generated = 0
    for positions in requests.values():
        new = anonymizer.generate([prepared[w].requests[r] for w, r in positions], generation)
        generated += len(new)
        for (w, r), crop in zip(positions, new, strict=True):
            crops[w][r] = crop
    for frame, source, frame_crops in zip(frames, prepared, crops, strict=True):
        result = anonymizer.finish_frame(source, frame_crops)
        image, redacted = result.image, sum(1 for face in result.faces if face.guard and face.changed)
        image, still = _guard_tracks(anonymizer, image, source.plans, plans, frame.index)
        redacted += still
        if settings.identity_check or identity_guard:
            measured = _measure_identity(source, image, plans, record=settings.identity_check)
            if identity_guard:
                image, still = _guard_same_person(anonymizer, source, image, measured, plans, frame.index)
                redacted += still
        guarded.append(redacted)
        writer.write(image, like=frame)
    return generated


def _guard_same_person(
    anonymizer: FaceAnonymizer,
    frame: PreparedFrame,
    image: np.ndarray,
    measured: list[tuple[FacePlan, float, bool | None]],
    plans: dict[int, _TrackPlan],
    index: int,
) -> tuple[np.ndarray, int]:
    """The leak guard's identity rule on one video frame (photos: FaceAnonymizer._guard): a generated
    face the identity check still calls the person in this frame is redacted there with guard_method
    (the guard's grown mask) and the frame is listed in its track's guard_frames. It reuses the
    similarities _measure_identity has just computed. Returns (frame, faces redacted)."""
    leaking = [plan for plan, _, same in measured if same]
    if not leaking:
        return image, 0
    output = image.copy()
    for plan in leaking:
        aligned = frame.aligned[plan.face.index]
        redact_face(output, aligned, anonymizer.guard_method, mask=guard_mask(aligned))
        plans[plan.face.index].guard_frames.append(index)
    return output, len(leaking)


def _redact_frame(rgb: np.ndarray, face_plans: list[FacePlan], plans: dict[int, _TrackPlan]) -> np.ndarray:
    """The redaction-only frame, fast: no aligned crop is cut (redaction needs only the transform),
    and a track's mask is reused while its aligned landmarks stay within MASK_REUSE_PX of those it
    was drawn for (alignment holds them nearly still; 2 px of 512 moves the mask's feathered edge,
    about 20 px wide, by a tenth of its width)."""
    output = rgb.copy()
    for plan in face_plans:
        if not plan.method:
            continue
        aligned = _alignment_only(plan.face.landmarks)
        track = plans[plan.face.index]
        if track.mask_key is None or np.abs(track.mask_key - aligned.landmarks).max() > MASK_REUSE_PX:
            track.mask, track.mask_key = face_mask(aligned.landmarks, aligned.size), aligned.landmarks
        redact_face(output, aligned, plan.method, plan.strength, mask=track.mask)
    return output


def _guard_redacted(
    anonymizer: FaceAnonymizer,
    rgb: np.ndarray,
    output: np.ndarray,
    face_plans: list[FacePlan],
    settings: VideoSettings,
    guarded: list[int],
    already: int = 0,
) -> np.ndarray:
    """The leak guard on a frame of the redaction fast path: the same second detection pass
    finish_frame runs (faceanon.faces.leak_guard); every face of the frame's tracks (changed or
    deliberately left) counts as known, so only faces the tracks do not cover are redacted (and
    only reported when the caller chose tracks, as for photos with chosen faces). `already`: the
    faces _guard_tracks redacted in this frame, counted with them."""
    if not anonymizer.leak_guard:
        return output
    frame = PreparedFrame(rgb=rgb, plans=face_plans, aligned={}, only_planned=settings.tracks is not None)
    result = anonymizer._guard(frame, FrameResult(image=output, faces=[]))
    guarded.append(already + sum(1 for face in result.faces if face.changed))
    return result.image


def _check_redacted_tracks(
    anonymizer: FaceAnonymizer, scan: VideoScan, plans: dict[int, _TrackPlan], settings: VideoSettings
) -> None:
    """The leak guard's identity rule for redacted tracks (photos: FaceAnonymizer._guard), once per
    track rather than per frame, so that the fast path stays fast: the keyframe face redacted as the
    render redacts it, measured against the person there (faceanon.trust.checks.measure_reports:
    faces under MIN_VERIFIABLE_FACE get no verdict). A track still the person gets the guard's
    redaction (guard_method, grown mask) on top in every frame (_guard_tracks). Needs the
    anonymizer's leak_guard and identity_check; decodes up to the last such keyframe."""
    if not (anonymizer.leak_guard and anonymizer.identity_check):
        return
    redacted = [p for p in plans.values() if p.method and p.method != DIFFUSION]

    def redact(output, _rgb, plan, face) -> str:
        redact_face(output, _alignment_only(face.landmarks), plan.method, settings.strength)
        return plan.method

    measured = _keyframe_checks(scan, redacted, redact) or {}
    for plan in redacted:
        if plan.track.track_id in measured:
            _judge_redacted(anonymizer, plan, measured[plan.track.track_id])


def _judge_redacted(anonymizer: FaceAnonymizer, plan: _TrackPlan, report: FaceReport) -> None:
    plan.keyframe_similarity = report.identity_similarity
    if not report.same_person:
        return
    plan.guard_track = True
    note = (
        f"the {_DONE[plan.method]} keyframe face still matched the person (similarity "
        f"{report.identity_similarity:.2f}): the leak guard {_GUARDS[anonymizer.guard_method]} it "
        "in every frame of the track"
    )
    plan.message = "; ".join(filter(None, [plan.message, note]))


def _guard_tracks(
    anonymizer: FaceAnonymizer,
    image: np.ndarray,
    face_plans: list[FacePlan],
    plans: dict[int, _TrackPlan],
    index: int,
) -> tuple[np.ndarray, int]:
    """The guard's redaction (guard_method, its grown mask) of this frame's faces of the tracks
    _check_redacted_tracks found still the person; each frame is listed in the track's
    guard_frames. Returns (frame, faces redacted); the frame is untouched (not copied) without any."""
    leaking = [p for p in face_plans if p.method and plans[p.face.index].guard_track]
    if not leaking:
        return image, 0
    output = image.copy()
    for plan in leaking:
        aligned = _alignment_only(plan.face.landmarks)
        redact_face(output, aligned, anonymizer.guard_method, mask=guard_mask(aligned))
        plans[plan.face.index].guard_frames.append(index)
    return output, len(leaking)


def _alignment_only(landmarks: np.ndarray, size: int = CROP_SIZE) -> AlignedFace:
    """align_face's transforms without warping the crop (whose pixels redaction never reads)."""
    matrix = alignment_matrix(landmarks, size)
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2) @ matrix[:, :2].T + matrix[:, 2]
    return AlignedFace(
        crop=np.empty((size, size, 3), np.uint8),
        matrix=matrix,
        inverse=invert(matrix),
        landmarks=points.astype(np.float32),
        scale=float(np.sqrt(abs(np.linalg.det(matrix[:, :2])))),
    )


def _frame_plans(plans: dict[int, _TrackPlan], frame: int, settings: VideoSettings) -> list[FacePlan]:
    out = []
    for plan in plans.values():
        face = plan.track.face_at(frame)
        if face is None:
            continue
        if plan.method != DIFFUSION:
            out.append(FacePlan(face, plan.method, strength=settings.strength, message=plan.message))
        elif settings.per_frame:
            out.append(FacePlan(face, DIFFUSION, seed=plan.seed, degree=plan.degree, base_seed=settings.seed))
        elif frame == plan.keyframe:
            out.append(
                FacePlan(
                    face,
                    DIFFUSION,
                    seed=plan.seed,
                    degree=plan.degree,
                    base_seed=settings.seed,
                    message="keyframe",
                )
            )
        else:
            out.append(
                FacePlan(
                    face,
                    DIFFUSION,
                    seed=plan.seed,
                    degree=0.0,
                    source=plan.key_crop,
                    source_reference=plan.reference,
                    base_seed=settings.seed,
                )
            )
    return out


@contextmanager
def _no_frame_checks(anonymizer: FaceAnonymizer):
    """Per-frame identity / pose checks are replaced by the per-track ones here."""
    previous = anonymizer.identity_check
    anonymizer.identity_check = False
    try:
        yield
    finally:
        anonymizer.identity_check = previous


def _measure_identity(
    frame, output: np.ndarray, plans: dict[int, _TrackPlan], record: bool = True
) -> list[tuple[FacePlan, float, bool | None]]:
    """Per diffusion face: its generated face vs the original (same landmarks), and vs the
    previous frame's generated face of the track (consistency), recorded for the track report when
    `record`. Returns (plan, similarity, same person: None below MIN_VERIFIABLE_FACE) per face."""
    try:
        from faceanon.trust.identity import get_identity_model, verifiable

        model = get_identity_model()
    except Exception:  # the identity model is optional (not installed, file altered): no figures
        return []
    measured = []
    for plan in frame.generated:
        track = plans[plan.face.index]
        landmarks = plan.face.landmarks
        try:
            original = model.embed(frame.rgb, landmarks)
            generated = model.embed(output, landmarks)
        except Exception:  # degenerate landmarks of an extrapolated face: not measurable
            continue
        similarity = float(model.similarity(original, generated))
        verdict = bool(model.same_person(similarity)) if verifiable(plan.face.size) else None
        measured.append((plan, similarity, verdict))
        if not record:
            continue
        track.similarities.append(similarity)
        if track.previous_embedding is not None:
            track.consistencies.append(float(model.similarity(track.previous_embedding, generated)))
        track.previous_embedding = generated
    return measured


def _track_report(plan: _TrackPlan, anonymizer: FaceAnonymizer) -> TrackReport:
    track = plan.track
    report = TrackReport(
        track_id=track.track_id,
        frames=len(track.points),
        first_frame=track.first_frame,
        last_frame=track.last_frame,
        keyframe=plan.keyframe,
        method=plan.method,
        seed=plan.seed if plan.method == DIFFUSION else None,
        degree=plan.degree if plan.method == DIFFUSION else None,
        detected_frames=len(track.frames_of(DETECTED)),
        interpolated_frames=track.frames_of(INTERPOLATED),
        extended_frames=track.frames_of(EXTENDED),
        kept_as=plan.kept.name if plan.kept else None,
        kept_similarity=plan.kept.similarity if plan.kept else None,
        keyframe_similarity=plan.keyframe_similarity,
        guard_frames=list(plan.guard_frames),
        message=plan.message,
    )
    if plan.similarities:
        report.identity_max = round(max(plan.similarities), 4)
        report.identity_mean = round(float(np.mean(plan.similarities)), 4)
        try:
            from faceanon.trust.identity import get_identity_model

            report.same_person = bool(get_identity_model().same_person(report.identity_max))
        except Exception:
            report.same_person = None
    if plan.consistencies:
        report.consistency_min = round(min(plan.consistencies), 4)
        report.consistency_mean = round(float(np.mean(plan.consistencies)), 4)
    return report


def _summary(report: VideoReport, note: str) -> str:
    changed = report.num_changed
    text = (
        f"{report.frames} frame(s), {len(report.tracks)} face track(s), "
        f"{changed} anonymized ({report.method})."
    )
    if not report.tracks:
        text = (
            f"{report.frames} frame(s); no face was found, the video is re-encoded unchanged. If there is a "
            "face, try a lower detection threshold or another detector."
        )
    recognizable = [t for t in report.tracks if t.same_person]
    if recognizable:
        ids = ", ".join(f"#{t.track_id}" for t in recognizable)
        text += (
            f" Identity check: track(s) {ids} still look like the same person in some frame; use a higher "
            "degree, another seed, or redact them."
        )
    elif any(t.identity_max is not None for t in report.tracks):
        highest = max(t.identity_max for t in report.tracks if t.identity_max is not None)
        text += (
            " Identity check: every generated track is a different person "
            f"(highest similarity {highest:.2f})."
        )
    kept = [t for t in report.tracks if t.kept_as]
    if kept:
        text += (
            " Kept (keep-list): "
            + ", ".join(f"track #{t.track_id} {t.kept_as} ({t.kept_similarity:.2f})" for t in kept)
            + "."
        )
    text += _guard_summary(report)
    return " ".join(filter(None, [text, note if changed else ""]))


def _guard_summary(report: VideoReport) -> str:
    """The leak guard's two rules on video: new faces still the person, faces only its second pass found."""
    text = ""
    still = [t for t in report.tracks if t.guard_frames]
    if still:
        text += " Leak guard: " + ", ".join(
            f"track #{t.track_id} still looked like the person in {len(t.guard_frames)} frame(s), "
            "redacted there"
            for t in still
        )
        text += "."
    found = report.guard_redactions - sum(len(t.guard_frames) for t in report.tracks)
    if found:
        text += (
            f" Leak guard: {found} face(s) found only on its second pass were redacted "
            "in the frames where they appeared."
        )
    return text


_INSTEAD = {"blur": "blurred instead", "pixelate": "pixelated instead", "solid": "filled instead"}
_DONE = {"blur": "blurred", "pixelate": "pixelated", "solid": "filled"}
_GUARDS = {"blur": "blurs", "pixelate": "pixelates", "solid": "fills"}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _tell(
    progress: Progress | None,
    on_frames: FrameProgress | None,
    stage: str,
    done: int,
    total: int,
    start: float,
    share: float,
) -> None:
    total = max(total, done, 1)
    if on_frames is not None:
        on_frames(stage, done, total)
    if progress is not None:
        progress(min(1.0, start + share * done / total), f"{stage}: frame {done}/{total}")


__all__ = [
    "VideoSettings",
    "VideoScan",
    "VideoReport",
    "TrackReport",
    "scan_video",
    "render_video",
    "anonymize_video",
    "keyframe_crops",
    "keyframe_thumbnails",
    "choose_keyframe",
    "frontality",
    "estimate_seconds",
    "keep_matches",
    "METHODS",
]
