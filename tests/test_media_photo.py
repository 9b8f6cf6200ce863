"""Reading any photo right side up in RGB/RGBA, refusing bombs, writing no metadata."""

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from faceanon.errors import ImageInputError
from faceanon.media.photo import encode_image, load_image, save_image, split_alpha, srgb_profile

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
    assert (
        loaded.mode == "RGBA"
        and np.asarray(loaded)[0, 0, 3] == 0
        and tuple(np.asarray(loaded)[0, 31]) == (255, 0, 0, 255)
    )


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
def test_no_metadata_survives_but_the_colour_profile_is_standard_srgb(astronaut_rgb, tmp_path, suffix):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>secret-location</rdf:RDF></x:xmpmeta>'
    source = tmp_path / "in.jpg"
    Image.fromarray(astronaut_rgb).save(
        source, exif=_exif_with_gps().tobytes(), icc_profile=icc, xmp=xmp, comment=b"taken at home"
    )
    assert Image.open(source).getexif().get_ifd(GPS_IFD)  # the input really has GPS
    out = save_image(load_image(source), tmp_path / f"out{suffix}")
    raw = out.read_bytes()
    reread = Image.open(out)
    exif = reread.getexif()  # a TIFF's own structure tags (size, ...) are read as EXIF: allowed
    assert not exif.get_ifd(GPS_IFD) and 0x010F not in exif and ORIENTATION not in exif
    assert "exif" not in reread.info and "xmp" not in reread.info
    assert b"PhoneMaker" not in raw and b"secret-location" not in raw and b"taken at home" not in raw
    assert reread.info.get("icc_profile") == srgb_profile() != icc  # faceanon's own profile, not the input's
    assert np.abs(np.asarray(reread.convert("RGB")).astype(int) - astronaut_rgb).mean() < 4  # sRGB -> sRGB


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


# ---------------------------------------------------------------------------------------------
# Hostile and broken inputs (issue 10 points 4-6)


def _with_private_tag(profile: bytes, payload: bytes) -> bytes:
    """A valid ICC profile with one more tag ('zzzz', private) holding `payload`."""
    import struct

    count = struct.unpack(">I", profile[128:132])[0]
    table = [struct.unpack(">4sII", profile[132 + 12 * i : 144 + 12 * i]) for i in range(count)]
    body, pad = profile[132 + 12 * count :], (-(len(profile) + 12)) % 4
    table = [(sig, offset + 12, size) for sig, offset, size in table] + [
        (b"zzzz", len(profile) + 12 + pad, len(payload))
    ]
    out = bytearray(
        profile[:128]
        + struct.pack(">I", count + 1)
        + b"".join(struct.pack(">4sII", *t) for t in table)
        + body
        + b"\0" * pad
        + payload
    )
    out[0:4] = struct.pack(">I", len(out))
    return bytes(out)


def test_a_png_text_chunk_bomb_is_an_image_input_error(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "A" * 20_000_000, zip=True)  # 20 KB on disk, 20 MB once decompressed
    bomb = tmp_path / "text-bomb.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(bomb, pnginfo=info)
    with pytest.raises(ImageInputError, match="could not be decoded.*re-saving"):
        load_image(bomb)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
def test_a_4_megabyte_colour_profile_gives_an_output_faceanon_can_read(grace_hopper_rgb, tmp_path, suffix):
    big = _with_private_tag(srgb_profile(), np.random.default_rng(0).bytes(4_000_000))
    assert ImageCms.ImageCmsProfile(io.BytesIO(big)).profile.xcolor_space.strip() == "RGB"  # valid profile
    source = tmp_path / "big-profile.jpg"
    Image.fromarray(grace_hopper_rgb).save(source, icc_profile=big, quality=95)
    out = save_image(load_image(source), tmp_path / f"out{suffix}")
    assert out.stat().st_size < 1_000_000
    with Image.open(out) as reread:
        reread.load()
        assert reread.info["icc_profile"] == srgb_profile()
    assert load_image(out).size == (512, 600)


@pytest.mark.parametrize("hide", ["appended", "private tag"])
def test_nothing_hidden_in_a_colour_profile_reaches_the_output(astronaut_rgb, tmp_path, hide):
    secret = b"meet me at 52.5200N 13.4050E, ask for the photographer - 0123456789"[:60]
    real = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    profile = real + secret if hide == "appended" else _with_private_tag(real, secret)
    source = tmp_path / "in.png"
    Image.fromarray(astronaut_rgb).save(source, icc_profile=profile)
    assert secret in Image.open(source).info["icc_profile"]  # the input really carries it
    for suffix in (".png", ".jpg", ".webp", ".tif"):
        raw = save_image(load_image(source), tmp_path / f"out{suffix}").read_bytes()
        assert secret not in raw and secret[:20] not in raw
        assert secret[:20] not in Image.open(io.BytesIO(raw)).info.get("icc_profile", b"")


def test_a_wide_gamut_photo_is_converted_to_srgb(tmp_path):
    """Pixels in another RGB space (here LittleCMS's built-in Lab-based 'sRGB' variants are not at
    hand, so a real different profile: D50-white-point sRGB) are converted, not just relabelled."""
    other = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    lab = ImageCms.createProfile("LAB")
    assert lab  # LittleCMS can make non-RGB profiles: those are dropped, never attached to RGB pixels
    source = tmp_path / "lab-tagged.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(
        source, icc_profile=ImageCms.ImageCmsProfile(lab).tobytes()
    )
    loaded = load_image(source)
    assert "icc_profile" not in loaded.info and np.asarray(loaded)[0, 0].tolist() == [200, 30, 30]
    source = tmp_path / "srgb-tagged.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(source, icc_profile=other.tobytes())
    assert np.abs(np.asarray(load_image(source)).astype(int) - (200, 30, 30)).max() <= 1


def _cut_jpeg(rgb: np.ndarray, size: tuple[int, int], keep: int, progressive: bool = False) -> bytes:
    """A real photo enlarged to `size`, cut after `keep` bytes, with the end marker put back: what
    an interrupted download or a careless proxy leaves. libjpeg decodes it, filling grey."""
    full = _encoded(Image.fromarray(rgb).resize(size), "JPEG", quality=90, progressive=progressive)
    assert len(full) > 3 * keep
    return full[:keep] + b"\xff\xd9"


@pytest.mark.parametrize("progressive", [False, True])
def test_a_truncated_jpeg_is_refused_not_filled_with_grey(astronaut_rgb, progressive):
    data = _cut_jpeg(astronaut_rgb, (1500, 1500), 75_000, progressive)
    Image.open(io.BytesIO(data)).load()  # Pillow alone decodes it without a word
    with pytest.raises(ImageInputError, match="truncated"):
        load_image(data)
    with pytest.raises(ImageInputError, match="truncated|damaged"):
        load_image(data[:-2])  # without the end marker Pillow itself notices


def test_a_grey_jpeg_and_a_cmyk_jpeg_pass_the_truncation_check(astronaut_rgb):
    grey = _encoded(Image.fromarray(astronaut_rgb).convert("L"), "JPEG", quality=90)
    assert load_image(grey).size == (512, 512)
    with pytest.raises(ImageInputError, match="truncated"):
        load_image(grey[:20_000] + b"\xff\xd9")
    assert load_image(_encoded(Image.fromarray(astronaut_rgb).convert("CMYK"), "JPEG")).mode == "RGB"


_RSS_PROBE = r"""
import gc, io, json, resource, sys
import numpy as np
from PIL import Image
from faceanon.errors import ImageInputError
from faceanon.media.photo import load_image

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def peak_mb():  # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its (large) parent's
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

truncated, whole = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
load_image(Image.new("RGB", (64, 64)))  # imports and first-use allocations out of the way
gc.collect(); before = rss_mb()
try:
    load_image(truncated)
    refused = False
except ImageInputError:
    refused = True
gc.collect(); after_refusal = rss_mb()
peak_refusal = peak_mb()
image = load_image(whole)
loaded = rss_mb()
del image
gc.collect(); after_release = rss_mb()
print(json.dumps(dict(refused=refused, before=before, after_refusal=after_refusal, peak_refusal=peak_refusal,
                      loaded=loaded, after_release=after_release)))
"""


def test_memory_a_refused_36_megapixel_jpeg_never_allocates_and_a_loaded_one_returns(astronaut_rgb, tmp_path):
    """RSS in a fresh process: refusing the 6000x6000 truncated file costs no 108 MB frame, and the
    memory of a 24 MP photo that was loaded comes back once the image is dropped."""
    import json
    import subprocess
    import sys

    truncated, whole = tmp_path / "cut.jpg", tmp_path / "whole.jpg"
    truncated.write_bytes(_cut_jpeg(astronaut_rgb, (6000, 6000), 75_000))
    whole.write_bytes(_encoded(Image.fromarray(astronaut_rgb).resize((6000, 4000)), "JPEG", quality=85))
    done = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(truncated), str(whole)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rss = json.loads(done.stdout)
    print("RSS MB:", {k: round(v, 1) if isinstance(v, float) else v for k, v in rss.items()})
    assert rss["refused"]
    assert (
        rss["after_refusal"] - rss["before"] < 20 and rss["peak_refusal"] - rss["before"] < 60
    )  # 108 MB frame
    assert rss["loaded"] - rss["before"] > 60  # the 72 MB photo was really held ...
    assert rss["after_release"] - rss["before"] < 20  # ... and given back


# ---------------------------------------------------------------------------------------------
# Greyscale, toned photos, frames (issue 12 point 8, issue 10 point 3)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("L", "JPEG"), ("LA", "PNG"), ("1", "PNG"), ("I;16", "PNG"), ("L", "TIFF")],
)
def test_a_greyscale_photo_is_written_back_greyscale(astronaut_rgb, tmp_path, mode, fmt):
    from faceanon.media.photo import SOURCE_MODE

    grey = Image.fromarray(astronaut_rgb).convert("L")
    source = {
        "L": grey,
        "1": grey.convert("1"),
        "LA": grey.convert("LA"),
        "I;16": Image.fromarray(np.asarray(grey).astype(np.uint16) * 257),
    }[mode]
    loaded = load_image(_encoded(source, fmt))
    assert loaded.mode in ("RGB", "RGBA") and loaded.info[SOURCE_MODE] == mode  # the anonymizer works on RGB
    reread = Image.open(io.BytesIO(encode_image(loaded, fmt)))
    assert reread.mode == ("LA" if mode == "LA" else "L")


def test_restore_mode_gives_the_output_the_look_of_the_input(astronaut_rgb):
    from faceanon.media.photo import describe_tone, is_grayscale, restore_mode

    colour_output = astronaut_rgb.copy()  # stands in for an anonymized output: colour faces
    stored = load_image(_encoded(Image.fromarray(astronaut_rgb).convert("L"), "PNG"))
    restored = restore_mode(colour_output, like=stored)
    assert restored.mode == "L" and is_grayscale(restored)
    assert Image.open(io.BytesIO(encode_image(restored, "PNG"))).mode == "L"
    grey_rgb = load_image(_encoded(Image.fromarray(astronaut_rgb).convert("L").convert("RGB"), "JPEG"))
    assert describe_tone(grey_rgb).kind == "neutral"
    restored = np.asarray(restore_mode(colour_output, like=grey_rgb)).astype(int)
    assert restored.shape == (512, 512, 3) and (restored.max(-1) - restored.min(-1)).max() == 0
    # sepia: R, G, B in fixed proportions of the luminance, saved as JPEG
    luminance = np.asarray(Image.fromarray(astronaut_rgb).convert("L")).astype(float)
    sepia = np.clip(luminance[..., None] * (1.0, 0.85, 0.62), 0, 255).astype(np.uint8)
    sepia_photo = load_image(_encoded(Image.fromarray(sepia), "JPEG", quality=85))
    tone = describe_tone(sepia_photo)
    assert tone.kind == "toned" and tone.tone[0] > tone.tone[1] > tone.tone[2]
    assert np.allclose(np.array(tone.tone) / tone.tone[0], (1.0, 0.85, 0.62), atol=0.05)
    restored = restore_mode(colour_output, like=sepia_photo)
    assert describe_tone(restored).kind == "toned" and restored.mode == "RGB"
    # a colour photo: untouched, and colour is never dropped when saving
    assert (
        restore_mode(colour_output, like=Image.fromarray(astronaut_rgb)).tobytes() == colour_output.tobytes()
    )
    stored_but_now_colour = Image.fromarray(colour_output)
    stored_but_now_colour.info.update(stored.info)
    assert Image.open(io.BytesIO(encode_image(stored_but_now_colour, "PNG"))).mode == "RGB"


def test_colour_photos_are_not_taken_for_monochrome(astronaut_rgb, grace_hopper_rgb, group_photo_rgb):
    from skimage import data

    from faceanon.media.photo import is_grayscale

    for rgb in (
        astronaut_rgb,
        grace_hopper_rgb,
        group_photo_rgb,
        data.coffee(),
        data.chelsea(),
        data.rocket(),
    ):
        assert not is_grayscale(Image.fromarray(rgb))


def test_frames_of_animations_and_multipage_files_are_counted(astronaut_rgb, tmp_path):
    from faceanon.media.photo import frame_count

    frames = [Image.fromarray(np.roll(astronaut_rgb, 40 * i, axis=1)) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "a.tif", save_all=True, append_images=frames[1:2])
    assert frame_count(tmp_path / "a.gif") == 3 and frame_count(tmp_path / "a.tif") == 2
    assert frame_count(_encoded(frames[0], "PNG")) == 1
    assert load_image(tmp_path / "a.gif").size == (512, 512)


def test_readable_extensions_leave_out_documents_and_videos():
    from faceanon.media.photo import IMAGE_EXTENSIONS, UNSUPPORTED_IMAGE_REASONS

    assert {".jpg", ".png", ".webp", ".gif", ".tif", ".avif"} <= IMAGE_EXTENSIONS
    assert not {".pdf", ".mpg", ".mpeg", ".eps", ".h5"} & IMAGE_EXTENSIONS
    assert ".heic" in UNSUPPORTED_IMAGE_REASONS and ".svg" in UNSUPPORTED_IMAGE_REASONS
