"""Video throughput: frames per second for redaction (blur) at 720p and 1080p, and seconds per frame
for diffusion (keyframe + swaps) on the tiny or the SD 2.1-size random model (`--diffusion sd21`).

    python benchmarks/video.py                          # blur at 720p and 1080p, 2 s clips of the group photo
    python benchmarks/video.py --diffusion sd21 --steps 2 --seconds 0.2   # 12 GB of RAM, run it alone
    python benchmarks/video.py --device cuda --diffusion sd21             # on a GPU

Prints one JSON object per run (stage seconds from the VideoReport, frames per second) and the
machine's load average, since the figures mean little on a busy machine.
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
    clip = make_test_clip(folder / f"{size}.mp4", photo="group", motion="pan", size=SIZES[size], seconds=seconds, fps=25)
    fa = FaceAnonymizer(identity_check=False)
    cpu = time.process_time()
    scan = scan_video(fa, clip.path)
    report = render_video(fa, scan, folder / f"{size}_{method}.mp4", VideoSettings(method=method))
    total = report.seconds["total"]
    return {"run": f"{method} {size}", "frames": report.frames, "tracks": len(report.tracks),
            "seconds": report.seconds, "fps": round(report.frames / total, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2), "load_average": os.getloadavg()}


def bench_diffusion(folder: Path, model: str, steps: int, seconds: float, device: str | None, per_frame: bool) -> dict:
    import torch

    from faceanon.bench import build_pipeline

    pipe = build_pipeline("sd21" if model == "sd21" else "tiny", device or "cpu", "ddpm")
    if device == "cuda":
        pipe.to(dtype=torch.float16)
    resolution = 512 if model == "sd21" else 64
    fa = FaceAnonymizer(pipeline=pipe, resolution=resolution, identity_check=False, watermark=False)
    clip = make_test_clip(folder / "diffusion.mp4", photo="grace_hopper", motion="zoom", size=(320, 416),
                          seconds=seconds, fps=25)
    scan = scan_video(fa, clip.path)
    report = render_video(fa, scan, folder / "diffusion_out.mp4",
                          VideoSettings(method="diffusion", steps=steps, per_frame=per_frame))
    generation = report.seconds.get("keyframes", 0) + report.seconds["render"]
    return {"run": f"diffusion {model} {'per-frame' if per_frame else 'keyframe+swap'} {steps} steps "
                   f"{device or 'cpu'}", "frames": report.frames, "faces_generated": report.generated_faces,
            "seconds": report.seconds, "seconds_per_frame": round(generation / report.frames, 2),
            "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--method", default="blur")
    parser.add_argument("--diffusion", choices=("tiny", "sd21"), default=None)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--per-frame", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faceanon-video-bench-") as folder:
        if args.diffusion:
            print(json.dumps(bench_diffusion(Path(folder), args.diffusion, args.steps, args.seconds, args.device,
                                             args.per_frame)))
            return
        for size in args.sizes:
            print(json.dumps(bench_redaction(Path(folder), size, args.seconds, args.method)), flush=True)


if __name__ == "__main__":
    main()
