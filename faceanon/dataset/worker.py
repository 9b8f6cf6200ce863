"""One dataset worker: the callable class Ray Data's map_batches runs in each actor.

The actor builds its FaceAnonymizer once (detector, diffusion pipeline, identity model), then for
every batch of images: decode and detect each photo, plan its faces with the photo's own seed
(faceanon.anonymizer.image_seed of its bytes), align them, generate the new faces of every `pack`
consecutive photos in one FaceAnonymizer.generate call (chunked by the batch cap, --batch-size),
finish each photo (blend, watermark, identity check, --on-same-person), write the outputs
atomically, then the batch's audit parts.

With pack=1 (the default) each photo's faces are generated in calls of their own, exactly as
`FaceAnonymizer.anonymize` does, so every output is bit for bit the single-process CLI's, whatever
the partitioning, workers or order. With pack>1 faces of several photos share a call (fewer, fuller
GPU calls); the seeds are the same, but float rounding in a batched call depends on its companions,
so generated pixels can differ slightly between packings (measured: at most 5/255 on CPU).

A photo that cannot be decoded or processed is recorded with its reason and nothing is written
for it. When generation fails (for the packed call, then for the photo alone), the photo's faces
are blurred instead and its row says "redacted" and why: a face is never written un-anonymized.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from faceanon.dataset import audit
from faceanon.dataset.sources import key_for_bytes, key_for_path, output_name

FALLBACK_METHOD = "blur"


@dataclass
class Item:
    """One photo of a batch on its way through the worker."""

    key: str
    source: str
    data: bytes
    seconds: float = 0.0  # this photo's own work plus its share of the batch's generation time
    photo: object = None  # PIL image, as loaded
    alpha: np.ndarray | None = None
    seed: int | None = None
    frame: object = None  # PreparedFrame, or None when no face was found
    crops: list | None = None
    result: object = None  # AnonymizationResult
    status: str = "done"
    error: str | None = None
    output: str | None = None  # the output's name (tree) or part#key (Parquet), once written


class AnonymizeBatch:
    """map_batches callable: a batch of {key?, bytes, path} rows in, one audit row per item out.

    settings: the `faceanon anonymize` options (argparse names, e.g. from vars(args)); destination:
    the output folder; layout: "tree" (files) or "parquet" (part files with an `image` column);
    roots: folders that image keys are relative to; done: keys a rerun skips (Parquet sources).
    """

    def __init__(
        self,
        settings: dict,
        destination: str,
        layout: str,
        run: str,
        roots: list[str] | None = None,
        done: frozenset | None = None,
        image_column: str | None = None,
        key_column: str | None = None,
        threads: int | None = None,
    ):
        from faceanon.cli.common import make_anonymizer

        if threads:
            import torch

            # Ray gives an actor OMP_NUM_THREADS=1; float sums on CPUs depend on the thread count, so a
            # CPU worker uses the threads a single process would (its share of the node's cores).
            torch.set_num_threads(int(threads))

        self.args = SimpleNamespace(**settings)
        self.destination, self.layout, self.run = Path(destination), layout, run
        self.roots, self.done = roots or [], done or frozenset()
        self.image_column, self.key_column = image_column, key_column
        self.anonymizer = make_anonymizer(self.args)
        self.anonymizer.resolution = int(settings.get("resolution") or 512)
        self.method, self.method_note = self._method()
        keep = getattr(
            self.args, "keep", None
        )  # --keep photos: loaded once per worker, as the CLI does per run
        self.keep = self.anonymizer.load_keep(keep) if keep else None

    def _method(self) -> tuple[str, str]:
        from faceanon.registry import DIFFUSION

        if self.args.method is not None:
            return self.args.method, ""
        if self.anonymizer.diffusion_available:
            return DIFFUSION, ""
        reason = self.anonymizer.diffusion_unavailable_reason.rstrip(".")
        return "blur", f"Diffusion is not available here ({reason}), so faces were blurred instead."

    # -------------------------------------------------------------------------------------------

    def __call__(self, batch: dict) -> dict:
        if "video" in batch:
            return self._videos(batch)
        items, already = self._items(batch)
        for item in items:
            _timed(item, self._prepare)
        self._generate([item for item in items if item.status == "done" and item.frame is not None])
        for item in items:
            _timed(item, self._finish)
        name = self._part_name(items)
        for item in items:
            _timed(item, self._write)
        rows = [self._row(item) for item in items]
        if self._pending:  # Parquet destinations: the batch's images, before its audit rows
            import pyarrow as pa

            table = pa.Table.from_pylist(self._pending, schema=_output_schema())
            audit.write_table(self.destination / f"{self._part}.parquet", table)
        if items:
            audit.write_part(
                self.destination, "faces", name, [face for item in items for face in self._faces(item)]
            )
            audit.write_part(self.destination, "files", name, rows)  # last: the commit mark
        rows += already
        return {column: [row[column] for row in rows] for column in RESULT_COLUMNS}

    # -------------------------------------------------------------------------------------------
    # Videos: FaceAnonymizer.anonymize_video, one call per file (it batches a person's frames itself)

    def _videos(self, batch: dict) -> dict:
        rows, faces = [], []
        for source in map(str, batch["video"]):
            key = key_for_path(source, self.roots)
            started = time.perf_counter()
            row, tracks = self._video(source, key)
            row["seconds"] = round(time.perf_counter() - started, 4)
            rows.append(row)
            faces.extend(tracks)
        name = (
            "part-"
            + self.run
            + "-"
            + hashlib.sha256("\n".join(r["file"] for r in rows).encode()).hexdigest()[:16]
        )
        audit.write_part(self.destination, "faces", name, faces)
        audit.write_part(self.destination, "files", name, rows)
        return {column: [row[column] for row in rows] for column in RESULT_COLUMNS}

    def _video(self, source: str, key: str) -> tuple[dict, list[dict]]:
        args = self.args
        if self.layout != "tree":
            return audit.file_row(
                key,
                source,
                "error",
                self.run,
                error=("videos are written as files: give a folder destination, not a .parquet one"),
            ), []
        try:
            # The CLI's call (cli/video.py process_video): a video's seed is the user's seed.
            report = self.anonymizer.anonymize_video(
                source,
                self.destination / output_name(key),
                method=self.method,
                degree=args.degree,
                seed=args.seed,
                steps=args.steps,
                guidance=args.guidance,
                scheduler=args.scheduler,
                strength=args.strength,
                tracks=getattr(args, "tracks", None),
                per_frame=getattr(args, "per_frame", False),
                window=getattr(args, "window", 16),
                crf=getattr(args, "crf", 18),
            )
        except Exception as error:
            return audit.file_row(key, source, "error", self.run, error=_describe(error)), []
        row = audit.file_row(
            key,
            source,
            "done",
            self.run,
            output=output_name(key),
            faces=len(report.tracks),
            changed=report.num_changed,
            message=report.message,
        )
        marked = self.anonymizer.watermark
        tracks = [
            {
                "file": key,
                "face": t.track_id,
                "box": None,
                "score": None,
                "method": t.method,
                "seed": t.seed,
                "degree": t.degree,
                "identity_similarity": t.identity_max,
                "verdict": None
                if t.same_person is None
                else ("same person" if t.same_person else "different person"),
                "leak_guard_hits": None,
                "watermark": bool(marked and t.method == "diffusion"),
                "message": t.message,
                "run": self.run,
            }
            for t in report.tracks
        ]
        return row, tracks

    # -------------------------------------------------------------------------------------------
    # Photos

    def _items(self, batch: dict) -> tuple[list[Item], list[dict]]:
        items, already = [], []
        for i in range(len(next(iter(batch.values())))):
            source = str(batch["path"][i]) if "path" in batch else ""
            if self.image_column is None:  # read_binary_files: bytes + path
                data, key = bytes(batch["bytes"][i]), key_for_path(source, self.roots)
            else:
                data, key = self._parquet_row(batch, i)
                source = f"{source}#{key}"
            if key in self.done:
                already.append({**audit.file_row(key, source, "already done", self.run), "output": None})
            else:
                items.append(Item(key=key, source=source, data=data))
        return items, already

    def _parquet_row(self, batch: dict, i: int) -> tuple[bytes, str]:
        value = batch[self.image_column][i]
        struct_path = None
        if isinstance(value, dict):  # a Hugging Face datasets Image struct {bytes, path}
            value, struct_path = value.get("bytes"), value.get("path")
        data = bytes(value) if value is not None else b""
        if self.key_column:
            key = str(batch[self.key_column][i])
        else:
            key = str(struct_path) if struct_path else key_for_bytes(data)
        return data, key

    def _prepare(self, item: Item) -> None:
        from faceanon.anonymizer import image_seed
        from faceanon.media.photo import describe_tone, load_image, split_alpha

        args, fa = self.args, self.anonymizer
        try:
            output_name(item.key)  # a key that cannot name an output fails before any work
            item.photo = load_image(item.data)
            rgb, item.alpha = split_alpha(item.photo)
            detected, selected = fa._select(
                rgb, args.faces
            )  # the CLI's selection rule (FaceAnonymizer.anonymize)
            if detected:
                item.seed = image_seed(args.seed, item.data)
                plans = fa.plan_faces(
                    detected,
                    self.method,
                    degree=args.degree,
                    seed=item.seed,
                    selected=selected,
                    strength=args.strength,
                )
                plans = fa.keep_plans(rgb, plans, self.keep)
                item.frame = fa.prepare_frame(
                    rgb, plans, describe_tone(item.photo), only_planned=args.faces is not None
                )
        except Exception as error:  # one bad photo must not stop the batch
            self._fail(item, error)

    def _generate(self, items: list[Item]) -> None:
        """The new faces of every `pack` consecutive photos in one generate call (chunked by the
        batch cap); a photo alone when its group's call fails."""
        pack = max(1, int(getattr(self.args, "pack", 1) or 1))
        for start in range(0, len(items), pack):
            self._generate_group(items[start : start + pack])

    def _generate_group(self, items: list[Item]) -> None:
        requests = [request for item in items for request in item.frame.requests]
        started = time.perf_counter()
        try:
            crops = self.anonymizer.generate(requests, self._generation()) if requests else []
        except Exception:
            for item in items:
                self._generate_alone(item)
            return
        share = (time.perf_counter() - started) / max(1, len(requests))
        for item in items:
            count = len(item.frame.requests)
            item.crops, crops = crops[:count], crops[count:]
            item.seconds += share * count

    def _generate_alone(self, item: Item) -> None:
        started = time.perf_counter()
        try:
            item.crops = self.anonymizer.generate(item.frame.requests, self._generation())
        except Exception as error:
            item.crops = None
            item.status = "redacted"
            item.error = f"the diffusion failed ({_describe(error)}); its faces were blurred instead"
        item.seconds += time.perf_counter() - started

    def _generation(self):
        from faceanon.anonymizer import Generation

        return Generation(self.args.steps, self.args.guidance, self.args.scheduler)

    def _finish(self, item: Item) -> None:
        from faceanon.anonymizer import FacePlan

        if item.status == "error":
            return
        fa = self.anonymizer
        try:
            if item.frame is None:
                item.result = fa._no_faces(item.photo)
                return
            frame = item.frame
            if item.crops is None:  # diffusion failed: redact the faces that were to be generated
                plans = [
                    FacePlan(p.face, FALLBACK_METHOD, message=item.error) if p.method == self.method else p
                    for p in frame.plans
                ]
                frame = fa.prepare_frame(frame.rgb, plans, frame.tone, frame.only_planned, frame.leak_guard)
                item.crops = []
            # FaceAnonymizer.anonymize_frame's steps after generate: finish, --on-same-person, leak guard
            result = fa._finish(frame, item.crops)
            frame, result = fa._handle_still_recognizable(
                frame, item.crops, result, self._generation(), _no_progress
            )
            result = fa._guard(frame, result)
            # FaceAnonymizer.anonymize's last step (alpha, ICC, greyscale files back to greyscale, message)
            item.result = fa._photo_result(item.photo, item.alpha, result, self.method_note, frame.tone)
        except Exception as error:
            self._fail(item, error)

    def _write(self, item: Item) -> None:
        if item.status != "error":
            try:
                item.output = self._save(item)
            except Exception as error:
                self._fail(item, error)

    def _row(self, item: Item) -> dict:
        result = item.result
        faces = len(result.faces) if result is not None and item.status != "error" else 0
        changed = result.num_changed if result is not None and item.status != "error" else 0
        return audit.file_row(
            item.key,
            item.source,
            item.status,
            self.run,
            output=item.output,
            faces=faces,
            changed=changed,
            seconds=round(item.seconds, 4),
            error=item.error,
            image_seed=item.seed,
            message=result.message if result is not None else None,
        )

    def _save(self, item: Item) -> str:
        from faceanon.media.photo import encode_image, format_for_path, save_image

        name = output_name(item.key)
        pnginfo = None if getattr(self.args, "no_watermark", False) else _provenance(item.result)
        if self.layout == "tree":
            save_image(item.result.image, self.destination / name, quality=self.args.quality, pnginfo=pnginfo)
            return name
        data = encode_image(
            item.result.image, format_for_path(name), quality=self.args.quality, pnginfo=pnginfo
        )
        self._pending.append({"file": item.key, "output": name, "image": data})
        return f"{self._part}.parquet#{item.key}"

    def _faces(self, item: Item) -> list[dict]:
        if item.result is None or item.status == "error":
            return []
        marked = self.anonymizer.watermark
        rows = []
        for report in item.result.faces:
            rows.append(
                {
                    "file": item.key,
                    "face": report.face.index,
                    "box": [float(v) for v in report.face.box],
                    "score": float(report.face.score),
                    "method": report.method,
                    "seed": report.seed,
                    "degree": report.degree,
                    "identity_similarity": report.identity_similarity,
                    "verdict": _verdict(report),
                    "leak_guard_hits": _guard_hits(report, self.anonymizer),
                    "watermark": bool(marked and report.method == "diffusion"),
                    "message": report.message or getattr(report, "guard", ""),
                    "run": self.run,
                }
            )
        return rows

    def _fail(self, item: Item, error: Exception) -> None:
        item.status, item.error, item.result = "error", _describe(error), None

    def _part_name(self, items: list[Item]) -> str:
        digest = hashlib.sha256("\n".join(item.key for item in items).encode()).hexdigest()[:16]
        self._part = f"part-{self.run}-{digest}"
        self._pending = []
        return self._part


def _output_schema():
    import pyarrow as pa

    return pa.schema([("file", pa.string()), ("output", pa.string()), ("image", pa.binary())])


RESULT_COLUMNS = ("file", "source", "output", "status", "faces", "changed", "seconds", "error")


def _timed(item: Item, step):
    started = time.perf_counter()
    try:
        return step(item)
    finally:
        item.seconds += time.perf_counter() - started


def _guard_hits(report, anonymizer) -> int | None:
    """1 when the leak guard acted on or reported this face (FaceReport.guard says what), 0 when it ran
    and found nothing, None when it did not run."""
    if not getattr(anonymizer, "leak_guard", False):
        return None
    return int(bool(getattr(report, "guard", "")))


def _verdict(report) -> str | None:
    if report.same_person is None:
        return None
    return "same person" if report.same_person else "different person"


def _provenance(result):
    try:
        from faceanon.trust.watermark import provenance_for
    except ImportError:
        return None
    return provenance_for(result)


def _describe(error: Exception) -> str:
    from faceanon.errors import FaceAnonError

    if isinstance(error, FaceAnonError | ValueError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error}"


def _no_progress(fraction: float, description: str) -> None:
    pass


__all__ = ["AnonymizeBatch", "RESULT_COLUMNS"]
