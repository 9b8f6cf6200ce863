"""Videos in `faceanon anonymize`: `faceanon anonymize clip.mp4 -o out.mp4`, and folders that mix
photos and videos (each video's output keeps its container; see faceanon.media.video).

Progress is a bar in frames per stage (finding faces, rendering). Before diffusion starts, the
command says how many faces it will generate and about how long that takes (and warns when it
would run on a CPU); after the keyframes it gives a measured estimate for the rest. Ctrl-C leaves
no half-written output (VideoWriter writes to a temporary name, moved into place when complete).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceanon.cli.common import face_list, say
from faceanon.errors import FaceAnonError


def add_video_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("videos")
    group.add_argument(
        "--tracks",
        type=face_list,
        default=None,
        metavar="I,J,...",
        help="videos: only these people (face tracks, numbered in order of appearance from 0, as "
        "the --json report lists them); default: all",
    )
    group.add_argument(
        "--per-frame",
        action="store_true",
        help="videos, diffusion: anonymize every frame on its own with the person's seed, instead of "
        "generating one keyframe per person and swapping it onto the other frames (slower, "
        "less consistent; for comparison)",
    )
    group.add_argument(
        "--window",
        type=int,
        default=16,
        metavar="N",
        help="videos: frames rendered together; a person's faces in them share one model call (default: 16)",
    )
    group.add_argument(
        "--crf", type=int, default=18, help="videos: H.264 quality, lower is better (default: 18)"
    )


def is_video(path: Path) -> bool:
    from faceanon.media.video import VIDEO_EXTENSIONS

    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _decodes(path: Path) -> bool:
    from faceanon.errors import FaceAnonError
    from faceanon.media.video import probe_video

    try:
        return probe_video(path).frame_count > 0
    except FaceAnonError:
        return False


def process_video(job, args, anonymizer, keep=None) -> dict:
    """One video of a batch: the same entry shape as a photo's (status, message, counts) plus the
    per-track report. keep: the loaded keep-list (--keep): tracks of kept people stay as they are."""
    entry = {"input": str(job.source), "output": str(job.target)}
    if job.target.exists() and not args.overwrite and _decodes(job.target):
        # Outputs are written atomically; a file that does not open as a video is redone, as photos are.
        return {**entry, "status": "skipped", "reason": "output exists (use --overwrite to replace it)"}
    bars = _FrameBars(enabled=not (args.quiet or args.json))
    try:
        report = anonymizer.anonymize_video(
            job.source,
            job.target,
            method=args.method,
            degree=args.degree,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            scheduler=args.scheduler,
            strength=args.strength,
            tracks=args.tracks,
            per_frame=args.per_frame,
            window=args.window,
            crf=args.crf,
            keep=keep,
            on_frames=bars.update,
            notify=lambda text: say(args, f"{job.source}: {text}", always=True),
        )
    except FaceAnonError as error:
        return {**entry, "status": "error", "error": str(error)}
    except (KeyboardInterrupt, SystemExit):
        raise  # the writer has already removed its partial output; main() exits 130
    except Exception as error:  # one bad video must not stop a folder of good ones
        return {**entry, "status": "error", "error": f"unexpected {type(error).__name__}: {error}"}
    finally:
        bars.close()
    result = report.to_dict()
    return {**entry, "status": "done", **result, "num_faces": result["num_tracks"]}


class _FrameBars:
    """One tqdm bar per stage, counted in frames."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar = None
        self._stage = None

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=stage, unit="frame", file=sys.stderr, leave=False)
            self._stage = stage
        self._bar.total = max(self._bar.total or 0, total)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._stage = None, None


__all__ = ["add_video_options", "is_video", "process_video"]
