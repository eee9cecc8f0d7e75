"""Preparing a file for attaching: pictures re-encoded without their metadata, anything else opaque.

Issue 18: a post's attachments and a profile's avatar are blobs. Before a file becomes one, ``prepare``
decides what it is, by its content and never by its name:

- **An image** is JPEG, PNG, WebP or GIF, recognised by its signature and decoded here with Pillow
  (restricted to those four formats, so no other decoder ever sees the bytes). It is re-encoded in the
  same format from its pixels alone, after the EXIF orientation has been applied and the pixels moved
  from an embedded ICC profile to sRGB: EXIF (and its GPS position), XMP, ICC profiles, comments, text
  chunks and embedded thumbnails do not survive. JPEG and lossy WebP are written at quality 90 (80,
  then 70, when that keeps the file within ``max_blob``); PNG, GIF and lossless WebP losslessly.
  ``keep_metadata=True`` keeps the file's bytes as they are (still decoded, so a broken or hostile
  picture is refused all the same). Animated GIF, WebP and PNG keep every frame with its duration; a
  multi-picture JPEG (MPO) keeps its first picture only. A small WebP preview (at most
  ``PREVIEW_MAX_BYTES``, longest side at most ``PREVIEW_SIDE``) is made from the first frame.
- **Anything else** (SVG, HTML, PDF, text, an SVG named ``.png``) is an opaque file: its bytes
  unchanged, mime ``application/octet-stream``, no size, no preview. It is never rendered as a picture.

``inspect_picture`` checks a stored blob before a reader shows it as a picture (spec §8.5: only after
decoding it itself within bounds): its signature must be the format its mime type names and its header
must declare no more pixels than ``max_pixels``; no pixel is decoded.

Hostile pictures are refused with a ``MediaError`` before they cost memory: the pixel count a header
declares (times its frames) is checked against ``max_pixels`` before anything is decoded, Pillow's own
decompression-bomb guard counts as a refusal, and a truncated or corrupt picture is refused rather than
half decoded. Nothing here touches storage or the network; the caller stores ``Prepared.data`` and
``Prepared.preview`` as blobs.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

from PIL import Image, ImageCms
from tidings.protocol.errors import LocalProtocolError, TidingsError

__all__ = [
    "DEFAULT_MAX_BLOB",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_MIMES",
    "OPAQUE_MIME",
    "PREVIEW_MAX_BYTES",
    "PREVIEW_SIDE",
    "MediaError",
    "Prepared",
    "inspect_picture",
    "picture_mime",
    "prepare",
]

#: largest blob, before and after re-encoding (``max_blob`` in config.toml)
DEFAULT_MAX_BLOB: Final = 8 * 1024 * 1024
#: largest picture, in pixels over all its frames: 50 megapixels (about 200 MB decoded as RGBA)
DEFAULT_MAX_PIXELS: Final = 50_000_000
#: the preview is a WebP of at most this many bytes ...
PREVIEW_MAX_BYTES: Final = 32 * 1024
#: ... whose longest side is at most this many pixels
PREVIEW_SIDE: Final = 320
#: the mime type of everything that is not one of the four picture formats
OPAQUE_MIME: Final = "application/octet-stream"
#: Pillow's format name -> mime type, for the only formats that are pictures
IMAGE_MIMES: Final = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}

# Pillow formats whose files may hold several frames that we keep (a JPEG's further pictures are dropped).
_ANIMATED: Final = frozenset({"GIF", "PNG", "WEBP"})
# EXIF orientation (tag 0x0112) -> the transposition that shows the picture upright (EXIF 2.32 §4.6.4).
_ORIENTATION_TAG: Final = 0x0112
_UPRIGHT: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Preview attempts, (longest side, WebP quality), until one fits PREVIEW_MAX_BYTES. The last one cannot
# miss: 48x48 RGBA is 9 KB even uncompressed.
_PREVIEW_STEPS: Final = (
    (PREVIEW_SIDE, 80),
    (PREVIEW_SIDE, 60),
    (PREVIEW_SIDE, 40),
    (240, 40),
    (160, 30),
    (48, 10),
)
# JPEG and lossy WebP quality: the first that keeps the picture within max_blob (a re-encoded JPEG can
# come out larger than the file it was, which fitted).
_QUALITIES: Final = (90, 80, 70)
_FRAME_MS: Final = 100  # a frame that declares no duration


class MediaError(TidingsError):
    """A file that cannot be attached; ``code`` says why.

    Codes: ``too_big`` (over ``max_blob``, as given or once re-encoded), ``image_too_large`` (more
    pixels than ``max_pixels``, or refused by Pillow's decompression-bomb guard), ``bad_image`` (a
    picture's signature, but truncated or corrupt), ``unreadable`` (the path cannot be read),
    ``not_a_picture`` (``inspect_picture``: the bytes are not the picture format the mime type names).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """A file ready to be stored as a blob.

    ``data`` is what to store: a picture re-encoded without metadata (or, with ``keep_metadata``, the
    bytes as given), or an opaque file's bytes unchanged. ``width`` and ``height`` are the picture's
    size as shown (EXIF orientation applied); ``preview`` is a WebP of at most ``PREVIEW_MAX_BYTES``.
    For ``kind == "file"`` the mime type is ``OPAQUE_MIME`` and size and preview are None.
    """

    data: bytes = field(repr=False)
    mime: str
    width: int | None
    height: int | None
    preview: bytes | None = field(repr=False)
    kind: Literal["image", "file"]

    def __post_init__(self) -> None:
        if self.kind == "file":
            if self.mime != OPAQUE_MIME or (self.width, self.height, self.preview) != (None, None, None):
                raise LocalProtocolError(
                    "an opaque file has mime application/octet-stream and no size or preview",
                    code="bad_value",
                )
        elif self.kind == "image":
            if self.mime not in IMAGE_MIMES.values():
                raise LocalProtocolError(f"not a picture mime type: {self.mime!r}", code="bad_value")
            if not (self.width and self.height and self.width > 0 and self.height > 0 and self.preview):
                raise LocalProtocolError("a picture has a positive size and a preview", code="bad_value")
        else:
            raise LocalProtocolError(f"kind is 'image' or 'file', not {self.kind!r}", code="bad_value")


def prepare(
    source: bytes | str | os.PathLike[str],
    *,
    keep_metadata: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_blob: int = DEFAULT_MAX_BLOB,
) -> Prepared:
    """Prepare ``source`` (its bytes, or a path to read) for attaching; see the module docstring.

    Raises ``MediaError`` for a file over ``max_blob``, a picture over ``max_pixels`` and a corrupt
    picture. CPU-bound: in the node, call it from a worker thread, one call at a time (see ``_refusing``).
    """
    data = _read(source, max_blob)
    fmt = _sniff(data)
    if fmt is None:
        return Prepared(data=data, mime=OPAQUE_MIME, width=None, height=None, preview=None, kind="file")
    with _refusing(fmt):
        picture = _decode(data, fmt, max_pixels)
        first = picture.frames[0]
        preview = _preview(first)
        if not keep_metadata:
            lossless = fmt in ("PNG", "GIF") or (fmt == "WEBP" and data[12:16] == b"VP8L")
            for quality in _QUALITIES:
                data = _encode(picture, fmt, lossless=lossless, quality=quality)
                if lossless or len(data) <= max_blob:
                    break
    if len(data) > max_blob:
        raise MediaError(
            f"the picture is {len(data)} bytes once re-encoded, over the limit of {max_blob}", code="too_big"
        )
    return Prepared(
        data=data,
        mime=IMAGE_MIMES[fmt],
        width=first.width,
        height=first.height,
        preview=preview,
        kind="image",
    )


#: The header bytes ``inspect_picture`` reads to know a format (and a WebP's canvas, RFC 9649 §2.7).
_HEAD: Final = 32
_FORMAT_OF_MIME: Final = {mime: fmt for fmt, mime in IMAGE_MIMES.items()}


def inspect_picture(
    path: str | os.PathLike[str], mime: str, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[int, int]:
    """``(width, height)`` of the picture file at ``path`` if it is what ``mime`` says, within bounds.

    Spec §8.5: a reader shows a blob as a picture only when its ``mime`` is one of the four picture
    types and after checking it itself. The file's signature must be the format ``mime`` names (an SVG
    or HTML file labelled ``image/png`` is ``not_a_picture``), Pillow must read its header in that
    format only, and the pixels it declares over all its frames must be at most ``max_pixels``
    (``image_too_large``; Pillow's own bomb guard counts too). Only headers are read: no pixel is
    decoded, so a decompression bomb costs nothing here. Other failures: ``bad_image`` (a broken
    header), ``unreadable``. Like ``prepare``, run it in one thread at a time.
    """
    fmt = _FORMAT_OF_MIME.get(mime)
    if fmt is None:
        raise MediaError(f"{mime!r} is not a picture type", code="not_a_picture")
    try:
        with open(path, "rb") as file:
            head = file.read(_HEAD)
            if _sniff(head) != fmt:
                raise MediaError(f"the file is not a {fmt} picture", code="not_a_picture")
            if fmt == "WEBP" and (canvas := _webp_canvas(head)) is not None:
                _check_pixels(canvas[0] * canvas[1], max_pixels)  # before libwebp allocates it
            file.seek(0)
            with _refusing(fmt), Image.open(file, formats=[fmt]) as image:
                width, height = image.size
                _check_pixels(width * height, max_pixels)
                count = int(getattr(image, "n_frames", 1)) if fmt in _ANIMATED else 1
                _check_pixels(width * height * count, max_pixels)
    except OSError as exc:
        raise MediaError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}", code="unreadable") from exc
    if width < 1 or height < 1:
        raise MediaError("the picture has no pixels", code="bad_image")
    return width, height


def _read(source: bytes | str | os.PathLike[str], max_blob: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as file:
                # One byte more than allowed is enough to know it is too big; never read a huge file whole.
                data = file.read(max_blob + 1)
        except OSError as exc:
            raise MediaError(
                f"cannot read {os.fspath(source)}: {exc.strerror or exc}", code="unreadable"
            ) from exc
    if len(data) > max_blob:
        raise MediaError(f"the file is over the limit of {max_blob} bytes", code="too_big")
    return data


def _sniff(data: bytes) -> str | None:
    """The picture format ``data`` claims by its signature, or None: an opaque file.

    The same tests Pillow's four plugins accept by; looking first lets a file that claims to be a
    picture and is not one be refused, instead of being attached as an opaque file.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Picture:
    """Decoded frames, upright, in sRGB, with no metadata but their transparency."""

    frames: Sequence[Image.Image]
    durations: Sequence[int]
    loop: int | None  # None: play once (a GIF without a loop count)


@contextmanager
def _refusing(fmt: str) -> Iterator[None]:
    """Pillow's failures inside the block, as a ``MediaError`` that says why the picture is refused."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; here a warning is a refusal.
            # (catch_warnings changes the process-wide filters: run prepare in one thread at a time.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(f"the picture is too large to decode safely: {exc}", code="image_too_large") from exc
    except Exception as exc:
        # Pillow's decoders raise a wide, undocumented range of exceptions on hostile input (OSError for
        # truncation, SyntaxError, ValueError, struct.error, EOFError, ...): each means a broken file.
        raise MediaError(f"not a valid {fmt} picture: {exc}", code="bad_image") from exc


def _decode(data: bytes, fmt: str, max_pixels: int) -> _Picture:
    if fmt == "WEBP" and (size := _webp_canvas(data)) is not None:
        # libwebp allocates the whole canvas when its decoder is created, inside Image.open.
        _check_pixels(size[0] * size[1], max_pixels)
    with Image.open(io.BytesIO(data), formats=[fmt]) as image:
        return _frames(image, fmt, max_pixels)


def _frames(image: Image.Image, fmt: str, max_pixels: int) -> _Picture:
    # Image.open has read the header only: check what it declares before decoding a single pixel.
    width, height = image.size
    _check_pixels(width * height, max_pixels)
    count = int(getattr(image, "n_frames", 1)) if fmt in _ANIMATED else 1
    _check_pixels(width * height * count, max_pixels)
    orientation = _orientation(image)
    icc = image.info.get("icc_profile")
    loop = image.info.get("loop")
    frames: list[Image.Image] = []
    durations: list[int] = []
    for index in range(count):
        image.seek(index)
        image.load()
        durations.append(int(image.info.get("duration") or _FRAME_MS))
        frames.append(_clean(image, orientation, icc))
    return _Picture(frames=frames, durations=durations, loop=loop)


def _check_pixels(pixels: int, max_pixels: int) -> None:
    if pixels > max_pixels:
        raise MediaError(
            f"the picture has {pixels} pixels, over the limit of {max_pixels}", code="image_too_large"
        )


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        return 1  # broken EXIF: the pixels are still a picture, shown as stored
    return value if isinstance(value, int) else 1


def _clean(frame: Image.Image, orientation: int, icc: bytes | None) -> Image.Image:
    """A copy of ``frame``'s pixels alone: upright, in sRGB, with only its transparency left in ``info``."""
    transparency = frame.info.get("transparency")
    method = _UPRIGHT.get(orientation)
    clean = frame.transpose(method) if method is not None else frame.copy()
    if icc:
        clean = _to_srgb(clean, icc)
    clean.info = {} if transparency is None else {"transparency": transparency}
    return clean


def _to_srgb(frame: Image.Image, icc: bytes) -> Image.Image:
    # The profile is dropped with the rest of the metadata, so its colours move into the pixels first
    # (a phone's Display P3 photo would look washed out otherwise). A profile that lcms cannot use is
    # dropped as it is.
    if frame.mode not in ("RGB", "RGBA", "CMYK"):
        return frame
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.createProfile("sRGB")
        output = "RGBA" if frame.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(frame, source, srgb, outputMode=output)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return frame
    return converted if converted is not None else frame


def _encode(picture: _Picture, fmt: str, *, lossless: bool, quality: int) -> bytes:
    """``picture`` in ``fmt`` again, from its pixels and the options given here only."""
    first, rest = picture.frames[0], list(picture.frames[1:])
    options: dict[str, object] = {}
    if fmt == "JPEG":
        if first.mode not in ("L", "RGB", "CMYK"):
            first = first.convert("RGB")
        options = {"quality": quality, "optimize": True}
    elif fmt == "WEBP":
        options = {"lossless": True} if lossless else {"quality": quality}
    if "transparency" in first.info and fmt in ("PNG", "GIF"):
        options["transparency"] = first.info["transparency"]
    if rest:
        options.update(save_all=True, append_images=rest, duration=list(picture.durations))
        if picture.loop is not None:
            options["loop"] = int(picture.loop)
    out = io.BytesIO()
    first.save(out, format=fmt, **options)
    return out.getvalue()


def _preview(frame: Image.Image) -> bytes:
    """A WebP of ``frame`` of at most PREVIEW_MAX_BYTES, never larger than the picture."""
    base = _displayable(frame)
    base.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    for side, quality in _PREVIEW_STEPS:
        small = base.copy()
        small.thumbnail((side, side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        small.save(out, format="WEBP", quality=quality)
        if out.tell() <= PREVIEW_MAX_BYTES:
            return out.getvalue()
    raise MediaError("no preview of the picture fits in 32 KB", code="bad_image")  # see _PREVIEW_STEPS


def _displayable(frame: Image.Image) -> Image.Image:
    """A new RGB or RGBA image of ``frame``, as WebP can hold it."""
    if frame.mode in ("I", "F") or frame.mode.startswith("I;16"):
        # 16-bit and float greys: scale to 8 bits rather than clip everything above 255 to white.
        frame = frame.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    alpha = "A" in frame.mode or "a" in frame.mode or "transparency" in frame.info
    return frame.convert("RGBA" if alpha else "RGB")


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """The canvas size a WebP file declares in its first chunk (RFC 9649 §2.5-§2.7), or None."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def picture_mime(path: str | os.PathLike[str]) -> str | None:
    """The picture type the file at ``path`` claims by its signature (one of ``IMAGE_MIMES``), or None."""
    with open(path, "rb") as file:
        fmt = _sniff(file.read(_HEAD))
    return None if fmt is None else IMAGE_MIMES[fmt]
