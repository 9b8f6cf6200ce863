"""Dataset runner benchmark: images per second, single-process CLI vs `--ray` on this machine, and a
worked estimate of a 1-million-image job on N GPUs from the measured per-face GPU figures.

    python benchmarks/dataset.py                       # 12 real photos, redaction (blur)
    python benchmarks/dataset.py --photos 24
    python benchmarks/dataset.py --estimate-only       # the 1M-image arithmetic alone

Both runs are the real commands in subprocesses, so the figures include what a user waits for:
Python and model start-up, Ray's start (local instance, one worker actor) and its scheduling.
The redaction run has the whole CPU side of a diffusion job (decode, detect, align, blend,
identity check, encode, atomic write, audit) without the GPU part, which is what Ray adds
overhead to; the GPU part comes from the H200 figures in README.md (fp16, 512 px, 25 steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Measured on an H200 (README "Performance"): one face alone, and 6 faces in one call.
GPU_SECONDS_ONE_FACE = 0.97
GPU_SECONDS_SIX_FACES = 1.54


def build_photos(folder: Path, count: int) -> list[Path]:
    """`count` real photos (public-domain portraits and a 6-face group photo), distinct names."""
    import insightface
    import matplotlib
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    grace = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    group = Path(os.path.dirname(insightface.__file__)) / "data" / "images" / "t1.jpg"
    astronaut = folder / ".astronaut.png"
    Image.fromarray(data.astronaut()).save(astronaut)
    kinds = [grace, astronaut, group]
    paths = []
    for i in range(count):
        source = kinds[i % len(kinds)]
        target = folder / f"sub{i % 3}" / f"photo{i:03d}{source.suffix}"
        target.parent.mkdir(exist_ok=True)
        shutil.copy(source, target)
        paths.append(target)
    astronaut.unlink()
    return paths


def run(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return seconds


def measure(photos: Path, work: Path, options: list[str], env: dict, count: int) -> dict:
    cli = [sys.executable, "-m", "faceanon.cli", "anonymize", str(photos), "-q", *options]
    single = run([*cli, "-o", str(work / "cli")], env)
    ray = run([*cli, "-o", str(work / "ray"), "--ray"], env)
    from faceanon.dataset import read_audit

    files, faces = read_audit(work / "ray")
    per_image = float(files.seconds.mean())
    return {
        "photos": count,
        "faces": int(len(faces)),
        "options": options,
        "cli_seconds": round(single, 1),
        "cli_images_per_s": round(count / single, 3),
        "ray_seconds": round(ray, 1),
        "ray_images_per_s": round(count / ray, 3),
        "ray_overhead_seconds": round(ray - single, 1),
        "worker_seconds_per_image": round(per_image, 3),
        "worker_images_per_s": round(1 / per_image, 3),
    }


def gpu_seconds_per_call(faces: int) -> float:
    """Linear between the two measured points (1 and 6 faces per call); beyond 6, per 6-face call."""
    if faces <= 6:
        return GPU_SECONDS_ONE_FACE + (GPU_SECONDS_SIX_FACES - GPU_SECONDS_ONE_FACE) * (faces - 1) / 5
    return GPU_SECONDS_SIX_FACES * faces / 6


def estimate(
    images: int, faces_per_image: float, pack: int, cpu_seconds_per_image: float, gpus: tuple[int, ...]
) -> dict:
    """GPU-hours and wall time of `images` photos; one worker per GPU, CPU work of a photo runs in
    the same actor between its GPU calls (not overlapped: the pessimistic case)."""
    faces_per_call = max(1, round(faces_per_image * pack))
    gpu_per_face = gpu_seconds_per_call(faces_per_call) / faces_per_call
    gpu_alone = gpu_seconds_per_call(max(1, round(faces_per_image))) / max(1, round(faces_per_image))
    per_image = faces_per_image * gpu_per_face + cpu_seconds_per_image
    total = images * per_image
    return {
        "images": images,
        "faces_per_image": faces_per_image,
        "pack": pack,
        "faces_per_call": faces_per_call,
        "gpu_seconds_per_face": round(gpu_per_face, 3),
        "gpu_seconds_per_face_unpacked": round(gpu_alone, 3),
        "cpu_seconds_per_image": cpu_seconds_per_image,
        "worker_seconds_per_image": round(per_image, 3),
        "gpu_held_hours": round(total / 3600, 1),  # a worker holds its GPU during its CPU work too
        "wall_hours": {str(n): round(total / n / 3600, 2) for n in gpus},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--estimate-only", action="store_true")
    parser.add_argument(
        "--cpu-seconds-per-image",
        type=float,
        default=None,
        help="CPU side per photo for the estimate (default: measured here with redaction)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    figures: dict = {}
    if not args.estimate_only:
        with tempfile.TemporaryDirectory(prefix="faceanon-bench-") as temp:
            work = Path(temp)
            build_photos(work / "photos", args.photos)
            env = dict(os.environ, RAY_TMPDIR=str(work))  # Ray's session files go with the rest, not /tmp/ray
            figures["redaction"] = measure(
                work / "photos", work / "blur", ["--method", "blur"], env, args.photos
            )
    cpu = args.cpu_seconds_per_image
    if cpu is None:
        cpu = figures["redaction"]["worker_seconds_per_image"] if "redaction" in figures else 0.15
    figures["estimate_1m"] = [
        estimate(1_000_000, faces, pack, cpu, (1, 8, 64)) for faces, pack in ((1.0, 1), (1.0, 6), (1.5, 4))
    ]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
