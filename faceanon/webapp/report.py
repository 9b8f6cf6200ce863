"""The per-face report as people read it: what was done to each face and whether it still matches."""

from __future__ import annotations

import logging
import re

from PIL import Image

log = logging.getLogger(__name__)
_COUNTS = re.compile(r"^\d+ face\(s\) found, \d+ changed\.")


def add_identity_checks(original: Image.Image, result) -> None:
    """Fills each face's identity similarity and pose/expression deltas (faceanon.trust), unless the
    anonymizer did already. Never fails the request: the image is still the answer."""
    unmeasured = [r for r in result.faces if r.identity_similarity is None]
    if not unmeasured:
        return
    try:
        from faceanon.results import AnonymizationResult
        from faceanon.trust import check_result
    except ImportError:
        return
    try:  # only the faces the anonymizer did not measure (e.g. those left untouched)
        check_result(original, AnonymizationResult(image=result.image, faces=unmeasured))
    except Exception:  # a failing check is shown as "not checked", not as a failed request
        log.exception("identity check failed")


def _verdict(report) -> str:
    if report.identity_similarity is None:
        return "not checked"
    if report.same_person:
        return f"**same person** ({report.identity_similarity:.2f})"
    return f"different person ({report.identity_similarity:.2f})"


def _attributes(report) -> str:
    pose, expression = (report.attributes or {}).get("pose_distance"), (report.attributes or {}).get("expression_distance")
    if pose is None or pose != pose:  # missing or NaN: the landmark model found no face
        return "—"
    text = f"pose {pose:.1f}°"
    return text + (f", expression {expression:.2f}" if expression == expression and expression is not None else "")


def summary_markdown(result, seed: int) -> str:
    """A short Markdown summary: counts, then one table row per face."""
    found, changed = len(result.faces), result.num_changed
    if not found:
        head = "**No face found.** The photo is returned unchanged."
    else:
        head = f"**{changed} of {found} face{'s' if found != 1 else ''} changed** · seed {seed}"
    lines = [head]
    note = _COUNTS.sub("", result.message or "").strip()  # the counts are already in the head line
    if note:
        lines.append(note)
    if found:
        lines += ["", "| Face | Done | Identity check | Pose / expression change | Note |", "|---|---|---|---|---|"]
        for r in result.faces:
            done = r.method or "left as is"
            if r.method == "diffusion" and r.degree is not None:
                done += f" (d = {r.degree:g})"
            lines.append(f"| #{r.face.index} | {done} | {_verdict(r)} | {_attributes(r)} | {r.message or ''} |")
    return "\n".join(lines)
