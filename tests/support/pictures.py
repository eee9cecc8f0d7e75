"""Pictures for the tests: an honest photo that leaks where it was taken, and hostile files."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

from PIL import ExifTags, Image

#: What the GPS photo's EXIF says, to look for in bytes that must not carry it.
CAMERA = b"SpyCam-9000"


def gps_jpeg(width: int = 64, height: int = 48, *, noise: bool = False) -> bytes:
    """A JPEG whose EXIF names the camera and a GPS position (as phones write them), with a comment:
    a gradient, or with ``noise`` random pixels (a large file, for transfers of more than one range)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = CAMERA.decode()
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (48.0, 51.0, 29.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (2.0, 17.0, 40.0),
    }
    if noise:
        picture = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    picture.save(out, format="JPEG", exif=exif, comment=b"SECRET-COMMENT", quality=95)
    return out.getvalue()


def phone_photo(path: Path, size: tuple[int, int] = (96, 64), *, noise: bool = False) -> Path:
    """``gps_jpeg`` written to ``path``."""
    path.write_bytes(gps_jpeg(*size, noise=noise))
    return path


def has_gps(data: bytes) -> bool:
    """Whether a picture's bytes carry EXIF with a GPS position (or the camera's name anywhere)."""
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        return CAMERA in data or bool(exif.get_ifd(ExifTags.IFD.GPSInfo)) or ExifTags.Base.Make in exif


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A decompression bomb: a PNG of a few hundred bytes whose header declares ``width`` x ``height``."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 100_000, 9))
        + _png_chunk(b"IEND", b"")
    )


def bomb_png(path: Path) -> Path:
    """A PNG that declares 100000 x 100000 pixels, written to ``path``."""
    path.write_bytes(png_declaring(100_000, 100_000))
    return path


#: An SVG that would run script if a browser rendered it as a picture.
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'
#: An HTML page, for the same test.
HTML = b"<!doctype html><script>alert(document.cookie)</script>"
