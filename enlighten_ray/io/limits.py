"""What one input may cost: a cap on the pixels of an image or a video frame, checked from the
file's header before anything is decoded (a 31 KB PNG can declare 16000 x 16000 pixels).

The cap is Pillow's: it refuses images above twice its `MAX_IMAGE_PIXELS` (~179 Mpx; 8K video is
33 Mpx), and videos get the same. `--max-pixels` on `enhance` and `batch` sets it through the
ENLIGHTEN_MAX_PIXELS environment variable, which the batch job passes to every Ray worker.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator

from PIL import Image

from enlighten_ray.errors import BadInputError

__all__ = ["ENV", "DEFAULT_MAX_PIXELS", "check_pixels", "max_pixels", "pillow_header_only", "set_max_pixels"]

ENV = "ENLIGHTEN_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 2 * 89_478_485  # where Pillow raises DecompressionBombError
_PILLOW_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is process-wide


def max_pixels() -> int:
    """The cap in force: ENLIGHTEN_MAX_PIXELS, else the default."""
    text = os.environ.get(ENV)
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise BadInputError(ENV, f"must be a positive number of pixels, got {text!r}")
    return value


@contextlib.contextmanager
def pillow_header_only() -> Iterator[None]:
    """Around `Image.open` (which reads the header only): Pillow's own size guard off, so that
    `check_pixels` applies the one cap with its one message before anything is decoded."""
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def set_max_pixels(value: int | None) -> dict[str, str]:
    """Set the cap for this process and its children (None: keep it); returns the environment
    variables a Ray job passes on to its workers."""
    if value is not None:
        if value < 1:
            raise BadInputError("--max-pixels", f"must be a positive number of pixels, got {value}")
        os.environ[ENV] = str(value)
    return {ENV: os.environ[ENV]} if ENV in os.environ else {}


def check_pixels(name: object, width: int, height: int) -> None:
    """Refuse a frame of width x height above the cap, naming the file, the size and the option."""
    cap = max_pixels()
    if width * height > cap:
        raise BadInputError(
            name,
            f"{width}x{height} pixels ({width * height / 1e6:.0f} Mpx) exceed the {cap / 1e6:.0f} Mpx cap "
            "(--max-pixels or ENLIGHTEN_MAX_PIXELS raises it)",
        )
