"""The product path on a GPU, with tiny random weights in the hub layout (the real 12 GB cannot be
fetched without a network): the loader picks CUDA + fp16 by itself, each speed option is applied,
and FaceAnonymizer runs on the example photos (YuNet detection, batched faces, paste-back,
watermark, identity check where its model is installed).

    python benchmarks/gpu_product_check.py            # on a machine with a GPU; prints one line per run

Checks, not timings: the tiny model's faces are noise. Exit status 1 when a check fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from faceanon.testing import tiny_pipeline_env

    os.environ.update(tiny_pipeline_env(tempfile.mkdtemp(prefix="faceanon-tiny-")))
    from faceanon.anonymizer import FaceAnonymizer
    from faceanon.media.photo import load_image
    from faceanon.speed import SpeedOptions, load_pipeline

    photos = [ROOT / "examples" / name for name in ("two_portraits.jpg", "astronaut.jpg")]
    failures = 0
    # compile is left out: its correctness across calls is tests/test_speed.py's, its speed the bench's.
    for speed in (SpeedOptions(), SpeedOptions(channels_last=False), SpeedOptions(offload="model")):
        try:
            pipe, device, dtype = load_pipeline(speed=speed)
            checks = [device.type == "cuda", str(dtype) == "torch.float16"]
            anonymizer = FaceAnonymizer(pipeline=pipe, device=device, torch_dtype=dtype)
            for path in photos:
                photo = load_image(path)
                start = time.perf_counter()
                result = anonymizer.anonymize(photo, seed=0, steps=4)
                seconds = time.perf_counter() - start
                changed = np.asarray(result.image, dtype=np.int16) - np.asarray(
                    photo.convert("RGB"), dtype=np.int16
                )
                fraction = float(np.mean(np.abs(changed).max(axis=-1) > 0))
                checks += [result.num_changed == len(result.faces) > 0, 0 < fraction < 0.5]
                print(
                    f"{speed}: {path.name}: {device} {dtype}, {len(result.faces)} face(s), "
                    f"{result.num_changed} changed, {fraction:.1%} of pixels touched, {seconds:.2f} s, "
                    "suggested batch "
                    f"{pipe.suggested_batch_size()}; {result.message}",
                    flush=True,
                )
            if not all(checks):
                failures += 1
                print(f"  FAILED checks: {checks}", flush=True)
        except Exception:
            failures += 1
            print(f"{speed}: FAILED", flush=True)
            traceback.print_exc()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
