"""check_result fills the per-face trust fields of an AnonymizationResult."""

from __future__ import annotations

from faceanon.anonymizer import FaceAnonymizer
from faceanon.trust.checks import check_result, identity_verdict, still_recognizable


def test_check_result_fills_reports(group_photo_rgb):
    photo = group_photo_rgb[:450, :700].copy()  # three faces, to keep it quick
    anonymizer = FaceAnonymizer(pipeline=None)
    faces = anonymizer.detect(photo)
    result = anonymizer.anonymize(photo, method="pixelate", faces=[faces[0].index, faces[1].index])
    check_result(photo, result)
    changed = [r for r in result.faces if r.changed]
    untouched = [r for r in result.faces if not r.changed]
    assert len(changed) == 2 and untouched
    for report in changed:
        assert report.identity_similarity < 0.3 and report.same_person is False
        assert identity_verdict(report).startswith("different person (similarity ")
    for report in untouched:
        assert report.identity_similarity > 0.99 and report.same_person is True
        assert report.attributes["pose_distance"] == 0
    assert still_recognizable(result) == []
    assert result.to_dict()["faces"][0]["same_person"] is False
