"""The one place fakescope turns files into pixels: bounded reads, typed errors, RGB out.

Every entry point (scan, train, evaluate, the Python API) decodes through `decode_image` /
`decode_image_with_hash`, so all of them accept the same formats, refuse the same bad files
with the same `ImageError.code`, and see the same pixels.

Formats: JPEG, PNG, WebP, BMP, TIFF, GIF (first frame only), plus HEIC/AVIF when the optional
`pillow_heif` package is installed (AVIF also works with a Pillow built with libavif).

Safety: the file size is checked before reading (`ImageLimits.max_bytes`), the declared width x
height is checked from the header before any pixel is decoded (`max_pixels`), and truncated data
is an error (we never set `ImageFile.LOAD_TRUNCATED_IMAGES`). Pillow also applies its own bomb
check (a warning above `Image.MAX_IMAGE_PIXELS`, an error above twice that); its error is reported
as our DecompressionBombError. So that `max_pixels` is the one limit, a larger `max_pixels` raises
Pillow's global to it (never lowers it) before decoding: our check of the header comes first
anyway, and other Pillow users in the process are affected only up to the limit the user chose.

Orientation: EXIF orientation is applied, so a portrait phone photo comes out portrait.

Conversion to 8-bit RGB, by source mode:
  1, L            -> grey replicated to R=G=B (1 maps to 0/255).
  P               -> palette expanded.
  LA, La, PA, RGBA, RGBa, P or L or RGB with a transparency key
                  -> alpha-composited over WHITE. Transparent regions are almost always
                     background (logos, cut-outs, stickers); white is what viewers show and it
                     keeps the colour of fully transparent pixels (often junk) out of the model.
  CMYK            -> Pillow's CMYK->RGB conversion (no ICC colour management).
  YCbCr, HSV      -> Pillow's conversion; LAB -> sRGB through littlecms.
  I;16, I;16L/B/N -> 16-bit values >> 8 (65535 -> 255, 32768 -> 128).
  I (32-bit int)  -> clipped to 0..65535, then >> 8. Pillow opens most 16-bit greyscale data as
                     I, so this treats I as 16-bit; negative or larger values saturate.
  F (float)       -> if max <= 1: clip to 0..1 and scale by 255; else clip to 0..255. NaN -> 0.
  16-bit RGB PNG  -> Pillow already opens it as 8-bit RGB.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

try:  # optional HEIC/AVIF support; registering a format opener is the package's intended use
    import pillow_heif

    pillow_heif.register_heif_opener()
    from PIL import features

    if hasattr(pillow_heif, "register_avif_opener") and not features.check_module("avif"):  # Pillow's own AVIF first
        pillow_heif.register_avif_opener()
except Exception:  # not installed, or a build that cannot load: those formats stay unsupported
    pass

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# Errors a Pillow decoder raises on corrupt or cut-off data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error, zlib.error)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 50 * 2**20       # file size
    max_pixels: int = 89_478_485      # declared width * height; Pillow's default bomb limit
    min_side: int = 1                 # smallest acceptable width and height


DEFAULT_LIMITS = ImageLimits()


class ImageError(Exception):
    """An image that cannot be used. `code` is stable and machine-readable; str() is for people."""

    code = "image_error"

    def __init__(self, message: str, filename: object = None):
        self.filename = None if filename is None else str(filename)
        self.detail = message
        super().__init__(f"{self.filename}: {message}" if self.filename else message)

    @property
    def reason(self) -> str:
        """"<code>: <detail>", the per-item error string of results and reports."""
        return f"{self.code}: {self.detail}"


class EmptyFileError(ImageError):
    code = "empty"


class FileTooLargeError(ImageError):
    code = "too_large"


class NotAnImageError(ImageError):
    code = "not_an_image"


class TruncatedImageError(ImageError):
    code = "truncated"


class DecompressionBombError(ImageError):
    code = "too_many_pixels"


class UnreadableFileError(ImageError):
    code = "unreadable"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _too_large(size: int, limits: ImageLimits, name) -> FileTooLargeError:
    return FileTooLargeError(f"file is {size:,} bytes, over the limit of {limits.max_bytes:,} bytes", name)


def _os_error(e: OSError, name) -> UnreadableFileError:
    if isinstance(e, FileNotFoundError):
        return UnreadableFileError("no such file", name)
    if isinstance(e, PermissionError):
        return UnreadableFileError("permission denied", name)
    return UnreadableFileError(f"cannot read: {e.strerror or e}", name)


def check_file(path: str | os.PathLike, limits: ImageLimits = DEFAULT_LIMITS, name: object = None) -> os.stat_result:
    """A path's stat, refused (the errors read_bytes gives) unless it is a regular file within
    max_bytes: checked before a byte is read (data/video.py opens big files by path after this)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise _os_error(e, name) from None
    if stat.S_ISDIR(st.st_mode):
        raise UnreadableFileError("is a directory, not a file", name)
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO or a device would block the whole batch
        raise UnreadableFileError("not a regular file (a FIFO, socket or device)", name)
    if st.st_size > limits.max_bytes:
        raise _too_large(st.st_size, limits, name)
    return st


def read_bytes(source: Source, limits: ImageLimits = DEFAULT_LIMITS, name: object = None) -> bytes:
    """The raw bytes of a path, bytes-like or binary file object, never more than max_bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        name = name if name is not None else os.fspath(source)
        # Refuse by the stat size before reading; the capped read below covers growing files.
        check_file(source, limits, name)
        try:
            with open(source, "rb") as f:
                data = f.read(limits.max_bytes + 1)
        except OSError as e:
            raise _os_error(e, name) from None
    elif hasattr(source, "read"):
        name = name if name is not None else getattr(source, "name", None)
        try:
            data = source.read(limits.max_bytes + 1)
        except OSError as e:
            raise UnreadableFileError(f"cannot read: {e.strerror or e}", name) from None
        if not isinstance(data, (bytes, bytearray)):
            raise UnreadableFileError("file object must be opened in binary mode", name)
        data = bytes(data)
    else:
        raise TypeError(f"cannot read an image from {type(source).__name__}")
    if not data:
        raise EmptyFileError("file is empty (0 bytes)", name)
    if len(data) > limits.max_bytes:
        raise _too_large(len(data), limits, name)
    return data


def read_tar_member(tar, member, limits: ImageLimits = DEFAULT_LIMITS, name: object = None) -> bytes:
    """One member of an open tarfile, refused by the size its header declares before a byte is
    read: a 1 MB .tar.gz or a 20 KB sparse tar can declare a member of many gigabytes."""
    name = name if name is not None else member.name
    if member.size > limits.max_bytes:
        raise _too_large(member.size, limits, name)
    f = tar.extractfile(member)
    if f is None:
        raise UnreadableFileError("not a regular file in the archive", name)
    try:
        return f.read(limits.max_bytes + 1)
    except (OSError, EOFError) as e:
        raise TruncatedImageError(f"the archive ends inside this member ({e})", name) from None


def decode_bytes(data: bytes, limits: ImageLimits = DEFAULT_LIMITS, name: object = None,
                 draft_size: int | None = None) -> Image.Image:
    """Encoded image bytes -> a fully loaded, EXIF-oriented, 8-bit RGB image."""
    if not data:
        raise EmptyFileError("file is empty (0 bytes)", name)
    if len(data) > limits.max_bytes:
        raise _too_large(len(data), limits, name)
    if Image.MAX_IMAGE_PIXELS is not None and limits.max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limits.max_pixels  # else Pillow refuses (2x) or warns below our limit
    try:
        img = Image.open(io.BytesIO(data))
        img.seek(0)  # animated GIF/WebP/TIFF: the first frame
    except UnidentifiedImageError:
        raise NotAnImageError("not an image, or a format fakescope cannot read", name) from None
    except Image.DecompressionBombError as e:  # Pillow's own header check, far above ours by default
        raise DecompressionBombError(str(e), name) from None
    except _DECODE_ERRORS as e:
        raise TruncatedImageError(f"corrupt image header: {e}", name) from None

    # The header's size, checked before a single pixel is decoded.
    w, h = img.size
    if w * h > limits.max_pixels:
        raise DecompressionBombError(f"{w}x{h} = {w * h:,} pixels, over the limit of {limits.max_pixels:,}", name)
    if min(w, h) < limits.min_side:
        raise NotAnImageError(f"{w}x{h} image, smaller than the minimum side of {limits.min_side}", name)

    if draft_size and img.format in ("JPEG", "MPO"):
        # libjpeg DCT scaling: decode at 1/2, 1/4 or 1/8 while both sides stay >= draft_size.
        img.draft("RGB", (draft_size, draft_size))
    try:
        img.load()
    except Image.DecompressionBombError as e:
        raise DecompressionBombError(str(e), name) from None
    except _DECODE_ERRORS as e:
        raise TruncatedImageError(f"truncated or corrupt image data: {e}", name) from None

    try:
        ImageOps.exif_transpose(img, in_place=True)
    except _DECODE_ERRORS + (KeyError, AttributeError):
        pass  # a broken EXIF block should not cost the pixels; keep the stored orientation
    try:
        out = to_rgb(img)
    except (ValueError, OSError) as e:  # exotic modes (e.g. signed 16-bit TIFF) Pillow cannot convert
        raise NotAnImageError(f"unsupported pixel mode {img.mode}: {e}", name) from None
    out.info["source_size"] = (w, h)  # the file's own size, before any DCT-scaled (draft) decode
    return out


def to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16"):
        a = np.asarray(img).astype(np.uint16) >> 8
        return _grey(a)
    if mode == "I":
        a = np.clip(np.asarray(img), 0, 65535).astype(np.uint16) >> 8
        return _grey(a)
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0)
        a = np.clip(a, 0, 1) * 255 if a.size and a.max() <= 1 else np.clip(a, 0, 255)
        return _grey(np.rint(a))
    if mode == "LAB":
        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        return ImageCms.profileToProfile(img, lab, srgb, outputMode="RGB")
    return img.convert("RGB")  # 1, L, P, CMYK, YCbCr, HSV, RGBX, ...


def _grey(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")


def decode_image(source: Source, limits: ImageLimits = DEFAULT_LIMITS, name: object = None,
                 draft_size: int | None = None) -> Image.Image:
    """A path, bytes or binary file object -> a fully loaded 8-bit RGB image, or an ImageError."""
    return decode_image_with_hash(source, limits, name, draft_size)[0]


def decode_image_with_hash(source: Source, limits: ImageLimits = DEFAULT_LIMITS, name: object = None,
                           draft_size: int | None = None) -> tuple[Image.Image, str]:
    """As decode_image, plus the sha256 hex of the raw bytes (read once for both)."""
    if name is None and isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
    elif name is None:
        name = getattr(source, "name", None)
    data = read_bytes(source, limits, name)
    return decode_bytes(data, limits, name, draft_size), sha256_hex(data)


__all__ = [
    "DEFAULT_LIMITS", "ImageLimits", "ImageError", "EmptyFileError", "FileTooLargeError", "NotAnImageError",
    "TruncatedImageError", "DecompressionBombError", "UnreadableFileError",
    "check_file", "read_bytes", "read_tar_member", "decode_bytes", "decode_image", "decode_image_with_hash", "sha256_hex",
]
