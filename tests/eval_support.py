"""Helpers for the evaluation tests: tiny random synthnet checkpoints, image sets, sample folders.

Nothing here needs pretrained weights or results/: every network is randomly initialised from an
explicit generator and saved to a temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def tiny_synthnet(
    path: Path, seed: int = 0, width: int = 4, image_size: int = 32, num_themes: int = 5, num_categories: int = 6
) -> Path:
    """A randomly initialised synthnet checkpoint (a stand-in extractor for metric tests)."""
    from retrievegan.eval.synthnet import SynthNet, save_synthnet

    generator = torch.Generator().manual_seed(seed)
    model = SynthNet.initialised(
        generator, num_themes=num_themes, num_categories=num_categories, width=width, image_size=image_size
    )
    with torch.no_grad():  # confident random theme head (logits std ~3), so that IS is far from its floor of 1
        probe = torch.from_numpy(smooth_images(16, image_size, seed=123)).permute(0, 3, 1, 2).contiguous()
        pool = model(probe)["pool"]
        torch.nn.init.normal_(model.theme_head.weight, 0.0, 1.0, generator=generator)
        model.theme_head.weight /= model.theme_head(pool - pool.mean(0)).std() / 3.0
        model.theme_head.bias.copy_(-model.theme_head.weight @ pool.mean(0))  # no class wins everywhere
    save_synthnet(path, model, {"test": True})
    return path


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size, 3) uint8 images with random smooth colour gradients and blobs."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        base = rng.uniform(0, 255, 3)
        grad = rng.uniform(-120, 120, (2, 3))
        img = base + xs[..., None] * grad[0] + ys[..., None] * grad[1]
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        blob = ((ys - cy) ** 2 + (xs - cx) ** 2) < r * r
        img[blob] = rng.uniform(0, 255, 3)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def add_noise(images: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(images.astype(np.float64) + rng.normal(0, sigma, images.shape), 0, 255).astype(np.uint8)


def write_sample_folder(
    run_dir: Path,
    method: str,
    setting: str,
    image_ids,
    sample0: np.ndarray,
    sample1: np.ndarray,
    checkpoint_sha256: str = "ab" * 32,
    split: str = "test",
    retrievals: list[dict] | None = None,
) -> Path:
    """A sample folder in the documented format (docs/architecture.md)."""
    for k, images in enumerate((sample0, sample1)):
        folder = run_dir / f"sample{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for image_id, image in zip(image_ids, images):
            Image.fromarray(image).save(folder / f"{image_id:012d}.png")
    if retrievals is not None:
        (run_dir / "retrievals.json").write_text(
            json.dumps({"method": method, "setting": setting, "records": retrievals})
        )
    manifest = {
        "method": method,
        "setting": setting,
        "split": split,
        "num_images": len(image_ids),
        "image_size": int(sample0.shape[1]),
        "image_ids": list(image_ids),
        "checkpoint_sha256": checkpoint_sha256,
        "seeds": [0, 1],
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def same_category_retrievals(
    data_dir: Path, patches_csv: Path, split: str = "test", seed: int = 0, same_theme: bool = True
) -> list[dict]:
    """Retrieval records for every graph of ``split`` and both samples: for each object a train patch of
    its category, all from one theme when possible (``same_theme``) or drawn at random."""
    from retrievegan.data.patches import load_patch_table
    from retrievegan.data.scene_graph import read_split

    table = load_patch_table(patches_csv)
    bank = table[table["split"] == "train"]
    rng = np.random.default_rng(seed)
    records = []
    for graph in read_split(data_dir / f"{split}.json").graphs:
        for sample in (0, 1):
            theme = int(rng.choice(bank["theme"].unique()))
            ids = []
            for obj in graph.objects[:-1]:
                pool = bank[bank["category"] == obj.category]
                preferred = pool[pool["theme"] == theme] if same_theme else pool
                pool = preferred if len(preferred) else pool
                ids.append(int(pool["patch_id"].iloc[rng.integers(len(pool))]))
            records.append({"image_id": graph.image_id, "sample": sample, "patch_ids": ids})
    return records
