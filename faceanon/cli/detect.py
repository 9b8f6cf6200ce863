"""`faceanon detect PATH... [--json]`: the faces found in each photo, for previews, scripts and --faces."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faceanon.cli.common import add_detection_options, error, say

# FaceAnonymizer builds its detector with this floor (faces under 4 px are noise): the same list here.
MIN_FACE_SIZE = 4


def add_detect(subparsers) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="list the faces found in photos (index, box, score, landmarks)",
        description="Print the faces found in each photo with the detector settings `anonymize` uses: index "
        "(what --faces selects), box [x0, y0, x1, y1] and 5 landmarks in pixels of the upright "
        "photo (EXIF orientation applied), and the detector's score. Folders are read recursively.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photos or folders of photos")
    add_detection_options(parser.add_argument_group("faces"))
    parser.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="only the summary and errors")
    parser.set_defaults(run=run_detect)


def run_detect(args: argparse.Namespace) -> int:
    from faceanon.faces.detection import create_detector

    photos, files = _photos(args.paths)
    for entry in files:
        _print_entry(args, entry)
    # Built before any photo is read: a missing or altered model file stops here, with nothing done.
    detector = (
        create_detector(args.detector, threshold=args.detection_threshold, min_face_size=MIN_FACE_SIZE)
        if photos
        else None
    )
    for path in photos:
        entry = _detect_one(detector, path)
        files.append(entry)
        _print_entry(args, entry)
    failed = sum(entry["status"] == "error" for entry in files)
    found = sum(len(entry.get("faces", [])) for entry in files)
    if args.json:
        print(
            json.dumps(
                {
                    "detector": args.detector,
                    "files": files,
                    "faces_found": found,
                    "done": len(files) - failed,
                    "error": failed,
                },
                indent=2,
            )
        )
    say(
        args,
        f"{len(files) - failed} of {len(files)} photo(s) read, {found} face(s) found "
        f"(detector: {args.detector}).",
        always=True,
    )
    if failed:
        error(f"{failed} file(s) could not be read; see the messages above.")
    return 1 if failed else 0


def _photos(paths: list[Path]) -> tuple[list[Path], list[dict]]:
    from faceanon.media.photo import IMAGE_EXTENSIONS

    photos, problems = [], []
    for path in paths:
        if path.is_file():
            photos.append(path)
        elif path.is_dir():  # photos under it, recursively, hidden files left out
            photos.extend(
                f
                for f in sorted(path.rglob("*"))
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
            )
        else:
            problems.append({"input": str(path), "status": "error", "error": "does not exist"})
    return photos, problems


def _detect_one(detector, path: Path) -> dict:
    import numpy as np

    from faceanon.errors import FaceAnonError
    from faceanon.media.photo import load_image

    try:
        image = load_image(path)
    except FaceAnonError as problem:
        return {"input": str(path), "status": "error", "error": str(problem)}
    faces = detector.detect(np.asarray(image.convert("RGB")))
    return {
        "input": str(path),
        "status": "done",
        "width": image.width,
        "height": image.height,
        "faces": [_face_dict(face) for face in faces],
    }


def _face_dict(face) -> dict:
    return {
        "index": face.index,
        "box": [round(float(v), 1) for v in face.box],
        "score": round(float(face.score), 4),
        "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in face.landmarks],
    }


def _print_entry(args, entry: dict) -> None:
    if entry["status"] == "error":
        say(args, f"{entry['input']}: error: {entry['error']}", always=True)
        return
    say(args, f"{entry['input']}: {len(entry['faces'])} face(s) ({entry['width']}x{entry['height']})")
    for face in entry["faces"]:
        box = ", ".join(f"{v:.0f}" for v in face["box"])
        say(args, f"  {face['index']:>3}  box [{box}]  score {face['score']:.2f}")
