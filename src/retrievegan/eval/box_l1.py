"""`retrievegan box-l1`: box regression error of a trained method against trivial baselines.

For every real object of the evaluated split (``__image__`` nodes excluded: their box is always the
whole image) the L1 error is the mean absolute difference of the four normalised coordinates. The
baselines predict, for every object, the mean box of the training split's real objects (``mean_box``)
or the mean box of its category (``category_mean_box``); a model that uses the scene graph should beat
both. Also reported: mean IoU with the ground truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrievegan import io, runinfo
from retrievegan.data.dataset import SceneGraphDataset, sequential_loader


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (K, 4) boxes (x0, y0, x1, y1); degenerate predictions count as IoU 0."""
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _real_boxes(dataset: SceneGraphDataset) -> tuple[np.ndarray, np.ndarray]:
    objs, boxes = [], []
    for index in range(len(dataset)):
        cats, coords = dataset.object_arrays(index)
        objs.append(cats[:-1])
        boxes.append(coords[:-1])
    return np.concatenate(objs), np.concatenate(boxes).astype(np.float64)


def _summary(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return {"l1": float(np.abs(pred - target).mean()), "mean_iou": float(box_iou(pred, target).mean())}


def box_l1(
    checkpoint: str | Path,
    data_dir: str | Path,
    out_json: str | Path,
    split: str = "val",
    batch_size: int = 64,
    device_name: str = "auto",
) -> dict[str, Any]:
    """Evaluate the method's predicted boxes on ``split``; write and return the result."""
    from retrievegan.io import sha256_file
    from retrievegan.train.loop import load_trained_on

    method, nets, payload, dataset, device = load_trained_on(checkpoint, data_dir, split, device_name, use_masks=False)
    train_objs, train_boxes = _real_boxes(SceneGraphDataset(data_dir, "train", use_masks=False))
    preds, targets, cats = [], [], []
    with torch.no_grad():
        for batch in sequential_loader(dataset, batch_size, 0):
            batch = batch.to(device)
            real = batch.real_objects
            preds.append(method.predict_boxes(nets, batch)[real].double().cpu().numpy())
            targets.append(batch.boxes[real].double().cpu().numpy())
            cats.append(batch.objs[real].cpu().numpy())
    pred, target, cat = np.concatenate(preds), np.concatenate(targets), np.concatenate(cats)
    mean_box = train_boxes.mean(0)
    category_mean = {int(c): train_boxes[train_objs == c].mean(0) for c in np.unique(train_objs)}
    category_pred = np.stack([category_mean.get(int(c), mean_box) for c in cat])
    model = _summary(pred, target)
    baselines = {
        "mean_box": _summary(np.broadcast_to(mean_box, target.shape), target),
        "category_mean_box": _summary(category_pred, target),
    }
    result = {
        "method": payload["method"],
        "split": split,
        "num_objects": int(len(target)),
        "box_l1": model["l1"],
        "box_mean_iou": model["mean_iou"],
        "baselines": baselines,
        "train_mean_box": [float(v) for v in mean_box],
        "better_than_mean_box": model["l1"] < baselines["mean_box"]["l1"],
        "better_than_category_mean_box": model["l1"] < baselines["category_mean_box"]["l1"],
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "checkpoint_step": int(payload["step"]),
    }
    io.write_json(out_json, result)
    runinfo.report_provenance(out_json)
    return result
