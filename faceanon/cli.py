"""The `faceanon` command line.

    faceanon anonymize PATH... -o OUT [--degree 1.25 --seed 0 --steps 25 --method diffusion ...]
    faceanon swap SOURCE TARGET -o OUT
    faceanon download
    faceanon serve [app options]

Each subcommand is one `add_<name>(subparsers)` function that declares its options and sets
`run=<function(args) -> exit code>`; register it in SUBCOMMANDS. Exit codes: 0 success, 1 some
input failed (the others were still processed), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from faceanon import __version__
from faceanon.errors import FaceAnonError
from faceanon.speed import add_speed_arguments, speed_options_from_args

METHOD_CHOICES = ("diffusion", "blur", "pixelate", "solid")
DETECTOR_CHOICES = ("yunet", "scrfd", "insightface")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) != "serve":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    run = getattr(args, "run", None) or getattr(args, "func", None)
    if not run:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(run(args) or 0)
    except FaceAnonError as error:
        _error(str(error))
        return 1
    except KeyboardInterrupt:
        _error("interrupted.")
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceanon", description="Give every face in a photo a new identity (Face Anonymization Made Simple).")
    parser.add_argument("--version", action="version", version=f"faceanon {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


# ---------------------------------------------------------------------------------------------
# Shared options


def _add_face_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faces")
    group.add_argument("--faces", type=_face_list, default=None, metavar="I,J,...",
                       help="only these faces (numbered left to right from 0); default: all")
    group.add_argument("--detector", choices=DETECTOR_CHOICES, default="yunet",
                       help="face detector (default: yunet, bundled and offline)")
    group.add_argument("--detection-threshold", type=float, default=None, metavar="P",
                       help="detector confidence needed to count a face (default: the detector's)")
    group.add_argument("--min-face", type=float, default=24, metavar="PX",
                       help="faces smaller than this (pixels) are too small for a new identity and are "
                            "redacted with --small-faces instead (default: 24)")
    group.add_argument("--small-faces", choices=("blur", "pixelate", "solid", "none"), default="blur",
                       help="what to do with faces below --min-face (default: blur)")


def _add_diffusion_options(parser: argparse.ArgumentParser, degree: bool = True) -> None:
    group = parser.add_argument_group("generation")
    if degree:
        group.add_argument("--degree", "-d", type=float, default=1.25,
                           help="anonymization degree d: 0 keeps the face, 1.2-1.3 recommended, above 1.5 "
                                "faces degrade (default: 1.25)")
    group.add_argument("--seed", type=int, default=0, help="picks the new faces; same seed, same result (default: 0)")
    group.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    group.add_argument("--guidance", type=float, default=4.0, help="guidance scale (default: 4.0)")
    group.add_argument("--scheduler", choices=("ddpm", "ddim", "dpmsolver++", "unipc"), default=None,
                       help="sampler (default: the pipeline's, DDPM as in the paper)")
    group.add_argument("--device", default=None, help="torch device, e.g. cuda, cpu (default: best available)")
    group.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                       help="weights precision (default: float16 on GPU, float32 on CPU)")
    add_speed_arguments(parser)
    group.add_argument("--batch-size", type=int, default=None, metavar="N",
                       help="faces per model call (default: all faces of a photo at once, or as many as fit in free GPU memory)")
    group.add_argument("--color-match", action="store_true", help="match new faces' colours to the photo")
    group.add_argument("--on-same-person", choices=("retry", "blur", "pixelate", "solid"), default=None,
                       help="when the identity check still recognizes a new face: regenerate it once with a new "
                            "seed and a higher degree, or redact it (default: only report it)")
    group.add_argument("--no-watermark", action="store_true",
                       help="do not mark the outputs as generated: no invisible watermark in generated faces, "
                            "no provenance note in PNG files")


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    group.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default: 95)")
    group.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    group.add_argument("--report", type=Path, default=None, metavar="FILE", help="also write the JSON report here")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-file lines")


def _face_list(text: str) -> list[int]:
    try:
        faces = [int(part) for part in text.replace(" ", "").split(",") if part != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of face numbers such as 0,2,3") from None
    if not faces or min(faces) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of face numbers such as 0,2,3")
    return faces


def _make_anonymizer(args):
    from faceanon.anonymizer import FaceAnonymizer
    from faceanon.weights import default_device_and_dtype

    speed = speed_options_from_args(args)
    speed.check_device(default_device_and_dtype(getattr(args, "device", None))[0])  # once, not once per photo

    dtype = None
    if getattr(args, "dtype", None):
        import torch

        dtype = getattr(torch, args.dtype)
    return FaceAnonymizer(detector=args.detector, device=getattr(args, "device", None), torch_dtype=dtype,
                          speed=speed,
                          min_face_size=args.min_face, detection_threshold=args.detection_threshold,
                          small_face_method=None if args.small_faces == "none" else args.small_faces,
                          color_match=getattr(args, "color_match", False),
                          batch_size=getattr(args, "batch_size", None),
                          watermark=not getattr(args, "no_watermark", False),
                          on_same_person=getattr(args, "on_same_person", None))


# ---------------------------------------------------------------------------------------------
# anonymize


def add_anonymize(subparsers) -> None:
    parser = subparsers.add_parser(
        "anonymize", help="anonymize the faces of photos (files or folders)",
        description="Replace every face (or the chosen ones) of each photo with a face of a person who does not "
                    "exist, or redact it. Folders are processed recursively; outputs keep the relative paths. "
                    "Outputs carry no metadata of the input (EXIF, GPS, XMP).")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photos or folders of photos")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output folder (or an output file name when PATH is a single photo)")
    parser.add_argument("--method", choices=METHOD_CHOICES, default=None,
                        help="diffusion (new identity; default when the weights are available, otherwise blur), "
                             "blur, pixelate or solid")
    parser.add_argument("--strength", type=float, default=1.0, help="how strongly blur/pixelate/solid hide, (0, 1]")
    _add_diffusion_options(parser)
    _add_face_options(parser)
    _add_output_options(parser)
    parser.set_defaults(run=run_anonymize)


@dataclass
class Job:
    source: Path
    target: Path


@dataclass
class BatchReport:
    files: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(entry["status"] == "error" for entry in self.files)

    def to_dict(self) -> dict:
        counts = {status: sum(e["status"] == status for e in self.files) for status in ("done", "skipped", "error")}
        return {"files": self.files, **counts,
                "faces_found": sum(e.get("num_faces", 0) for e in self.files),
                "faces_changed": sum(e.get("num_changed", 0) for e in self.files)}


def run_anonymize(args) -> int:
    jobs, problems = plan_jobs(args.paths, args.output)
    report = BatchReport(files=problems)
    for entry in problems:
        _say(args, f"{entry['input']}: error: {entry['error']}", always=True)
    anonymizer = _make_anonymizer(args) if jobs else None
    options = dict(degree=args.degree, seed=args.seed, steps=args.steps, guidance=args.guidance, method=args.method,
                   faces=args.faces, scheduler=args.scheduler, strength=args.strength)
    for job in _progress(jobs, args):
        entry = _process(job, args, lambda source, job=job: anonymizer.anonymize(source, **options))
        report.files.append(entry)
        _say(args, _describe(entry), always=entry["status"] == "error")  # --quiet keeps the errors
    return _finish(args, report)


def plan_jobs(paths: list[Path], output: Path) -> tuple[list[Job], list[dict]]:
    """Input photos and where each result goes; problems (missing paths, output = input) as entries."""
    from faceanon.imageio import IMAGE_EXTENSIONS

    single_file = len(paths) == 1 and paths[0].is_file() and output.suffix.lower() in IMAGE_EXTENSIONS
    inputs = {p.resolve() for p in _all_files(paths, output)}
    jobs, problems = [], []
    for path in paths:
        if not path.exists():
            problems.append(_problem(path, "does not exist"))
            continue
        if path.is_file():
            pairs = [(path, output if single_file else output / path.name)]
        else:
            pairs = [(f, output / f.relative_to(path)) for f in _images_in(path, output)]
        for source, target in pairs:
            target = _writable_name(target)
            if target.resolve() in inputs:
                problems.append(_problem(source, f"the output {target} would overwrite an input; choose another -o"))
            else:
                jobs.append(Job(source, target))
    return jobs, problems


def _all_files(paths: list[Path], output: Path) -> list[Path]:
    files = []
    for path in paths:
        files.extend([path] if path.is_file() else _images_in(path, output) if path.is_dir() else [])
    return files


def _images_in(folder: Path, output: Path) -> list[Path]:
    """Photos under `folder` (recursive, sorted), leaving out anything under the output folder."""
    from faceanon.imageio import IMAGE_EXTENSIONS

    output = output.resolve()
    found = []
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS and not file.name.startswith("."):
            if output not in file.resolve().parents:
                found.append(file)
    return found


def _writable_name(target: Path) -> Path:
    """Keep the input's format when faceanon can write it, else write PNG."""
    from faceanon.imageio import format_for_path

    try:
        format_for_path(target)
        return target
    except FaceAnonError:
        return target.with_suffix(".png")


def _process(job: Job, args, anonymize) -> dict:
    from faceanon.imageio import save_image

    entry = {"input": str(job.source), "output": str(job.target)}
    if job.target.exists() and not args.overwrite:
        return {**entry, "status": "skipped", "reason": "output exists (use --overwrite to replace it)"}
    try:
        result = anonymize(job.source)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        save_image(result.image, job.target, quality=args.quality, pnginfo=_provenance(args, result))
    except FaceAnonError as error:
        return {**entry, "status": "error", "error": str(error)}
    except Exception as error:  # one bad photo must not stop a folder of good ones
        return {**entry, "status": "error", "error": f"unexpected {type(error).__name__}: {error}"}
    return {**entry, "status": "done", **result.to_dict()}


def _provenance(args, result):
    """The PNG text note saying what faceanon did (PNG outputs only; --no-watermark drops it)."""
    if getattr(args, "no_watermark", False):
        return None
    try:
        from faceanon.trust.watermark import provenance_for
    except ImportError:
        return None
    return provenance_for(result)


def _problem(path: Path, error: str) -> dict:
    return {"input": str(path), "output": None, "status": "error", "error": error}


def _describe(entry: dict) -> str:
    if entry["status"] == "done":
        return f"{entry['input']}: {entry['message']} -> {entry['output']}"
    if entry["status"] == "skipped":
        return f"{entry['input']}: skipped, {entry['reason']}"
    return f"{entry['input']}: error: {entry['error']}"


def _finish(args, report: BatchReport) -> int:
    summary = report.to_dict()
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
    total = len(report.files)
    _say(args, f"{summary['done']} of {total} file(s) done, {summary['skipped']} skipped, {summary['error']} failed; "
               f"{summary['faces_found']} face(s) found, {summary['faces_changed']} changed.", always=True)
    if report.failed:
        _error(f"{report.failed} file(s) could not be processed; see the messages above.")
    return 1 if report.failed else 0


def _progress(jobs: list, args):
    if args.quiet or args.json or len(jobs) < 2:
        return jobs
    from tqdm import tqdm

    return tqdm(jobs, desc="photos", unit="photo", file=sys.stderr, leave=False)


def _say(args, text: str, always: bool = False) -> None:
    """Human-readable lines: stdout normally, stderr when stdout carries the JSON report."""
    if args.quiet and not always:
        return
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def _error(text: str) -> None:
    print(f"faceanon: error: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# swap


def add_swap(subparsers) -> None:
    parser = subparsers.add_parser(
        "swap", help="put the face of one photo onto the faces of another",
        description="Give the chosen faces of TARGET the identity of a face in SOURCE (pose, expression, "
                    "lighting and background of TARGET are kept). Use only with consent of the people shown.")
    parser.add_argument("source", type=Path, help="photo whose face identity is used")
    parser.add_argument("target", type=Path, help="photo whose faces are replaced")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output file")
    parser.add_argument("--source-face", type=int, default=0, help="which face of SOURCE (default: 0, leftmost)")
    _add_diffusion_options(parser, degree=False)
    _add_face_options(parser)
    _add_output_options(parser)
    parser.set_defaults(run=run_swap)


def run_swap(args) -> int:
    if args.output.resolve() in (args.source.resolve(), args.target.resolve()):
        _error("the output would overwrite an input; choose another -o.")
        return 1
    anonymizer = _make_anonymizer(args)
    options = dict(seed=args.seed, steps=args.steps, guidance=args.guidance, source_face=args.source_face,
                   faces=args.faces, scheduler=args.scheduler)
    entry = _process(Job(args.target, args.output), args,
                     lambda target: anonymizer.swap(args.source, target, **options))
    _say(args, _describe(entry), always=entry["status"] == "error")
    return _finish(args, BatchReport(files=[entry]))


# ---------------------------------------------------------------------------------------------
# download, serve


def add_download(subparsers) -> None:
    parser = subparsers.add_parser(
        "download", help="download and verify the diffusion weights",
        description="Fetch the weights named by the weights card (face model, VAE, image encoder) into the "
                    "Hugging Face cache and check their checksums. Sources can be overridden with "
                    "FACEANON_FACE_MODEL, FACEANON_VAE and FACEANON_IMAGE_ENCODER.")
    parser.add_argument("--offline", action="store_true", help="only check what is already downloaded")
    parser.add_argument("--print-hashes", action="store_true",
                        help="print each file's size and sha256 (to pin them in weights_card/manifest.json)")
    parser.set_defaults(run=run_download)


def run_download(args) -> int:
    from faceanon.weights import download_weights, load_manifest, sha256_of

    folders = download_weights(local_files_only=args.offline)
    manifest = load_manifest()
    for component, folder in folders.items():
        print(f"{component}: {folder}")
        if args.print_hashes:
            for name in manifest[component]["files"]:
                path = folder / name
                if path.is_file():
                    print(f"  {name}: size_bytes={path.stat().st_size} sha256={sha256_of(path)}")
    print("All weights are present and verified.")
    return 0


def add_serve(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="start the web app", add_help=False,
        description="Start faceanon's web app; options are the app's own (`faceanon serve --help`).")
    parser.set_defaults(run=run_serve)


def run_serve(args) -> int:
    try:
        from faceanon.webapp import main as serve
    except ImportError as error:
        _error(f"the web app is not available ({error}). Install faceanon with its app dependencies "
               "(pip install -r requirements.txt).")
        return 1
    return int(serve(args.extra) or 0)


def add_trust_commands(subparsers) -> None:
    """`evaluate` and `verify`, defined by faceanon.trust.cli (they set `func`)."""
    try:
        from faceanon.trust.cli import add_evaluate_command, add_verify_command
    except ImportError:
        return
    add_evaluate_command(subparsers)
    add_verify_command(subparsers)


SUBCOMMANDS = [add_anonymize, add_swap, add_download, add_serve, add_trust_commands]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
