"""Reading photos safely and writing them without the input's metadata.

`load_image` accepts a path, bytes, a file object, a PIL image or a numpy array, and returns an
RGB or RGBA PIL image: EXIF orientation applied, exotic modes (palette, greyscale, CMYK, 16-bit,
float) converted, alpha kept, and every metadata field dropped except an sRGB-compatible ICC
profile. Decompression bombs and absurd sizes are refused with an ImageInputError.

`save_image` writes pixels and (optionally) the ICC profile, never EXIF, GPS, XMP or IPTC: an
anonymized photo that still says where and when it was taken is a privacy leak. PNG outputs may
carry the caller's `pnginfo` text chunks (faceanon writes one: the provenance note).
"""

from __future__ import annotations

import io
import warnings
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
_EXTENSION_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
                      ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
IMAGE_EXTENSIONS = frozenset(Image.registered_extensions())


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
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened.load()
        return _normalize(opened, name)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        if isinstance(error, ImageInputError):
            raise
        raise ImageInputError(f"{name} could not be decoded ({error}); the file may be truncated or "
                              "damaged. Try opening and re-saving it in an image editor.") from error
    finally:
        opened.close()


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
        raise ImageInputError(f"{name} is not an image faceanon can read. Use a JPEG, PNG or WebP file.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(_too_large(name, "more pixels than")) from None
    except OSError as error:
        raise ImageInputError(f"{name} could not be opened ({error}); the file may be truncated or damaged. "
                              "Try opening and re-saving it in an image editor.") from error


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels or max(width, height) > MAX_SIDE:
        raise ImageInputError(_too_large(name, f"{width}x{height} pixels, more than", max_pixels))
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(f"{name} is only {width}x{height} pixels; a face needs at least a few dozen pixels.")


def _too_large(name: str, what: str, max_pixels: int = MAX_PIXELS) -> str:
    return (f"{name} is refused: it has {what} faceanon accepts ({max_pixels / 1e6:.0f} megapixels, {MAX_SIDE} "
            "pixels a side). Images that large can exhaust memory (a 'decompression bomb'); downscale it "
            "before anonymizing.")


def _describe(source) -> str:
    if isinstance(source, str | Path):
        return f"The file {str(source)!r}"
    return "The image"


def _normalize(image: Image.Image, name: str) -> Image.Image:
    """Orientation applied, converted to RGB/RGBA, metadata dropped (ICC kept when it is RGB)."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animations: the first frame
    image = ImageOps.exif_transpose(image)
    icc = image.info.get("icc_profile")
    if image.mode == "CMYK":
        converted, icc = _cmyk_to_rgb(image, icc), None
    else:
        converted = _to_rgb_or_rgba(image)
    if icc and not _is_rgb_profile(icc):
        icc = None
    clean = Image.frombytes(converted.mode, converted.size, converted.tobytes())  # fresh: no info, no exif
    if icc:
        clean.info["icc_profile"] = icc
    return clean


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


def _is_rgb_profile(icc: bytes) -> bool:
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip() == "RGB"
    except (ImageCms.PyCMSError, OSError, AttributeError):
        return False


def from_array(array: np.ndarray) -> Image.Image:
    """A numpy image (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or float in [0, 1]."""
    array = np.asarray(array)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageInputError(f"An image array must be HxW, HxWx3 (RGB) or HxWx4 (RGBA); got shape {array.shape}.")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating):
            array = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
        else:
            array = _high_depth_to_uint8(array, "I;16" if array.max(initial=0) > 255 else "I")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    _check_size((array.shape[1], array.shape[0]), "The image", MAX_PIXELS)
    image = Image.fromarray(np.ascontiguousarray(array))
    return image if image.mode in ("RGB", "RGBA") else image.convert("RGB")


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
        raise ImageInputError(f"Cannot write {Path(path).name!r}: use a .jpg, .png, .webp, .tif or .bmp file name.")
    return _EXTENSION_FORMATS[suffix]


def encode_image(image: Image.Image, format: str = "PNG", quality: int = 95, keep_icc: bool = True,
                 pnginfo: PngImagePlugin.PngInfo | None = None) -> bytes:
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


def save_image(image: Image.Image, path: str | Path, quality: int = 95, keep_icc: bool = True,
               pnginfo: PngImagePlugin.PngInfo | None = None) -> Path:
    """Write `image` to `path` (format from the extension) without any metadata but ICC and,
    for PNG files, the text chunks of `pnginfo`. Atomic: a complete file or none (media.atomic)."""
    path = Path(path)
    data = encode_image(image, format_for_path(path), quality=quality, keep_icc=keep_icc, pnginfo=pnginfo)
    return write_bytes_atomic(path, data)


def _pixels_only(image: Image.Image, keep_alpha: bool) -> Image.Image:
    icc = image.info.get("icc_profile")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    if has_alpha and not keep_alpha:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image).convert("RGB")
    clean = Image.frombytes(image.mode, image.size, image.tobytes())
    if icc:
        clean.info["icc_profile"] = icc
    return clean
