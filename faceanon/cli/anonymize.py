"""`faceanon anonymize PATH... -o OUT`: photos and folders of photos."""

from __future__ import annotations

import argparse
from pathlib import Path

from faceanon.cli.common import (
    BatchReport,
    add_diffusion_options,
    add_face_options,
    add_output_options,
    describe,
    finish,
    make_anonymizer,
    note_fallback,
    progress,
    progress_of,
    say,
)
from faceanon.cli.dataset import add_dataset_options, run_dataset
from faceanon.cli.jobs import plan_jobs, process, process_packed, sweep_leftovers
from faceanon.cli.video import add_video_options, is_video, process_video
from faceanon.registry import DEFAULTS, METHODS


def add_anonymize(subparsers) -> None:
    parser = subparsers.add_parser(
        "anonymize",
        help="anonymize the faces of photos (files or folders)",
        description="Replace every face (or the chosen ones) of each photo with a face of a person who "
        "does not exist, or redact it. Folders are processed recursively; outputs keep the relative paths. "
        "Outputs carry no metadata of the input (EXIF, GPS, XMP).",
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="photos, videos, or folders of them"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output folder (or an output file name when PATH is a single photo or video)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default=None,
        help="diffusion (new identity; default when the weights are available, otherwise blur), "
        "blur, pixelate or solid",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=DEFAULTS.strength,
        help="how strongly blur/pixelate/solid hide, (0, 1]",
    )
    parser.add_argument(
        "--keep",
        action="append",
        type=Path,
        default=None,
        metavar="PERSON.jpg",
        help="leave this person's face untouched: a photo of them (repeatable), or a folder of "
        "photos, one person each; everyone else is anonymized",
    )
    parser.add_argument(
        "--pack",
        type=pack_size,
        default=1,
        metavar="N",
        help="generate the new faces of N photos of a folder in one pipeline call, up to --batch-size "
        "faces (default with N > 1: 8): faster on GPUs for photos with few faces. The groups are every N "
        "photos in the order of their relative paths, so outputs are the same whatever the order or, "
        "with --ray, the workers, and equal to the same command without --ray; another N can change "
        "generated pixels by float rounding (a few levels). Default 1: each photo alone",
    )
    add_diffusion_options(parser)
    add_face_options(parser)
    add_output_options(parser)
    add_video_options(parser)
    add_dataset_options(parser)
    parser.set_defaults(run=run_anonymize)


def run_anonymize(args) -> int:
    if args.ray is not None:
        return run_dataset(args)
    from faceanon.anonymizer import image_seed

    jobs, planned = plan_jobs(args.paths, args.output)
    report = BatchReport(files=planned)
    for entry in planned:  # inputs refused, and files of a folder that are not read
        say(args, describe(entry), always=entry["status"] == "error")
    sweep_leftovers(jobs)
    anonymizer = make_anonymizer(args) if jobs else None
    # Every keep photo is read before the first photo is touched: a bad one stops the run here.
    keep = anonymizer.load_keep(args.keep) if anonymizer and args.keep else None
    note_fallback(args, anonymizer)
    options = dict(
        degree=args.degree,
        steps=args.steps,
        guidance=args.guidance,
        method=args.method,
        faces=args.faces,
        scheduler=args.scheduler,
        strength=args.strength,
        keep=keep,
    )
    packed = [job for job in jobs if not is_video(job.source)] if args.pack > 1 else []
    for job in progress([job for job in jobs if not packed or is_video(job.source)], args):
        if is_video(job.source):
            entry = process_video(job, args, anonymizer, keep)
        else:  # a photo's seed comes from its bytes (image_seed), as in a --ray dataset job
            entry = process(
                job,
                args,
                lambda source: anonymizer.anonymize(
                    source, seed=image_seed(args.seed, Path(source).read_bytes()), **options
                ),
            )
        _add(args, report, entry)
    for entry in progress_of(process_packed(packed, args, anonymizer, keep), len(packed), args):
        _add(args, report, entry)
    return finish(args, report)


def _add(args, report: BatchReport, entry: dict) -> None:
    report.files.append(entry)
    say(args, describe(entry), always=entry["status"] == "error")  # --quiet keeps the errors


def pack_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--pack takes a number of photos, 1 or more, not {text!r}")
    return value
