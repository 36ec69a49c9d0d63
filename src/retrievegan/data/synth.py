"""The embedded synthetic benchmark (`retrievegan synth`).

Writes a small dataset, deterministic from a seed, in the *raw on-disk formats* of COCO-Stuff 2017
and of Visual Genome v1.4, so the real readers (``coco.py``, ``vg.py``) run on it unchanged:

COCO-Stuff layout (``out_coco``)::

    annotations/instances_{train,val}2017.json   things, polygon segmentations
    annotations/stuff_{train,val}2017.json       stuff (+ "other"), compressed RLE segmentations
    images/{train,val}2017/<id:012d>.jpg

Visual Genome layout (``out_vg``)::

    image_data.json objects.json relationships.json attributes.json vg_splits.json
    object_alias.txt predicate_alias.txt images/VG_100K/<id>.jpg

Every image has a hidden theme (palette + texture family, ``themes.py``) shared by all its objects
and its stuff background. It is stored in the extra field ``synth_theme`` of each image record,
which pycocotools and the readers' filters ignore; only evaluation reads it (compatibility score,
simulated user-study participants), never a method during training.
"""

from __future__ import annotations

import dataclasses
import functools
import io as _io
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm import tqdm

from retrievegan import io
from retrievegan.data import geometry
from retrievegan.data.themes import Theme, make_themes, paint, stuff_overlay

# (COCO category id, name). Ids are spread over the real ranges: things 1-91, stuff 92-182, other 183.
THING_CATEGORIES = ((1, "circle"), (3, "square"), (18, "triangle"), (44, "diamond"), (62, "cross"), (88, "star"))
TOP_STUFF = ((106, "sky", "gradient"), (171, "wall", "bricks"))
BOTTOM_STUFF = ((124, "grass", "streaks"), (154, "sand", "speckle"), (178, "water", "ripples"))
OTHER_CATEGORY = (183, "other")

# Visual Genome surface forms: aliases (first name canonical, as sg2im's alias files) and predicates.
OBJECT_ALIASES = (("circle", "disc"), ("square", "box"), ("sky", "skies"), ("grass", "lawn"))
PREDICATE_ALIASES = (
    ("left of", "to the left of"),
    ("above", "over"),
    ("below", "under"),
    ("inside", "in"),
    ("surrounding", "around"),
)
RARE_PREDICATE = "holding"  # below any sensible min_relationship_instances: exercises the filter

SPLIT_CODES = {"train": 1, "val": 2}


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    seed: int = 0
    num_train: int = 2000  # images written as train2017
    num_val: int = 500  # images written as val2017 (preprocessing splits them into val and test)
    num_themes: int = 8
    min_side: int = 224  # raw image width/height range in px (>= 200 so VG's min_image_size keeps them)
    max_side: int = 288
    min_things: int = 1
    max_things: int = 6
    p_off_count: float = 0.04  # share of images with 2 or 9 objects (dropped by the 3..8 filter)
    p_small_object: float = 0.1  # an extra thing below the 0.02 box-area threshold
    p_other: float = 0.1  # an "other" stuff blob (dropped unless include_other)
    p_vg_alias: float = 0.2  # VG object / predicate written as an alias
    vg_split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError("num_train and num_val must be positive")
        if not 1 <= self.min_things <= self.max_things <= 6:
            raise ValueError("need 1 <= min_things <= max_things <= 6")
        if not 64 <= self.min_side <= self.max_side:
            raise ValueError("need 64 <= min_side <= max_side")
        if abs(sum(self.vg_split_fractions) - 1.0) > 1e-6:
            raise ValueError("vg_split_fractions must sum to 1")


@dataclasses.dataclass
class _Region:
    category_id: int
    name: str
    kind: str  # "thing" | "stuff" | "other"
    mask: np.ndarray  # (H, W) bool, the annotated pixels
    polygon: list[float] | None  # things only, flat [x0, y0, x1, y1, ...]


@dataclasses.dataclass
class _Scene:
    image_id: int
    width: int
    height: int
    theme: int
    regions: list[_Region]
    jpeg: bytes


def _shape_polygon(name: str, cx: float, cy: float, size: float, rot: float) -> np.ndarray:
    """(K, 2) polygon vertices of a thing category's shape, centred at (cx, cy)."""
    r = size / 2
    if name == "circle":
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack([np.cos(ang), np.sin(ang)], 1) * r
    elif name == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * r * 0.8
    elif name == "triangle":
        ang = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6])
        pts = np.stack([np.cos(ang), np.sin(ang)], 1) * r
    elif name == "diamond":
        pts = np.array([[0, -1], [0.65, 0], [0, 1], [-0.65, 0]], dtype=float) * r
    elif name == "cross":
        a, b = 1.0, 0.33
        pts = (
            np.array(
                [
                    [-b, -a],
                    [b, -a],
                    [b, -b],
                    [a, -b],
                    [a, b],
                    [b, b],
                    [b, a],
                    [-b, a],
                    [-b, b],
                    [-a, b],
                    [-a, -b],
                    [-b, -b],
                ],
                dtype=float,
            )
            * r
        )
    elif name == "star":
        ang = np.linspace(-np.pi / 2, 1.5 * np.pi, 10, endpoint=False)
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([np.cos(ang) * rad, np.sin(ang) * rad], 1) * r
    else:
        raise ValueError(name)
    c, s = np.cos(rot), np.sin(rot)
    pts = pts @ np.array([[c, s], [-s, c]])
    return pts + np.array([cx, cy])


def _polygon_mask(poly: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise with pycocotools, exactly as a COCO reader decodes the annotation."""
    rles = mask_utils.frPyObjects([poly.reshape(-1).tolist()], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _render_scene(image_id: int, themes: tuple[Theme, ...], cfg: SynthConfig, rng: np.random.Generator) -> _Scene:
    width = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    height = int(rng.integers(cfg.min_side, cfg.max_side + 1))
    theme = themes[int(rng.integers(len(themes)))]
    canvas = np.zeros((height, width, 3), dtype=np.float32)

    # Stuff: a top band and a bottom band split by a wavy horizon.
    top = TOP_STUFF[int(rng.integers(len(TOP_STUFF)))]
    bottom = BOTTOM_STUFF[int(rng.integers(len(BOTTOM_STUFF)))]
    xs = np.arange(width)
    horizon = height * (
        rng.uniform(0.35, 0.6)
        + 0.05 * np.sin(2 * np.pi * xs / width * rng.uniform(0.5, 2.0) + rng.uniform(0, 2 * np.pi))
    )
    ys = np.arange(height)[:, None]
    top_mask = ys < horizon[None, :]
    bottom_mask = ~top_mask
    for (_, _, overlay), mask, colours in ((top, top_mask, (0, 3)), (bottom, bottom_mask, (1, 0))):
        layer = paint(theme, colours, height, width, rng.uniform(0, 2 * np.pi), rng.uniform(0.9, 1.05), rng)
        layer *= stuff_overlay(overlay, height, width, rng)[..., None]
        canvas[mask] = layer[mask]

    regions: list[_Region] = []
    # "other": an ellipse blob of unlabelled stuff.
    other_mask = np.zeros((height, width), dtype=bool)
    if rng.random() < cfg.p_other:
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.08, 0.15) * height, rng.uniform(0.08, 0.15) * width
        yy, xx = np.mgrid[0:height, 0:width]
        other_mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        canvas[other_mask] = 0.5 + 0.1 * rng.random((int(other_mask.sum()), 1))

    # Things: shapes painted with the theme's accent colours.
    roll = rng.random()
    if roll < cfg.p_off_count / 2:
        num_things = 0
    elif roll < cfg.p_off_count:
        num_things = 7
    else:
        num_things = int(rng.integers(cfg.min_things, cfg.max_things + 1))
    sizes = [rng.uniform(0.22, 0.45) for _ in range(num_things)]
    if rng.random() < cfg.p_small_object:
        sizes.append(rng.uniform(0.06, 0.1))
    things_union = np.zeros((height, width), dtype=bool)
    short = min(width, height)
    for rel_size in sizes:
        cat_id, name = THING_CATEGORIES[int(rng.integers(len(THING_CATEGORIES)))]
        size = rel_size * short
        margin = size / 2 + 2
        cx = rng.uniform(margin, width - margin)
        cy = rng.uniform(margin, height - margin)
        poly = _shape_polygon(name, cx, cy, size, rng.uniform(0, 2 * np.pi) if name != "triangle" else 0.0)
        poly[:, 0] = np.clip(poly[:, 0], 0, width - 1)
        poly[:, 1] = np.clip(poly[:, 1], 0, height - 1)
        mask = _polygon_mask(poly, height, width)
        if mask.any():  # paint only the shape's bounding box
            x0, y0, w, h = (int(v) for v in _bbox(mask))
            local = mask[y0 : y0 + h, x0 : x0 + w]
            layer = paint(theme, (2, 3), h, w, rng.uniform(0, 2 * np.pi), rng.uniform(0.85, 1.1), rng)
            edge = local & ~np.roll(local, 1, 0) | local & ~np.roll(local, 1, 1)
            layer[edge] *= 0.5
            window = canvas[y0 : y0 + h, x0 : x0 + w]
            window[local] = layer[local]
        things_union |= mask
        regions.append(_Region(cat_id, name, "thing", mask, [round(float(v), 2) for v in poly.reshape(-1)]))

    # COCO-Stuff stuff masks cover what things do not.
    for (cat_id, name, _), mask in ((top, top_mask), (bottom, bottom_mask)):
        regions.append(_Region(cat_id, name, "stuff", mask & ~things_union & ~other_mask, None))
    if other_mask.any():
        regions.append(_Region(OTHER_CATEGORY[0], OTHER_CATEGORY[1], "other", other_mask & ~things_union, None))

    pixels = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    buffer = _io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=cfg.jpeg_quality)
    return _Scene(image_id, width, height, theme.index, regions, buffer.getvalue())


def _bbox(mask: np.ndarray) -> list[float]:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _coco_files(scenes: list[_Scene], split_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    images = [
        {
            "id": s.image_id,
            "file_name": f"{s.image_id:012d}.jpg",
            "width": s.width,
            "height": s.height,
            "license": 1,
            "coco_url": "",
            "flickr_url": "",
            "date_captured": "2026-01-01 00:00:00",
            "synth_theme": s.theme,
        }
        for s in scenes
    ]
    info = {
        "description": f"RetrieveGAN harness synthetic benchmark ({split_name}2017)",
        "version": "1.0",
        "year": 2026,
    }
    licenses = [{"id": 1, "name": "CC0", "url": ""}]
    things, stuff = [], []
    for scene in scenes:
        for k, region in enumerate(scene.regions):
            if not region.mask.any():
                continue
            ann_id = scene.image_id * 100 + k
            if region.kind == "thing":
                things.append(
                    {
                        "id": ann_id,
                        "image_id": scene.image_id,
                        "category_id": region.category_id,
                        "segmentation": [region.polygon],
                        "area": float(region.mask.sum()),
                        "bbox": _bbox(region.mask),
                        "iscrowd": 0,
                    }
                )
            else:
                rle = mask_utils.encode(np.asfortranarray(region.mask.astype(np.uint8)))
                stuff.append(
                    {
                        "id": ann_id,
                        "image_id": scene.image_id,
                        "category_id": region.category_id,
                        "segmentation": {"size": [scene.height, scene.width], "counts": rle["counts"].decode("ascii")},
                        "area": float(region.mask.sum()),
                        "bbox": _bbox(region.mask),
                        "iscrowd": 0,
                    }
                )
    thing_cats = [{"id": i, "name": n, "supercategory": "shape"} for i, n in THING_CATEGORIES]
    stuff_cats = [{"id": i, "name": n, "supercategory": "background"} for i, n, _ in TOP_STUFF + BOTTOM_STUFF]
    stuff_cats.append({"id": OTHER_CATEGORY[0], "name": OTHER_CATEGORY[1], "supercategory": "other"})
    instances = {"info": info, "licenses": licenses, "images": images, "annotations": things, "categories": thing_cats}
    stuff_json = {
        "info": info,
        "licenses": licenses,
        "images": images,
        "annotations": stuff,
        "categories": sorted(stuff_cats, key=lambda c: c["id"]),
    }
    return instances, stuff_json


def _vg_files(scenes: list[_Scene], cfg: SynthConfig) -> dict[str, Any]:
    rng = np.random.default_rng([cfg.seed, 4242])
    alias_of = {canon: alias for canon, alias in OBJECT_ALIASES}
    pred_alias_of = {canon: alias for canon, alias in PREDICATE_ALIASES}
    image_data, objects, relationships, attributes = [], [], [], []
    object_id = 1
    relationship_id = 1
    for vg_id, scene in enumerate(scenes, start=1):
        image_data.append(
            {
                "image_id": vg_id,
                "width": scene.width,
                "height": scene.height,
                "url": f"https://cs.stanford.edu/people/rak248/VG_100K/{vg_id}.jpg",
                "coco_id": scene.image_id,
                "flickr_id": None,
                "synth_theme": scene.theme,
            }
        )
        objs, attrs, boxes, centers, ids = [], [], [], [], []
        for region in scene.regions:
            if region.kind == "other" or not region.mask.any():
                continue
            x, y, w, h = (int(round(v)) for v in _bbox(region.mask))
            name = region.name
            if name in alias_of and rng.random() < cfg.p_vg_alias:
                name = alias_of[name]
            objs.append({"object_id": object_id, "x": x, "y": y, "w": w, "h": h, "names": [name], "synsets": []})
            brightness = "bright" if rng.random() < 0.5 else "dark"
            size_word = "large" if w * h > 0.1 * scene.width * scene.height else "small"
            attrs.append(
                {
                    "object_id": object_id,
                    "x": x,
                    "y": y,
                    "w": w,
                    "h": h,
                    "names": [name],
                    "attributes": [brightness, size_word],
                }
            )
            box = (x / scene.width, y / scene.height, (x + w) / scene.width, (y + h) / scene.height)
            boxes.append(box)
            centers.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
            ids.append((object_id, x, y, w, h, name, region.kind))
            object_id += 1
        rels = []
        thing_idx = [i for i, rec in enumerate(ids) if rec[6] == "thing"]
        for s in thing_idx:
            choices = [i for i in range(len(ids)) if i != s]
            o = choices[int(rng.integers(len(choices)))]
            pred = geometry.predicate_for(boxes[s], boxes[o], centers[s], centers[o])
            if rng.random() < 0.01:
                pred = RARE_PREDICATE
            elif pred in pred_alias_of and rng.random() < cfg.p_vg_alias:
                pred = pred_alias_of[pred]
            if rng.random() < 0.1:  # VG's raw predicates vary in case and spacing
                pred = f" {pred.title()} "
            subj, obj = ids[s], ids[o]
            rels.append(
                {
                    "relationship_id": relationship_id,
                    "predicate": pred,
                    "synsets": [],
                    "subject": {
                        "object_id": subj[0],
                        "x": subj[1],
                        "y": subj[2],
                        "w": subj[3],
                        "h": subj[4],
                        "name": subj[5],
                    },
                    "object": {"object_id": obj[0], "x": obj[1], "y": obj[2], "w": obj[3], "h": obj[4], "name": obj[5]},
                }
            )
            relationship_id += 1
        objects.append({"image_id": vg_id, "objects": objs})
        attributes.append({"image_id": vg_id, "attributes": attrs})
        relationships.append({"image_id": vg_id, "relationships": rels})
    order = np.random.default_rng([cfg.seed, 5151]).permutation(len(scenes)) + 1
    n_train = int(round(cfg.vg_split_fractions[0] * len(scenes)))
    n_val = int(round(cfg.vg_split_fractions[1] * len(scenes)))
    splits = {
        "train": sorted(int(i) for i in order[:n_train]),
        "val": sorted(int(i) for i in order[n_train : n_train + n_val]),
        "test": sorted(int(i) for i in order[n_train + n_val :]),
    }
    return {
        "image_data": image_data,
        "objects": objects,
        "relationships": relationships,
        "attributes": attributes,
        "splits": splits,
    }


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")


def _render_job(job: tuple[int, int, int], themes: tuple[Theme, ...], cfg: SynthConfig) -> _Scene:
    image_id, split_code, index = job
    return _render_scene(image_id, themes, cfg, np.random.default_rng([cfg.seed, split_code, index]))


def generate(
    cfg: SynthConfig, out_coco: str | Path, out_vg: str | Path, progress: bool = True, workers: int = 1
) -> dict[str, int]:
    """Write the COCO-Stuff-format and VG-format synthetic benchmark; return counts.

    Deterministic: each image is drawn from ``default_rng([seed, split, index])``, so the same config
    gives byte-identical files whatever the number of ``workers`` (processes).
    """
    out_coco, out_vg = Path(out_coco), Path(out_vg)
    themes = make_themes(cfg.num_themes, cfg.seed)
    scenes_by_split: dict[str, list[_Scene]] = {}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for split_name, count, first_id in (("train", cfg.num_train, 100_000), ("val", cfg.num_val, 500_000)):
            jobs = [(first_id + index, SPLIT_CODES[split_name], index) for index in range(count)]
            rendered = pool.map(functools.partial(_render_job, themes=themes, cfg=cfg), jobs, chunksize=16)
            scenes_by_split[split_name] = list(
                tqdm(rendered, total=count, desc=f"synth {split_name}2017", disable=not progress, unit="img")
            )

    for split_name, scenes in scenes_by_split.items():
        image_dir = out_coco / "images" / f"{split_name}2017"
        for scene in scenes:
            io.write_bytes(image_dir / f"{scene.image_id:012d}.jpg", scene.jpeg)
        instances, stuff = _coco_files(scenes, split_name)
        io.write_bytes(out_coco / "annotations" / f"instances_{split_name}2017.json", _json_bytes(instances))
        io.write_bytes(out_coco / "annotations" / f"stuff_{split_name}2017.json", _json_bytes(stuff))

    all_scenes = scenes_by_split["train"] + scenes_by_split["val"]
    vg = _vg_files(all_scenes, cfg)
    for vg_id, scene in enumerate(all_scenes, start=1):
        io.write_bytes(out_vg / "images" / "VG_100K" / f"{vg_id}.jpg", scene.jpeg)
    io.write_bytes(out_vg / "image_data.json", _json_bytes(vg["image_data"]))
    io.write_bytes(out_vg / "objects.json", _json_bytes(vg["objects"]))
    io.write_bytes(out_vg / "relationships.json", _json_bytes(vg["relationships"]))
    io.write_bytes(out_vg / "attributes.json", _json_bytes(vg["attributes"]))
    io.write_bytes(out_vg / "vg_splits.json", _json_bytes(vg["splits"]))
    io.write_text(out_vg / "object_alias.txt", "".join(",".join(a) + "\n" for a in OBJECT_ALIASES))
    io.write_text(out_vg / "predicate_alias.txt", "".join(",".join(a) + "\n" for a in PREDICATE_ALIASES))
    io.write_json(out_coco / "themes.json", [dataclasses.asdict(t) for t in themes])
    return {"train_images": cfg.num_train, "val_images": cfg.num_val, "themes": cfg.num_themes}
