"""Reading photos safely and writing them without the input's metadata.

`load_image` accepts a path, bytes, a file object, a PIL image or a numpy array, and returns an
RGB or RGBA PIL image: EXIF orientation applied, exotic modes (palette, greyscale, CMYK, 16-bit,
float) converted, alpha kept, and every metadata field dropped. A photo with an RGB colour profile
is converted to sRGB and carries faceanon's own standard sRGB profile (SRGB_PROFILE): no byte of
the input's profile (which can hide anything, or be megabytes long) reaches an output.
Decompression bombs, absurd sizes and truncated files (a JPEG cut short decodes "fine" as grey
filler) are refused with an ImageInputError; every unreadable input gets that error.

Greyscale photos stay greyscale: the loaded image remembers the input's mode (info[SOURCE_MODE]),
`encode_image` / `save_image` write such an image back as L / LA while its pixels are still grey,
and `restore_mode(output, like=photo)` gives an anonymized output the look of its input (grey, or
the tone of a sepia print; see `describe_tone`).

`save_image` writes pixels and (optionally) the ICC profile, never EXIF, GPS, XMP or IPTC: an
anonymized photo that still says where and when it was taken is a privacy leak. PNG outputs may
carry the caller's `pnginfo` text chunks (faceanon writes one: the provenance note).
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from faceanon.errors import ImageInputError
from faceanon.media.atomic import write_bytes_atomic

MAX_PIXELS = 64_000_000  # e.g. 9800 x 6500: a large camera's full resolution
MAX_SIDE = 20_000
MIN_SIDE = 8

# Output formats and whether they can store an alpha channel.
_ALPHA_FORMATS = {"PNG": True, "WEBP": True, "TIFF": True, "JPEG": False, "BMP": False}
_EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
SOURCE_MODE = "faceanon_source_mode"  # info key: the mode of the file the image was loaded from
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

# Formats Pillow registers that faceanon does not read as photos: write-only (PDF), needing
# software that is not installed (EPS: Ghostscript; WMF/EMF: Windows), stubs for scientific
# data (BUFR, GRIB, HDF5), and MPEG, which is a video.
_NOT_PHOTO_FORMATS = {"PDF", "EPS", "WMF", "BUFR", "GRIB", "HDF5", "MPEG", "PALM"}


def _readable_extensions() -> frozenset[str]:
    Image.init()
    return frozenset(
        ext
        for ext, fmt in Image.registered_extensions().items()
        if fmt in Image.OPEN and fmt not in _NOT_PHOTO_FORMATS
    )


IMAGE_EXTENSIONS = _readable_extensions()

# Why a file that looks like a picture is not read (the CLI lists such files as skipped).
UNSUPPORTED_IMAGE_REASONS = {
    **dict.fromkeys((".heic", ".heif", ".hif"), "HEIC/HEIF photos are not supported; export them as JPEG"),
    **dict.fromkeys((".jxl",), "JPEG XL is not supported; convert it to JPEG or PNG"),
    **dict.fromkeys(
        (".svg", ".svgz", ".ai", ".eps", ".ps", ".pdf", ".wmf", ".emf"),
        "vector drawings and documents are not photos; export the picture as PNG",
    ),
    **dict.fromkeys(
        (".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".raw", ".srw", ".pef"),
        "camera RAW files are not supported; export them as JPEG or TIFF",
    ),
}


def load_image(source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open any image Pillow reads and return a clean RGB or RGBA image (see module doc)."""
    if isinstance(source, Image.Image):
        return _normalize(source, _describe(source))
    if isinstance(source, np.ndarray):
        return from_array(source)
    name = _describe(source)
    opened = _open(source, name)
    try:
        _check_size(opened.size, name, max_pixels)
        if opened.format in ("JPEG", "MPO"):
            _check_jpeg_complete(opened, name)  # before the full-size pixels are allocated
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened.load()
        return _normalize(opened, name)
    except ImageInputError:
        raise
    except (OSError, SyntaxError, ValueError, struct.error, Image.DecompressionBombWarning) as error:
        raise ImageInputError(_undecodable(name, error)) from error
    finally:
        opened.close()


def _check_jpeg_complete(opened: Image.Image, name: str) -> None:
    """Refuse a JPEG whose data ends early. libjpeg fills what is missing with grey and Pillow
    reports nothing when the file still ends with an end marker (a 75 KB file can claim 6000x6000
    and decode to 36 MP of grey). simplejpeg's strict mode turns libjpeg's warning into an error;
    decoding at 1/8 scale reads all the compressed data at 1/64 of the memory."""
    import simplejpeg

    opened.fp.seek(0)
    data = opened.fp.read()
    try:
        colorspace = _SIMPLEJPEG_COLORSPACES.get(simplejpeg.decode_jpeg_header(data)[2], "RGB")
        simplejpeg.decode_jpeg(data, colorspace=colorspace, min_height=1, min_width=1, strict=True)
    except ValueError as error:
        if "premature end" in str(error).lower():
            raise ImageInputError(
                f"{name} is truncated: image file is truncated ({error}). Only part of it was "
                "downloaded or copied; get the complete file again."
            ) from None
        # Other warnings ("extraneous bytes before marker") are common in camera files: Pillow decides.


_SIMPLEJPEG_COLORSPACES = {"Gray": "GRAY", "CMYK": "CMYK", "YCCK": "CMYK"}


def _open(source, name: str) -> Image.Image:
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(source)
    elif isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"{name} does not exist or is not a file. Check the path.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except UnidentifiedImageError:
        raise ImageInputError(
            f"{name} is not an image faceanon can read. Use a JPEG, PNG or WebP file."
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(_too_large(name, "more pixels than")) from None
    except (OSError, ValueError, SyntaxError, struct.error) as error:
        # ValueError: e.g. a PNG text chunk that decompresses past Pillow's limit (a zip bomb).
        raise ImageInputError(_undecodable(name, error)) from error


def _undecodable(name: str, error: Exception) -> str:
    return (
        f"{name} could not be decoded ({error}); the file may be truncated or damaged. "
        "Try opening and re-saving it in an image editor."
    )


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels or max(width, height) > MAX_SIDE:
        raise ImageInputError(_too_large(name, f"{width}x{height} pixels, more than", max_pixels))
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(
            f"{name} is only {width}x{height} pixels; a face needs at least a few dozen pixels."
        )


def _too_large(name: str, what: str, max_pixels: int = MAX_PIXELS) -> str:
    return (
        f"{name} is refused: it has {what} faceanon accepts ({max_pixels / 1e6:.0f} megapixels, {MAX_SIDE} "
        "pixels a side). Images that large can exhaust memory (a 'decompression bomb'); downscale it "
        "before anonymizing."
    )


def _describe(source) -> str:
    if isinstance(source, str | Path):
        return f"The file {str(source)!r}"
    return "The image"


def _normalize(image: Image.Image, name: str) -> Image.Image:
    """Orientation applied, converted to RGB/RGBA (sRGB when the file has a colour profile),
    metadata dropped; the source mode remembered in info[SOURCE_MODE]."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animations and multi-page files: the first frame (see frame_count)
    source_mode = image.info.get(SOURCE_MODE, image.mode)
    image = ImageOps.exif_transpose(image)
    icc = image.info.get("icc_profile")
    if image.mode == "CMYK":
        converted, icc = _cmyk_to_rgb(image, icc), None
    else:
        converted, icc = _as_srgb(_to_rgb_or_rgba(image), icc)
    clean = Image.frombytes(converted.mode, converted.size, converted.tobytes())  # fresh: no info, no exif
    if icc:
        clean.info["icc_profile"] = icc
    clean.info[SOURCE_MODE] = source_mode
    return clean


@functools.cache
def srgb_profile() -> bytes:
    """faceanon's standard sRGB profile (LittleCMS's, with a fixed date so outputs are reproducible)."""
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[24:36] = struct.pack(">6H", 2000, 1, 1, 0, 0, 0)  # creation date; the profile ID is zero
    return bytes(profile)


def _as_srgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """(pixels in sRGB, faceanon's sRGB profile) for an RGB(A) image with a usable RGB profile; the
    image unchanged and no profile otherwise. The input's profile bytes never go further."""
    if not icc or image.mode not in ("RGB", "RGBA"):
        return image, None
    if icc == srgb_profile():
        return image, icc
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if source.profile.xcolor_space.strip() != "RGB":
            return image, None
        converted = ImageCms.profileToProfile(
            image,
            source,
            ImageCms.ImageCmsProfile(io.BytesIO(srgb_profile())),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            outputMode=image.mode,
        )
    except (ImageCms.PyCMSError, OSError, ValueError, AttributeError):
        return image, None  # a broken profile: the pixels are taken as sRGB
    return converted, srgb_profile()


def _to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_high_depth_to_uint8(np.asarray(image), mode)).convert("RGB")
    if mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if mode in ("PA", "LA", "La", "RGBa"):
        return image.convert("RGBA")
    if mode == "L" and "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")  # 1, L, YCbCr, LAB, HSV, ...


def _high_depth_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
    else:  # 16-bit data, whatever Pillow calls it
        top = 65535.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
    return np.clip(np.rint(values / top * 255), 0, 255).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Use the file's CMYK profile when it has one (accurate colours), else Pillow's formula."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass
    return image.convert("RGB")


def from_array(array: np.ndarray) -> Image.Image:
    """A numpy image (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or float in [0, 1]."""
    array = np.asarray(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageInputError(
            f"An image array must be HxW, HxWx3 (RGB) or HxWx4 (RGBA); got shape {array.shape}."
        )
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
        else:
            array = _high_depth_to_uint8(array, "I;16" if array.max(initial=0) > 255 else "I")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    _check_size((array.shape[1], array.shape[0]), "The image", MAX_PIXELS)
    image = Image.fromarray(np.ascontiguousarray(array))
    if image.mode in ("RGB", "RGBA"):
        return image
    image = image.convert("RGB")
    image.info[SOURCE_MODE] = "L"
    return image


def split_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB uint8 array, alpha uint8 array or None) of a loaded image."""
    array = np.asarray(image)
    if image.mode == "RGBA":
        return np.ascontiguousarray(array[..., :3]), np.ascontiguousarray(array[..., 3])
    return np.ascontiguousarray(array), None


def merge_alpha(rgb: np.ndarray, alpha: np.ndarray | None, icc: bytes | None = None) -> Image.Image:
    """A fresh PIL image (no metadata but the ICC profile) from RGB pixels and an optional alpha."""
    array = rgb if alpha is None else np.dstack([rgb, alpha])
    image = Image.fromarray(np.ascontiguousarray(array))
    if icc:
        image.info["icc_profile"] = icc
    return image


def format_for_path(path: str | Path) -> str:
    """The Pillow format name a file extension asks for (JPEG, PNG, WEBP, TIFF, BMP)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSION_FORMATS:
        raise ImageInputError(
            f"Cannot write {Path(path).name!r}: use a .jpg, .png, .webp, .tif or .bmp file name."
        )
    return _EXTENSION_FORMATS[suffix]


def encode_image(
    image: Image.Image,
    format: str = "PNG",
    quality: int = 95,
    keep_icc: bool = True,
    pnginfo: PngImagePlugin.PngInfo | None = None,
) -> bytes:
    """Encode pixels (and the ICC profile) only. Alpha is flattened onto white for formats
    without alpha. `pnginfo` (e.g. faceanon.trust.watermark.provenance_pnginfo()) is the only
    metadata written besides the ICC profile, and only into PNG files; other formats ignore it."""
    format = format.upper().replace("JPG", "JPEG")
    image = _pixels_only(image, keep_alpha=_ALPHA_FORMATS.get(format, False))
    options = {"icc_profile": image.info["icc_profile"]} if keep_icc and "icc_profile" in image.info else {}
    if format in ("JPEG", "WEBP"):
        options["quality"] = quality
    if format == "PNG" and pnginfo is not None:
        options["pnginfo"] = pnginfo
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def save_image(
    image: Image.Image,
    path: str | Path,
    quality: int = 95,
    keep_icc: bool = True,
    pnginfo: PngImagePlugin.PngInfo | None = None,
) -> Path:
    """Write `image` to `path` (format from the extension) without any metadata but ICC and,
    for PNG files, the text chunks of `pnginfo`. Atomic: a complete file or none (media.atomic)."""
    path = Path(path)
    data = encode_image(image, format_for_path(path), quality=quality, keep_icc=keep_icc, pnginfo=pnginfo)
    return write_bytes_atomic(path, data)


def _pixels_only(image: Image.Image, keep_alpha: bool) -> Image.Image:
    """A fresh image with only pixels and faceanon's sRGB profile; grey while the source was grey
    and the pixels still are (an RGB image with colour never loses it)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    grey = image.mode in ("L", "LA") or (
        image.info.get(SOURCE_MODE) in GRAYSCALE_MODES and _channels_equal(image)
    )
    icc = image.info.get("icc_profile")
    image = image.convert("RGBA" if has_alpha else "RGB")
    image, icc = _as_srgb(image, icc)
    if has_alpha and not keep_alpha:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image).convert("RGB")
    if grey:
        image, icc = (
            image.convert("LA" if image.mode == "RGBA" else "L"),
            None,
        )  # an RGB profile does not fit L
    clean = Image.frombytes(image.mode, image.size, image.tobytes())
    if icc:
        clean.info["icc_profile"] = icc
    return clean


def _channels_equal(image: Image.Image) -> bool:
    if image.mode not in ("RGB", "RGBA"):
        return image.mode in ("L", "LA", "1")
    rgb = np.asarray(image)[..., :3]
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


# ---------------------------------------------------------------------------------------------
# Frames, greyscale and toned photos


def frame_count(source) -> int:
    """How many frames (animation) or pages (TIFF) a file has; faceanon reads the first. 1 when
    the file cannot be opened (load_image then says why)."""
    try:
        with Image.open(source) as opened:
            return int(getattr(opened, "n_frames", 1))
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError):
        return 1


@dataclass(frozen=True)
class Tone:
    """How a monochrome photo looks: kind "stored" (a greyscale file), "neutral" (grey pixels in an
    RGB file, e.g. a black-and-white scan) or "toned" (one hue, e.g. sepia). `tone` is the RGB of
    the photo's mid-grey; `curves[c][y]` the value of channel c at luminance y."""

    kind: str
    tone: tuple[int, int, int]
    curves: np.ndarray  # (3, 256) uint8

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Colour an RGB array (H, W, 3) like the photo: its luminance through `curves`."""
        luminance = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).convert("L"))
        return np.stack([self.curves[c][luminance] for c in range(3)], axis=-1)


NEUTRAL_CHROMA = 3  # max - min of R, G, B that JPEG noise leaves in a grey photo (levels)
TONED_RESIDUAL = 6  # how far a toned photo's pixels may be from its tone curves (levels, 95th pct.)
TONED_HUE_SPREAD = 20  # degrees: circular spread of hue in a toned photo


def describe_tone(image: Image.Image) -> Tone | None:
    """The Tone of a monochrome photo (greyscale file, grey RGB, sepia), or None for a colour photo.
    Measured on a 256-pixel thumbnail: a few milliseconds whatever the photo's size."""
    identity = np.tile(np.arange(256, dtype=np.uint8), (3, 1))
    if image.info.get(SOURCE_MODE, image.mode) in GRAYSCALE_MODES:
        return Tone("stored", (128, 128, 128), identity)
    if image.mode not in ("RGB", "RGBA"):
        return None
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((256, 256))
    rgb = np.asarray(thumbnail).astype(np.int16)
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    if np.percentile(chroma, 99) <= NEUTRAL_CHROMA:
        return Tone("neutral", (128, 128, 128), identity)
    luminance = np.asarray(thumbnail.convert("L"))
    curves = _tone_curves(rgb, luminance)
    residual = np.abs(rgb - np.stack([curves[c][luminance] for c in range(3)], axis=-1)).max(axis=-1)
    if np.percentile(residual, 95) > TONED_RESIDUAL or _hue_spread(rgb, chroma) > TONED_HUE_SPREAD:
        return None
    return Tone("toned", tuple(int(curves[c][128]) for c in range(3)), curves)


def is_grayscale(image: Image.Image) -> bool:
    """Whether a photo is monochrome: a greyscale file, grey pixels stored as RGB, or one hue (sepia)."""
    return describe_tone(image) is not None


def restore_mode(output, like: Image.Image) -> Image.Image:
    """`output` (PIL or RGB/RGBA array, e.g. an anonymized photo) with the look of `like` (the
    photo as loaded): greyscale written back as L/LA, grey RGB kept grey, sepia toned like the
    photo; a colour photo's output unchanged. The output's ICC profile is kept (not on L)."""
    image = output if isinstance(output, Image.Image) else from_array(output)
    tone = describe_tone(like)
    if tone is None:
        return image
    rgb, alpha = split_alpha(image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA") else "RGB"))
    if tone.kind == "stored":
        grey = Image.fromarray(rgb).convert("L")
        return grey if alpha is None else Image.merge("LA", (grey, Image.fromarray(alpha)))
    toned = merge_alpha(tone.apply(rgb), alpha, image.info.get("icc_profile"))
    toned.info[SOURCE_MODE] = like.info.get(SOURCE_MODE, like.mode)
    return toned


def _tone_curves(rgb: np.ndarray, luminance: np.ndarray) -> np.ndarray:
    """Mean R, G, B at each luminance level, interpolated over levels the photo does not use."""
    counts = np.bincount(luminance.ravel(), minlength=256)
    used = np.flatnonzero(counts)
    curves = np.empty((3, 256), np.uint8)
    for channel in range(3):
        sums = np.bincount(luminance.ravel(), weights=rgb[..., channel].ravel(), minlength=256)
        means = sums[used] / counts[used]
        curves[channel] = np.clip(np.rint(np.interp(np.arange(256), used, means)), 0, 255)
    return curves


def _hue_spread(rgb: np.ndarray, chroma: np.ndarray) -> float:
    """Circular standard deviation (degrees) of the hue of the clearly coloured pixels."""
    coloured = chroma > NEUTRAL_CHROMA
    if coloured.sum() < 0.01 * chroma.size:
        return 0.0
    r, g, b = (rgb[..., c][coloured].astype(np.float64) for c in range(3))
    angle = np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)  # the hue angle of the HSV hexagon, smoothly
    length = np.hypot(np.cos(angle).mean(), np.sin(angle).mean())
    return float(np.degrees(np.sqrt(-2 * np.log(max(length, 1e-12)))))
