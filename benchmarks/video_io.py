"""Video I/O throughput: frames per second decoded, encoded, and decoded + encoded (the identity
round trip a video job pays on top of face work), at 720p and 1080p, on this machine's CPU.

    python -m benchmarks.video_io                       # 720p and 1080p, 2 s clips at 30 fps
    python -m benchmarks.video_io --sizes 1080p --seconds 4 --preset veryfast --json io.json

Clips are made from a real group photo (insightface's t1.jpg, a slow pan: faceanon.testing_video)
and encoded once with x264 at crf 18; each measurement then runs faceanon.media.video end to end.

To measure a per-frame stage (blur with detection, tracking...), add it to STAGES: a name and a
factory returning `process(frame) -> rgb` (frame: faceanon.media.video.Frame). Its row then shows
decode + process + encode frames per second on the same clips.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from faceanon.media.video import Frame, VideoWriter, open_video
from faceanon.testing_video import make_test_clip

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080), "2160p": (3840, 2160)}

# name -> factory of a per-frame function; None: frames are passed through unchanged.
STAGES: dict[str, Callable[[], Callable[[Frame], object]] | None] = {"copy": None}


def measure_decode(path: Path) -> tuple[int, float, float]:
    """(frames, wall seconds, CPU seconds of all threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    with open_video(path) as reader:
        count = sum(1 for _ in reader)
    return count, time.perf_counter() - start, time.process_time() - cpu


def measure_round_trip(
    path: Path, out: Path, process=None, preset: str = "medium"
) -> tuple[int, float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    with open_video(path) as reader, VideoWriter(out, like=reader.info, source=path, preset=preset) as writer:
        for frame in reader:
            writer.write(frame.rgb if process is None else process(frame), like=frame)
    return writer.frames_written, time.perf_counter() - start, time.process_time() - cpu


def run(sizes: list[str], seconds: float, fps: int, preset: str, stages: list[str]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="faceanon-video-bench-") as folder:
        for size in sizes:
            width, height = SIZES[size]
            clip = make_test_clip(
                Path(folder) / f"{size}.mp4",
                photo="group",
                motion="pan",
                size=(width, height),
                seconds=seconds,
                fps=fps,
                audio=True,
            )
            frames, decode_s, decode_cpu = measure_decode(clip.path)
            rows.append(_row(size, "decode", frames, decode_s, decode_cpu, preset))
            for stage in stages:
                factory = STAGES[stage]
                process = factory() if factory is not None else None
                out = Path(folder) / f"{size}-{stage}.mp4"
                frames, total_s, total_cpu = measure_round_trip(clip.path, out, process, preset)
                rows.append(_row(size, f"decode+{stage}+encode", frames, total_s, total_cpu, preset))
                if stage == "copy":  # encode alone = round trip minus decode
                    rows.append(
                        _row(
                            size,
                            "encode (derived)",
                            frames,
                            max(total_s - decode_s, 1e-9),
                            total_cpu - decode_cpu,
                            preset,
                        )
                    )
    return rows


def _row(size: str, what: str, frames: int, seconds: float, cpu_seconds: float, preset: str) -> dict:
    """fps: frames per wall second; cpu_ms_per_frame: CPU time of all threads (shared machines:
    the wall figure depends on what else runs, the CPU figure much less)."""
    return {
        "size": size,
        "what": what,
        "frames": frames,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 1),
        "cpu_ms_per_frame": round(1000 * cpu_seconds / frames, 1),
        "x264_preset": preset,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["720p", "1080p"], choices=sorted(SIZES))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument(
        "--preset", default="medium", help="x264 preset of the output (ultrafast ... veryslow)"
    )
    parser.add_argument("--stages", nargs="+", default=["copy"], choices=sorted(STAGES))
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = run(args.sizes, args.seconds, args.fps, args.preset, args.stages)
    print(
        f"CPU cores: {os.cpu_count()}; clips: {args.seconds:g} s at {args.fps} fps, "
        "pan over a group photo, AAC audio"
    )
    print(f"x264 preset {args.preset}, crf 18; load average {os.getloadavg()[0]:.1f}")
    print(f"{'size':6} {'what':26} {'frames':>6} {'seconds':>8} {'fps':>7} {'CPU ms/frame':>13}")
    for row in rows:
        print(
            f"{row['size']:6} {row['what']:26} {row['frames']:6d} {row['seconds']:8.2f} {row['fps']:7.1f} "
            f"{row['cpu_ms_per_frame']:13.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
