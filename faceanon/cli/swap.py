"""`faceanon swap SOURCE TARGET -o OUT`: one face's identity onto the faces of another photo."""

from __future__ import annotations

from pathlib import Path

from faceanon.cli.common import (
    BatchReport,
    add_diffusion_options,
    add_face_options,
    add_output_options,
    describe,
    error,
    finish,
    make_anonymizer,
    say,
)
from faceanon.cli.jobs import Job, process


def add_swap(subparsers) -> None:
    parser = subparsers.add_parser(
        "swap",
        help="put the face of one photo onto the faces of another",
        description="Give the chosen faces of TARGET the identity of a face in SOURCE (pose, expression, "
        "lighting and background of TARGET are kept). Use only with consent of the people shown.",
    )
    parser.add_argument("source", type=Path, help="photo whose face identity is used")
    parser.add_argument("target", type=Path, help="photo whose faces are replaced")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output file")
    parser.add_argument(
        "--source-face", type=int, default=0, help="which face of SOURCE (default: 0, leftmost)"
    )
    add_diffusion_options(parser, degree=False)
    add_face_options(parser)
    add_output_options(parser)
    parser.set_defaults(run=run_swap)


def run_swap(args) -> int:
    if args.output.resolve() in (args.source.resolve(), args.target.resolve()):
        error("the output would overwrite an input; choose another -o.")
        return 1
    anonymizer = make_anonymizer(args)
    options = dict(
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        source_face=args.source_face,
        faces=args.faces,
        scheduler=args.scheduler,
    )
    entry = process(
        Job(args.target, args.output), args, lambda target: anonymizer.swap(args.source, target, **options)
    )
    say(args, describe(entry), always=entry["status"] == "error")
    return finish(args, BatchReport(files=[entry]))
