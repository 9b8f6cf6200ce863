"""Where each input of a batch goes: the job planner and the per-file processing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from faceanon.cli.common import problem
from faceanon.errors import FaceAnonError


@dataclass
class Job:
    source: Path
    target: Path



def plan_jobs(paths: list[Path], output: Path) -> tuple[list[Job], list[dict]]:
    """Input photos and where each result goes; problems (missing paths, output = input) as entries."""
    single_file = len(paths) == 1 and paths[0].is_file() and output.suffix.lower() in _media_extensions()
    inputs = {p.resolve() for p in _all_files(paths, output)}
    jobs, problems = [], []
    for path in paths:
        if not path.exists():
            problems.append(problem(path, "does not exist"))
            continue
        if path.is_file():
            pairs = [(path, output if single_file else output / path.name)]
        else:
            pairs = [(f, output / f.relative_to(path)) for f in _images_in(path, output)]
        for source, target in pairs:
            target = _writable_name(target)
            if target.resolve() in inputs:
                problems.append(problem(source, f"the output {target} would overwrite an input; choose another -o"))
            else:
                jobs.append(Job(source, target))
    return jobs, problems


def _all_files(paths: list[Path], output: Path) -> list[Path]:
    files = []
    for path in paths:
        files.extend([path] if path.is_file() else _images_in(path, output) if path.is_dir() else [])
    return files


def _images_in(folder: Path, output: Path) -> list[Path]:
    """Photos and videos under `folder` (recursive, sorted), leaving out anything under the output folder."""
    extensions = _media_extensions()
    output = output.resolve()
    found = []
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix.lower() in extensions and not file.name.startswith("."):
            if output not in file.resolve().parents:
                found.append(file)
    return found


def _media_extensions() -> frozenset[str]:
    from faceanon.media.photo import IMAGE_EXTENSIONS
    from faceanon.media.video import VIDEO_EXTENSIONS

    return frozenset(IMAGE_EXTENSIONS) | VIDEO_EXTENSIONS


def _writable_name(target: Path) -> Path:
    """Keep the input's format when faceanon can write it, else write PNG (videos keep theirs)."""
    from faceanon.media.photo import format_for_path
    from faceanon.media.video import VIDEO_EXTENSIONS

    if target.suffix.lower() in VIDEO_EXTENSIONS:
        return target
    try:
        format_for_path(target)
        return target
    except FaceAnonError:
        return target.with_suffix(".png")


def process(job: Job, args, anonymize) -> dict:
    from faceanon.media.photo import save_image

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


