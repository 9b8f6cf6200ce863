"""Where each input of a batch goes: the job planner and the per-file processing.

Photos and videos (faceanon.media.video.VIDEO_EXTENSIONS; processed by faceanon.cli.video) are
planned alike. Every input gets its own output (`photo.png`, `photo.gif`, `photo.avif` -> `photo.png`,
`photo.gif.png`, `photo.avif.png`: the format is kept when faceanon can write it, otherwise
`.png` is appended rather than swapped in, so no two inputs meet); two inputs that would still
meet are refused. Files of a folder that are not read are listed as skipped with the reason.
Outputs are written atomically (faceanon.media.atomic), and an existing output is only skipped
when it decodes: a rerun after a crash or a full disk redoes what is broken.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from faceanon.cli.common import problem, skipped
from faceanon.errors import FaceAnonError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass
class Job:
    source: Path
    target: Path


def media_extensions() -> frozenset[str]:
    """The file extensions `faceanon anonymize` reads: photos and videos."""
    from faceanon.media.photo import IMAGE_EXTENSIONS
    from faceanon.media.video import VIDEO_EXTENSIONS

    return frozenset(IMAGE_EXTENSIONS) | VIDEO_EXTENSIONS


def plan_jobs(paths: list[Path], output: Path) -> tuple[list[Job], list[dict]]:
    """Input photos and videos and where each result goes; problems (missing paths, output = input, two
    inputs for one output) and files that are not read, as report entries."""
    single_file = len(paths) == 1 and paths[0].is_file() and output.suffix.lower() in media_extensions()
    inputs = {p.resolve() for p in _all_photos(paths, output)}
    jobs, entries, claimed = [], [], {}
    for path in paths:
        if not path.exists():
            entries.append(problem(path, "does not exist"))
            continue
        if path.is_file():
            pairs = [(path, output if single_file else output / path.name)]
        else:
            photos, not_read = _files_in(path, output)
            entries.extend(skipped(file, reason) for file, reason in not_read)
            pairs = [(f, output / f.relative_to(path)) for f in photos]
        for source, target in pairs:
            target = _writable_name(target)
            key = str(target.resolve()).casefold()  # case-insensitive disks (macOS, Windows) would merge them
            if target.resolve() in inputs:
                entries.append(
                    problem(
                        source,
                        f"the output {target} would overwrite an input; choose another -o",
                        planned=target,
                    )
                )
            elif key in claimed:
                entries.append(
                    problem(
                        source,
                        f"{claimed[key]} is already written to {target}; rename one of the two inputs",
                        planned=target,
                    )
                )
            else:
                claimed[key] = source
                jobs.append(Job(source, target))
    return jobs, entries


def _all_photos(paths: list[Path], output: Path) -> list[Path]:
    files = []
    for path in paths:
        files.extend([path] if path.is_file() else _files_in(path, output)[0] if path.is_dir() else [])
    return files


def _files_in(folder: Path, output: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(photos and videos, [(file, why it is not read)]) under `folder`, recursive and sorted, leaving out
    hidden files (faceanon's own temporary files among them) and anything under the output folder."""
    output = output.resolve()
    photos, not_read = [], []
    for file in sorted(folder.rglob("*")):
        if not file.is_file() or file.name.startswith(".") or output in file.resolve().parents:
            continue
        reason = not_read_reason(file)
        if reason:
            not_read.append((file, reason))
        else:
            photos.append(file)
    return photos, not_read


def not_read_reason(file: Path) -> str | None:
    """Why `faceanon anonymize` does not read this file of a folder, or None for a photo or video."""
    from faceanon.media.photo import UNSUPPORTED_IMAGE_REASONS

    suffix = file.suffix.lower()
    if suffix in media_extensions():
        return None
    if suffix in UNSUPPORTED_IMAGE_REASONS:
        return UNSUPPORTED_IMAGE_REASONS[suffix]
    return f"not a photo faceanon reads ({suffix or 'no extension'})"


def _writable_name(target: Path) -> Path:
    """Keep the input's format when faceanon can write it, else append .png (photo.gif -> photo.gif.png);
    videos keep their container."""
    from faceanon.media.photo import format_for_path
    from faceanon.media.video import VIDEO_EXTENSIONS

    if target.suffix.lower() in VIDEO_EXTENSIONS:
        return target
    try:
        format_for_path(target)
        return target
    except FaceAnonError:
        return target.with_name(target.name + ".png")


def sweep_leftovers(jobs: list[Job]) -> int:
    """Remove temporary files that an interrupted run left next to the outputs; how many."""
    from faceanon.media.atomic import sweep_partials

    return sum(len(sweep_partials(folder)) for folder in {job.target.parent for job in jobs})


def process(job: Job, args, anonymize) -> dict:
    entry = {"input": str(job.source), "output": None, "planned_output": str(job.target)}
    done, notes = existing_output(job, args)
    if done:
        return done
    try:
        result = anonymize(job.source)
    except FaceAnonError as error:
        return {**entry, "status": "error", "error": str(error)}
    except Exception as error:  # one bad photo must not stop a folder of good ones
        return {**entry, "status": "error", "error": f"unexpected {type(error).__name__}: {error}"}
    return write_result(job, args, result, notes)


def existing_output(job: Job, args) -> tuple[dict | None, list[str]]:
    """(the "skipped" entry when job's output exists and decodes, else None; notes for the entry)."""
    if not job.target.exists() or args.overwrite:
        return None, []
    broken = _unreadable(job.target)
    if broken is None:
        return {
            "input": str(job.source),
            "output": str(job.target),
            "status": "skipped",
            "reason": "output exists (use --overwrite to replace it)",
        }, []
    return None, [f"the existing output could not be read ({broken}), so it was made again"]


def write_result(job: Job, args, result, notes: list[str]) -> dict:
    """Save an anonymized photo (atomic) and its report entry."""
    from faceanon.media.photo import frame_count, save_image

    entry = {"input": str(job.source), "output": None, "planned_output": str(job.target)}
    try:
        save_image(result.image, job.target, quality=args.quality, pnginfo=_provenance(args, result))
    except OSError as error:
        return {**entry, "status": "error", "error": write_error(job.target, error)}
    frames = frame_count(job.source)
    if frames > 1:
        notes = [*notes, f"only the first of its {frames} frames (or pages) was anonymized and written"]
    done = {"input": str(job.source), "output": str(job.target), "status": "done", **result.to_dict()}
    return {**done, "notes": notes} if notes else done


def process_packed(jobs: list[Job], args, anonymizer, keep) -> Iterator[dict]:
    """`--pack N` over photo jobs: the dataset runner's packing groups (faceanon.dataset.packing),
    keyed by the path relative to the folder given, and its photo steps, so the outputs are the
    `--ray` job's bit for bit. A group with some outputs done is generated whole (the same
    companions), and only the missing outputs are written."""
    from faceanon.dataset.packing import PhotoSteps, packing_groups
    from faceanon.dataset.sources import key_for_path

    roots = sorted({str(path.resolve()) for path in args.paths if path.is_dir()}, key=len)
    keys = [key_for_path(str(job.source), roots) for job in jobs]
    groups: dict[int, list[tuple[str, Job]]] = {}
    for group, key, job in zip(packing_groups(keys, args.pack), keys, jobs, strict=True):
        groups.setdefault(group, []).append((key, job))
    steps = PhotoSteps(anonymizer, args, keep)
    for group in sorted(groups):
        yield from _process_group(group, groups[group], steps, args)


def _process_group(group: int, members: list[tuple[str, Job]], steps, args) -> Iterator[dict]:
    from faceanon.dataset.packing import Item, fail

    items, earlier = [], {}  # key -> (the skipped entry or None, notes)
    for key, job in members:
        done, notes = existing_output(job, args)
        item = Item(key=key, source=str(job.source), data=b"", group=group, write=done is None)
        earlier[key] = done, notes
        try:
            item.data = job.source.read_bytes()
        except OSError as error:
            fail(item, error)
        items.append(item)
    steps.run(items)
    for item, (_, job) in zip(items, members, strict=True):
        if not item.write:
            yield earlier[item.key][0]
        elif item.status == "error":
            yield problem(job.source, item.error, planned=job.target)
        else:
            notes = earlier[item.key][1] + ([item.error] if item.status == "redacted" else [])
            yield write_result(job, args, item.result, notes)


def _unreadable(path: Path) -> str | None:
    """None when `path` decodes as a photo, else the reason (truncated, empty, not an image...)."""
    from faceanon.media.photo import load_image

    try:
        load_image(path)
    except FaceAnonError as error:
        return _first_sentence(str(error))
    return None


def _first_sentence(text: str) -> str:
    return text.split("; ")[0].split(". ")[0].rstrip(".")


def write_error(target: Path, error: OSError) -> str:
    """What a failed write means for people (nothing was left behind: writes are atomic)."""
    what = error.strerror or str(error)
    if error.errno in _DISK_FULL:
        return (
            f"could not write {target}: the disk is full or a file size limit was reached ({what}). Nothing "
            "was left half-written; free some space and run again: finished outputs are skipped."
        )
    return f"could not write {target} ({what}). Check that the output folder exists and is writable."


def _provenance(args, result):
    """The PNG text note saying what faceanon did (PNG outputs only; --no-watermark drops it)."""
    if getattr(args, "no_watermark", False):
        return None
    try:
        from faceanon.trust.watermark import provenance_for
    except ImportError:
        return None
    return provenance_for(result)
