"""Video throughput: frames per second for redaction (blur) at 720p and 1080p, and seconds per frame
for diffusion (keyframe + swaps) on the tiny or the SD 2.1-size random model (`--diffusion sd21`).

    # blur at 720p and 1080p, 2 s clips of the group photo
    python benchmarks/video.py
    # 12 GB of RAM, alone
    python benchmarks/video.py --diffusion sd21 --steps 2 --seconds 0.12 --compare-reuse
    # on a GPU
    python benchmarks/video.py --device cuda --diffusion sd21

Prints one JSON object per run (stage seconds from the VideoReport, frames per second) and the
machine's load average, since the figures mean little on a busy machine. Diffusion reports the
keyframe seconds per face and the seconds per swap frame; `--compare-reuse` renders the same scan
again re-encoding the source in every call (reuse_source=False), so the saving of encoding each
track's source once shows. The diffusion clip is scanned with YuNet (one face; the scan is not
part of the figure).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from faceanon.anonymizer import FaceAnonymizer
from faceanon.media.video_anonymize import VideoSettings, render_video, scan_video
from faceanon.testing_video import make_test_clip

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def bench_redaction(folder: Path, size: str, seconds: float, method: str) -> dict:
    clip = make_test_clip(
        folder / f"{size}.mp4", photo="group", motion="pan", size=SIZES[size], seconds=seconds, fps=25
    )
    fa = FaceAnonymizer(identity_check=False)
    cpu = time.process_time()
    scan = scan_video(fa, clip.path)
    report = render_video(fa, scan, folder / f"{size}_{method}.mp4", VideoSettings(method=method))
    total = report.seconds["total"]
    return {
        "run": f"{method} {size}",
        "frames": report.frames,
        "tracks": len(report.tracks),
        "seconds": report.seconds,
        "fps": round(report.frames / total, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "load_average": os.getloadavg(),
    }


def bench_diffusion(
    folder: Path,
    model: str,
    steps: int,
    seconds: float,
    device: str | None,
    per_frame: bool,
    compare_reuse: bool = False,
) -> dict:
    import torch

    from benchmarks.speed_common import build_pipeline

    pipe = build_pipeline("sd21" if model == "sd21" else "tiny", device or "cpu", "ddpm")
    if device == "cuda":
        pipe.to(dtype=torch.float16)
    resolution = 512 if model == "sd21" else 64
    fa = FaceAnonymizer(
        detector="yunet",
        pipeline=pipe,
        resolution=resolution,
        identity_check=False,
        watermark=False,
        leak_guard=False,
    )
    clip = make_test_clip(
        folder / "diffusion.mp4",
        photo="grace_hopper",
        motion="zoom",
        size=(320, 416),
        seconds=seconds,
        fps=25,
    )
    scan = scan_video(fa, clip.path)
    _warm_up(fa, scan)
    out = {
        "run": f"diffusion {model} {'per-frame' if per_frame else 'keyframe+swap'} {steps} steps "
        f"{device or 'cpu'}",
        "tracks": len(scan.tracks),
        "load_average_before": os.getloadavg(),
    }
    modes = [True, False] if compare_reuse and not per_frame else [True]
    for reuse in modes:
        report = render_video(
            fa,
            scan,
            folder / "diffusion_out.mp4",
            VideoSettings(method="diffusion", steps=steps, per_frame=per_frame, reuse_source=reuse),
        )
        keyframes = report.seconds.get("keyframes", 0.0)
        swaps = report.generated_faces - (0 if per_frame else len(scan.tracks))
        key = "encoded_once" if reuse else "encoded_per_call"
        out[key] = {
            "frames": report.frames,
            "faces_generated": report.generated_faces,
            "seconds": report.seconds,
            "keyframe_seconds_per_face": round(keyframes / max(len(scan.tracks), 1), 2),
            "seconds_per_swap_frame": round(report.seconds["render"] / max(swaps, 1), 2),
            "seconds_per_frame": round((keyframes + report.seconds["render"]) / report.frames, 2),
        }
        print(json.dumps({"partial": key, **out[key]}), flush=True)  # a run cut by a timeout still tells
    if len(modes) == 2:
        once, each = out["encoded_once"]["seconds"]["render"], out["encoded_per_call"]["seconds"]["render"]
        out["render_saving_from_encoded_source"] = f"{100 * (1 - once / each):.1f} %"
    out["load_average_after"] = os.getloadavg()
    return out


def _warm_up(fa: FaceAnonymizer, scan) -> None:
    """One 1-step face first: the first pipeline call pays one-off costs (allocations, kernel choice)."""
    from faceanon.anonymizer import CropRequest, Generation
    from faceanon.media.video_anonymize import keyframe_crops

    crop = next(iter(keyframe_crops(scan).values()))[0]
    fa.generate([CropRequest(condition=crop, degree=1.25, seed=0)], Generation(steps=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--method", default="blur")
    parser.add_argument("--diffusion", choices=("tiny", "sd21"), default=None)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--per-frame", action="store_true")
    parser.add_argument(
        "--compare-reuse",
        action="store_true",
        help="render again re-encoding the source per call (the saving of encoding it once)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faceanon-video-bench-") as folder:
        if args.diffusion:
            print(
                json.dumps(
                    bench_diffusion(
                        Path(folder),
                        args.diffusion,
                        args.steps,
                        args.seconds,
                        args.device,
                        args.per_frame,
                        args.compare_reuse,
                    )
                )
            )
            return
        for size in args.sizes:
            print(json.dumps(bench_redaction(Path(folder), size, args.seconds, args.method)), flush=True)


if __name__ == "__main__":
    main()
