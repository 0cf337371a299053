"""read_image: every readable file becomes uint8 RGB; every broken one a named ImageReadError."""

from __future__ import annotations

import io
import pickle
import resource
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, UnidentifiedImageError

from fiqa.core.images import (
    MAX_IMAGE_PIXELS,
    READ_FAILURE_REASONS,
    ImageReadError,
    _decode_with_pil,
    decode_image,
    read_image,
)

ASTRONAUT = skimage.data.astronaut()


def _save(path: Path, image: Image.Image, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def _assert_rgb(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.uint8 and image.shape == (*shape, 3)
    assert image.flags["C_CONTIGUOUS"]


def test_rgb_png_roundtrip_keeps_channel_order(tmp_path: Path) -> None:
    image = read_image(_save(tmp_path / "a.png", Image.fromarray(ASTRONAUT)))
    _assert_rgb(image, (512, 512))
    np.testing.assert_array_equal(image, ASTRONAUT)


def test_jpeg_matches_pil_decode(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.jpg", Image.fromarray(ASTRONAUT), quality=90)
    np.testing.assert_array_equal(read_image(path), np.asarray(Image.open(path).convert("RGB")))


def test_gray_png_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = skimage.data.camera()
    image = read_image(_save(tmp_path / "g.png", Image.fromarray(gray)))
    _assert_rgb(image, gray.shape)
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], gray)


def test_rgba_png_drops_alpha_and_keeps_colour(tmp_path: Path) -> None:
    alpha = np.zeros(ASTRONAUT.shape[:2], np.uint8)  # fully transparent: colour still kept
    rgba = Image.fromarray(np.dstack([ASTRONAUT, alpha]), mode="RGBA")
    image = read_image(_save(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(image, ASTRONAUT)


def test_gray_alpha_png(tmp_path: Path) -> None:
    gray = skimage.data.camera()
    la = Image.fromarray(gray).convert("LA")
    image = read_image(_save(tmp_path / "la.png", la))
    np.testing.assert_array_equal(image[:, :, 2], gray)


def test_16bit_png_keeps_the_high_byte(tmp_path: Path) -> None:
    values = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16
    gray16 = values.astype(np.uint16)
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), gray16)
    image = read_image(path)
    _assert_rgb(image, (64, 64))
    np.testing.assert_array_equal(image[:, :, 0], (gray16 >> 8).astype(np.uint8))
    rgb16 = np.dstack([gray16, gray16 // 2, gray16 // 4])
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[:, :, ::-1])
    colour = read_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(colour[:, :, 1], (gray16 // 2 >> 8).astype(np.uint8))


def test_pil_fallback_handles_16bit_and_float_modes() -> None:
    gray16 = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 60).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(gray16).save(buffer, format="TIFF")
    image = _decode_with_pil(buffer.getvalue(), "mem.tif")
    np.testing.assert_array_equal(image[:, :, 0], (gray16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["CMYK", "P", "1", "L"])
def test_other_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = _save(tmp_path / f"m{suffix}", Image.fromarray(ASTRONAUT).convert(mode))
    image = read_image(path)
    _assert_rgb(image, (512, 512))
    if mode in ("CMYK", "P"):  # colour survives the round trip approximately
        assert np.abs(image.astype(int) - ASTRONAUT).mean() < 25


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    tall = ASTRONAUT[:, :300]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(tmp_path / "o.jpg", Image.fromarray(tall), exif=exif.tobytes())
    assert read_image(path).shape == (300, 512, 3)


def _reason(path: Path, min_side: int = 8) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path, min_side=min_side)
    assert str(path) in str(info.value)
    assert info.value.reason in READ_FAILURE_REASONS
    return info.value.reason


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg(tmp_path: Path, progressive: bool) -> None:
    full = _save(tmp_path / "full.jpg", Image.fromarray(ASTRONAUT), progressive=progressive)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 6 // 10])
    assert _reason(cut) == "truncated"


def test_truncated_png(tmp_path: Path) -> None:
    full = _save(tmp_path / "full.png", Image.fromarray(ASTRONAUT))
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert _reason(cut) in ("truncated", "corrupt")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n" * 20)
    assert _reason(path) == "not_an_image"


def test_empty_missing_directory_and_tiny(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    assert _reason(empty) == "empty_file"
    assert _reason(tmp_path / "absent.jpg") == "missing"
    assert _reason(tmp_path) == "unreadable"
    tiny = _save(tmp_path / "tiny.png", Image.fromarray(ASTRONAUT[:4, :4]))
    assert _reason(tiny) == "too_small"
    assert read_image(tiny, min_side=1).shape == (4, 4, 3)


def test_error_is_a_value_error_and_pickles() -> None:
    error = ImageReadError("/x/y.jpg", "truncated", "JPEG: image file is truncated")
    assert isinstance(error, ValueError)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.reason, clone.detail) == ("/x/y.jpg", "truncated", error.detail)
    assert str(clone) == str(error)


def test_decode_image_from_bytes_names_the_source() -> None:
    ok, encoded = cv2.imencode(".png", ASTRONAUT[:, :, ::-1])
    assert ok
    np.testing.assert_array_equal(decode_image(encoded.tobytes()), ASTRONAUT)
    with pytest.raises(ImageReadError, match="record 7") as info:
        decode_image(b"\x00\x01garbage", source="record 7")
    assert info.value.reason == "not_an_image"


def black_png(width: int, height: int) -> bytes:
    """A valid 1-bit all-black PNG, compressed row by row (a 20000 x 20000 one is ~50 KB and
    never exists in memory as pixels)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row, packer = b"\x00" * (1 + -(-width // 8)), zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_png_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.testing.assert_array_equal(decode_image(black_png(64, 48)), np.zeros((48, 64, 3)))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(black_png(20000, 20000))  # 4e8 px: 1.2 GB as RGB, 2.7 GB RSS in OpenCV
    with monkeypatch.context() as unlimited:
        unlimited.setattr(Image, "MAX_IMAGE_PIXELS", None)
        assert Image.open(bomb).size == (20000, 20000)  # a valid PNG, not a broken one
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(ImageReadError, match="20000x20000") as info:
        read_image(bomb)
    seconds = time.perf_counter() - start
    assert info.value.reason == "too_large"
    assert seconds < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000


def test_jpeg_header_beyond_the_limit_is_refused_before_decoding() -> None:
    jpeg = bytearray(cv2.imencode(".jpg", ASTRONAUT[:, :, ::-1])[1].tobytes())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # header claims 60000 x 60000
    with pytest.raises(ImageReadError, match="60000x60000") as info:
        decode_image(bytes(jpeg))
    assert info.value.reason == "too_large"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF"])
def test_max_pixels_applies_to_every_format(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(ASTRONAUT[:20, :30]).save(buffer, fmt)
    assert decode_image(buffer.getvalue(), max_pixels=600).shape == (20, 30, 3)
    with pytest.raises(ImageReadError, match="30x20 px = 600 > 599") as info:
        decode_image(buffer.getvalue(), source=f"a.{fmt.lower()}", max_pixels=599)
    assert info.value.reason == "too_large"
    assert MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS  # the default is PIL's bomb limit


def test_format_only_opencv_reads_is_checked_after_decoding() -> None:
    ok, hdr = cv2.imencode(".hdr", np.full((20, 30, 3), 0.5, np.float32))  # Radiance HDR
    assert ok
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(hdr.tobytes()))  # no header check possible: OpenCV decodes
    assert decode_image(hdr.tobytes(), max_pixels=600).shape == (20, 30, 3)
    with pytest.raises(ImageReadError, match="600 > 599") as info:
        decode_image(hdr.tobytes(), max_pixels=599)
    assert info.value.reason == "too_large"
