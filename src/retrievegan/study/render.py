"""What a trial shows: the scene graph as (escaped) text and each patch set as one image."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def escape_markdown(text: str) -> str:
    """Text shown literally by ``st.markdown`` (no markup, no HTML, no links)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def graph_markdown(objects: Sequence[str], relations: Sequence[str]) -> str:
    """The scene graph as a Markdown list: the objects in patch order, then the relations."""
    numbered = ", ".join(f"{i + 1}\\. {escape_markdown(name)}" for i, name in enumerate(objects))
    lines = [f"**Objects (in the order of the patches):** {numbered}"]
    if relations:
        lines.append("**Relations:** " + "; ".join(escape_markdown(r) for r in relations))
    return "  \n".join(lines)


def patch_set_alt(name: str, objects: Sequence[str]) -> str:
    """Alt text of one patch-set image: its name and its objects in patch order."""
    return f"{name}: " + ", ".join(f"{i + 1}. {o}" for i, o in enumerate(objects))


def patch_grid(
    patches: np.ndarray, labels: Sequence[str] | None = None, tile: int = 104, gap: int = 8, per_row: int = 2
) -> np.ndarray:
    """(K, C, C, 3) uint8 patches -> one (H, W, 3) uint8 image: up to ``per_row`` tiles a row, numbered labels.

    Two ``tile``-pixel tiles a row keep a set narrow enough to show two sets side by side on a phone
    (each set at about 75 px a tile there) while a desktop shows the tiles at full size.
    """
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
        raise ValueError(f"expected (K, C, C, 3) uint8 patches, got {patches.shape} {patches.dtype}")
    count = len(patches)
    cols = max(1, min(per_row, count))
    rows = max(1, math.ceil(count / cols))
    label_h = 20 if labels is not None else 0
    width = cols * tile + (cols + 1) * gap
    height = rows * (tile + label_h) + (rows + 1) * gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=14)
    for i, patch in enumerate(patches):
        r, c = divmod(i, cols)
        x, y = gap + c * (tile + gap), gap + r * (tile + label_h + gap)
        canvas.paste(Image.fromarray(patch).resize((tile, tile), Image.LANCZOS), (x, y))
        draw.rectangle((x - 1, y - 1, x + tile, y + tile), outline=(160, 160, 160))
        if labels is not None:
            text = f"{i + 1}. {labels[i]}"
            while len(text) > 4 and draw.textlength(text, font=font) > tile + gap:
                text = text[:-2] + "…"
            draw.text((x + tile / 2, y + tile + 3), text, fill=(30, 30, 30), font=font, anchor="ma")
    return np.asarray(canvas)
