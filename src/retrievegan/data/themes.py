"""Hidden themes of the synthetic benchmark: a palette and a texture family per theme.

Every object and the stuff background of one synthetic image are painted with the palette and
texture of that image's theme, so patches cut from one image are compatible by construction and
patches of different themes clash. Categories are told apart by shape (things) or by a grey-level
pattern laid over the theme (stuff), never by colour, so a category classifier need not learn themes.
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np

TEXTURE_FAMILIES = ("stripes", "checker", "dots", "waves", "rings", "noise")


@dataclasses.dataclass(frozen=True)
class Theme:
    index: int
    palette: tuple[tuple[float, float, float], ...]  # 4 RGB colours in [0, 1]
    texture: str  # one of TEXTURE_FAMILIES
    frequency: float  # cycles per 32 px
    angle: float  # radians


def make_themes(num_themes: int, seed: int) -> tuple[Theme, ...]:
    """``num_themes`` themes with evenly spaced hues and cycling texture families."""
    if num_themes < 2:
        raise ValueError("the synthetic benchmark needs at least 2 themes")
    rng = np.random.default_rng([seed, 7919])
    themes = []
    for t in range(num_themes):
        hue = (t + 0.3 * rng.random()) / num_themes
        specs = (  # (hue offset, saturation, value)
            (0.0, 0.55, 0.92),
            (0.04, 0.75, 0.50),
            (-0.06, 0.85, 0.78),
            (0.10, 0.35, 0.98),
        )
        palette = tuple(colorsys.hsv_to_rgb((hue + dh) % 1.0, s, v) for dh, s, v in specs)
        themes.append(
            Theme(
                index=t,
                palette=palette,
                texture=TEXTURE_FAMILIES[t % len(TEXTURE_FAMILIES)],
                frequency=float(1.5 + 2.0 * rng.random()),
                angle=float(np.pi * rng.random()),
            )
        )
    return tuple(themes)


def texture_map(
    family: str, height: int, width: int, frequency: float, angle: float, phase: float, rng: np.random.Generator
) -> np.ndarray:
    """A (H, W) float map in [0, 1] of the texture family."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    k = 2.0 * np.pi * frequency / 32.0
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    if family == "stripes":
        out = 0.5 + 0.5 * np.sin(k * u + phase)
    elif family == "checker":
        out = (np.sin(k * u + phase) * np.sin(k * v + phase) > 0).astype(np.float32)
    elif family == "dots":
        period = 2 * np.pi / k
        du = np.mod(u + phase * period, period) - period / 2
        dv = np.mod(v + phase * period, period) - period / 2
        out = (du * du + dv * dv < (0.3 * period) ** 2).astype(np.float32)
    elif family == "waves":
        out = 0.5 + 0.5 * np.sin(k * (u + 4.0 * np.sin(v / 5.0)) + phase)
    elif family == "rings":
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        out = 0.5 + 0.5 * np.sin(k * np.hypot(ys - cy, xs - cx) + phase)
    elif family == "noise":
        cells = max(2, int(round(max(height, width) * frequency / 48.0)))
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        gy = ys / max(height - 1, 1) * cells
        gx = xs / max(width - 1, 1) * cells
        y0 = np.clip(gy.astype(int), 0, cells - 1)
        x0 = np.clip(gx.astype(int), 0, cells - 1)
        fy, fx = gy - y0, gx - x0
        top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
        bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
        out = top * (1 - fy) + bottom * fy
    else:
        raise ValueError(f"unknown texture family {family!r}")
    return out.astype(np.float32)


def stuff_overlay(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A (H, W) grey-level multiplier in about [0.6, 1.2] that makes a stuff category recognisable."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "gradient":  # smooth, lighter towards the top
        return (1.15 - 0.35 * ys / max(height - 1, 1)).astype(np.float32)
    if kind == "bricks":
        row = (ys // 10).astype(int)
        mortar = (np.mod(ys, 10) < 1.5) | (np.mod(xs + 10 * (row % 2), 20) < 1.5)
        return np.where(mortar, 0.6, 1.05).astype(np.float32)
    if kind == "streaks":
        cols = rng.random(width).astype(np.float32)
        return (0.75 + 0.45 * cols[None, :].repeat(height, 0)).astype(np.float32)
    if kind == "speckle":
        return (0.8 + 0.4 * rng.random((height, width))).astype(np.float32)
    if kind == "ripples":
        return (0.9 + 0.25 * np.sin(ys * 0.9 + 2.0 * np.sin(xs / 9.0))).astype(np.float32)
    raise ValueError(f"unknown stuff overlay {kind!r}")


def paint(
    theme: Theme,
    colour_pair: tuple[int, int],
    height: int,
    width: int,
    phase: float,
    brightness: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """(H, W, 3) float image of the theme's texture between two palette colours."""
    tex = texture_map(theme.texture, height, width, theme.frequency, theme.angle, phase, rng)
    a = np.asarray(theme.palette[colour_pair[0]], dtype=np.float32)
    b = np.asarray(theme.palette[colour_pair[1]], dtype=np.float32)
    return brightness * (a[None, None, :] * (1 - tex[..., None]) + b[None, None, :] * tex[..., None])
