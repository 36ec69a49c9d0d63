"""`retrievegan preprocess`: a raw source dataset -> canonical scene graphs, resized images, stats.

Outputs in ``out_dir`` (all committed together only after every input was read and checked)::

    vocab.json                       object / predicate names
    {train,val,test}.json            canonical scene graphs (scene_graph.py)
    {train,val,test}_images.npy      (N, S, S, 3) uint8 images resized to image_size (bilinear), memory-mappable
    stats.json                       the dataset-table row and what the filters dropped
    run.json                         resolved config, seed, library versions (provenance: the job log)
"""

from __future__ import annotations

import contextlib
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from retrievegan import io, runinfo
from retrievegan.data.coco import CocoStuffConfig, RawImage, read_coco_stuff
from retrievegan.data.scene_graph import SPLITS, Split, Vocab
from retrievegan.data.vg import VisualGenomeConfig, read_visual_genome
from retrievegan.errors import InputError

SOURCES = ("coco_stuff", "visual_genome")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 128  # paper: 128 x 128 (sg2im used 64)
    seed: int = 0  # geometric predicates (COCO) and load-time object selection (VG), drawn once per image
    num_workers: int = 4  # threads decoding and resizing images


def _check_image(raw: RawImage, split: str) -> None:
    record = f"image id {raw.graph.image_id} ({split})"
    try:
        with Image.open(raw.path) as img:
            size = img.size
    except FileNotFoundError as exc:
        raise InputError(raw.path, "image file not found", record) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(raw.path, f"cannot read image: {exc}", record) from exc
    if size != (raw.graph.width, raw.graph.height):
        raise InputError(
            raw.path,
            f"image is {size[0]}x{size[1]} but its annotation says {raw.graph.width}x{raw.graph.height}",
            record,
        )


def load_resized(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8, bilinear, aspect ratio not kept (as sg2im)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)


def read_source(source: str, source_cfg: Any, seed: int) -> tuple[dict[str, list[RawImage]], Vocab, dict]:
    if source == "coco_stuff":
        assert isinstance(source_cfg, CocoStuffConfig)
        return read_coco_stuff(source_cfg, seed)
    if source == "visual_genome":
        assert isinstance(source_cfg, VisualGenomeConfig)
        return read_visual_genome(source_cfg, seed)
    raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")


def preprocess(
    source: str,
    source_cfg: CocoStuffConfig | VisualGenomeConfig,
    cfg: PreprocessConfig,
    out_dir: str | Path,
    dataset: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Read, filter and canonicalise one source; write everything under ``out_dir``; return the stats."""
    out_dir = Path(out_dir)
    splits, vocab, counts = read_source(source, source_cfg, cfg.seed)
    for split in SPLITS:
        for raw in splits[split]:
            _check_image(raw, split)
    image_dir = {
        "coco_stuff": {
            "train": getattr(source_cfg, "image_dir_train", ""),
            "val": getattr(source_cfg, "image_dir_val", ""),
            "test": getattr(source_cfg, "image_dir_val", ""),
        },
        "visual_genome": {s: getattr(source_cfg, "image_dir", "") for s in SPLITS},
    }[source]
    mask_size = getattr(source_cfg, "mask_size", None)
    row = {
        "dataset": dataset,
        "source": source,
        "train": len(splits["train"]),
        "val": len(splits["val"]),
        "test": len(splits["test"]),
        "categories": vocab.num_categories,
        "predicates": vocab.num_predicates - 1,
        "patches": sum(raw.graph.num_real_objects for raw in splits["train"]),
        "image_size": cfg.image_size,
    }
    stats = {"table_row": row, "filter_counts": counts}
    with contextlib.ExitStack() as stack:
        for split in SPLITS:
            graphs = tuple(raw.graph for raw in splits[split])
            path = stack.enter_context(io.atomic_path(out_dir / f"{split}.json"))
            path.write_text(
                io.dumps_json(Split(source, split, image_dir[split], mask_size, graphs).to_json()), encoding="utf-8"
            )
            array = stack.enter_context(
                io.atomic_memmap(
                    out_dir / f"{split}_images.npy", (len(graphs), cfg.image_size, cfg.image_size, 3), np.uint8
                )
            )
            paths = [raw.path for raw in splits[split]]
            with ThreadPoolExecutor(max_workers=max(1, cfg.num_workers)) as pool:
                images = pool.map(load_resized, paths, [cfg.image_size] * len(paths))
                for i, pixels in enumerate(
                    tqdm(images, total=len(paths), desc=f"{source} {split} images", disable=not progress, unit="img")
                ):
                    array[i] = pixels
        stack.enter_context(io.atomic_path(out_dir / "vocab.json")).write_text(
            io.dumps_json(vocab.to_json()), encoding="utf-8"
        )
        stack.enter_context(io.atomic_path(out_dir / "stats.json")).write_text(io.dumps_json(stats), encoding="utf-8")
        stack.enter_context(io.atomic_path(out_dir / "run.json")).write_text(
            io.dumps_json(
                runinfo.run_record(
                    "preprocess", {"source": source, "source_config": source_cfg, "preprocess": cfg}, cfg.seed
                )
            ),
            encoding="utf-8",
        )
    runinfo.report_provenance(out_dir / "run.json")
    return stats


def dataset_table(stats_paths: list[str | Path], out_csv: str | Path) -> list[dict[str, Any]]:
    """Merge the ``stats.json`` rows of preprocessed sources into the dataset table (CSV)."""
    import json

    import pandas as pd

    rows = []
    for path in stats_paths:
        try:
            rows.append(json.loads(Path(path).read_text(encoding="utf-8"))["table_row"])
        except (FileNotFoundError, KeyError, json.JSONDecodeError) as exc:
            raise InputError(path, f"not a preprocess stats file: {exc}") from exc
    frame = pd.DataFrame(
        rows, columns=["dataset", "source", "train", "val", "test", "categories", "predicates", "patches", "image_size"]
    )
    io.write_text(out_csv, frame.to_csv(index=False))
    return rows
