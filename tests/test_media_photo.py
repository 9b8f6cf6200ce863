"""Reading any photo right side up in RGB/RGBA, refusing bombs, writing no metadata."""

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from faceanon.errors import ImageInputError
from faceanon.media.photo import encode_image, load_image, save_image, split_alpha

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def _exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "PhoneMaker"  # Make
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2] = "N", (52.0, 31.0, 12.0)
    gps[3], gps[4] = "E", (13.0, 24.0, 36.0)
    return exif


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_exif_orientation_is_applied(grace_hopper_rgb):
    photo = Image.fromarray(grace_hopper_rgb)  # 512 wide, 600 tall
    stored = photo.transpose(Image.Transpose.ROTATE_90)  # what a phone held sideways stores
    data = _encoded(stored, "JPEG", exif=_exif_with_gps(orientation=6).tobytes(), quality=95)
    loaded = load_image(data)
    assert loaded.size == photo.size and loaded.mode == "RGB"
    assert np.abs(np.asarray(loaded).astype(int) - grace_hopper_rgb).mean() < 4


def test_rgba_png_keeps_alpha(astronaut_rgb, tmp_path):
    alpha = np.tile(np.linspace(0, 255, 512).astype(np.uint8), (512, 1))
    path = tmp_path / "a.png"
    Image.fromarray(np.dstack([astronaut_rgb, alpha])).save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGBA"
    rgb, kept = split_alpha(loaded)
    assert np.array_equal(kept, alpha) and np.array_equal(rgb, astronaut_rgb)


@pytest.mark.parametrize("mode", ["L", "1", "P", "LA", "I;16", "I", "F"])
def test_other_modes_become_rgb_or_rgba(astronaut_rgb, mode):
    grey = Image.fromarray(astronaut_rgb).convert("L")
    if mode == "I;16":
        source = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # 16-bit greyscale
        data = _encoded(source, "PNG")
    elif mode in ("I", "F"):
        values = np.asarray(grey).astype(np.float64) * (257 if mode == "I" else 1 / 255)
        source = Image.fromarray(values.astype(np.int32 if mode == "I" else np.float32))
        data = _encoded(source, "TIFF")
    else:
        data = _encoded(Image.fromarray(astronaut_rgb).convert(mode), "PNG")
    loaded = load_image(data)
    assert loaded.mode == ("RGBA" if mode == "LA" else "RGB") and loaded.size == (512, 512)
    if mode in ("L", "I;16", "I", "F"):
        assert np.abs(np.asarray(loaded)[..., 0].astype(int) - np.asarray(grey)).max() <= 1


def test_palette_with_transparency_keeps_it():
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 0
    image.paste(0, (0, 0, 16, 32))
    loaded = load_image(_encoded(image, "PNG", transparency=0))
    assert loaded.mode == "RGBA" and np.asarray(loaded)[0, 0, 3] == 0 and tuple(np.asarray(loaded)[0, 31]) == (255, 0, 0, 255)


def test_cmyk_jpeg_comes_out_rgb_with_the_right_colours():
    red = Image.new("RGB", (64, 48), (200, 30, 30))
    loaded = load_image(_encoded(red.convert("CMYK"), "JPEG", quality=95))
    assert loaded.mode == "RGB" and loaded.size == (64, 48)
    assert np.abs(np.asarray(loaded).astype(int) - (200, 30, 30)).max() < 12
    assert "icc_profile" not in loaded.info  # never a CMYK profile on RGB pixels


def test_webp_and_arrays_are_accepted(astronaut_rgb):
    assert load_image(_encoded(Image.fromarray(astronaut_rgb), "WEBP", quality=90)).size == (512, 512)
    assert load_image(astronaut_rgb).mode == "RGB"
    assert load_image(astronaut_rgb[..., 0]).mode == "RGB"
    assert load_image(astronaut_rgb.astype(np.float32) / 255).mode == "RGB"


def test_decompression_bombs_and_absurd_sizes_are_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 megapixels, a few kB on disk
    assert bomb.stat().st_size < 200_000
    with pytest.raises(ImageInputError, match="megapixels"):
        load_image(bomb)
    with pytest.raises(ImageInputError, match="pixels"):
        load_image(_encoded(Image.new("RGB", (4, 4)), "PNG"))


def test_unreadable_and_missing_files_say_what_to_do(tmp_path):
    junk = tmp_path / "notes.jpg"
    junk.write_text("this is not an image")
    with pytest.raises(ImageInputError, match="JPEG, PNG or WebP"):
        load_image(junk)
    with pytest.raises(ImageInputError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(_encoded(Image.new("RGB", (256, 256), (9, 9, 9)), "JPEG")[:300])
    with pytest.raises(ImageInputError, match="truncated|damaged"):
        load_image(truncated)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_no_metadata_survives_but_the_colour_profile_does(astronaut_rgb, tmp_path, suffix):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>secret-location</rdf:RDF></x:xmpmeta>'
    source = tmp_path / "in.jpg"
    Image.fromarray(astronaut_rgb).save(source, exif=_exif_with_gps().tobytes(), icc_profile=icc, xmp=xmp,
                                        comment=b"taken at home")
    assert Image.open(source).getexif().get_ifd(GPS_IFD)  # the input really has GPS
    out = save_image(load_image(source), tmp_path / f"out{suffix}")
    raw = out.read_bytes()
    reread = Image.open(out)
    exif = reread.getexif()  # a TIFF's own structure tags (size, ...) are read as EXIF: allowed
    assert not exif.get_ifd(GPS_IFD) and 0x010F not in exif and ORIENTATION not in exif
    assert "exif" not in reread.info and "xmp" not in reread.info
    assert b"PhoneMaker" not in raw and b"secret-location" not in raw and b"taken at home" not in raw
    assert reread.info.get("icc_profile") == icc


def test_alpha_is_flattened_for_jpeg_and_kept_for_png(astronaut_rgb):
    rgba = Image.fromarray(np.dstack([astronaut_rgb, np.zeros((512, 512), np.uint8)]))
    assert Image.open(io.BytesIO(encode_image(rgba, "JPEG"))).mode == "RGB"
    assert Image.open(io.BytesIO(encode_image(rgba, "PNG"))).mode == "RGBA"
    with pytest.raises(ImageInputError, match=".png"):
        save_image(rgba, "out.xyz")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_provenance_note_goes_into_png_only_and_no_input_metadata_travels(astronaut_rgb, tmp_path, suffix):
    from faceanon.trust.watermark import PNG_TEXT, PNG_TEXT_KEY, provenance_pnginfo

    source = tmp_path / "in.jpg"
    Image.fromarray(astronaut_rgb).save(source, exif=_exif_with_gps().tobytes(), comment=b"taken at home")
    out = save_image(load_image(source), tmp_path / f"out{suffix}", pnginfo=provenance_pnginfo())
    reread, raw = Image.open(out), out.read_bytes()
    assert b"PhoneMaker" not in raw and b"taken at home" not in raw and not reread.getexif().get_ifd(GPS_IFD)
    if suffix == ".png":
        assert reread.text == {PNG_TEXT_KEY: PNG_TEXT}  # the one text chunk, nothing else
    else:
        assert PNG_TEXT.encode() not in raw and "comment" not in reread.info
    assert encode_image(load_image(source), "PNG") == encode_image(load_image(source), "PNG", pnginfo=None)
