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
        return "too small to verify" if getattr(report, "identity_note", "") else "not checked"
    if report.same_person:
        return f"**same person** ({report.identity_similarity:.2f})"
    return f"different person ({report.identity_similarity:.2f})"


def _attributes(report) -> str:
    pose, expression = (
        (report.attributes or {}).get("pose_distance"),
        (report.attributes or {}).get("expression_distance"),
    )
    if pose is None or pose != pose:  # missing or NaN: the landmark model found no face
        return "—"
    text = f"pose {pose:.1f}°"
    return text + (
        f", expression {expression:.2f}" if expression == expression and expression is not None else ""
    )


COMPACT_FACES = 12  # above this many faces: counts only (the page shows a scrolling table instead)


def _done(r) -> str:
    done = r.method or "left as is"
    if r.method == "diffusion" and r.degree is not None:
        done += f" (d = {r.degree:g})"
    return done


def treatment_counts(result) -> str:
    """'16 new identities · 114 blur · 0 left as is' (what was done, counted)."""
    counts: dict[str, int] = {}
    for r in result.faces:
        what = {"diffusion": "new identity", None: "left as is"}.get(r.method, r.method)
        counts[what] = counts.get(what, 0) + 1
    plural = {"new identity": "new identities"}
    return " · ".join(
        f"{n} {plural.get(k, k) if n != 1 else k}"
        for k, n in sorted(counts.items(), key=lambda item: -item[1])
    )


def summary_markdown(result, seed: int) -> str:
    """A short Markdown summary: counts, then one table row per face (for up to COMPACT_FACES faces)."""
    found, changed = len(result.faces), result.num_changed
    if not found:
        head = "**No face found.** The photo is returned unchanged."
    else:
        head = f"**{changed} of {found} face{'s' if found != 1 else ''} changed** · seed {seed}"
    lines = [head]
    if found > COMPACT_FACES:
        still = sum(1 for r in result.faces if r.same_person)
        lines += [
            treatment_counts(result) + (f" · **{still} still recognizable**" if still else ""),
            "",
            "Each face is in the per-face table below and in the report.",
        ]
        return "\n".join(lines)
    note = _COUNTS.sub("", result.message or "").strip()  # the counts are already in the head line
    if note:
        lines.append(note)
    if found:
        lines += [
            "",
            "| Face | Done | Identity check | Pose / expression change | Note |",
            "|---|---|---|---|---|",
        ]
        for r in result.faces:
            lines.append(
                f"| #{r.face.index} | {_done(r)} | {_verdict(r)} | {_attributes(r)} | {r.message or ''} |"
            )
    return "\n".join(lines)


FACE_TABLE_HEADERS = ["Face", "Done", "Identity check", "Note"]


def face_rows(report: dict) -> list[list]:
    """The per-face table (report dict of /anonymize) as rows for a scrolling Dataframe."""
    rows = []
    for face in report.get("faces", []):
        done = face.get("method") or "left as is"
        if face.get("method") == "diffusion" and face.get("degree") is not None:
            done += f" (d = {face['degree']:g})"
        similarity = face.get("identity_similarity")
        check = (
            "not checked"
            if similarity is None
            else (f"{'same person' if face.get('same_person') else 'different person'} ({similarity:.2f})")
        )
        rows.append([f"#{face['face']['index']}", done, check, face.get("message") or ""])
    return rows
