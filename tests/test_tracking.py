"""Face tracking on real clips made from real photos (faceanon.testing_video), real YuNet detections."""

from __future__ import annotations

import numpy as np
import pytest

from faceanon.faces.detection import create_detector
from faceanon.faces.tracking import (
    DETECTED,
    EXTENDED,
    INTERPOLATED,
    FaceTrack,
    TrackPoint,
    fix_landmark_outliers,
    smooth_landmarks,
    track_faces,
)
from faceanon.media.video import open_video, probe_video
from faceanon.testing_video import make_test_clip


@pytest.fixture(scope="module")
def detector():
    return create_detector("yunet")


def _tracks(path, detector, **options):
    info = probe_video(path)
    with open_video(path) as reader:
        detections = [(f.index, f.time_s, detector.detect(f.rgb)) for f in reader]
    return track_faces(
        detections,
        len(detections),
        (info.width, info.height),
        fps=info.fps,
        threshold=detector.threshold,
        **options,
    ), detections


def test_a_briefly_covered_face_stays_one_track_with_the_gap_interpolated(tmp_path, detector):
    # Grace Hopper's eyes hidden for frames 6-8: the detector misses her there.
    clip = make_test_clip(
        tmp_path / "cover.mp4",
        photo="grace_hopper",
        motion="still",
        size=(240, 320),
        seconds=0.8,
        fps=20,
        cover=(6, 8, (40, 60, 200, 150)),
    )
    tracks, detections = _tracks(clip.path, detector)
    missed = [i for i, _, faces in detections if not faces]
    assert missed == [6, 7, 8]  # the occlusion really defeats the detector
    assert len(tracks) == 1
    track = tracks[0]
    assert track.frames == list(range(clip.frame_count))
    assert track.frames_of(INTERPOLATED) == missed
    before, after = track.points[5], track.points[9]
    for frame in missed:  # between the detections around the gap
        box = track.points[frame].box
        assert np.all(box >= np.minimum(before.box, after.box) - 2)
        assert np.all(box <= np.maximum(before.box, after.box) + 2)


def test_a_face_entering_is_covered_before_the_detector_sees_it(tmp_path, detector):
    clip = make_test_clip(
        tmp_path / "enter.mp4",
        photo="grace_hopper",
        motion="enter_leave",
        size=(320, 240),
        seconds=1.2,
        fps=20,
    )
    tracks, detections = _tracks(clip.path, detector)
    assert len(tracks) == 1
    track = tracks[0]
    first_detected = min(i for i, _, faces in detections if faces)
    last_detected = max(i for i, _, faces in detections if faces)
    extended = track.frames_of(EXTENDED)
    assert first_detected - 1 in extended and last_detected + 1 in extended
    # Extrapolated with the track's velocity: it keeps moving right, off the picture on the left.
    early = track.points[first_detected - 1].box
    assert early[0] < track.points[first_detected].box[0]
    # Nothing is extended where the face box lies wholly outside the picture.
    for frame in extended:
        x0, y0, x1, y1 = track.points[frame].box
        assert x1 > 0 and x0 < clip.width


def test_six_people_of_a_pan_keep_their_track_ids(tmp_path, detector):
    clip = make_test_clip(
        tmp_path / "pan.mp4", photo="group", motion="pan", size=(480, 320), seconds=1.0, fps=20
    )
    tracks, detections = _tracks(clip.path, detector)
    assert max(len(faces) for _, _, faces in detections) >= 5
    long_tracks = [t for t in tracks if len(t.frames_of(DETECTED)) >= 5]
    assert len(long_tracks) >= 5
    for track in long_tracks:  # one person per track: the face moves smoothly, never jumps to another
        centres = np.array([(track.points[i].box[:2] + track.points[i].box[2:]) / 2 for i in track.frames])
        steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        assert steps.max() < 0.5 * np.median([track.points[i].size for i in track.frames])


def test_one_euro_smoothing_removes_jitter_without_lagging_a_moving_face():
    rng = np.random.default_rng(0)
    base = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], dtype=np.float64)
    track, truth = FaceTrack(0), {}
    for frame in range(60):
        moved = base + [3.0 * frame, 0.0]  # 90 px/s to the right at 30 fps
        truth[frame] = moved
        noisy = moved + rng.normal(0, 1.5, moved.shape)
        box = np.array(
            [noisy[:, 0].min() - 20, noisy[:, 1].min() - 30, noisy[:, 0].max() + 20, noisy[:, 1].max() + 20]
        )
        track.points[frame] = TrackPoint(frame, frame / 30, box, noisy, 0.9)
    raw_error = np.array([track.points[i].landmarks - truth[i] for i in range(60)])
    smooth_landmarks(track)
    error = np.array([track.points[i].landmarks - truth[i] for i in range(60)])
    assert np.abs(error[5:-5]).std() < 0.75 * np.abs(raw_error[5:-5]).std()  # less jitter
    assert abs(error[5:-5, :, 0].mean()) < 0.5  # and no lag behind the motion (forwards + backwards)
    jitter = np.abs(np.diff(error[5:-5], axis=0)).mean()
    assert jitter < 0.6 * np.abs(np.diff(raw_error[5:-5], axis=0)).mean()


def test_a_detection_with_landmarks_that_do_not_fit_its_box_gets_its_neighbours_shape(tmp_path, detector):
    # Real YuNet detections of a zooming face; frame 8's landmarks replaced by those the recall
    # ensemble returned on a phone clip (eyes 23 px apart instead of ~64, shifted right).
    clip = make_test_clip(
        tmp_path / "zoom.mp4", photo="grace_hopper", motion="zoom", size=(240, 320), seconds=0.8, fps=20
    )
    _, detections = _tracks(clip.path, detector)
    track = FaceTrack(
        0,
        {
            i: TrackPoint(i, t, np.array(f[0].box, float), np.array(f[0].landmarks, float), f[0].score)
            for i, t, f in detections
        },
    )
    true = track.points[8].landmarks.copy()
    eyes = (true[0] + true[1]) / 2
    track.points[8].landmarks = true.copy()
    track.points[8].landmarks[:2] = [eyes + [-2, 3], eyes + [21, 8]]
    assert fix_landmark_outliers(track) == [8]
    size = track.points[8].size
    assert np.abs(track.points[8].landmarks - true).max() < 0.06 * size  # back on the face
