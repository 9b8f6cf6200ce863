"""Recall benchmark: how many of the labelled faces each detector and mode finds.

    python -m benchmarks.recall                       # every detector and mode, the table of README
    python -m benchmarks.recall --detectors yunet --modes recall --details
    python -m benchmarks.recall --draw /tmp/labels    # the labels drawn onto each case, to check by eye

Prints, per detector and mode: recall at IoU >= 0.4 by face size (larger box side, pixels), false
faces per photo, and milliseconds per megapixel on this machine (photos of 1 MP and more).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks.recall.dataset import cases
from benchmarks.recall.evaluate import BUCKET_NAMES, run_detector, summarize


def main(argv: list[str] | None = None) -> int:
    from faceanon.registry import DETECTION_MODES

    parser = argparse.ArgumentParser(prog="python -m benchmarks.recall", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--detectors",
        nargs="*",
        default=["yunet", "scrfd", "centerface"],
        help="single detectors to measure, with options as NAME:KEY=VALUE,... "
        "e.g. scrfd:input_size=1280 (default: yunet scrfd centerface)",
    )
    parser.add_argument(
        "--modes",
        nargs="*",
        default=list(DETECTION_MODES),
        help=f"detection modes to measure (default: {' '.join(DETECTION_MODES)})",
    )
    parser.add_argument(
        "--only", nargs="*", default=None, metavar="TEXT", help="only cases whose name has TEXT"
    )
    parser.add_argument("--details", action="store_true", help="per case: faces missed and false faces")
    parser.add_argument(
        "--draw",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each case with its labels (green: face, yellow: ignore) and stop",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)

    selected = [c for c in cases() if not args.only or any(text in c.name for text in args.only)]
    if args.draw:
        return _draw(selected, args.draw)
    faces = sum(len(c.faces) for c in selected)
    print(
        f"{len(selected)} photos, {faces} labelled faces; {os.cpu_count()} CPU cores, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    runs = [(name, name, "") for name in args.detectors]
    runs += [(f"mode {mode}", DETECTION_MODES[mode], mode) for mode in args.modes]
    table, measured = {}, {}
    for label, detector_name, _ in runs:
        if detector_name in measured:  # a mode that names a detector measured above: the same figures
            table[label] = table[measured[detector_name]]
            continue
        table[label] = _measure(label, detector_name, selected, args.details)
        measured[detector_name] = label
    _print_table(table)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


def _measure(label: str, detector_name: str, selected, details: bool) -> dict:
    from faceanon.faces.detection import create_detector

    name, _, options = detector_name.partition(":")
    kwargs = {
        key: float(value) if "." in value else int(value)
        for key, value in (item.split("=") for item in options.split(",") if item)
    }
    detector = create_detector(name, **kwargs)
    detector.detect(selected[0].image)  # loads the model and warms up the runtime
    start = time.perf_counter()
    results = []
    for case in selected:
        result, _ = run_detector(detector, case)
        results.append(result)
        if details and (result.missed or result.false_boxes):
            print(f"  {label:>16} {case.name:<24} missed {result.missed}  false {result.false_boxes}")
    row = summarize(results)
    row["tags"] = _by_tag(results)
    row["seconds"] = time.perf_counter() - start
    print(
        f"{label}: {row['all'][0]:.3f} of {row['all'][1]} faces, {row['fp_per_photo']:.2f} false faces per "
        f"photo ({row['seconds']:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return row


def _by_tag(results) -> dict:
    tags = sorted({t for r in results for t in r.tags})
    out = {}
    for tag in tags:
        hits = [hit for r in results if tag in r.tags for _, hit in r.hits]
        false = sum(r.false_faces for r in results if tag in r.tags)
        out[tag] = (sum(hits) / len(hits) if hits else float("nan"), len(hits), false)
    return out


def _print_table(table: dict) -> None:
    header = [
        "detector / mode",
        *[f"{b} px" for b in BUCKET_NAMES],
        ">=24 px",
        "all",
        "false/photo",
        "ms/MP",
        "CPU ms/MP",
        "12 MP photo s (CPU s)",
    ]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for label, row in table.items():
        cells = [f"{row[b][0]:.3f} ({row[b][1]})" for b in (*BUCKET_NAMES, ">=24", "all")]
        twelve = f"{row['s_12mp'][0]:.2f} ({row['s_12mp'][1]:.2f})" if row["s_12mp"] else ""
        print(
            f"| {label} | " + " | ".join(cells) + f" | {row['fp_per_photo']:.2f} | {row['ms_per_mp']:.0f} | "
            f"{row['cpu_ms_per_mp']:.0f} | {twelve} |"
        )
    tags = sorted({t for row in table.values() for t in row["tags"]})
    print("\nrecall (false faces) by kind of case:")
    print("| detector / mode | " + " | ".join(tags) + " |")
    print("|" + "|".join("---" for _ in range(len(tags) + 1)) + "|")
    for label, row in table.items():
        cells = [f"{row['tags'][t][0]:.2f} ({row['tags'][t][2]})" if t in row["tags"] else "" for t in tags]
        print(f"| {label} | " + " | ".join(cells) + " |")


def _draw(selected, folder: Path) -> int:
    import cv2
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for case in selected:
        image = case.image.copy()
        width = max(2, round(max(image.shape[:2]) / 500))
        for face in case.faces:
            box = face.box.round().astype(int)
            cv2.rectangle(image, box[:2].tolist(), box[2:].tolist(), (0, 255, 0), width)
            for i, point in enumerate(face.points.round().astype(int)):
                cv2.circle(image, point.tolist(), width + 1, (255, 0, 0) if i == 0 else (0, 128, 255), -1)
        for region in case.ignore:
            box = region.round().astype(int)
            cv2.rectangle(image, box[:2].tolist(), box[2:].tolist(), (255, 255, 0), width)
        Image.fromarray(image).save(folder / f"{case.name}.png")
    print(f"{len(selected)} cases drawn in {folder} (green: face, red dot: point 0, yellow: ignore)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
