"""Synthetic geometric relationships of the sg2im COCO protocol.

For each real object, another real object is chosen uniformly, the pair is swapped with p = 0.5,
and the predicate follows from the geometry (y axis pointing down):

* ``surrounding`` if the subject box strictly contains the object box, ``inside`` for the reverse;
* otherwise by theta = atan2(dy, dx) of the centre difference subject - object:
  ``left of`` if theta >= 3pi/4 or theta <= -3pi/4, ``above`` if -3pi/4 <= theta < -pi/4,
  ``right of`` if -pi/4 <= theta < pi/4, ``below`` if pi/4 <= theta < 3pi/4.

sg2im draws these anew each time an image is loaded; we draw them once per image from a generator
seeded with ``(seed, image_id)`` so the canonical splits are reproducible (a recorded deviation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

COCO_PREDICATES = ("__in_image__", "left of", "right of", "above", "below", "inside", "surrounding")

Box = tuple[float, float, float, float]


def predicate_for(
    subject_box: Box, object_box: Box, subject_center: tuple[float, float], object_center: tuple[float, float]
) -> str:
    """The sg2im predicate name for the ordered pair (subject, object)."""
    sx0, sy0, sx1, sy1 = subject_box
    ox0, oy0, ox1, oy1 = object_box
    if sx0 < ox0 and sx1 > ox1 and sy0 < oy0 and sy1 > oy1:
        return "surrounding"
    if sx0 > ox0 and sx1 < ox1 and sy0 > oy0 and sy1 < oy1:
        return "inside"
    theta = math.atan2(subject_center[1] - object_center[1], subject_center[0] - object_center[0])
    if theta >= 3 * math.pi / 4 or theta <= -3 * math.pi / 4:
        return "left of"
    if -3 * math.pi / 4 <= theta < -math.pi / 4:
        return "above"
    if -math.pi / 4 <= theta < math.pi / 4:
        return "right of"
    return "below"


def mask_center(box: Box, mask: np.ndarray | None) -> tuple[float, float]:
    """Centre of mass of an (M, M) mask laid over its box (sg2im), else the box centre."""
    x0, y0, x1, y1 = box
    if mask is None or not mask.any():
        return (0.5 * (x0 + x1), 0.5 * (y0 + y1))
    m_h, m_w = mask.shape
    xs = np.linspace(x0, x1, m_w, dtype=np.float64)
    ys = np.linspace(y0, y1, m_h, dtype=np.float64)
    rows, cols = np.nonzero(mask)
    return (float(xs[cols].mean()), float(ys[rows].mean()))


def draw_triples(
    boxes: Sequence[Box], centers: Sequence[tuple[float, float]], rng: np.random.Generator
) -> list[tuple[int, str, int]]:
    """One triple per real object (sg2im's loop), predicates as names. ``boxes``: the real objects only."""
    n = len(boxes)
    triples: list[tuple[int, str, int]] = []
    if n < 2:
        return triples
    for cur in range(n):
        choices = [i for i in range(n) if i != cur]
        other = choices[int(rng.integers(len(choices)))]
        if rng.random() > 0.5:
            s, o = cur, other
        else:
            s, o = other, cur
        triples.append((s, predicate_for(boxes[s], boxes[o], centers[s], centers[o]), o))
    return triples
