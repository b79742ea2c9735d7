"""fakescope.images: formats, modes, orientation, limits and typed errors. All files are made here."""
import hashlib
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fakescope import images
from fakescope.images import (
    DecompressionBombError, EmptyFileError, FileTooLargeError, ImageError, ImageLimits, NotAnImageError,
    TruncatedImageError, UnreadableFileError, decode_bytes, decode_image, decode_image_with_hash, read_bytes,
    sha256_hex,
)

COLOUR = (200, 60, 30)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def close(px, want, tol=0):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(px, want))


def write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


# --- formats -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,ext,tol", [
    ("JPEG", "jpg", 8), ("PNG", "png", 0), ("WEBP", "webp", 8), ("BMP", "bmp", 0),
    ("TIFF", "tif", 0), ("GIF", "gif", 12),
])
def test_each_format_decodes_to_rgb(tmp_path, fmt, ext, tol):
    p = write(tmp_path, f"a.{ext}", encode(Image.new("RGB", (48, 32), COLOUR), fmt))
    img = decode_image(p)
    assert img.mode == "RGB" and img.size == (48, 32)
    assert close(img.getpixel((10, 10)), COLOUR, tol)
    assert decode_image(str(p)).size == (48, 32)  # str paths too


def test_gif_first_frame_only(tmp_path):
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    data = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    img = decode_image(write(tmp_path, "anim.gif", data))
    assert img.mode == "RGB" and close(img.getpixel((5, 5)), (255, 0, 0), 4)


def test_exif_orientation_6_rotates(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(write(tmp_path, "rot.jpg", encode(img, "JPEG", quality=95, exif=exif.tobytes())))
    assert out.size == (20, 40)
    assert close(out.getpixel((10, 5)), (255, 0, 0), 40)   # the left edge is now on top
    assert close(out.getpixel((10, 35)), (0, 0, 255), 40)


# --- modes ---------------------------------------------------------------------------------------

def test_mode_L():
    out = decode_bytes(encode(Image.new("L", (8, 8), 77), "PNG"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (77, 77, 77)


def test_mode_1_bilevel():
    img = Image.new("1", (8, 8), 0)
    img.putpixel((1, 1), 1)
    out = decode_bytes(encode(img, "PNG"))
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 1)) == (255, 255, 255)


def test_mode_P_palette_expanded():
    img = Image.new("RGB", (8, 8), COLOUR).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    data = encode(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "P"
    assert close(decode_bytes(data).getpixel((3, 3)), COLOUR, 2)


def test_mode_P_with_transparency_over_white():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([10, 20, 30, 200, 60, 30] + [0] * 762)
    img.paste(1, (4, 0, 8, 8))
    data = encode(img, "PNG", transparency=0)
    assert "transparency" in Image.open(io.BytesIO(data)).info
    out = decode_bytes(data)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((6, 0)) == (200, 60, 30)


def test_mode_RGBA_transparent_pixel_becomes_white():
    img = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    img.putpixel((1, 1), (200, 60, 30, 255))
    img.putpixel((2, 2), (0, 0, 0, 128))  # half transparent black over white: mid grey
    out = decode_bytes(encode(img, "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (200, 60, 30)
    assert close(out.getpixel((2, 2)), (127, 127, 127), 1)


def test_mode_LA_over_white():
    img = Image.new("LA", (8, 8), (50, 0))
    img.putpixel((1, 1), (50, 255))
    out = decode_bytes(encode(img, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (50, 50, 50)


def test_mode_CMYK():
    data = encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "TIFF")  # pure red in CMYK
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = decode_bytes(data)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 0, 0)
    assert decode_bytes(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")).mode == "RGB"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_mode_16bit_grey_scaled_to_8bit(fmt):
    a = np.array([[65535, 32768, 0, 257]], dtype=np.uint16)
    data = encode(Image.fromarray(a), fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decode_bytes(data)
    assert out.mode == "RGB"
    assert [out.getpixel((x, 0))[0] for x in range(4)] == [255, 128, 0, 1]
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_mode_I_32bit_clipped_to_16bit_range():
    img = Image.fromarray(np.array([[-5, 32768, 65535, 10**6]], dtype=np.int32), "I")
    out = decode_bytes(encode(img, "TIFF"))
    assert [out.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 255]


def test_mode_F_float():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0, -1.0]], dtype=np.float32), "F")
    out = decode_bytes(encode(unit, "TIFF"))
    assert [out.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 0]
    wide = Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32), "F")
    out = decode_bytes(encode(wide, "TIFF"))
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255]


def test_mode_16bit_rgb_png_is_8bit_rgb():
    # Hand-made 16-bit-per-channel RGB PNG (Pillow cannot write one).
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    row = b"\x00" + struct.pack(">HHH", 65535, 32768, 0) * 4
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 2, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * 2)) + chunk(b"IEND", b""))
    out = decode_bytes(data)
    assert out.mode == "RGB" and out.size == (4, 2) and close(out.getpixel((0, 0)), (255, 128, 0), 1)


@pytest.mark.parametrize("mode", ["YCbCr", "HSV", "LAB"])
def test_other_colour_spaces(mode):
    src = Image.new("RGB", (8, 8), COLOUR)
    img = src.convert(mode) if mode != "LAB" else Image.new("LAB", (8, 8), (128, 128, 128))
    out = images.to_rgb(img)
    assert out.mode == "RGB" and out.size == (8, 8)
    if mode != "LAB":
        assert close(out.getpixel((0, 0)), COLOUR, 3)
    else:  # L=50%, a=b=0: a neutral mid grey
        r, g, b = out.getpixel((0, 0))
        assert max(r, g, b) - min(r, g, b) <= 3 and 90 <= r <= 150


# --- inputs and hashing --------------------------------------------------------------------------

def test_bytes_and_file_like_inputs(tmp_path):
    data = encode(Image.new("RGB", (12, 9), COLOUR), "PNG")
    p = write(tmp_path, "x.png", data)
    for src in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        img = decode_image(src)
        assert img.size == (12, 9) and img.getpixel((0, 0)) == COLOUR
    with open(p, "rb") as f:
        assert decode_image(f).size == (12, 9)
    assert read_bytes(p) == data


def test_decode_image_with_hash(tmp_path):
    data = encode(Image.new("RGB", (12, 9), COLOUR), "JPEG")
    img, sha = decode_image_with_hash(write(tmp_path, "x.jpg", data))
    assert img.size == (12, 9)
    assert sha == hashlib.sha256(data).hexdigest() == sha256_hex(data)
    assert decode_image_with_hash(data)[1] == sha


def test_draft_size_decodes_large_jpeg_smaller(tmp_path):
    p = write(tmp_path, "big.jpg", encode(Image.new("RGB", (2000, 1500), COLOUR), "JPEG"))
    img = decode_image(p, draft_size=224)
    assert img.mode == "RGB" and 224 <= min(img.size) < 1500
    assert img.size[0] / img.size[1] == pytest.approx(2000 / 1500, rel=0.01)
    assert decode_image(p).size == (2000, 1500)
    # Non-JPEG ignores it; a draft larger than the image leaves it alone.
    assert decode_image(encode(Image.new("RGB", (600, 400)), "PNG"), draft_size=224).size == (600, 400)
    assert decode_image(p, draft_size=4000).size == (2000, 1500)


def test_a_squashing_spec_with_a_draft_gap_reads_large_jpegs_reduced_and_small_ones_exactly(tmp_path):
    """`?draft=2` on a squashing spec: a large JPEG is decoded at reduced DCT scale (>= 2x the input)
    and comes out close to the full decode; an image under 4x the input is read exactly as without it."""
    from fakescope.backbones import parse_spec
    from fakescope.data.samples import Sample
    from fakescope.pipeline import _draft, prepare

    plain, gap = parse_spec("pixels?size=32&resize=resize"), parse_spec("pixels?size=32&resize=resize&draft=2")
    assert gap.draft_gap == 2.0 and plain.draft_gap is None and _draft(plain) is None and _draft(gap) == 64
    assert "draft_gap" not in plain.preprocessing() and plain.signature() != gap.signature()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1200, 0:1600]
    photo = np.stack([xx / 1600 * 200, yy / 1200 * 200, (xx + yy) / 2800 * 200], -1) + rng.normal(0, 20, (1200, 1600, 3))
    big = write(tmp_path, "big.jpg", encode(Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)), "JPEG", quality=90))
    small = write(tmp_path, "small.jpg", encode(Image.fromarray(np.clip(photo[:100, :120], 0, 255).astype(np.uint8)), "JPEG"))
    full, reduced = (prepare(Sample(path=big), spec)[0].array for spec in (plain, gap))
    assert full.shape == reduced.shape == (3, 32, 32)
    assert 0 < np.abs(full - reduced).mean() < 0.01  # pixels in 0..1: under 1% apart on average
    assert np.array_equal(prepare(Sample(path=small), plain)[0].array, prepare(Sample(path=small), gap)[0].array)
    for bad in ("draft=0.5", "draft=x", "resize=native_crop&draft=2"):
        with pytest.raises(ValueError, match="draft"):
            parse_spec(f"pixels?size=32&{bad}")


# --- errors --------------------------------------------------------------------------------------

def test_empty_file(tmp_path):
    p = write(tmp_path, "empty.jpg", b"")
    with pytest.raises(EmptyFileError, match="empty.jpg"):
        decode_image(p)
    with pytest.raises(EmptyFileError):
        decode_image(b"")


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG", quality=95)
    p = write(tmp_path, "cut.jpg", data[: len(data) // 2])
    with pytest.raises(TruncatedImageError, match="cut.jpg") as e:
        decode_image(p)
    assert e.value.code == "truncated"


def test_truncated_png(tmp_path):
    rng = np.random.default_rng(1)
    data = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG")
    with pytest.raises(TruncatedImageError):
        decode_image(data[: len(data) // 2])


def test_text_file_is_not_an_image(tmp_path):
    p = write(tmp_path, "notes.jpg", b"hello, this is just text\n" * 10)
    with pytest.raises(NotAnImageError, match="notes.jpg") as e:
        decode_image(p)
    assert e.value.code == "not_an_image" and e.value.filename == str(p)


def _png_header_only(width, height):
    """A PNG that declares width x height but carries one tiny IDAT: only a header check can refuse it cheaply."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_decompression_bomb_real_png(tmp_path):
    p = write(tmp_path, "big.png", encode(Image.new("RGB", (2000, 2000)), "PNG"))
    with pytest.raises(DecompressionBombError, match="big.png") as e:
        decode_image(p, ImageLimits(max_pixels=1_000_000))
    assert e.value.code == "too_many_pixels"
    assert decode_image(p).size == (2000, 2000)  # fine under the default limit


@pytest.mark.parametrize("side", [5_000, 100_000])  # under and far over Pillow's own limit
def test_decompression_bomb_refused_from_header(tmp_path, side):
    p = write(tmp_path, "bomb.png", _png_header_only(side, side))
    # the file has almost no pixel data, so only the header check raises DecompressionBombError
    # (decoding would report truncation; 100000^2 RGB would be 30 GB)
    with pytest.raises(DecompressionBombError, match="bomb.png"):
        decode_image(p, ImageLimits(max_pixels=1_000_000))


def test_file_too_large(tmp_path):
    data = encode(Image.new("RGB", (64, 64), COLOUR), "PNG")
    p = write(tmp_path, "large.png", data)
    small = ImageLimits(max_bytes=len(data) - 1)
    for src in (p, data, io.BytesIO(data)):
        with pytest.raises(FileTooLargeError, match="over the limit") as e:
            decode_image(src, small)
        assert e.value.code == "too_large"
    with pytest.raises(FileTooLargeError, match="large.png"):
        decode_image(p, small)
    assert decode_image(p, ImageLimits(max_bytes=len(data))).size == (64, 64)


def test_min_side(tmp_path):
    data = encode(Image.new("RGB", (8, 2), COLOUR), "PNG")
    with pytest.raises(ImageError):
        decode_image(data, ImageLimits(min_side=4))
    assert decode_image(data).size == (8, 2)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UnreadableFileError, match="nope.jpg") as e:
        decode_image(tmp_path / "nope.jpg")
    assert e.value.code == "unreadable"
    with pytest.raises(UnreadableFileError, match="directory"):
        decode_image(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_permission_denied(tmp_path):
    p = write(tmp_path, "secret.png", encode(Image.new("RGB", (4, 4)), "PNG"))
    p.chmod(0)
    try:
        with pytest.raises(UnreadableFileError, match="secret.png"):
            decode_image(p)
    finally:
        p.chmod(0o600)


def test_name_overrides_message_for_bytes():
    with pytest.raises(NotAnImageError, match="upload-7.png"):
        decode_image(b"not an image at all", name="upload-7.png")


@pytest.mark.parametrize("cls,code", [
    (EmptyFileError, "empty"), (FileTooLargeError, "too_large"), (NotAnImageError, "not_an_image"),
    (TruncatedImageError, "truncated"), (DecompressionBombError, "too_many_pixels"),
    (UnreadableFileError, "unreadable"),
])
def test_every_error_is_an_image_error_with_a_code(cls, code):
    assert issubclass(cls, ImageError) and cls.code == code
    e = cls("something went wrong", "f.png")
    assert str(e) == "f.png: something went wrong" and e.detail == "something went wrong"
    assert str(cls("no file known")) == "no file known"
