"""Contact sheets: the same images side by side from an input folder and any output folders, as
one PNG (and an HTML page) to look at colour casts, noise, halos and blown highlights."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from enlighten_ray.errors import BadInputError
from enlighten_ray.eval.table import image_key, list_images, read_rgb
from enlighten_ray.io.atomic import atomic_output

__all__ = ["make_sheet", "sheet_layout"]

_PAD, _TITLE_H, _CAPTION_H = 8, 24, 16


def _column_titles(dirs: Sequence[Path]) -> list[str]:
    """Folder names, with the parent added where two columns would share a name."""
    names = [d.name or str(d) for d in dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(n) > 1 else n for d, n in zip(dirs, names, strict=True)]


def _thumb(path: Path | None, height: int) -> Image.Image | None:
    if path is None:
        return None
    try:
        img = Image.fromarray(read_rgb(path))
    except BadInputError:
        return None
    width = max(1, round(img.width * height / img.height))
    return img.resize((width, height), Image.Resampling.LANCZOS)


def sheet_layout(widths: list[list[int]], height: int) -> tuple[list[int], tuple[int, int]]:
    """Column widths (widest thumbnail per column, at least `height`) and the sheet's (W, H) for a
    grid of thumbnail widths[row][col] all `height` tall: a title band, then one row per image
    with a caption band under it for the file name."""
    ncols = len(widths[0]) if widths else 0
    col_w = [max([height] + [r[c] for r in widths]) for c in range(ncols)]
    w = _PAD + sum(cw + _PAD for cw in col_w)
    h = _TITLE_H + len(widths) * (height + _CAPTION_H + _PAD) + _PAD
    return col_w, (w, h)


def _collect(input_dir: Path, output_dirs: Sequence[Path]) -> tuple[list[str], list[list[Path | None]]]:
    """Rows = images of INPUT_DIR; each OUTPUT_DIR's file with the same name (any extension)."""
    inputs = list_images(input_dir)
    if not inputs:
        raise BadInputError(input_dir, "no images here")
    outs = [{image_key(p, d): p for p in list_images(d)} for d in output_dirs]
    names = [image_key(p, input_dir) for p in inputs]
    return names, [[p] + [o.get(n) for o in outs] for n, p in zip(names, inputs, strict=True)]


def make_sheet(
    input_dir: str | os.PathLike,
    output_dirs: Sequence[str | os.PathLike],
    outputs: Sequence[str | os.PathLike],
    height: int = 160,
) -> tuple[int, int]:
    """Before/after contact sheet: a column per folder (input first), a row per input image, each
    thumbnail `height` px tall. Writes every path in `outputs` (.png/.jpg: one image; .html: a
    self-contained page with embedded thumbnails). Returns the image's (width, height)."""
    input_dir = Path(input_dir)
    dirs = [Path(d) for d in output_dirs]
    for d in dirs:
        if not d.is_dir():
            raise BadInputError(d, "no such directory")
    names, grid = _collect(input_dir, dirs)
    titles = _column_titles([input_dir, *dirs])
    rows = tqdm(grid, desc="sheet", unit="row", leave=False, disable=None)  # no bar in a log
    thumbs = [[_thumb(p, height) for p in row] for row in rows]
    widths = [[t.width if t else height for t in row] for row in thumbs]
    col_w, size = sheet_layout(widths, height)
    for out in map(Path, outputs):
        if out.suffix.lower() in {".html", ".htm"}:
            page = _sheet_html(titles, names, thumbs)
            with atomic_output(out) as tmp:
                tmp.write_text(page, encoding="utf-8")
        else:
            sheet = _sheet_image(titles, names, thumbs, col_w, size, height)
            with atomic_output(out) as tmp:
                try:
                    sheet.save(tmp, format=Image.registered_extensions().get(out.suffix.lower()))
                except (KeyError, ValueError) as exc:
                    raise BadInputError(out, "unknown image type; use .png, .jpg or .html") from exc
    return size


def _sheet_image(
    titles: list[str],
    names: list[str],
    thumbs: list[list[Image.Image | None]],
    col_w: list[int],
    size: tuple[int, int],
    height: int,
) -> Image.Image:
    sheet = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    xs = np.cumsum([_PAD] + [w + _PAD for w in col_w])[:-1].tolist()
    for x, w, title in zip(xs, col_w, titles, strict=True):
        draw.text((x, _PAD // 2), _fit(draw, title, w, font), fill=(0, 0, 0), font=font)
    for r, (name, row) in enumerate(zip(names, thumbs, strict=True)):
        y = _TITLE_H + r * (height + _CAPTION_H + _PAD)
        for x, w, t in zip(xs, col_w, row, strict=True):
            if t is None:  # no such output (or unreadable): a grey box says so
                x0 = x + (w - height) // 2
                draw.rectangle((x0, y, x0 + height - 1, y + height - 1), fill=(200, 200, 200))
                draw.text((x0 + 4, y + 4), "missing", fill=(0, 0, 0), font=font)
            else:
                sheet.paste(t, (x + (w - t.width) // 2, y))
        draw.text((xs[0], y + height + 2), _fit(draw, name, size[0] - 2 * _PAD, font), fill=(60, 60, 60), font=font)
    return sheet


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont) -> str:
    """`text` shortened with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _sheet_html(titles: list[str], names: list[str], thumbs: list[list[Image.Image | None]]) -> str:
    def cell(t: Image.Image | None) -> str:
        if t is None:
            return "<td class=missing>missing</td>"
        buf = io.BytesIO()
        t.save(buf, format="JPEG", quality=90)
        return f'<td><img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}"></td>'

    head = "".join(f"<th>{html.escape(t)}</th>" for t in titles)
    body = "\n".join(
        f"<tr>{''.join(cell(t) for t in row)}</tr>\n<tr><td class=name colspan={len(row)}>{html.escape(n)}</td></tr>"
        for n, row in zip(names, thumbs, strict=True)
    )
    return (
        "<!doctype html>\n<html><head><meta charset=utf-8><title>enlighten-ray sheet</title>\n<style>"
        "body{font-family:sans-serif}td{text-align:center;vertical-align:top}"
        ".name{text-align:left;color:#444;font-size:small}.missing{background:#ccc}</style></head>\n"
        f"<body><table>\n<tr>{head}</tr>\n{body}\n</table></body></html>\n"
    )
