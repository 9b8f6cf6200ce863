"""One dataset worker: the callable class Ray Data's map_batches runs in each actor.

The actor builds its FaceAnonymizer once (detector, diffusion pipeline, identity model), then for
every batch runs faceanon.dataset.packing.PhotoSteps (the single-process CLI's --pack path runs the
same): decode and detect each photo, plan its faces with the photo's own seed
(faceanon.anonymizer.image_seed of its bytes), align them, generate the new faces of each packing
group in one FaceAnonymizer.generate call, finish each photo (blend, watermark, identity check,
--on-same-person, leak guard), write the outputs atomically, then the batch's audit parts.

Outputs do not depend on the partitioning, the workers or the order, and they are bit for bit the
single-process CLI's with the same settings, --pack included. With pack=1 (the default) each photo's
faces are generated in calls of their own, exactly as `FaceAnonymizer.anonymize` does. With pack>1
the driver forms the groups (packing_groups: ranks of the sorted keys of the full listing) and a
batch holds whole groups (rows of `path` lists for files; one group per call for Parquet), so a
photo always shares its call with the same companions; a companion already done (`write` False)
is generated again for its group's sake and not written.

A photo that cannot be decoded or processed is recorded with its reason and nothing is written
for it. When generation fails (for the group's call, then for the photo alone), the photo's faces
are blurred instead and its row says "redacted" and why: a face is never written un-anonymized.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from types import SimpleNamespace

from faceanon.dataset import audit
from faceanon.dataset.packing import Item, PhotoSteps, describe, fail
from faceanon.dataset.sources import key_for_path, output_name, parquet_item


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
        keep = getattr(self.args, "keep", None)  # checked by the driver; loaded once per worker
        self.steps = PhotoSteps(self.anonymizer, self.args, self.anonymizer.load_keep(keep) if keep else None)

    # -------------------------------------------------------------------------------------------

    def __call__(self, batch: dict) -> dict:
        if "video" in batch:
            return self._videos(batch)
        items, already = self._items(batch)
        self.steps.run(items)
        items = [item for item in items if item.write]  # companions: no output, no row
        name = self._part_name(items)
        for item in items:
            started = time.perf_counter()
            self._write(item)
            item.seconds += time.perf_counter() - started
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
                method=args.method,  # as the CLI passes it (cli/video.py)
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
            return audit.file_row(key, source, "error", self.run, error=describe(error)), []
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
        if "paths" in batch:
            return self._group_items(batch), []
        items, already = [], []
        for i in range(len(next(iter(batch.values())))):
            source = str(batch["path"][i]) if "path" in batch else ""
            group = int(batch["group"][i]) if "group" in batch else None
            if self.image_column is None:  # read_binary_files: bytes + path
                data, key = bytes(batch["bytes"][i]), key_for_path(source, self.roots)
            else:
                data, key = self._parquet_row(batch, i)
                source = f"{source}#{key}"
            if key in self.done:
                already.append({**audit.file_row(key, source, "already done", self.run), "output": None})
                if group is not None:  # packed: generated again with its group, not written
                    items.append(Item(key=key, source=source, data=data, group=group, write=False))
            else:
                items.append(Item(key=key, source=source, data=data, group=group))
        return items, already

    def _group_items(self, batch: dict) -> list[Item]:
        """Rows of whole packing groups (files, --pack > 1): the worker reads the files itself."""
        items = []
        for group, paths, writes in zip(batch["group"], batch["paths"], batch["write"], strict=True):
            for path, write in zip(map(str, paths), writes, strict=True):
                item = Item(key=key_for_path(path, self.roots), source=path, data=b"", group=int(group))
                item.write = bool(write)
                try:
                    item.data = Path(path).read_bytes()
                except OSError as error:
                    fail(item, error)
                items.append(item)
        return items

    def _parquet_row(self, batch: dict, i: int) -> tuple[bytes, str]:
        key = batch[self.key_column][i] if self.key_column else None
        return parquet_item(batch[self.image_column][i], key)

    def _write(self, item: Item) -> None:
        if item.status != "error":
            try:
                item.output = self._save(item)
            except Exception as error:
                fail(item, error)

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

    def _part_name(self, items: list[Item]) -> str:
        digest = hashlib.sha256("\n".join(item.key for item in items).encode()).hexdigest()[:16]
        self._part = f"part-{self.run}-{digest}"
        self._pending = []
        return self._part


def _output_schema():
    import pyarrow as pa

    return pa.schema([("file", pa.string()), ("output", pa.string()), ("image", pa.binary())])


RESULT_COLUMNS = ("file", "source", "output", "status", "faces", "changed", "seconds", "error")


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


__all__ = ["AnonymizeBatch", "RESULT_COLUMNS"]
