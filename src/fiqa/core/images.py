"""Robust image reading: any readable file becomes a uint8 (H, W, 3) RGB array.

Decoding goes through ``cv2.imdecode`` first (about 1.5x faster than PIL for JPEG, identical
pixels) and falls back to PIL for what OpenCV cannot decode; the PIL pass also names the
reason when a file is broken. Conversions, chosen to match OpenCV-based face-recognition
pipelines (insightface and friends read with ``cv2.imread``) pixel for pixel:

- grayscale (and 1-bit) -> the gray value repeated in 3 channels;
- alpha (RGBA, LA, palette transparency) -> **dropped**, the stored colour is kept (no
  compositing), as ``cv2.IMREAD_COLOR`` does;
- 16-bit -> 8-bit by keeping the high byte (``v >> 8``), as OpenCV does;
- CMYK, YCCK, palette -> RGB through the decoder's own colour conversion;
- EXIF orientation is applied.

Decompression bombs (a few hundred KB of PNG that decode to gigabytes) are refused before any
pixel is decoded: the pixel count comes from the header (PNG and JPEG parsed here, other
formats through PIL's lazy ``Image.open``) and above ``max_pixels`` the reason is
``too_large``. Bytes PIL cannot identify but OpenCV can decode (OpenEXR, Radiance HDR, PFM) have
no header check: OpenCV decodes them under its own limit (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2^30
by default) and the decoded size is checked against ``max_pixels`` after that. PIL's own guard
still refuses the formats only PIL reads above twice ``PIL.Image.MAX_IMAGE_PIXELS``.

Every failure raises :class:`ImageReadError` with a short ``reason`` so callers can record a
failure row instead of crashing.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

#: Reasons an :class:`ImageReadError` can carry.
READ_FAILURE_REASONS = (
    "missing",  # the path does not exist
    "unreadable",  # exists but cannot be read (permissions, a directory, I/O error)
    "empty_file",  # 0 bytes
    "not_an_image",  # no known image format (e.g. a text file named .jpg)
    "truncated",  # a valid header but the data ends early
    "corrupt",  # a valid header but the decoder fails
    "too_small",  # decoded, but a side is below ``min_side``
    "too_large",  # more pixels than ``max_pixels`` (a decompression bomb)
)

#: The pixel limit (width x height) of one image where no other is given: PIL's own
#: decompression-bomb limit. Prepare takes its limit from ``prepare.max_image_pixels``.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (they carry the frame size): SOF0-3, 5-7, 9-11, 13-15.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageReadError(ValueError):
    """An image file could not be turned into an RGB array.

    Attributes:
        path: The file (or a description of the byte source).
        reason: One of :data:`READ_FAILURE_REASONS`.
        detail: Human-readable detail from the decoder or the file system.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        message = f"cannot read image {self.path}: {reason}"
        super().__init__(f"{message} ({detail})" if detail else message)

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[str, str, str]]:
        # Keep the exception picklable across DataLoader worker processes.
        return (type(self), (self.path, self.reason, self.detail))


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to uint8 (H, W, 3) RGB."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        high = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        gray = high.astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float64), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode == "RGBA":
        return np.ascontiguousarray(np.asarray(image)[:, :, :3])
    if image.mode in ("LA", "La"):
        return np.ascontiguousarray(np.repeat(np.asarray(image)[:, :, :1], 3, axis=2))
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _decode_with_pil(data: bytes, source: str) -> np.ndarray:
    """PIL decode that maps every failure to an :class:`ImageReadError` reason."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageReadError(source, "not_an_image", "no known image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(source, "too_large", str(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(source, "not_an_image", str(exc)) from exc
    try:
        image.load()
        return _to_rgb_uint8(image)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(source, "too_large", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = "truncated" if "truncat" in str(exc).lower() else "corrupt"
        raise ImageReadError(source, reason, f"{image.format}: {exc}") from exc


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker; None when the markers end first."""
    pos = 2
    while pos + 9 <= len(data):
        if data[pos] != 0xFF:
            return None  # not on a marker: leave the judgement to the decoders
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame
            return None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
        else:
            pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def _header_size(data: bytes, source: str) -> tuple[int, int] | None:
    """(width, height) from the header alone, without decoding pixels; None when no header
    is recognised (the decoders then judge the bytes)."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])  # fast paths: most datasets are PNG or JPEG
    if data[:2] == b"\xff\xd8" and (size := _jpeg_size(data)) is not None:
        return size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data)).size  # lazy: reads the header only
    except Image.DecompressionBombError as exc:  # over twice PIL's own limit
        raise ImageReadError(source, "too_large", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        return None


def _check_pixels(width: int, height: int, source: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            source, "too_large", f"{width}x{height} px = {width * height} > {max_pixels} px"
        )


def decode_image(
    data: bytes, source: str = "<bytes>", min_side: int = 8, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Decode encoded image bytes (a file's content, a RecordIO record) to RGB.

    Args:
        data: Encoded image bytes (JPEG, PNG, BMP, WebP, TIFF, GIF, ...).
        source: Name used in error messages (a path, or "record 123 of train.rec").
        min_side: Images whose shorter side is below this are rejected as ``too_small``.
        max_pixels: Images with more pixels (width x height) are rejected as ``too_large``,
            from the header before decoding (see the module docstring).

    Returns:
        uint8 ``(H, W, 3)`` RGB array (C-contiguous).

    Raises:
        ImageReadError: When the bytes are empty, not an image, truncated, corrupt, too small
            or too large.
    """
    if len(data) == 0:
        raise ImageReadError(source, "empty_file", "0 bytes")
    size = _header_size(data, source)
    if size is not None:
        _check_pixels(*size, source, max_pixels)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV raises on some malformed headers instead of returning None
        log.debug("cv2.imdecode failed on %s: %s", source, exc)
        bgr = None
    if bgr is not None and bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        rgb = _decode_with_pil(data, source)
    height, width = rgb.shape[:2]
    _check_pixels(width, height, source, max_pixels)  # formats without a header check
    if min(height, width) < min_side:
        raise ImageReadError(source, "too_small", f"{width}x{height} px, need >= {min_side}")
    return rgb


def read_image(
    path: str | os.PathLike[str], min_side: int = 8, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3) RGB; see the module docstring for conversions.

    Args:
        path: Image file.
        min_side: Images whose shorter side is below this are rejected as ``too_small``.
        max_pixels: Images with more pixels are rejected as ``too_large`` before decoding.

    Returns:
        uint8 ``(H, W, 3)`` RGB array (C-contiguous).

    Raises:
        ImageReadError: With ``reason`` in :data:`READ_FAILURE_REASONS`; never a raw
            OpenCV/PIL exception.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError as exc:
        raise ImageReadError(file, "missing", "no such file") from exc
    except OSError as exc:
        raise ImageReadError(file, "unreadable", exc.strerror or str(exc)) from exc
    return decode_image(data, source=str(file), min_side=min_side, max_pixels=max_pixels)
