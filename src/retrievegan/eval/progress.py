"""`retrievegan progress-figure`: a grid of a method's samples over training (from its generator snapshots).

Rows: the real images, then the samples of each selected snapshot (step 0 first, the final step last)
with ground-truth boxes when the method supports it, then the final model with predicted boxes.
Columns: the first ``num_images`` scene graphs of the split. Every row uses the same per-image seeds,
so rows differ only by the training step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from retrievegan import io
from retrievegan.data.dataset import collate_scene_graphs, to_uint8
from retrievegan.errors import InputError
from retrievegan.seeds import SAMPLE_NOISE, image_generators

LABEL_WIDTH = 150
SCALE = 2


def _select(paths: list[Path], max_rows: int) -> list[Path]:
    if len(paths) <= max_rows:
        return paths
    picks = sorted({int(round(v)) for v in np.linspace(0, len(paths) - 1, max_rows)})
    return [paths[i] for i in picks]


def _row(pixels: np.ndarray, label: str) -> Image.Image:
    size = pixels.shape[1] * SCALE
    row = Image.new("RGB", (LABEL_WIDTH + size * len(pixels), size), "white")
    for k, image in enumerate(pixels):
        row.paste(Image.fromarray(image).resize((size, size), Image.NEAREST), (LABEL_WIDTH + k * size, 0))
    draw = ImageDraw.Draw(row)
    for i, line in enumerate(label.split("\n")):
        draw.text((6, 6 + 14 * i), line, fill="black")
    return row


def progress_figure(
    checkpoint: str | Path,
    snapshots_dir: str | Path,
    data_dir: str | Path,
    out_png: str | Path,
    num_images: int = 8,
    max_rows: int = 5,
    split: str = "val",
    seed: int = 0,
    device_name: str = "auto",
) -> dict[str, Any]:
    from retrievegan.train.loop import load_snapshot, load_trained, load_trained_on

    method, nets, payload, dataset, device = load_trained_on(checkpoint, data_dir, split, device_name)
    snapshots = sorted(Path(snapshots_dir).glob("step_*.pt"))
    if not snapshots:
        raise InputError(snapshots_dir, "no generator snapshots (step_*.pt) found")
    count = min(num_images, len(dataset))
    batch = method.host_prepare(collate_scene_graphs([dataset[i] for i in range(count)])).to(device)
    ids = batch.image_ids.tolist()
    snapshot_setting = "gt_bbox" if "gt_bbox" in method.settings else method.settings[0]

    def draw(setting: str) -> np.ndarray:
        for net in nets.values():
            net.eval()
        with torch.no_grad():
            gens = image_generators((SAMPLE_NOISE, seed), ids, device)
            return to_uint8(method.sample(nets, batch, setting, gens).images)

    rows = [_row(to_uint8(batch.images), f"real ({split})")]
    steps = []
    for path in _select(snapshots, max_rows):
        step = load_snapshot(path, nets)
        steps.append(step)
        rows.append(_row(draw(snapshot_setting), f"step {step}\n{snapshot_setting}"))
    if "pred_bbox" in method.settings:
        method, nets, payload = load_trained(checkpoint, device)
        rows.append(_row(draw("pred_bbox"), f"step {payload['step']} (final)\npred_bbox"))
    figure = Image.new("RGB", (rows[0].width, sum(r.height for r in rows)), "white")
    top = 0
    for row in rows:
        figure.paste(row, (0, top))
        top += row.height
    with io.atomic_path(out_png) as tmp:
        figure.save(tmp, format="PNG")
    return {"method": payload["method"], "steps": steps, "image_ids": ids, "rows": len(rows)}
