"""`faceanon evaluate FOLDER -o OUT`: measure anonymization on a folder of photos (faceanon.evaluation)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceanon.registry import DEFAULTS, DETECTORS


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, like 0.3,0.6,1.2; got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("degrees must be one or more numbers >= 0")
    return values


def _names(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        names = [v for v in text.replace(" ", "").split(",") if v]
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}"
            )
        return names

    return parse


def add_evaluate(subparsers) -> argparse.ArgumentParser:
    from faceanon.evaluation import BASELINES, DEFAULT_DEGREES, DEFAULT_SEEDS

    parser = subparsers.add_parser(
        "evaluate",
        help="measure identity change, detectability and attribute keeping on a folder of photos",
        description="For each photo, degree d and seed (and the blur/pixelate/solid baselines), "
        "measure the identity distance, the detection rate with YuNet and SCRFD, and "
        "pose/expression/gaze distances. "
        "Writes evaluation.csv and three PNG plots; rerunning resumes where it stopped.",
    )
    parser.add_argument("folder", type=Path, help="folder of photos")
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("faceanon-evaluation"),
        help="output folder for evaluation.csv and the plots (default: %(default)s)",
    )
    parser.add_argument(
        "--degrees",
        type=_floats,
        default=list(DEFAULT_DEGREES),
        help="comma-separated degrees d (default: 0.3,0.6,0.9,1.2,1.4,1.5)",
    )
    parser.add_argument(
        "--seeds", type=int, default=DEFAULT_SEEDS, help="seeds per degree (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=DEFAULTS.steps, help="denoising steps (default: %(default)s)"
    )
    parser.add_argument(
        "--guidance", type=float, default=DEFAULTS.guidance, help="guidance scale (default: %(default)s)"
    )
    parser.add_argument(
        "--baselines",
        type=_names(BASELINES),
        default=list(BASELINES),
        help="comma-separated redaction baselines (default: blur,pixelate,solid)",
    )
    parser.add_argument("--no-diffusion", action="store_true", help="measure the redaction baselines only")
    parser.add_argument(
        "--identity-model",
        choices=("arcface", "sface"),
        default=None,
        help="identity recognizer (default: arcface when installed; its weights are non-commercial)",
    )
    parser.add_argument(
        "--detector",
        choices=DETECTORS,
        default=DEFAULTS.detector,
        help="detector that finds the faces to anonymize",
    )
    parser.set_defaults(run=run_evaluate)
    return parser


def run_evaluate(args) -> int:
    from faceanon.anonymizer import FaceAnonymizer
    from faceanon.evaluation import Evaluator, evaluate
    from faceanon.trust.identity import get_identity_model

    if args.seeds < 1 or args.steps < 1:
        print("error: --seeds and --steps must be at least 1", file=sys.stderr)
        return 2
    evaluator = Evaluator(identity_model=get_identity_model(args.identity_model))
    try:
        result = evaluate(
            args.folder,
            args.out,
            anonymizer=FaceAnonymizer(detector=args.detector, identity_check=False),
            degrees=args.degrees,
            seeds=args.seeds,
            baselines=args.baselines,
            diffusion=False if args.no_diffusion else None,
            steps=args.steps,
            guidance=args.guidance,
            evaluator=evaluator,
        )
    except OSError as error:  # a full disk: the CSV keeps every finished run (atomic writes), rerun resumes
        from faceanon.cli.jobs import write_error

        print(f"faceanon: error: {write_error(args.out, error)}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(note)
    if result.skipped_runs:
        print(f"{result.skipped_runs} run(s) were already in {result.csv_path} and were not recomputed.")
    print(f"Results: {result.csv_path}")
    for path in result.figure_paths:
        print(f"Plot:    {path}")
    return 0
