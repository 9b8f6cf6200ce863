"""`faceanon verify PATH...`: does a photo carry faceanon's invisible watermark and provenance note."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_verify(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "verify",
        help="tell whether photos carry faceanon's invisible watermark",
        description="Reads faceanon's invisible watermarks (it survives JPEG re-compression and "
        "resizing, not cropping or heavy edits): the mark of every face found (what "
        "`faceanon anonymize` puts into each generated face) and the whole-image mark, and the PNG "
        "text note. Exit status: "
        "0 if every photo carries the watermark, 1 if some do not, 2 if a photo cannot be read.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="photos to check")
    parser.set_defaults(run=run_verify)
    return parser


def run_verify(args) -> int:
    from PIL import Image

    from faceanon.errors import FaceAnonError
    from faceanon.media.photo import load_image
    from faceanon.trust.watermark import read_provenance, read_watermark

    status = 0
    for path in args.paths:
        try:
            reading = read_watermark(load_image(path))
            with Image.open(path) as opened:
                note = read_provenance(opened)
        except (FaceAnonError, OSError, ValueError) as error:  # load_image words every unreadable file
            print(f"{path}: cannot be checked: {error}")
            status = 2
            continue
        verdict = "carries faceanon's watermark" if reading.found else "no faceanon watermark found"
        faces = ", ".join(f"face {f.index} {f.score:.2f}" for f in reading.faces) or "no face found"
        print(
            f"{path}: {verdict}: {reading.describe()}; text note: "
            + (f"present ({note})" if note else "absent")
        )
        print(f"  whole-image bit accuracy {reading.image_score:.2f}; face scores: {faces}")
        if not reading.found:
            status = max(status, 1)
    return status
