"""Packing: the faces of several photos in one pipeline call, deterministically.

Float rounding in a batched pipeline call depends on which faces share it (measured up to 5/255 on
CPU), so a packed photo's pixels depend on its companions. They are therefore fixed by the job, not
by how Ray splits it: `packing_groups` sorts the keys of the FULL listing (items already done
included) and puts every `pack` consecutive keys in one group. Groups are formed in the driver and
never split (a Ray batch holds whole groups); inside a group the photos go in key order, and the
faces are chunked by --batch-size, else by PACK_FACES_PER_CALL (fixed, never the free GPU memory).
A rerun therefore regenerates a partly done group with the same companions and writes only the
missing outputs, and `faceanon anonymize DIR --pack N` (one process) gives the same bytes.

PhotoSteps runs the photo steps for the dataset worker and the single-process CLI alike: read,
detect, plan with image_seed, align (per photo); generate (per group); finish, on_same_person,
leak guard and the photo's result (per photo), with FaceAnonymizer's public seam.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PACK_FACES_PER_CALL = 8  # faces per call with --pack > 1 and no --batch-size (~fills a 24 GB GPU at fp16)
FALLBACK_METHOD = "blur"


def packing_groups(keys: Sequence[str], pack: int, listing: Sequence[str] | None = None) -> list[int]:
    """The packing group of each of `keys`: its rank in the sorted `listing` (every key of the job,
    done ones included; default `keys` itself), divided by `pack`. A pure function of the keys and
    `pack`: the same groups whatever the order, the partitioning or the workers."""
    ordered = np.sort(np.asarray(list(keys if listing is None else listing), dtype=str))
    ranks = np.searchsorted(ordered, np.asarray(list(keys), dtype=str))
    return (ranks // max(1, int(pack))).tolist()


def faces_per_call(batch_size: int | None, pack: int) -> int | None:
    """FaceAnonymizer(batch_size=...) for a job: --batch-size, else with --pack > 1 a fixed cap (a
    cap from free GPU memory would make the chunks, hence the pixels, depend on the machine)."""
    if batch_size:
        return int(batch_size)
    return PACK_FACES_PER_CALL if int(pack or 1) > 1 else None


@dataclass
class Item:
    """One photo on its way through PhotoSteps."""

    key: str
    source: str
    data: bytes
    group: int | None = None  # packing group (None: the photo alone)
    write: bool = True  # False: a companion already done, generated again only for its group
    seconds: float = 0.0  # this photo's own work plus its share of its group's generation time
    photo: object = None  # PIL image, as loaded
    alpha: np.ndarray | None = None
    seed: int | None = None
    frame: object = None  # PreparedFrame, or None when no face was found
    crops: list | None = None
    result: object = None  # AnonymizationResult
    status: str = "done"  # "done", "redacted" (the diffusion failed: faces blurred), "error"
    error: str | None = None
    output: str | None = None  # set by the caller once written


class PhotoSteps:
    """The photo steps of a batch with `anonymizer` and the `faceanon anonymize` settings `args`."""

    def __init__(self, anonymizer, args, keep=None):
        self.anonymizer, self.args, self.keep = anonymizer, args, keep
        self._method: tuple[str, str] | None = None

    @property
    def method(self) -> tuple[str, str]:
        """(method, note): resolved on first use (the weights load then), once."""
        if self._method is None:
            self._method = self.anonymizer.resolve_method(self.args.method)
        return self._method

    def run(self, items: list[Item]) -> None:
        """Every item anonymized (item.result) or failed (item.status, item.error), in place.
        Companions (write False) are prepared only when their group has an item to write."""
        live = {item.group for item in items if item.write}
        items = [item for item in items if item.write or item.group in live]
        for item in items:
            _timed(item, self._prepare)
        self._generate([item for item in items if item.status == "done" and item.frame is not None])
        for item in items:
            if item.write:
                _timed(item, self._finish)

    def _prepare(self, item: Item) -> None:
        from faceanon.anonymizer import image_seed
        from faceanon.dataset.sources import output_name
        from faceanon.media.photo import describe_tone, load_image, split_alpha

        args, fa = self.args, self.anonymizer
        try:
            output_name(item.key)  # a key that cannot name an output fails before any work
            item.photo = load_image(item.data)
            rgb, item.alpha = split_alpha(item.photo)
            detected, selected = fa.select_faces(rgb, args.faces)
            if detected:
                item.seed = image_seed(args.seed, item.data)
                plans = fa.plan_faces(
                    detected,
                    self.method[0],
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
            fail(item, error)

    def _generate(self, items: list[Item]) -> None:
        """One generate call per packing group, photos in key order; a photo alone when its
        group's call fails."""
        groups: dict = {}
        for position, item in enumerate(items):
            groups.setdefault(("alone", position) if item.group is None else item.group, []).append(item)
        for members in groups.values():
            self._generate_group(sorted(members, key=lambda item: item.key))

    def _generate_group(self, items: list[Item]) -> None:
        requests = [request for item in items for request in item.frame.requests]
        started = time.perf_counter()
        try:
            crops = self.anonymizer.generate(requests, self.generation()) if requests else []
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
            item.crops = self.anonymizer.generate(item.frame.requests, self.generation())
        except Exception as error:
            item.crops = None
            item.status = "redacted"
            item.error = f"the diffusion failed ({describe(error)}); its faces were blurred instead"
        item.seconds += time.perf_counter() - started

    def generation(self):
        from faceanon.anonymizer import Generation

        return Generation(self.args.steps, self.args.guidance, self.args.scheduler)

    def _finish(self, item: Item) -> None:
        from faceanon.anonymizer import FacePlan

        if item.status == "error":
            return
        fa = self.anonymizer
        method, note = self.method
        try:
            if item.frame is None:
                item.result = fa.no_faces_result(item.photo)
                return
            frame = item.frame
            if item.crops is None:  # diffusion failed: redact the faces that were to be generated
                plans = [
                    FacePlan(p.face, FALLBACK_METHOD, message=item.error) if p.method == method else p
                    for p in frame.plans
                ]
                frame = fa.prepare_frame(frame.rgb, plans, frame.tone, frame.only_planned, frame.leak_guard)
                item.crops = []
            result = fa.complete_frame(frame, item.crops, self.generation())
            item.result = fa.photo_result(item.photo, item.alpha, result, note, frame.tone)
        except Exception as error:
            fail(item, error)


def fail(item: Item, error: Exception) -> None:
    item.status, item.error, item.result = "error", describe(error), None


def describe(error: Exception) -> str:
    from faceanon.errors import FaceAnonError

    if isinstance(error, FaceAnonError | ValueError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error}"


def _timed(item: Item, step):
    started = time.perf_counter()
    try:
        return step(item)
    finally:
        item.seconds += time.perf_counter() - started


__all__ = ["packing_groups", "faces_per_call", "PACK_FACES_PER_CALL", "Item", "PhotoSteps"]
