"""Provenance: the invisible watermark survives JPEG q=75 and a half-size resize; PNG text chunk."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from faceanon.trust.watermark import (
    DETECTION_THRESHOLD,
    PNG_TEXT,
    add_watermark,
    detect_watermark,
    provenance_pnginfo,
    read_provenance,
)


def jpeg(image: Image.Image, quality: int = 75) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def half(image: Image.Image, resample=Image.Resampling.LANCZOS) -> Image.Image:
    return image.resize((image.width // 2, image.height // 2), resample)


@pytest.fixture(scope="module")
def photos(astronaut_rgb, grace_hopper_rgb, group_photo_rgb):
    return [Image.fromarray(a) for a in (astronaut_rgb, grace_hopper_rgb, group_photo_rgb)]


def test_watermark_survives_jpeg_and_half_resize(photos):
    for photo in photos:
        marked = add_watermark(photo)
        assert marked.size == photo.size
        difference = np.abs(np.asarray(marked, dtype=int) - np.asarray(photo, dtype=int))
        assert difference.max() <= 16 and 10 * np.log10(255**2 / np.mean(difference**2)) > 38  # invisible
        for attacked in (marked, jpeg(marked), half(marked), half(marked, Image.Resampling.BILINEAR),
                         jpeg(half(marked)), half(jpeg(marked))):
            found, score = detect_watermark(attacked)
            assert found and score >= 0.95, score  # measured: 1.00, 0.98 for jpeg(half(...))


def test_untouched_originals_are_not_detected(photos):
    from skimage import data

    for photo in [*photos, Image.fromarray(data.coffee()), Image.fromarray(data.chelsea())]:
        found, score = detect_watermark(photo)
        assert not found and score < DETECTION_THRESHOLD - 0.15  # measured <= 0.60


def test_alpha_is_kept(astronaut_rgb):
    rgba = Image.fromarray(astronaut_rgb).convert("RGBA")
    rgba.putalpha(128)
    marked = add_watermark(rgba)
    assert marked.mode == "RGBA" and marked.getchannel("A").getextrema() == (128, 128)
    assert detect_watermark(marked)[0]


def test_png_carries_only_the_provenance_text(grace_hopper_path, tmp_path):
    original = Image.open(grace_hopper_path)
    assert original.info  # the input JPEG has metadata (JFIF fields) that must not travel
    path = tmp_path / "out.png"
    add_watermark(original.convert("RGB")).save(path, pnginfo=provenance_pnginfo())
    saved = Image.open(path)
    assert read_provenance(saved) == PNG_TEXT and "faceanon" in PNG_TEXT
    assert set(saved.text) == {"Comment"}
    assert not {"exif", "icc_profile", "jfif", "dpi", "xmp"} & set(saved.info)
    assert read_provenance(Image.fromarray(np.zeros((4, 4, 3), np.uint8))) is None
