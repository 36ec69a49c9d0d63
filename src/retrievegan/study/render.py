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
    return "\n\n".join(lines)


def patch_grid(patches: np.ndarray, labels: Sequence[str] | None = None, tile: int = 96, gap: int = 8,
               per_row: int = 4) -> np.ndarray:
    """(K, C, C, 3) uint8 patches -> one (H, W, 3) uint8 image: up to ``per_row`` tiles a row, numbered labels."""
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
        raise ValueError(f"expected (K, C, C, 3) uint8 patches, got {patches.shape} {patches.dtype}")
    count = len(patches)
    cols = max(1, min(per_row, count))
    rows = max(1, math.ceil(count / cols))
    label_h = 18 if labels is not None else 0
    width = cols * tile + (cols + 1) * gap
    height = rows * (tile + label_h) + (rows + 1) * gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    for i, patch in enumerate(patches):
        r, c = divmod(i, cols)
        x, y = gap + c * (tile + gap), gap + r * (tile + label_h + gap)
        canvas.paste(Image.fromarray(patch).resize((tile, tile), Image.LANCZOS), (x, y))
        draw.rectangle((x - 1, y - 1, x + tile, y + tile), outline=(160, 160, 160))
        if labels is not None:
            text = f"{i + 1}. {labels[i]}"
            draw.text((x + tile / 2, y + tile + 2), text, fill=(40, 40, 40), font=font, anchor="ma")
    return np.asarray(canvas)
