"""anonymize_dataset: `faceanon anonymize` over datasets of any size, on Ray Data.

    from faceanon.dataset import anonymize_dataset, read_audit
    result = anonymize_dataset("photos/", "anonymized/", seed=7)             # a local Ray instance
    result = anonymize_dataset("s3-mounted/*.parquet", "out.parquet", address="auto", degree=1.3)
    print(result.summary()); files, faces = read_audit("anonymized/")

Plan: list the items (faceanon.dataset.sources), drop those the audit says are done, read them
with `ray.data.read_binary_files` (photos) or `ray.data.read_parquet` (image-bytes columns), and
`map_batches` the callable class faceanon.dataset.worker.AnonymizeBatch on a pool of actors
(`ActorPoolStrategy(size=workers)`, `num_gpus` each): every actor loads the detector and the
diffusion pipeline once. Ray schedules, retries and shows progress; faceanon writes each batch's
outputs and audit rows atomically from the worker, which is what makes a rerun resumable.

With --pack N > 1 the driver forms the packing groups (faceanon.dataset.packing.packing_groups over
the sorted keys of the full listing) and no Ray batch splits one: files go as one row per group
(`from_items`; the worker reads the files), Parquet rows get a `group` column after a pass over
their keys and go through `groupby("group").map_groups` (an all-to-all step: Ray holds the rows
until the groups are formed). Why: rows of a streamed read are batched by block, and a batch's
companions would then depend on the partitioning.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceanon.dataset import audit
from faceanon.dataset.errors import RAY_MISSING, DatasetError
from faceanon.dataset.packing import packing_groups
from faceanon.dataset.sources import is_parquet, key_for_path, list_sources, parquet_item
from faceanon.dataset.worker import AnonymizeBatch

IMAGE_COLUMNS = ("image", "bytes", "image_bytes", "img", "content")
_NOT_SETTINGS = ("paths", "output", "run", "func", "command", "extra")


@dataclass
class DatasetResult:
    """What a dataset job did. Counts cover this run; `already_done` were skipped from earlier runs."""

    destination: Path
    done: int = 0
    redacted: int = 0
    failed: int = 0
    skipped: int = 0
    already_done: int = 0
    faces: int = 0
    changed: int = 0
    seconds: float = 0.0
    errors: list[dict] = field(default_factory=list)  # {file, error} of failed and redacted items

    @property
    def audit(self) -> Path:
        return audit.audit_folder(self.destination)

    def add(self, row: dict) -> None:
        status = row["status"]
        if status == "already done":
            self.already_done += 1
            return
        attribute = {"done": "done", "redacted": "redacted", "error": "failed", "skipped": "skipped"}[status]
        setattr(self, attribute, getattr(self, attribute) + 1)
        self.faces += int(row.get("faces") or 0)
        self.changed += int(row.get("changed") or 0)
        if status in ("error", "redacted"):
            self.errors.append({"file": row["file"], "status": status, "error": row.get("error")})

    def summary(self) -> str:
        processed = self.done + self.redacted + self.failed
        rate = f"{processed / self.seconds:.2f} images/s" if self.seconds > 0 else "0 images/s"
        return (
            f"{self.done} item(s) done, {self.redacted} redacted after a failure, {self.failed} failed, "
            f"{self.skipped} skipped, {self.already_done} already done; {self.faces} face(s) found, "
            f"{self.changed} changed; {self.seconds:.1f} s ({rate}). Audit: {self.audit}"
        )


def anonymize_dataset(
    source,
    destination,
    address: str | None = None,
    *,
    on_file: Callable[[dict], None] | None = None,
    **options,
) -> DatasetResult:
    """Anonymize every photo of `source` into `destination` with Ray Data (see the module doc).

    source: a folder, a photo, a glob, a Parquet file/folder/glob, or a list of them.
    destination: a folder (the same tree of outputs) or a name ending in ".parquet" (a folder of
        Parquet parts with columns file, output, image).
    address: None starts a local Ray instance (or uses the one this process already started);
        "auto" or "ray://host:10001" connects to an existing cluster.
    options: any option of `faceanon anonymize` by its Python name (degree, seed, steps, method,
        faces, batch_size, on_same_person, no_watermark, overwrite, quality, ...), plus workers,
        gpus_per_worker, images_per_batch, pack, image_column, key_column and resolution (tests only).
    on_file: called in this process with each item's row as it completes (may raise to stop).
    """
    settings = dataset_settings(options)
    destination = Path(destination)
    started = time.perf_counter()
    check_keep(settings)  # a bad --keep photo stops here, with the photo CLI's text, before Ray starts
    sources = list_sources(source if isinstance(source, list | tuple) else [source], destination)
    ray, started_here = connect(address)
    try:
        result = _run(ray, sources, destination, settings, on_file or _ignore)
    finally:
        if started_here:
            ray.shutdown()
    result.seconds = time.perf_counter() - started
    return result


def dataset_settings(options: dict) -> dict:
    """`faceanon anonymize`'s defaults (from its argument parser: one definition), updated by `options`."""
    from faceanon.cli import build_parser

    defaults = vars(build_parser().parse_args(["anonymize", "-", "-o", "-"]))
    settings = {k: v for k, v in defaults.items() if k not in _NOT_SETTINGS}
    settings.setdefault("resolution", 512)
    unknown = sorted(set(options) - set(settings))
    if unknown:
        raise TypeError(
            f"Unknown option(s) {', '.join(unknown)}; the options are {', '.join(sorted(settings))}."
        )
    settings.update(options)
    return settings


def check_keep(settings: dict) -> None:
    """Load the --keep photos here with the job's detector (ImageInputError for an unreadable photo,
    a photo without a face, an empty folder): every worker loads them again, and a failure there would
    only show as a Ray traceback."""
    if settings.get("keep"):
        from faceanon.anonymizer import FaceAnonymizer

        detector = FaceAnonymizer(
            detector=settings["detector"], detection_threshold=settings.get("detection_threshold")
        )
        detector.load_keep(settings["keep"])


PROBE_SECONDS = 5.0


def probe(address: str) -> None:
    """Check a "host:port" (the head's GCS) or "ray://host:port" (Ray Client) address in a few
    seconds before Ray gets it: Ray itself retries an address that does not answer for minutes. A TCP
    connect (`PROBE_SECONDS` at most), then one gRPC call of the service Ray will talk to: anything
    but "no such service" or no answer means it is there. "auto" and other forms are left to Ray."""
    import socket
    from urllib.parse import urlsplit

    client = address.startswith("ray://")
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        host, port = None, None
    if not host or port is None:
        return
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise DatasetError(_unreachable(address, f"{host}:{port}: {reason}")) from None
    silent = _not_ray(f"{host}:{port}", client)
    if silent:
        raise DatasetError(_unreachable(address, f"{host}:{port} {silent}"))


def _not_ray(target: str, client: bool) -> str | None:
    """Why `target` is not the Ray service asked for, or None when it answers as one (or gRPC or
    Ray's protocol modules are not importable: then Ray decides)."""
    try:
        import grpc
        from ray.core.generated import (
            gcs_service_pb2,
            gcs_service_pb2_grpc,
            ray_client_pb2,
            ray_client_pb2_grpc,
        )
    except ImportError:
        return None
    with grpc.insecure_channel(target) as channel:
        try:
            if client:  # the Ray Client server's own ping
                request = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
                ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(request, timeout=PROBE_SECONDS)
            else:  # a GCS answers (even "unauthenticated": it is there)
                request = gcs_service_pb2.InternalKVGetRequest(key=b"session_name", namespace=b"session")
                gcs_service_pb2_grpc.InternalKVGcsServiceStub(channel).InternalKVGet(
                    request, timeout=PROBE_SECONDS
                )
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                what = "a Ray Client server (ray://, port 10001 by default)" if client else "a Ray head (GCS)"
                return f"answers, but not as {what}"
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return f"does not answer as Ray ({code.name.lower()})"
    return None


def _unreachable(address: str, why: str) -> str:
    return (
        f"The Ray cluster at {address!r} cannot be reached ({why}). Check the address "
        "(`ray status` on the head node prints it; ray://HOST:10001 for Ray Client), or "
        "leave it out to start a local Ray instance on this machine."
    )


def connect(address: str | None):
    """(the ray module, whether this call started Ray). A clear DatasetError when it cannot."""
    try:
        import ray
    except ImportError:
        raise DatasetError(RAY_MISSING) from None
    if ray.is_initialized():
        return ray, False
    if address not in (None, "local"):
        probe(address)
    try:
        if address in (None, "local"):
            ray.init(configure_logging=True, logging_level="warning")
        else:
            ray.init(address=address, logging_level="warning")
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, TimeoutError... by path
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if address in (None, "local"):
            raise DatasetError(
                f"A local Ray instance could not start ({first}). Check free memory and "
                "/tmp space, or connect to a running cluster with --ray auto."
            ) from None
        raise DatasetError(_unreachable(address, first)) from None
    return ray, True


def _run(ray, sources, destination: Path, settings: dict, on_file) -> DatasetResult:
    layout = "parquet" if is_parquet(destination) else "tree"
    destination.mkdir(parents=True, exist_ok=True)
    run = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    if layout == "parquet":
        _sweep_uncommitted(destination)
    ray.data.DataContext.get_current().enable_progress_bars = not settings.get("quiet")
    done = frozenset() if settings.get("overwrite") else frozenset(audit.completed_keys(destination))
    result = DatasetResult(destination)
    listing, driver_rows = _plan_images(sources, run)
    todo = [path for key, path in listing if key not in done]
    result.already_done += len(listing) - len(todo)
    _sweep_partials(destination, [key_for_path(str(p), sources.roots) for p in [*todo, *sources.videos]])
    for row in driver_rows:
        result.add(row)
        on_file(row)
    if driver_rows:
        audit.write_part(destination, "files", f"part-{run}-listing", driver_rows)
    common = dict(
        settings=settings, destination=str(destination), layout=layout, run=run, roots=sources.roots
    )
    pack = int(settings.get("pack") or 1)
    per_batch = int(settings.get("images_per_batch") or 16)
    datasets = []
    if todo and pack > 1:  # whole packing groups, one row each: a Ray batch never splits one
        rows = _group_rows(listing, done, pack)
        datasets.append((ray.data.from_items(rows), dict(common, images_per_batch=max(1, per_batch // pack))))
    elif todo:
        datasets.append((ray.data.read_binary_files([str(p) for p in todo], include_paths=True), common))
    videos = [p for p in sources.videos if key_for_path(str(p), sources.roots) not in done]
    result.already_done += len(sources.videos) - len(videos)
    if videos:  # paths, not bytes: a worker decodes a video as a stream (shared storage on a cluster)
        rows = [{"video": str(p), "path": str(p)} for p in videos]
        datasets.append((ray.data.from_items(rows), dict(common, images_per_batch=1)))
    if sources.parquet:
        datasets.append(_parquet_dataset(ray, sources.parquet, settings, dict(common, done=done)))
    for dataset, kwargs in datasets:
        batch = kwargs.pop("images_per_batch", None) or per_batch
        for row in _map(ray, dataset, kwargs, settings, batch).iter_rows():
            result.add(row)
            on_file(row)
    return result


def _plan_images(sources, run: str) -> tuple[list[tuple[str, Path]], list[dict]]:
    """(key, path) of every image file of the job (done ones included: packing groups are formed
    over the full listing), and the rows this process records itself (missing paths, files not
    read, two inputs with one key)."""
    rows = [audit.file_row(p["file"], p["source"], "error", run, error=p["error"]) for p in sources.problems]
    rows += [
        audit.file_row(s["file"], s["source"], "skipped", run, error=s["reason"]) for s in sources.skipped
    ]
    listing, owners = [], {}
    for path in sources.images:
        key = key_for_path(str(path), sources.roots)
        if key in owners:
            error = f"{owners[key]} already has the output name {key}; run the two folders separately"
            rows.append(audit.file_row(key, str(path), "error", run, error=error))
            continue
        owners[key] = str(path)
        listing.append((key, path))
    return listing, rows


def _group_rows(listing: list[tuple[str, Path]], done: frozenset, pack: int) -> list[dict]:
    """One row per packing group with an item to do: {group, paths, write}; done companions are
    listed (generated again for their group's sake) with write False."""
    groups: dict[int, list[tuple[str, Path]]] = {}
    for group, (key, path) in zip(packing_groups([k for k, _ in listing], pack), listing, strict=True):
        groups.setdefault(group, []).append((key, path))
    return [
        {"group": group, "paths": [str(p) for _, p in members], "write": [k not in done for k, _ in members]}
        for group, members in sorted(groups.items())
        if any(key not in done for key, _ in members)
    ]


def _parquet_dataset(ray, paths: list[str], settings: dict, kwargs: dict):
    dataset = ray.data.read_parquet(paths, include_paths=True)
    names = dataset.schema().names
    column = settings.get("image_column") or next((c for c in IMAGE_COLUMNS if c in names), None)
    if column not in names:
        raise DatasetError(
            f"No image column in {', '.join(paths)}: its columns are {', '.join(names)}. Name "
            "the column of encoded image bytes with --image-column."
        )
    key = settings.get("key_column")
    if key and key not in names:
        raise DatasetError(
            f"--key-column {key!r} is not a column of {', '.join(paths)} ({', '.join(names)})."
        )
    dataset = dataset.select_columns([c for c in (column, key, "path") if c])
    kwargs = dict(kwargs, image_column=column, key_column=key)
    pack = int(settings.get("pack") or 1)
    if pack > 1:  # the rows' keys first (a pass over the key columns), then each row's group
        keyed = dataset.select_columns([key] if key else [column]).map_batches(
            _row_keys, fn_kwargs=dict(image_column=None if key else column, key_column=key)
        )
        listing = np.sort(np.asarray([row["key"] for row in keyed.iter_rows()], dtype=str))
        dataset = dataset.map_batches(
            _row_groups, fn_kwargs=dict(image_column=column, key_column=key, listing=listing, pack=pack)
        )
        kwargs["grouped"] = True
    return dataset, kwargs


def _row_keys(batch: dict, image_column: str | None, key_column: str | None) -> dict:
    size = len(next(iter(batch.values())))
    if key_column:
        return {"key": np.asarray([str(k) for k in batch[key_column]], dtype=object)}
    return {"key": np.asarray([parquet_item(batch[image_column][i])[1] for i in range(size)], dtype=object)}


def _row_groups(batch: dict, image_column: str, key_column: str | None, listing, pack: int) -> dict:
    keys = _row_keys(batch, None if key_column else image_column, key_column)["key"]
    return {**batch, "group": np.asarray(packing_groups(keys, pack, listing), dtype=np.int64)}


def _map(ray, dataset, kwargs: dict, settings: dict, batch_size: int):
    """The one Ray Data stage: AnonymizeBatch on a fixed pool of actors (whole packing groups of
    Parquet rows through groupby("group").map_groups: one call per group)."""
    grouped = kwargs.pop("grouped", False)
    workers, gpus = _workers(ray, settings)
    if not gpus:  # CPU workers: the cluster's cores shared out (a local instance: all of this machine's)
        kwargs = dict(kwargs, threads=max(1, int(ray.cluster_resources().get("CPU", 1)) // workers))
    env = {
        k: v for k, v in os.environ.items() if k.startswith("FACEANON_")
    }  # weights sources, identity model
    remote = {"runtime_env": {"env_vars": env}} if env else {}
    stage = dict(
        fn_constructor_kwargs=kwargs,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=gpus,
        **remote,
    )
    if grouped:
        return dataset.groupby("group").map_groups(AnonymizeBatch, **stage)
    return dataset.map_batches(AnonymizeBatch, batch_size=int(batch_size), **stage)


def _workers(ray, settings: dict) -> tuple[int, float]:
    """(actors, GPUs per actor): by default one actor per GPU of the cluster, or one on CPUs."""
    gpus_total = float(ray.cluster_resources().get("GPU", 0))
    per_worker = settings.get("gpus_per_worker")
    per_worker = (1.0 if gpus_total else 0.0) if per_worker is None else float(per_worker)
    workers = settings.get("workers")
    if workers is None:
        workers = max(1, int(gpus_total // per_worker)) if per_worker else 1
    return int(workers), per_worker


def _sweep_uncommitted(destination: Path) -> None:
    """Parquet destinations: remove output parts of batches that never wrote their audit rows."""
    committed = audit.committed_parts(destination)
    for part in destination.glob("part-*.parquet"):
        if part.stem not in committed:
            part.unlink(missing_ok=True)


def _sweep_partials(destination: Path, keys: list[str]) -> None:
    """Remove temporary files a killed run left where this run writes (faceanon.media.atomic)."""
    from faceanon.media.atomic import sweep_partials

    folders = {
        destination,
        audit.audit_folder(destination) / "files",
        audit.audit_folder(destination) / "faces",
    }
    folders |= {(destination / key).parent for key in keys}
    for folder in folders:
        sweep_partials(folder)


def _ignore(row: dict) -> None:
    pass


__all__ = ["anonymize_dataset", "DatasetResult", "dataset_settings", "connect"]
