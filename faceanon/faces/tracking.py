"""Faces followed across the frames of a video: one track per person, on the detector's boxes.

    tracker = FaceTracker(fps=info.fps)
    for frame in reader:
        tracker.update(frame.index, frame.time_s, anonymizer.detect_frame(frame.rgb))
    tracks = tracker.finish(frame_count, (width, height))    # list[FaceTrack]
    face = tracks[0].face_at(12)                              # DetectedFace (index = track id) or None

Association is ByteTrack (`trackers.ByteTrackTracker`, Roboflow's maintained implementation:
Kalman-predicted boxes matched by IoU, high-confidence detections first). What `finish` adds:

* the detection a track was started from (ByteTrack names a track on its second frame) is put
  back at its head; a detection no track took becomes a track of its own (covered, not dropped:
  for an anonymizer a missed face is worse than a blurred patch of wall);
* a detection whose landmarks do not fit its own box the way the track's neighbouring detections
  do (an ensemble's pass that returned the eyes of a smaller, shifted face: seen on the recall
  ensemble, eyes 23 px apart on a 140 px face whose neighbours had 64) gets the landmarks of its
  neighbours' median shape placed in its box: a mask drawn from them would leave part of the face
  (glasses, an eye) visible;
* a frame inside a track where the detector missed the face (covered for a moment, motion blur)
  gets the box and landmarks interpolated linearly in time from the detections around the gap;
* each track is extended `extend_s` seconds before its first and after its last detection, moving
  on with the track's velocity there, so a face entering the picture is covered before the
  detector sees it whole (the extension stops where the face would be out of the picture);
* landmarks are smoothed with the One-Euro filter (Casiez et al., CHI 2012; package
  `OneEuroFilter`) run forwards and backwards in time and averaged: a causal filter lags a moving
  face, and the two lags cancel, so the masks stay on the face while aligned crops stop jittering.
  Coordinates are filtered in units of the face's size, so one setting suits every face size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from faceanon.results import DetectedFace

DETECTED, INTERPOLATED, EXTENDED = "detected", "interpolated", "extended"


@dataclass
class TrackPoint:
    """A track's face in one frame: where it is, and how that was found."""

    frame: int
    time_s: float
    box: np.ndarray  # (4,) x0, y0, x1, y1
    landmarks: np.ndarray  # (5, 2), insightface order
    score: float
    kind: str = DETECTED  # DETECTED, INTERPOLATED (a detector miss inside the track) or EXTENDED

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass
class FaceTrack:
    """One person's face over consecutive frames."""

    track_id: int
    points: dict[int, TrackPoint] = field(default_factory=dict)  # frame index -> point

    @property
    def frames(self) -> list[int]:
        return sorted(self.points)

    @property
    def first_frame(self) -> int:
        return min(self.points)

    @property
    def last_frame(self) -> int:
        return max(self.points)

    def frames_of(self, kind: str) -> list[int]:
        return [i for i in self.frames if self.points[i].kind == kind]

    def face_at(self, frame: int) -> DetectedFace | None:
        """The face in `frame` as the anonymizer takes it (index = the track id), or None."""
        point = self.points.get(frame)
        if point is None:
            return None
        return DetectedFace(
            index=self.track_id,
            box=tuple(float(v) for v in point.box),
            landmarks=point.landmarks.astype(np.float32),
            score=point.score,
        )


@dataclass(frozen=True)
class TrackingOptions:
    """How faces are followed. Durations are in seconds so that they mean the same at any frame rate."""

    lost_s: float = 1.0  # a track not seen for this long ends (ByteTrack's lost-track buffer)
    min_iou: float = 0.1  # ByteTrack's association threshold
    extend_s: float = 0.2  # covered this long before a track's first and after its last detection
    smooth: bool = True
    min_cutoff_hz: float = 1.5  # One-Euro: lower removes more jitter on a still face
    beta: float = 0.5  # One-Euro: higher follows fast moves more closely (in face sizes per second)
    join_iou: float = 0.3  # an untracked detection joins the track starting next to it above this IoU


class FaceTracker:
    """Collects per-frame detections online (memory: boxes and landmarks only) and builds tracks."""

    def __init__(self, fps: float = 30.0, threshold: float = 0.5, options: TrackingOptions | None = None):
        from trackers import ByteTrackTracker

        self.options = options or TrackingOptions()
        self.fps = float(fps) if fps and fps > 0 else 30.0
        # lost_track_buffer counts 30 fps frames whatever the video's rate (trackers' convention).
        self._bytetrack = ByteTrackTracker(
            lost_track_buffer=max(1, round(self.options.lost_s * 30)),
            frame_rate=self.fps,
            track_activation_threshold=threshold,
            minimum_consecutive_frames=1,
            minimum_iou_threshold=self.options.min_iou,
            high_conf_det_threshold=threshold,
        )
        self._tracked: dict[int, dict[int, TrackPoint]] = {}
        self._untracked: list[TrackPoint] = []
        self._times: dict[int, float] = {}

    def update(self, frame: int, time_s: float, faces: list[DetectedFace]) -> None:
        """Feed the faces detected in frame `frame` (shown at `time_s` seconds), in frame order."""
        import supervision as sv

        self._times[frame] = float(time_s)
        points = [
            TrackPoint(
                frame,
                float(time_s),
                np.asarray(f.box, dtype=np.float64),
                np.asarray(f.landmarks, dtype=np.float64).reshape(5, 2),
                float(f.score),
            )
            for f in faces
        ]
        if points:
            detections = sv.Detections(
                xyxy=np.stack([p.box for p in points]),
                confidence=np.array([p.score for p in points]),
                data={"index": np.arange(len(points))},
            )
        else:
            detections = sv.Detections.empty()
        # Timestamps make the Kalman prediction follow variable frame rates.
        result = self._bytetrack.update(detections, timestamp=float(time_s))
        indices = result.data.get("index", np.zeros(0, dtype=int)) if len(result) else []
        for index, track_id in zip(indices, result.tracker_id if len(result) else [], strict=True):
            point = points[int(index)]
            if track_id < 0:
                self._untracked.append(point)
            else:
                self._tracked.setdefault(int(track_id), {})[frame] = point

    def finish(self, frame_count: int, size: tuple[int, int]) -> list[FaceTrack]:
        """The tracks, renumbered 0.. in order of appearance (then left to right), with gaps
        interpolated, ends extended and landmarks smoothed. `size`: the frames' (width, height)."""
        tracks = [dict(points) for points in self._tracked.values()]
        for point in sorted(self._untracked, key=lambda p: -p.frame):
            _join_or_start(tracks, point, self.options.join_iou)
        ordered = sorted(tracks, key=lambda t: (min(t), _centre(t[min(t)].box)[0]))
        times = _frame_times(self._times, frame_count, self.fps)
        result = []
        for track_id, points in enumerate(ordered):
            track = FaceTrack(track_id, dict(sorted(points.items())))
            fix_landmark_outliers(track)
            fill_gaps(track, times)
            extend_track(track, times, size, round(self.options.extend_s * self.fps))
            if self.options.smooth:
                smooth_landmarks(track, self.options.min_cutoff_hz, self.options.beta)
            result.append(track)
        return result


def track_faces(
    detections: Iterable[tuple[int, float, list[DetectedFace]]],
    frame_count: int,
    size: tuple[int, int],
    fps: float = 30.0,
    threshold: float = 0.5,
    options: TrackingOptions | None = None,
) -> list[FaceTrack]:
    """Tracks from (frame index, time in seconds, faces) for every frame, in order."""
    tracker = FaceTracker(fps=fps, threshold=threshold, options=options)
    for frame, time_s, faces in detections:
        tracker.update(frame, time_s, faces)
    return tracker.finish(frame_count, size)


# ---------------------------------------------------------------------------------------------
# Building tracks


def _join_or_start(tracks: list[dict[int, TrackPoint]], point: TrackPoint, min_iou: float) -> None:
    """Put an untracked detection at the head of the track that starts in the next frame on top
    of it (ByteTrack's first frame of a track), or start a track with it."""
    best, best_iou = None, min_iou
    for points in tracks:
        head = min(points)
        if head == point.frame + 1:
            overlap = _iou(points[head].box, point.box)
            if overlap >= best_iou:
                best, best_iou = points, overlap
    if best is None:
        tracks.append({point.frame: point})
    else:
        best[point.frame] = point


def _frame_times(known: dict[int, float], frame_count: int, fps: float) -> np.ndarray:
    """Every frame's time: the ones seen, and for frames before/after them a constant rate."""
    count = max(frame_count, max(known, default=-1) + 1)
    times = np.arange(count, dtype=np.float64) / fps
    if known:
        indices = np.array(sorted(known))
        values = np.array([known[i] for i in indices])
        times = np.interp(np.arange(count), indices, values)
        before, after = np.arange(count) < indices[0], np.arange(count) > indices[-1]
        times[before] = values[0] - (indices[0] - np.arange(count)[before]) / fps
        times[after] = values[-1] + (np.arange(count)[after] - indices[-1]) / fps
    return times


LANDMARK_OUTLIER = 0.12  # face sizes a landmark may sit from the neighbours' median shape
OUTLIER_WINDOW = 4  # detections on each side that make the median shape


def fix_landmark_outliers(
    track: FaceTrack, limit: float = LANDMARK_OUTLIER, window: int = OUTLIER_WINDOW
) -> list[int]:
    """Detections whose landmarks, in units of their own box, lie more than `limit` from the
    median shape of the `window` detections on each side get that median shape in their box.
    Returns the frames fixed. Turning heads change the shape slowly, so a local median follows them."""
    frames = track.frames
    if len(frames) < 5:
        return []
    shapes = np.stack([_shape(track.points[i]) for i in frames])  # (T, 5, 2), in box units
    fixed = []
    for n, frame in enumerate(frames):
        around = [k for k in range(max(0, n - window), min(len(frames), n + window + 1)) if k != n]
        if len(around) < 4:
            continue
        median = np.median(shapes[around], axis=0)
        if np.abs(shapes[n] - median).max() > limit:
            point = track.points[frame]
            point.landmarks = (median * point.size + point.box[:2]).astype(np.float32)
            fixed.append(frame)
    return fixed


def _shape(point: TrackPoint) -> np.ndarray:
    return (np.asarray(point.landmarks, np.float64) - point.box[:2]) / max(point.size, 1.0)


def fill_gaps(track: FaceTrack, times: np.ndarray) -> None:
    """Frames between two detections of the track get box and landmarks interpolated in time."""
    frames = track.frames
    for a, b in zip(frames, frames[1:], strict=False):
        if b - a < 2:
            continue
        start, end = track.points[a], track.points[b]
        span = max(times[b] - times[a], 1e-9)
        for frame in range(a + 1, b):
            w = float((times[frame] - times[a]) / span)
            track.points[frame] = TrackPoint(
                frame,
                float(times[frame]),
                (1 - w) * start.box + w * end.box,
                (1 - w) * start.landmarks + w * end.landmarks,
                min(start.score, end.score),
                INTERPOLATED,
            )
    track.points = dict(sorted(track.points.items()))


def extend_track(track: FaceTrack, times: np.ndarray, size: tuple[int, int], frames: int) -> None:
    """Up to `frames` frames before the first and after the last point, moving at the velocity
    of the track's ends; frames where the face box would lie wholly outside the picture are skipped."""
    if frames <= 0:
        return
    for direction in (-1, 1):
        edge = track.first_frame if direction < 0 else track.last_frame
        velocity_box, velocity_points = _end_velocity(track, edge, direction, times)
        anchor = track.points[edge]
        for step in range(1, frames + 1):
            frame = edge + direction * step
            if not 0 <= frame < len(times):
                break
            dt = float(times[frame] - times[edge])
            box = anchor.box + velocity_box * dt
            if not _visible(box, size):
                break
            track.points[frame] = TrackPoint(
                frame,
                float(times[frame]),
                box,
                anchor.landmarks + velocity_points * dt,
                anchor.score,
                EXTENDED,
            )
    track.points = dict(sorted(track.points.items()))


def _end_velocity(track: FaceTrack, edge: int, direction: int, times: np.ndarray, span: int = 5):
    """Per-second velocity of box and landmarks over the last `span` frames at one end."""
    frames = track.frames
    inner = frames[:span] if direction < 0 else frames[-span:]
    if len(inner) < 2:
        return np.zeros(4), np.zeros((5, 2))
    a, b = track.points[inner[0]], track.points[inner[-1]]
    dt = max(float(times[inner[-1]] - times[inner[0]]), 1e-9)
    return (b.box - a.box) / dt, (b.landmarks - a.landmarks) / dt


def _visible(box: np.ndarray, size: tuple[int, int]) -> bool:
    width, height = size
    return box[2] > 0 and box[3] > 0 and box[0] < width and box[1] < height


def smooth_landmarks(track: FaceTrack, min_cutoff_hz: float = 1.5, beta: float = 0.5) -> None:
    """One-Euro filter on the landmarks, forwards and backwards, averaged (zero lag on steady motion).
    Boxes move with the landmarks' mean shift so that both stay together."""
    frames = track.frames
    if len(frames) < 3:
        return
    points = np.stack([track.points[i].landmarks for i in frames])  # (T, 5, 2)
    times = np.array([track.points[i].time_s for i in frames])
    scale = max(float(np.median([track.points[i].size for i in frames])), 1.0)
    flat = points.reshape(len(frames), -1) / scale
    forward = _one_euro(flat, times, min_cutoff_hz, beta)
    backward = _one_euro(flat[::-1], -times[::-1], min_cutoff_hz, beta)[::-1]
    smoothed = ((forward + backward) / 2 * scale).reshape(points.shape)
    for frame, new in zip(frames, smoothed, strict=True):
        point = track.points[frame]
        shift = (new - point.landmarks).mean(0)
        point.box = point.box + np.tile(shift, 2)
        point.landmarks = new


def _one_euro(values: np.ndarray, times: np.ndarray, min_cutoff_hz: float, beta: float) -> np.ndarray:
    from OneEuroFilter import OneEuroFilter

    # The package filters one number per call; timestamps must be positive and increasing.
    offset = 1.0 - float(times[0])
    rate = 1.0 / max(float(np.median(np.diff(times))), 1e-3)
    filters = [OneEuroFilter(freq=rate, mincutoff=min_cutoff_hz, beta=beta) for _ in range(values.shape[1])]
    out = np.empty_like(values)
    for row, (vector, t) in enumerate(zip(values, times, strict=True)):
        out[row] = [f(float(v), float(t) + offset) for f, v in zip(filters, vector, strict=True)]
    return out


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(x1 - x0, 0) * max(y1 - y0, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def faces_in_frame(tracks: list[FaceTrack], frame: int) -> list[DetectedFace]:
    """Every track's face in `frame` (index = track id), left to right."""
    faces = [face for track in tracks if (face := track.face_at(frame)) is not None]
    return sorted(faces, key=lambda f: (f.box[0] + f.box[2]) / 2)


__all__ = [
    "FaceTracker",
    "FaceTrack",
    "TrackPoint",
    "TrackingOptions",
    "track_faces",
    "faces_in_frame",
    "fill_gaps",
    "extend_track",
    "smooth_landmarks",
    "DETECTED",
    "INTERPOLATED",
    "EXTENDED",
]
