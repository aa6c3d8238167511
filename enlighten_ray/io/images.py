"""Image files in and out (Pillow), and sorting a folder into images and videos.

The model sees uint8 (H, W, 3) RGB, upright: EXIF orientation is applied on reading and the output
is written upright with the orientation tag removed, so it displays the same way up as the input.
Writing restores a mode close to the input's:

- L / I;16 (grey) stay grey; 1-bit images come back as L.
- RGBA / LA / palette with transparency keep their alpha channel untouched.
- 16-bit grey (I;16, I) is enhanced at 8-bit precision and written back as 16-bit (value * 257),
  so the file keeps its type and range; the extra precision of the input is not preserved.
- Palette (P), CMYK, YCbCr, LAB and HSV come back as RGB (re-quantising to a palette or
  converting back to CMYK without the printer's profile would degrade the result).
The ICC profile, DPI and the rest of EXIF are kept.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from enlighten_ray.errors import BadInputError, first_line
from enlighten_ray.io.atomic import atomic_output
from enlighten_ray.io.limits import check_pixels, pillow_header_only
from enlighten_ray.io.video import VIDEO_EXTENSIONS

__all__ = [
    "HEIF_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "ImageMeta",
    "encode_png",
    "decode_image",
    "media_kind",
    "read_image",
    "write_image",
]

HEIF_EXTENSIONS = frozenset({".heic", ".heif"})


def _plugin_extensions() -> frozenset[str]:
    """AVIF where Pillow was built with it (its wheels since 11.3); HEIC/HEIF with the optional
    pillow-heif plugin (`pip install 'enlighten-ray[heif]'`), registered with Pillow here."""
    from PIL import features

    found = {".avif"} if features.check("avif") else set()
    try:
        import pillow_heif
    except ImportError:
        return frozenset(found)
    pillow_heif.register_heif_opener()
    return frozenset(found | HEIF_EXTENSIONS)


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}) | _plugin_extensions()
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N")
_SIXTEEN_BIT = ("I", "I;16", "I;16L", "I;16B", "I;16N")
# JPEG/WebP quality on write: high, since the input was already lossy once.
_QUALITY = 95


@dataclass
class ImageMeta:
    """What `write_image` needs to give the output the input's mode and metadata."""

    mode: str  # the output mode: "RGB", "RGBA", "L", "LA" or "I;16"
    alpha: np.ndarray | None = None  # (H, W) uint8, upright
    info: dict[str, Any] = field(default_factory=dict)  # icc_profile, dpi, exif to save with


def media_kind(path: str | os.PathLike) -> str | None:
    """ "image", "video" or None, from the extension."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """(H, W, 3) uint8 RGB, upright, and what is needed to write the result back like the input."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "no such file")
    return decode_image(path.read_bytes(), path)


def decode_image(data: bytes, name: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """`read_image` for encoded bytes (from a bucket or Ray's object store); errors name `name`."""
    if not data:
        raise BadInputError(name, "empty file (0 bytes)")
    try:
        with pillow_header_only():
            img = Image.open(io.BytesIO(data))
        with img:
            check_pixels(name, *img.size)  # from the header, before decoding
            if getattr(img, "n_frames", 1) > 1:
                raise BadInputError(name, f"{img.n_frames} frames (animated or multi-page images are not supported)")
            img.load()  # decode now: truncation shows up here, not at first use
            info = {k: img.info[k] for k in ("icc_profile", "dpi") if k in img.info}
            img = ImageOps.exif_transpose(img)  # also drops the orientation tag from its EXIF
    except BadInputError:
        raise
    except UnidentifiedImageError as exc:
        raise BadInputError(name, "not a recognised image file") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInputError(name, f"cannot decode image ({first_line(exc)})") from exc
    exif = img.getexif()
    if exif:
        info["exif"] = exif.tobytes()
    return _to_rgb(img, name, info)


def _to_rgb(img: Image.Image, path: str | os.PathLike, info: dict[str, Any]) -> tuple[np.ndarray, ImageMeta]:
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode == "PA":
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _SIXTEEN_BIT:
        grey16 = np.asarray(img, dtype=np.int64).clip(0, 65535)
        grey = np.round(grey16 / 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), ImageMeta("I;16", None, info)
    if mode in _GREY_MODES:
        alpha = np.asarray(img.getchannel("A")) if mode == "LA" else None
        grey = np.asarray(img.convert("L"))
        return np.repeat(grey[..., None], 3, axis=2), ImageMeta("LA" if alpha is not None else "L", alpha, info)
    if mode == "F":
        raise BadInputError(path, "32-bit float images are not supported")
    if mode in ("RGBA", "RGBa", "La"):
        alpha = np.asarray(img.getchannel("A"))
        return np.asarray(img.convert("RGB")), ImageMeta("RGBA", alpha, info)
    return np.asarray(img.convert("RGB")), ImageMeta("RGB", None, info)


def write_image(path: str | os.PathLike, rgb: np.ndarray, meta: ImageMeta) -> None:
    """Write (H, W, 3) uint8 RGB atomically in `meta.mode`, format from the extension."""
    path = Path(path)
    img = _from_rgb(rgb, meta)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise BadInputError(path, f"unknown image extension '{path.suffix}'")
    options: dict[str, Any] = dict(meta.info)
    if fmt in ("JPEG", "WEBP", "AVIF", "HEIF"):
        options["quality"] = _QUALITY
    if fmt == "JPEG" and img.mode in ("RGBA", "LA"):  # JPEG has no alpha: keep colour, drop alpha
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    if fmt == "JPEG" and img.mode == "I;16":
        img = Image.fromarray(np.asarray(rgb)[..., 0].copy())
    with atomic_output(path) as tmp:
        img.save(tmp, format=fmt, **options)


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB frame; compression level 1 is fast and still lossless."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _from_rgb(rgb: np.ndarray, meta: ImageMeta) -> Image.Image:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if meta.mode in ("L", "LA", "I;16"):
        grey = Image.fromarray(rgb).convert("L")  # the enhanced luma (ITU-R 601-2, as Pillow's L)
        if meta.mode == "I;16":
            return Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
        if meta.mode == "LA":
            return Image.merge("LA", (grey, Image.fromarray(meta.alpha)))
        return grey
    img = Image.fromarray(rgb)
    if meta.mode == "RGBA":
        img.putalpha(Image.fromarray(meta.alpha))
    return img
