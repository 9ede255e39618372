"""Small pictures of gallery images: for the server's grid, the clusters' contact sheets and the report."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 160
MIN_SIZE = 96  # smaller images (Omniglot's 28 px) are enlarged, nearest neighbour, to at least this


def thumbnail(image: Image.Image, size: int = SIZE, min_size: int = MIN_SIZE) -> Image.Image:
    """`image` (converted to L or RGB) fitted in size×size; one smaller than `min_size` is enlarged by an integer
    factor so its pixels stay crisp."""
    image = image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode)
    image.thumbnail((size, size))
    if max(image.size) < min_size:
        factor = -(-min_size // max(image.size))
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return image


def open_thumbnail(path: str | Path, max_pixels: int, size: int = SIZE, min_size: int = MIN_SIZE
                   ) -> Image.Image | None:
    """The thumbnail of the image file at `path`, or None when it cannot be read or has more than `max_pixels`."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                return None
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            image.load()
            return thumbnail(image, size, min_size)
    except Exception:  # a gallery file changed or vanished since it was embedded: shown as missing
        return None


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """A PNG as a `data:` URI, to inline in a self-contained HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def contact_sheet(images: Sequence[Image.Image | None], *, columns: int = 8, cell: int = 96, gap: int = 4
                  ) -> Image.Image:
    """The images in a grid of `columns`, each fitted in a cell×cell square on white; None is a crossed cell."""
    rows = max(1, -(-len(images) // columns))
    width, height = min(columns, max(1, len(images))) * (cell + gap) + gap, rows * (cell + gap) + gap
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for position, image in enumerate(images):
        x, y = gap + (position % columns) * (cell + gap), gap + (position // columns) * (cell + gap)
        if image is None:
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline="#d9534f")
            draw.line((x, y, x + cell - 1, y + cell - 1), fill="#d9534f")
            continue
        fitted = thumbnail(image, cell, cell).convert("RGB")
        sheet.paste(fitted, (x + (cell - fitted.width) // 2, y + (cell - fitted.height) // 2))
        draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline="#ccd3da")
    return sheet
