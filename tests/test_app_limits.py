"""The diffusion face limit counts the faces that would get a new identity, not those only blurred."""

from __future__ import annotations

import pytest
from PIL import Image

from faceanon.webapp import handlers as H
from faceanon.webapp import limits as L
from faceanon.webapp.service import ModelHost
from faceanon.webapp.testing import crowd_photo


@pytest.fixture(scope="module")
def mixed_crowd(tmp_path_factory):
    """16 faces of ~60 px above 72 faces of ~16 px (too small for diffusion: only blurred)."""
    folder = tmp_path_factory.mktemp("crowd")
    large = Image.open(crowd_photo(folder / "large.jpg", rows=4, columns=4, tile=96))
    small = Image.open(crowd_photo(folder / "small.jpg", rows=6, columns=12, tile=36))
    canvas = Image.new("RGB", (max(large.width, small.width), large.height + small.height), (235, 235, 235))
    canvas.paste(large, (0, 0))
    canvas.paste(small, (0, large.height))
    return canvas


def test_only_faces_large_enough_count(mixed_crowd):
    H.configure(ModelHost(), L.Limits(max_diffusion_faces=16))
    generated, too_small = H._count_generated(mixed_crowd, None)
    assert (generated, too_small) == (16, 72)
    L.check_face_count(generated, H._LIMITS, too_small)  # 16 new identities: within the limit
    with pytest.raises(Exception, match=r"16 selected faces are large enough .* \(72 smaller selected faces"):
        L.check_face_count(generated, L.Limits(max_diffusion_faces=12), too_small)
