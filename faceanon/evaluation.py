"""Evaluation (`faceanon evaluate`), above the anonymizer it drives: measure anonymization on your
own photos, as the paper's supplementary does.

For every photo of a folder, every degree d and seed (defaults as the supplementary: d in 0.3, 0.6,
0.9, 1.2, 1.4, 1.5 and 10 seeds), and for the redaction baselines (blur, pixelate, solid, which do
not depend on d or seed), each face of the photo is compared with its anonymized version:

* identity distance = 1 - cosine similarity of identity embeddings (Fig. 1; the paper used
  FaceNet, here ArcFace or SFace, see faceanon.trust.identity) and the same-person verdict;
* detection by two independent detectors, OpenCV's YuNet and InsightFace's SCRFD: a face counts
  as detected when a detection overlaps its original box with IoU >= 0.3 (Fig. 2);
* pose, expression and gaze distances from MediaPipe's face landmarker (Fig. 3).

Rows go to a CSV, one per face and run, written as each run finishes: an interrupted evaluation
resumes where it stopped (rows whose key is already in the CSV are not recomputed). Plots in the
style of Figs. 1-3 are written next to it. Reference rows with method "original" hold the
detectors' rates and attribute noise on the untouched photos.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceanon.media.atomic import atomic_output, write_text_atomic
from faceanon.registry import DEFAULTS, REDACTION_METHODS
from faceanon.results import DetectedFace

DEFAULT_DEGREES = (0.3, 0.6, 0.9, 1.2, 1.4, 1.5)
DEFAULT_SEEDS = 10
BASELINES = REDACTION_METHODS
# Two independent detectors judge whether an anonymized face is still found (supplementary Fig. 2).
DETECTORS = ("yunet", "scrfd")
MATCH_IOU = 0.3
CSV_NAME = "evaluation.csv"
FIGURE_NAMES = ("identity", "detection", "attributes")

KEY_COLUMNS = ["photo", "method", "degree", "seed", "steps", "guidance"]
COLUMNS = KEY_COLUMNS + [
    "face",
    "face_size",
    "applied",
    "identity_model",
    "identity_similarity",
    "identity_distance",
    "same_person",
    *(f"detected_{name}" for name in DETECTORS),
    "yaw_delta",
    "pitch_delta",
    "roll_delta",
    "pose_distance",
    "expression_distance",
    "gaze_distance",
    "note",
]
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Run:
    """One anonymization of one photo: a redaction baseline, the untouched original, or diffusion."""

    method: str  # "original", "blur", "pixelate", "solid" or "diffusion"
    degree: float | None = None
    seed: int | None = None

    def key(self, photo: str, steps: int, guidance: float) -> tuple[str, ...]:
        diffusion = self.method == "diffusion"
        return (
            photo,
            self.method,
            _fmt(self.degree),
            _fmt(self.seed),
            _fmt(steps if diffusion else None),
            _fmt(guidance if diffusion else None),
        )


@dataclass
class EvaluationResult:
    csv_path: Path | None
    figure_paths: list[Path]
    rows: list[dict]
    skipped_runs: int = 0  # runs found already done in the CSV
    notes: list[str] = field(default_factory=list)


def plan_runs(
    degrees: Sequence[float], seeds: int | Sequence[int], baselines: Sequence[str], diffusion: bool
) -> list[Run]:
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    runs = [Run("original"), *(Run(method) for method in baselines)]
    if diffusion:
        runs += [Run("diffusion", float(d), s) for d in degrees for s in seed_list]
    return runs


class Evaluator:
    """Loads the measuring models once; `measure(original, result, faces)` -> one row per face."""

    def __init__(self, identity_model=None, attribute_model=None, detectors=None):
        from faceanon.faces import create_detector
        from faceanon.trust.attributes import get_attribute_model
        from faceanon.trust.identity import get_identity_model

        self.identity = identity_model or get_identity_model()
        self.attributes = attribute_model or get_attribute_model()
        self.detectors = detectors or {name: create_detector(name) for name in DETECTORS}

    def measure(self, original: np.ndarray, result: np.ndarray, faces: Sequence[DetectedFace]) -> list[dict]:
        from faceanon.trust.attributes import check_attributes
        from faceanon.trust.identity import check_identity

        similarities = check_identity(original, result, faces, self.identity)
        attributes = check_attributes(original, result, faces, self.attributes)
        found = {name: detector.detect(result) for name, detector in self.detectors.items()}
        rows = []
        for face, similarity, attrs in zip(faces, similarities, attributes, strict=True):
            row = {
                "face": face.index,
                "face_size": round(face.size, 1),
                "identity_model": self.identity.name,
                "identity_similarity": similarity,
                "identity_distance": 1 - similarity,
                "same_person": self.identity.same_person(similarity),
            }
            for name, detections in found.items():
                row[f"detected_{name}"] = any(box_iou(face.box, d.box) >= MATCH_IOU for d in detections)
            row.update({k: v for k, v in attrs.items() if k in COLUMNS})
            rows.append(row)
        return rows


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate_image(
    anonymizer,
    image,
    name: str,
    runs: Iterable[Run],
    evaluator: Evaluator,
    steps: int = DEFAULTS.steps,
    guidance: float = DEFAULTS.guidance,
) -> Iterator[tuple[Run, list[dict]]]:
    """Anonymize one photo for each run and yield (run, rows). Faces are found once, on the original."""
    from faceanon.media.photo import load_image, split_alpha

    original, _ = split_alpha(load_image(image))
    faces = anonymizer.detect(original)
    for run in runs:
        base = dict(zip(KEY_COLUMNS, run.key(name, steps, guidance), strict=True))
        if not faces:
            yield run, [{**base, "note": "no face found in the photo"}]
            continue
        result, applied = _anonymized(anonymizer, original, faces, run, steps, guidance)
        rows = evaluator.measure(original, result, faces)
        yield run, [{**base, "applied": applied.get(row["face"], run.method), **row} for row in rows]


def _anonymized(anonymizer, original, faces, run: Run, steps, guidance) -> tuple[np.ndarray, dict]:
    if run.method == "original":
        return original, {}
    out = anonymizer.anonymize(
        original,
        degree=run.degree if run.degree is not None else 1.25,
        seed=run.seed or 0,
        steps=steps,
        guidance=guidance,
        method=run.method,
        faces=faces,
        leak_guard=False,
    )  # the curves measure the method itself, not the guard
    # Small faces are redacted instead of generated: say what was actually done to each face.
    applied = {report.face.index: report.method or "unchanged" for report in out.faces}
    return np.asarray(out.image.convert("RGB")), applied


def photos_in(folder: str | Path) -> list[Path]:
    from faceanon.errors import ImageInputError
    from faceanon.media.photo import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise ImageInputError(f"{folder} is not a folder. Give `faceanon evaluate` a folder of photos.")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not photos:
        raise ImageInputError(f"No photos (.jpg, .png, ...) were found in {folder}.")
    return photos


def evaluate(
    folder: str | Path,
    out_dir: str | Path,
    anonymizer=None,
    degrees: Sequence[float] = DEFAULT_DEGREES,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    baselines: Sequence[str] = BASELINES,
    diffusion: bool | None = None,
    steps: int = DEFAULTS.steps,
    guidance: float = DEFAULTS.guidance,
    evaluator: Evaluator | None = None,
    progress: Progress | None = None,
    progress_bar: bool = True,
) -> EvaluationResult:
    """Evaluate every photo of `folder`; write `evaluation.csv` and the plots into `out_dir`.

    diffusion: None runs the diffusion method when its weights are available (the baselines always
    run). Runs already in the CSV (same photo, method, d, seed, steps, guidance) are skipped."""
    from faceanon.anonymizer import FaceAnonymizer

    photos = photos_in(folder)
    anonymizer = anonymizer or FaceAnonymizer(
        identity_check=False
    )  # the Evaluator measures every face itself
    notes = []
    if diffusion is None:
        diffusion = anonymizer.diffusion_available
        if not diffusion:
            notes.append(
                "Diffusion weights not available, only the redaction baselines were measured: "
                + anonymizer.diffusion_unavailable_reason
            )
    runs = plan_runs(degrees, seeds, baselines, diffusion)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / CSV_NAME
    done = _done_keys(csv_path)
    todo = [(p, [r for r in runs if r.key(p.name, steps, guidance) not in done]) for p in photos]
    total = sum(len(r) for _, r in todo)
    evaluator = evaluator or Evaluator()
    with _progress_bar(total, progress_bar) as bar, _csv_appender(csv_path) as write:
        finished = 0
        for photo, photo_runs in todo:
            if not photo_runs:
                continue
            for run, rows in evaluate_image(
                anonymizer, photo, photo.name, photo_runs, evaluator, steps, guidance
            ):
                write(rows)
                finished += 1
                bar.update(1)
                if progress:
                    progress(
                        finished / max(total, 1),
                        f"{photo.name}: {run.method} d={_fmt(run.degree)} seed={_fmt(run.seed)}",
                    )
    rows = read_rows(csv_path)
    figures = save_figures(rows, out_dir, identity_threshold=evaluator.identity.threshold)
    return EvaluationResult(
        csv_path, figures, rows, skipped_runs=len(runs) * len(photos) - total, notes=notes
    )


def evaluate_photo(
    anonymizer,
    image,
    degrees: Sequence[float] = DEFAULT_DEGREES,
    seeds: int | Sequence[int] = 3,
    baselines: Sequence[str] = BASELINES,
    steps: int = DEFAULTS.steps,
    guidance: float = DEFAULTS.guidance,
    evaluator: Evaluator | None = None,
    progress: Progress | None = None,
    on_run: Callable[[int, int, Run], None] | None = None,
):
    """For the app: evaluate one photo in memory; returns (rows, [identity, detection, attributes]
    PIL figures). `on_run(done, total, run)` is told after each run (the structured form of
    `progress`)."""
    evaluator = evaluator or Evaluator()
    runs = plan_runs(degrees, seeds, baselines, anonymizer.diffusion_available)
    rows = []
    for done, (run, run_rows) in enumerate(
        evaluate_image(anonymizer, image, "photo", runs, evaluator, steps, guidance), 1
    ):
        rows += [{c: _cell(r.get(c)) for c in COLUMNS} for r in run_rows]
        if progress:
            progress(done / len(runs), f"{run.method} d={_fmt(run.degree)} seed={_fmt(run.seed)}")
        if on_run:
            on_run(done, len(runs), run)
    rows = [_parse(r) for r in rows]
    figures = [_to_pil(figure) for figure in make_figures(rows, evaluator.identity.threshold)]
    return rows, figures


# ---------------------------------------------------------------------------------------------
# CSV


def _done_keys(csv_path: Path) -> set[tuple[str, ...]]:
    return {tuple(row[c] for c in KEY_COLUMNS) for row in _complete_rows(csv_path)}


def _complete_rows(csv_path: Path) -> list[dict]:
    """The rows of an existing CSV; a row cut short (a CSV written before writes were atomic, or
    edited) is dropped, so its run is measured again instead of counted as done."""
    if not csv_path.exists():
        return []
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is not None and reader.fieldnames != COLUMNS:
            raise ValueError(
                f"{csv_path} was written by another version of `faceanon evaluate` (its columns "
                "differ). Choose another output folder or move the old CSV away."
            )
        return [row for row in reader if None not in row.values() and None not in row]


class _csv_appender:
    """Adds each run's rows and rewrites the CSV atomically (media.atomic) after each run: an
    interruption or a full disk loses at most that run and never leaves a half-written row."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.rows = _complete_rows(self.path)
        self.write([])  # a CSV with its header at least (and without cut rows) from the start
        return self.write

    def write(self, rows: list[dict]) -> None:
        self.rows.extend({c: _cell(row.get(c)) for c in COLUMNS} for row in rows)
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buffer.getvalue())

    def __exit__(self, *exc):
        return False


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _cell(value) -> str:
    if isinstance(value, bool | np.bool_):
        return "1" if value else "0"
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else f"{float(value):.5f}"
    return _fmt(value)


def read_rows(csv_path: str | Path) -> list[dict]:
    with Path(csv_path).open(newline="") as handle:
        return [_parse(row) for row in csv.DictReader(handle)]


_NUMERIC = {
    "degree",
    "seed",
    "steps",
    "guidance",
    "face",
    "face_size",
    "identity_similarity",
    "identity_distance",
    "same_person",
    *(f"detected_{n}" for n in DETECTORS),
    "yaw_delta",
    "pitch_delta",
    "roll_delta",
    "pose_distance",
    "expression_distance",
    "gaze_distance",
}


def _parse(row: dict) -> dict:
    return {
        k: (float(v) if v not in ("", None) else math.nan) if k in _NUMERIC else v for k, v in row.items()
    }


# ---------------------------------------------------------------------------------------------
# Figures in the style of the supplementary's Figs. 1-3


def make_figures(rows: list[dict], identity_threshold: float | None = None) -> list:
    """matplotlib Figures: identity distance vs d, detection rate vs d, attribute distances vs d."""
    return [_identity_figure(rows, identity_threshold), _detection_figure(rows), _attributes_figure(rows)]


def save_figures(rows: list[dict], out_dir: Path, identity_threshold: float | None = None) -> list[Path]:
    paths = []
    for name, figure in zip(FIGURE_NAMES, make_figures(rows, identity_threshold), strict=True):
        path = Path(out_dir) / f"evaluation_{name}.png"
        with atomic_output(path) as temporary:
            figure.savefig(temporary, dpi=110, format="png")
        paths.append(path)
    return paths


def summarize(
    rows: list[dict], column: str
) -> tuple[list[float], list[float], list[float], dict[str, float]]:
    """(degrees, means, standard deviations) of `column` over the diffusion rows, and the mean per
    baseline/original method. NaN values (unmeasurable faces) are left out."""
    by_degree: dict[float, list[float]] = {}
    by_method: dict[str, list[float]] = {}
    for row in rows:
        value = row.get(column, math.nan)
        if not isinstance(value, float) or math.isnan(value):
            continue
        if row["method"] == "diffusion":
            by_degree.setdefault(row["degree"], []).append(value)
        else:
            by_method.setdefault(row["method"], []).append(value)
    degrees = sorted(by_degree)
    return (
        degrees,
        [float(np.mean(by_degree[d])) for d in degrees],
        [float(np.std(by_degree[d])) for d in degrees],
        {m: float(np.mean(v)) for m, v in by_method.items()},
    )


_BASELINE_STYLE = {
    "original": ("k", ":"),
    "blur": ("tab:blue", "--"),
    "pixelate": ("tab:orange", "--"),
    "solid": ("tab:gray", "--"),
}


def _figure(columns: int = 1, width: float = 5.6):
    # A bare Figure (no pyplot): no global backend state, safe in the web app's worker threads.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * columns, 3.9))
    axes = figure.subplots(1, columns)
    return figure, list(np.atleast_1d(axes))


def _style(ax, title: str, ylabel: str, xlabel: str = "anonymization degree d") -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _plot_column(ax, rows, column, label, scale=1.0, color="tab:red", marker="o", baselines=True):
    degrees, means, stds, per_method = summarize(rows, column)
    if degrees:
        ax.errorbar(
            degrees,
            np.multiply(means, scale),
            yerr=np.multiply(stds, scale),
            color=color,
            marker=marker,
            capsize=3,
            label=label,
        )
    for method, mean in per_method.items() if baselines else ():
        color_b, style = _BASELINE_STYLE.get(method, ("tab:green", "--"))
        ax.axhline(mean * scale, color=color_b, linestyle=style, linewidth=1, label=method)
    if not degrees and not per_method:
        ax.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=ax.transAxes)
    _degree_axis(ax, degrees)


def _degree_axis(ax, degrees) -> None:
    """The supplementary's x range (0.3 .. 1.5) even when only baselines were measured."""
    ax.set_xlim(0.2, max([1.5, *degrees]) + 0.1)


def _identity_figure(rows, threshold):
    figure, (ax,) = _figure()
    _style(ax, "Degree of anonymization vs identity distance (cf. Fig. 1)", "identity cosine distance")
    _plot_column(ax, rows, "identity_distance", "faceanon (mean ± sd)")
    if threshold is not None:
        ax.axhline(
            1 - threshold, color="tab:purple", linewidth=1.5, label=f"same person below (1 - {threshold:g})"
        )
    _legend(ax)
    figure.tight_layout()
    return figure


def _detection_figure(rows):
    figure, (ax, bars) = _figure(2, 4.8)
    _style(ax, "Face detection rate vs d (cf. Fig. 2)", "detection rate (%)")
    _style(bars, "Detection rate: original and redaction", "detection rate (%)", "")
    methods = [m for m in ("original", *BASELINES) if any(r["method"] == m for r in rows)]
    for offset, (name, color, marker) in enumerate((("yunet", "tab:red", "o"), ("scrfd", "tab:blue", "s"))):
        degrees, means, _, per_method = summarize(rows, f"detected_{name}")
        if degrees:
            ax.plot(
                degrees,
                np.multiply(means, 100),
                color=color,
                marker=marker,
                label="YuNet" if name == "yunet" else "SCRFD",
            )
        positions = np.arange(len(methods)) + (offset - 0.5) * 0.38
        bars.bar(
            positions,
            [per_method.get(m, 0) * 100 for m in methods],
            width=0.36,
            color=color,
            label="YuNet" if name == "yunet" else "SCRFD",
        )
    degrees = summarize(rows, "detected_yunet")[0]
    if not degrees:
        ax.text(0.5, 0.5, "no diffusion runs", ha="center", va="center", transform=ax.transAxes)
    _degree_axis(ax, degrees)
    bars.set_xticks(range(len(methods)), methods)
    for axis in (ax, bars):
        axis.set_ylim(0, 105)
        _legend(axis, "lower left")
    figure.tight_layout()
    return figure


def _attributes_figure(rows):
    figure, axes = _figure(3, 4.4)
    panels = (
        ("pose_distance", "pose distance (degrees)", "(a) pose"),
        ("expression_distance", "expression distance (blendshape L2)", "(b) expression"),
        ("gaze_distance", "gaze distance (eyeLook L2)", "(c) gaze"),
    )
    for ax, (column, ylabel, title) in zip(axes, panels, strict=True):
        _style(ax, f"{title} (cf. Fig. 3)", ylabel)
        _plot_column(ax, rows, column, "faceanon")
    _legend(axes[0])
    figure.tight_layout()
    return figure


def _legend(ax, loc: str = "best") -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc=loc)


def _to_pil(figure):
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


class _progress_bar:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled

    def __enter__(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc="faceanon evaluate", unit="run", disable=not self.enabled)
        return self.bar

    def __exit__(self, *exc):
        self.bar.close()
