"""The per-face report as people read it: what was done to each face and whether it still matches."""

from __future__ import annotations

import logging
import re

from PIL import Image

log = logging.getLogger(__name__)
_COUNTS = re.compile(r"^\d+ face\(s\) found, \d+ changed\.")


def add_identity_checks(original: Image.Image, result) -> None:
    """Fills each changed face's identity similarity, when the trust checks are installed and the
    anonymizer did not fill them already. Never fails the request: the image is still the answer."""
    todo = [r for r in result.faces if r.changed and r.identity_similarity is None]
    if not todo:
        return
    try:
        import numpy as np

        from faceanon.trust import IdentityModel, check_identity
    except ImportError:
        return
    try:
        model = _identity_model(IdentityModel)
        scores = check_identity(np.asarray(original.convert("RGB")), np.asarray(result.image.convert("RGB")),
                                [r.face for r in todo], model=model)
        for report, score in zip(todo, scores, strict=True):
            if score is None:
                continue
            report.identity_similarity = float(score)
            report.same_person = bool(score >= model.threshold)
    except Exception:  # a failing check is reported as "not checked", not as a failed request
        log.exception("identity check failed")


_MODEL = None


def _identity_model(factory):
    global _MODEL
    if _MODEL is None:
        _MODEL = factory()
    return _MODEL


def _verdict(report) -> str:
    if report.identity_similarity is None:
        return "not checked"
    if report.same_person:
        return f"**same person** ({report.identity_similarity:.2f})"
    return f"different person ({report.identity_similarity:.2f})"


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
        lines += ["", "| Face | Done | Identity check | Note |", "|---|---|---|---|"]
        for r in result.faces:
            done = r.method or "left as is"
            if r.method == "diffusion" and r.degree is not None:
                done += f" (d = {r.degree:g})"
            lines.append(f"| #{r.face.index} | {done} | {_verdict(r) if r.changed else '—'} | {r.message or ''} |")
    return "\n".join(lines)
