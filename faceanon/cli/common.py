"""Options and helpers shared by the subcommands: one definition of each flag, defaults from
faceanon.registry, and the per-file reporting every batch command prints."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from faceanon.media.atomic import write_text_atomic
from faceanon.registry import DEFAULTS, DETECTION_MODES, DETECTORS, DTYPES, REDACTION_METHODS, SCHEDULERS
from faceanon.speed import add_speed_arguments, speed_options_from_args


def add_face_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faces")
    group.add_argument(
        "--faces",
        type=face_list,
        default=None,
        metavar="I,J,...",
        help="only these faces (numbered left to right from 0); default: all",
    )
    add_detection_options(group)
    group.add_argument(
        "--min-face",
        type=float,
        default=DEFAULTS.min_face_size,
        metavar="PX",
        help="faces smaller than this (pixels) are too small for a new identity and are "
        f"redacted with --small-faces instead (default: {DEFAULTS.min_face_size:g})",
    )
    group.add_argument(
        "--small-faces",
        choices=(*REDACTION_METHODS, "none"),
        default=DEFAULTS.small_face_method,
        help=f"what to do with faces below --min-face (default: {DEFAULTS.small_face_method})",
    )
    group.add_argument(
        "--no-leak-guard",
        action="store_true",
        help="skip the leak guard: by default faces are detected again on the output, and any face "
        "found only then, or still recognized as the person, is blurred and reported",
    )


def add_detection_options(group) -> None:
    """--mode, --detector, --detection-threshold: both set args.detector; --detector wins."""
    group.add_argument(
        "--mode",
        choices=tuple(DETECTION_MODES),
        action=_ModeAction,
        dest="detector",
        default=DEFAULTS.detector,
        help=f"recall: every face the bundled detectors can find (ensemble, ~1 s a photo); "
        f"fast: YuNet alone (default: {DEFAULTS.detection_mode})",
    )
    group.add_argument(
        "--detector",
        choices=DETECTORS,
        action=_DetectorAction,
        default=DEFAULTS.detector,
        help="one detector instead of the mode's: " + ", ".join(DETECTORS),
    )
    group.add_argument(
        "--detection-threshold",
        type=float,
        default=DEFAULTS.detection_threshold,
        metavar="P",
        help="detector confidence needed to count a face (default: the detector's)",
    )


class _DetectorAction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        namespace.detector, namespace.detector_chosen = value, True


class _ModeAction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        if not getattr(namespace, "detector_chosen", False):
            namespace.detector = DETECTION_MODES[value]


def add_diffusion_options(parser: argparse.ArgumentParser, degree: bool = True) -> None:
    group = parser.add_argument_group("generation")
    if degree:
        group.add_argument(
            "--degree",
            "-d",
            type=float,
            default=DEFAULTS.degree,
            help="anonymization degree d: 0 keeps the face, 1.2-1.3 recommended, above 1.5 "
            f"faces degrade (default: {DEFAULTS.degree})",
        )
    group.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS.seed,
        help=f"picks the new faces; same seed, same result (default: {DEFAULTS.seed})",
    )
    group.add_argument(
        "--steps", type=int, default=DEFAULTS.steps, help=f"denoising steps (default: {DEFAULTS.steps})"
    )
    group.add_argument(
        "--guidance",
        type=float,
        default=DEFAULTS.guidance,
        help=f"guidance scale (default: {DEFAULTS.guidance})",
    )
    group.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=None,
        help=f"sampler (default: {DEFAULTS.scheduler}, as in the paper)",
    )
    group.add_argument(
        "--device", default=None, help="torch device, e.g. cuda, cpu (default: best available)"
    )
    group.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="weights precision (default: float16 on GPU, float32 on CPU)",
    )
    add_speed_arguments(parser)
    group.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="faces per model call (default: all faces of a photo at once, or as many as fit in "
        "free GPU memory; with --pack > 1: 8)",
    )
    group.add_argument("--color-match", action="store_true", help="match new faces' colours to the photo")
    group.add_argument(
        "--on-same-person",
        choices=("retry", *REDACTION_METHODS),
        default=None,
        help="when the identity check still recognizes a new face: regenerate it once with a new "
        "seed and a higher degree, or redact it (default: the leak guard blurs it; with "
        "--no-leak-guard, only reported)",
    )
    group.add_argument(
        "--no-watermark",
        action="store_true",
        help="do not mark the outputs as generated: no invisible watermark in generated faces, "
        "no provenance note in PNG files",
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    group.add_argument(
        "--quality",
        type=int,
        default=DEFAULTS.quality,
        help=f"JPEG/WebP quality (default: {DEFAULTS.quality})",
    )
    group.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    group.add_argument(
        "--report", type=Path, default=None, metavar="FILE", help="also write the JSON report here"
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-file lines")


def face_list(text: str) -> list[int]:
    try:
        faces = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of face numbers such as 0,2,3") from None
    if not faces or min(faces) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of face numbers such as 0,2,3")
    return faces


def note_fallback(args, anonymizer) -> None:
    """Say once, even with --quiet, when no --method was given and diffusion cannot run here: the
    photos are then blurred, and the user must know why (a wrong FACEANON_* folder, no weights)."""
    if anonymizer is None or getattr(args, "method", None) is not None or anonymizer.diffusion_available:
        return
    reason = anonymizer.diffusion_unavailable_reason.rstrip(".")
    print(
        f"faceanon: note: diffusion is not available ({reason}); faces are blurred instead. "
        "Pass --method blur|pixelate|solid to choose a redaction and silence this note.",
        file=sys.stderr,
        flush=True,
    )


def make_anonymizer(args):
    from faceanon.anonymizer import FaceAnonymizer
    from faceanon.dataset.packing import faces_per_call
    from faceanon.weights import default_device_and_dtype

    speed = speed_options_from_args(args)
    speed.check_device(default_device_and_dtype(getattr(args, "device", None))[0])  # once, not once per photo

    dtype = None
    if getattr(args, "dtype", None):
        import torch

        dtype = getattr(torch, args.dtype)
    return FaceAnonymizer(
        detector=args.detector,
        device=getattr(args, "device", None),
        torch_dtype=dtype,
        speed=speed,
        min_face_size=args.min_face,
        detection_threshold=args.detection_threshold,
        small_face_method=None if args.small_faces == "none" else args.small_faces,
        color_match=getattr(args, "color_match", False),
        batch_size=faces_per_call(getattr(args, "batch_size", None), getattr(args, "pack", 1)),
        watermark=not getattr(args, "no_watermark", False),
        on_same_person=getattr(args, "on_same_person", None),
        leak_guard=not getattr(args, "no_leak_guard", False),
    )


@dataclass
class BatchReport:
    files: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(entry["status"] == "error" for entry in self.files)

    def to_dict(self) -> dict:
        counts = {
            status: sum(e["status"] == status for e in self.files) for status in ("done", "skipped", "error")
        }
        return {
            "files": self.files,
            **counts,
            "faces_found": sum(e.get("num_faces", 0) for e in self.files),
            "faces_changed": sum(e.get("num_changed", 0) for e in self.files),
        }


def problem(path: Path, error: str, planned: Path | None = None) -> dict:
    """A failed input: `output` is None (nothing was written); `planned_output` where it would have gone."""
    entry = {"input": str(path), "output": None, "status": "error", "error": error}
    return {**entry, "planned_output": str(planned)} if planned else entry


def skipped(path: Path, reason: str) -> dict:
    return {"input": str(path), "output": None, "status": "skipped", "reason": reason}


def describe(entry: dict) -> str:
    notes = "".join(f" (note: {note})" for note in entry.get("notes", ()))
    if entry["status"] == "done":
        return f"{entry['input']}: {entry['message']} -> {entry['output']}{notes}"
    if entry["status"] == "skipped":
        return f"{entry['input']}: skipped, {entry['reason']}"
    return f"{entry['input']}: error: {entry['error']}"


def finish(args, report: BatchReport) -> int:
    summary = report.to_dict()
    report_failed = args.report and not _write_report(args.report, summary)
    if args.json:
        print(json.dumps(summary, indent=2))
    total = len(report.files)
    say(
        args,
        f"{summary['done']} of {total} file(s) done, {summary['skipped']} skipped, "
        f"{summary['error']} failed; {summary['faces_found']} face(s) found, "
        f"{summary['faces_changed']} changed.",
        always=True,
    )
    if report.failed:
        error(f"{report.failed} file(s) could not be processed; see the messages above.")
    return 1 if report.failed or report_failed else 0


def _write_report(path: Path, summary: dict) -> bool:
    try:
        write_text_atomic(path, json.dumps(summary, indent=2))
    except OSError as problem:
        from faceanon.cli.jobs import write_error

        error(f"the report was not written: {write_error(path, problem)}")
        return False
    return True


def progress(jobs: list, args):
    if args.quiet or args.json or len(jobs) < 2:
        return jobs
    from tqdm import tqdm

    return tqdm(jobs, desc="photos", unit="photo", file=sys.stderr, leave=False)


def progress_of(entries, total: int, args):
    """A progress bar over an iterator of `total` entries (photos processed in groups)."""
    if args.quiet or args.json or total < 2:
        return entries
    from tqdm import tqdm

    return tqdm(entries, total=total, desc="photos", unit="photo", file=sys.stderr, leave=False)


def say(args, text: str, always: bool = False) -> None:
    """Human-readable lines: stdout normally, stderr when stdout carries the JSON report."""
    if args.quiet and not always:
        return
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def error(text: str) -> None:
    print(f"faceanon: error: {text}", file=sys.stderr, flush=True)
