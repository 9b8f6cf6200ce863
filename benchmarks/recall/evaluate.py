"""Matching detections to labelled faces: recall by face size, false faces per photo, speed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from benchmarks.recall.dataset import Case

IOU = 0.4
BUCKETS = ((12, 24), (24, 64), (64, 256), (256, float("inf")))
BUCKET_NAMES = ("12-24", "24-64", "64-256", ">256")


def iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    if len(others) == 0:
        return np.zeros(0)
    x0, y0 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x1, y1 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (area + areas - inter + 1e-9)


def _inside(box: np.ndarray, region: np.ndarray) -> float:
    """Share of `box` that lies inside `region`."""
    x0, y0 = max(box[0], region[0]), max(box[1], region[1])
    x1, y1 = min(box[2], region[2]), min(box[3], region[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)


@dataclass
class CaseResult:
    case: str
    tags: tuple[str, ...]
    hits: list[tuple[float, bool]]  # (labelled face size, found)
    false_faces: int
    seconds: float
    cpu_seconds: float
    megapixels: float
    missed: list[list[int]] = field(default_factory=list)
    false_boxes: list[list[int]] = field(default_factory=list)


def score_case(
    case: Case, boxes: np.ndarray, scores: np.ndarray, seconds: float, cpu_seconds: float = 0.0
) -> CaseResult:
    """Greedy matching, best detection first; a detection on an "ignore" region counts for nothing."""
    labelled = np.array([f.box for f in case.faces]).reshape(-1, 4)
    taken = np.zeros(len(labelled), bool)
    false_boxes = []
    for i in np.argsort(-np.asarray(scores)):
        overlaps = iou(boxes[i], labelled)
        overlaps[taken] = 0
        if len(overlaps) and overlaps.max() >= IOU:
            taken[int(overlaps.argmax())] = True
        elif not any(iou(boxes[i], r[None])[0] >= IOU or _inside(boxes[i], r) > 0.5 for r in case.ignore):
            false_boxes.append(boxes[i].round().astype(int).tolist())
    hits = [(face.size, bool(found)) for face, found in zip(case.faces, taken, strict=True)]
    missed = [
        face.box.round().astype(int).tolist()
        for face, found in zip(case.faces, taken, strict=True)
        if not found
    ]
    return CaseResult(
        case.name,
        case.tags,
        hits,
        len(false_boxes),
        seconds,
        cpu_seconds,
        case.megapixels,
        missed,
        false_boxes,
    )


def run_detector(detector, case: Case) -> tuple[CaseResult, list]:
    start, cpu_start = time.perf_counter(), time.process_time()
    faces = detector.detect(case.image)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    boxes = np.array([f.box for f in faces], float).reshape(-1, 4)
    scores = np.array([f.score for f in faces], float)
    return score_case(case, boxes, scores, seconds, cpu_seconds), faces


def summarize(results: list[CaseResult]) -> dict:
    row = {}
    for name, (low, high) in zip(BUCKET_NAMES, BUCKETS, strict=True):
        found = [hit for r in results for size, hit in r.hits if low <= size < high]
        row[name] = (sum(found) / len(found) if found else float("nan"), len(found))
    large = [hit for r in results for size, hit in r.hits if size >= 24]
    every = [hit for r in results for _, hit in r.hits]
    row[">=24"] = (sum(large) / len(large), len(large))
    row["all"] = (sum(every) / len(every), len(every))
    row["fp_per_photo"] = sum(r.false_faces for r in results) / len(results)
    # Speed on the photos of 1 MP and more: small photos time the fixed costs, not the detector.
    timed = [r for r in results if r.megapixels >= 1.0] or results
    megapixels = sum(r.megapixels for r in timed)
    row["ms_per_mp"] = 1000 * sum(r.seconds for r in timed) / megapixels
    # CPU time (all threads) says what the detector costs when other programs share the cores.
    row["cpu_ms_per_mp"] = 1000 * sum(r.cpu_seconds for r in timed) / megapixels
    twelve = [r for r in results if r.megapixels >= 10]
    row["s_12mp"] = (twelve[0].seconds, twelve[0].cpu_seconds) if twelve else None
    return row
