"""`retrievegan patches`: the patch bank, crops at the ground-truth boxes (no masks, as the paper).

Outputs in ``out_dir``::

    patches.npy   (P, C, C, 3) uint8, memory-mappable (``np.load(..., mmap_mode="r")``)
    patches.csv   one row per patch: patch_id, split, image_index, image_id, object_index, category,
                  category_name, x0, y0, x1, y1 (normalized box), theme (synthetic benchmark only, else empty)
    run.json

Crops are cut from the original image files (full resolution) and resized to ``crop_size`` with
bilinear filtering. Every real object of every split gets a patch; the retrieval bank is the
``split == "train"`` rows (the paper's #Patches); val/test patches serve evaluation only
(co-occurrence recall on val, user-study catch trials).
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from retrievegan import io, runinfo
from retrievegan.data.scene_graph import SPLITS, SceneGraph, read_split, read_vocab
from retrievegan.errors import InputError
from retrievegan.progressbar import progress_bar

COLUMNS = (
    "patch_id",
    "split",
    "image_index",
    "image_id",
    "object_index",
    "category",
    "category_name",
    "x0",
    "y0",
    "x1",
    "y1",
    "theme",
)


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    crop_size: int = 64  # ours: the paper is silent (PasteGAN used 32 at 64x64 images)
    num_workers: int = 4


def crop_box_pixels(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """Normalized box -> integer pixel box (left, top, right, bottom) covering it, at least 1 px."""
    left = min(max(int(math.floor(box[0] * width)), 0), width - 1)
    top = min(max(int(math.floor(box[1] * height)), 0), height - 1)
    right = max(min(int(math.ceil(box[2] * width)), width), left + 1)
    bottom = max(min(int(math.ceil(box[3] * height)), height), top + 1)
    return left, top, right, bottom


def _crop_image(path: Path, graph: SceneGraph, crop_size: int) -> np.ndarray:
    """(O, C, C, 3) uint8 crops of the real objects of one image."""
    from PIL import Image  # here, not at module level: the training path imports this module (load_patch_table)

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError as exc:
        raise InputError(path, "image file not found", f"image id {graph.image_id}") from exc
    out = np.empty((graph.num_real_objects, crop_size, crop_size, 3), dtype=np.uint8)
    for k, obj in enumerate(graph.objects[:-1]):
        crop = rgb.crop(crop_box_pixels(obj.box, rgb.width, rgb.height))
        out[k] = np.asarray(crop.resize((crop_size, crop_size), Image.BILINEAR), dtype=np.uint8)
    return out


def build_patch_bank(
    data_dir: str | Path, cfg: PatchConfig, out_dir: str | Path, progress: bool = True
) -> pd.DataFrame:
    """Crop every real object of every split in ``data_dir`` (canonical files) into the bank."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    vocab = read_vocab(data_dir / "vocab.json")
    rows = []
    jobs = []
    for split_name in SPLITS:
        split = read_split(data_dir / f"{split_name}.json")
        for image_index, graph in enumerate(split.graphs):
            jobs.append((Path(split.image_dir) / graph.file_name, graph))
            for k, obj in enumerate(graph.objects[:-1]):
                rows.append(
                    (
                        len(rows),
                        split_name,
                        image_index,
                        graph.image_id,
                        k,
                        obj.category,
                        vocab.object_names[obj.category],
                        *obj.box,
                        "" if graph.theme is None else graph.theme,
                    )
                )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    with (
        io.atomic_memmap(out_dir / "patches.npy", (len(rows), cfg.crop_size, cfg.crop_size, 3), np.uint8) as bank,
        ThreadPoolExecutor(max_workers=max(1, cfg.num_workers)) as pool,
    ):
        crops = pool.map(_crop_image, [p for p, _ in jobs], [g for _, g in jobs], [cfg.crop_size] * len(jobs))
        offset = 0
        for block in progress_bar(crops, total=len(jobs), desc="patch bank", disable=not progress, unit="img"):
            bank[offset : offset + len(block)] = block
            offset += len(block)
        assert offset == len(rows)
        io.write_text(out_dir / "patches.csv", table.to_csv(index=False, float_format="%.6f"))
    runinfo.write_run_json(out_dir, "patches", cfg, None, {"data_dir": str(data_dir), "num_patches": len(rows)})
    return table


def load_patch_table(path: str | Path) -> pd.DataFrame:
    """The patch metadata table; ``theme`` is nullable (only the synthetic benchmark has themes)."""
    try:
        table = pd.read_csv(path, dtype={"split": str, "category_name": str})
    except FileNotFoundError as exc:
        raise InputError(path, "patch table not found (run `retrievegan patches`)") from exc
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise InputError(path, f"missing columns {sorted(missing)}")
    table["theme"] = table["theme"].astype("Int64")
    return table
