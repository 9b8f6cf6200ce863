"""Fill the trust fields of an AnonymizationResult's per-face reports.

result = fa.anonymize(photo)
check_result(photo, result)      # sets identity_similarity, same_person, attributes per face
still_recognizable(result)       # faces whose anonymized version is still the same person
"""

from __future__ import annotations

import numpy as np

from faceanon.results import AnonymizationResult, FaceReport


def _rgb(image) -> np.ndarray:
    from faceanon.media.photo import load_image, split_alpha

    return split_alpha(load_image(image))[0]


def check_result(
    original,
    result: AnonymizationResult,
    identity: bool = True,
    attributes: bool = True,
    identity_model=None,
    attribute_model=None,
) -> AnonymizationResult:
    """Measure every reported face of `result` against `original` (path, PIL or RGB array), in place.

    Every face is measured, changed or not: an untouched face is honestly "same person"."""
    if result.faces:
        measure_reports(
            _rgb(original),
            _rgb(result.image),
            result.faces,
            identity=identity,
            attributes=attributes,
            identity_model=identity_model,
            attribute_model=attribute_model,
        )
    return result


def measure_reports(
    before: np.ndarray,
    after: np.ndarray,
    reports: list[FaceReport],
    identity: bool = True,
    attributes: bool = True,
    identity_model=None,
    attribute_model=None,
) -> None:
    """The one place that fills FaceReport.identity_similarity / same_person / attributes: each
    face of `before` against the same place of `after` (RGB arrays of one size), in place."""
    if not reports:
        return
    faces = [report.face for report in reports]
    if identity:
        _measure_identity(before, after, reports, identity_model)
    if attributes:
        from faceanon.trust.attributes import check_attributes

        for report, entry in zip(
            reports, check_attributes(before, after, faces, attribute_model), strict=True
        ):
            report.attributes = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in entry.items()}


def _measure_identity(before: np.ndarray, after: np.ndarray, reports: list[FaceReport], model=None) -> None:
    """Similarity and verdict for faces large enough to verify; "too small to verify" for the others
    (their similarity is noise, so none is reported)."""
    from faceanon.trust.identity import check_identity, get_identity_model, too_small_note, verifiable

    model = model or get_identity_model()
    large = [report for report in reports if verifiable(report.face.size)]
    for report in reports:
        if not verifiable(report.face.size):
            report.identity_similarity, report.same_person = None, None
            report.identity_note = too_small_note(report.face.size)
    for report, similarity in zip(
        large, check_identity(before, after, [r.face for r in large], model), strict=True
    ):
        report.identity_similarity = round(float(similarity), 4)
        report.same_person = bool(model.same_person(similarity))
        report.identity_note = ""


def still_recognizable(result: AnonymizationResult) -> list[FaceReport]:
    """Changed faces that the identity check still calls the same person (run check_result first)."""
    return [report for report in result.faces if report.changed and report.same_person]


def identity_verdict(report: FaceReport) -> str:
    """A short line for people: "different person (similarity 0.08)", "too small to verify (...)", or ""
    when not measured."""
    if report.identity_similarity is None:
        return report.identity_note
    from faceanon.trust.identity import DIFFERENT_PERSON, SAME_PERSON

    verdict = SAME_PERSON if report.same_person else DIFFERENT_PERSON
    return f"{verdict} (similarity {report.identity_similarity:.2f})"
