"""Image I/O: odd sizes and modes come back at the input's size, in a sensible mode, upright."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from enlighten_ray.errors import BadInputError
from enlighten_ray.io.images import read_image, write_image
from enlighten_ray.io.storage import Location

rng = np.random.default_rng(0)


def _make(mode: str, size: tuple[int, int] = (37, 23)) -> Image.Image:
    w, h = size
    if mode == "I;16":
        return Image.fromarray((rng.integers(0, 65535, (h, w))).astype(np.uint16))
    rgba = Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode in ("RGBA", "LA"):
        return rgba.convert(mode)
    return rgba.convert("RGB").convert(mode)


@pytest.mark.parametrize(
    "mode, ext, expected",
    [
        ("L", ".png", "L"),
        ("LA", ".png", "LA"),
        ("RGBA", ".png", "RGBA"),
        ("I;16", ".png", "I;16"),
        ("CMYK", ".jpg", "RGB"),
        ("P", ".png", "RGB"),
        ("RGB", ".webp", "RGB"),
        ("RGB", ".tif", "RGB"),
    ],
)
def test_modes_round_trip_at_the_input_size(tmp_path: Path, mode: str, ext: str, expected: str) -> None:
    src = tmp_path / f"in{ext}"
    img = _make(mode)
    img.save(src)
    rgb, meta = read_image(src)
    assert rgb.shape == (23, 37, 3) and rgb.dtype == np.uint8
    out = tmp_path / f"out{ext}"
    write_image(out, rgb, meta)
    with Image.open(out) as back:
        assert back.size == (37, 23)
        assert back.mode == expected
        if "A" in mode:  # alpha untouched
            assert np.array_equal(np.asarray(back.getchannel("A")), np.asarray(Image.open(src).getchannel("A")))
        if mode == "I;16":  # 16-bit stays 16-bit and in range, at 8-bit precision
            diff = np.asarray(back).astype(int) - np.asarray(Image.open(src)).astype(int)
            assert np.abs(diff).max() <= 128


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    # Stored 40 wide x 30 high with a bright block top-left; Orientation 6 = display rotated 90 deg CW.
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:10, :10] = 255
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    exif[0x010F] = "TestCam"  # other EXIF survives
    src = tmp_path / "phone.jpg"
    img.save(src, exif=exif.tobytes(), quality=95)
    with Image.open(src) as shown:
        displayed = np.asarray(ImageOps.exif_transpose(shown).convert("RGB")).astype(int)

    rgb, meta = read_image(src)
    assert rgb.shape == (40, 30, 3)  # the model sees the picture upright
    out = tmp_path / "out.jpg"
    write_image(out, rgb, meta)
    with Image.open(out) as back:
        assert back.getexif().get(0x0112, 1) == 1
        assert back.getexif().get(0x010F) == "TestCam"
        upright = np.asarray(ImageOps.exif_transpose(back)).astype(int)
    assert upright.shape == displayed.shape
    assert np.abs(upright - displayed).mean() < 4  # displayed the same way up


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.png", b"just some notes\n" * 10, "not a recognised image"),
    ],
)
def test_bad_images_give_one_clear_error(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(BadInputError, match=reason) as err:
        read_image(bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_image_is_rejected(tmp_path: Path, ext: str) -> None:
    good = tmp_path / f"good{ext}"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BadInputError, match="cannot decode image"):
        read_image(cut)


def test_list_media_sorts_recurses_and_skips(tmp_path: Path) -> None:
    names = ["b.jpg", "a/z.PNG", "a/clip.mp4", "notes.txt", ".hidden.jpg", ".git/x.jpg", "a/.x.partial.jpg", "c.mkv"]
    for rel in names:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.jpg").write_bytes(b"x")
    root = tmp_path.resolve()
    media = Location(str(tmp_path)).media(exclude=(str(root / "out"),))
    names = {
        kind: [Path(f.path).relative_to(root).as_posix() for f in media if f.kind == kind]
        for kind in ("image", "video")
    }
    assert names["image"] == ["a/z.PNG", "b.jpg"]
    assert names["video"] == ["a/clip.mp4", "c.mkv"]
