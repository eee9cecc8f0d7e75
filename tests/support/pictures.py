"""Pictures for tests: a phone photo with GPS EXIF, a decompression bomb, noise that does not compress."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from PIL import ExifTags, Image


def phone_photo(path: Path, size: tuple[int, int] = (96, 64), *, noise: bool = False) -> Path:
    """A JPEG from a phone: a GPS position and a camera name in its EXIF, a comment. ``noise``: random
    pixels (a large file, for transfers of more than one range)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam-9000"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (48.0, 51.0, 29.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (2.0, 17.0, 40.0),
    }
    if noise:
        picture = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    else:
        picture = Image.linear_gradient("L").resize(size).convert("RGB")
    picture.save(path, format="JPEG", exif=exif, comment=b"SECRET-COMMENT", quality=95)
    return path


def bomb_png(path: Path) -> Path:
    """A tiny PNG that declares 100000 x 100000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path
