"""COCO-Stuff 2017 reader implementing the sg2im protocol (at any image size).

Per image, the things of ``instances_*.json`` and the stuff of ``stuff_*.json`` are merged (ids do
not collide: things 1-91, stuff 92-182, "other" 183). An object is kept when its box covers
*more than* ``min_object_size`` of the image, its category is whitelisted and it is not "other"
(unless ``include_other``). With ``stuff_only`` only images that have stuff annotations are used.
Images keep ``min_objects_per_image <= #objects <= max_objects_per_image`` (3..8). Val/test are the
first ``num_val`` and the next ``num_test`` filtered val2017 images. Relationships are sg2im's
geometric predicates (``geometry.py``), drawn once per image with a seeded generator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io as _io
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from retrievegan.data import geometry
from retrievegan.data.rawjson import check_box, load_json, require, require_list
from retrievegan.data.scene_graph import (
    IMAGE_OBJECT,
    IN_IMAGE,
    SceneGraph,
    SceneObject,
    Vocab,
    encode_mask,
    with_image_node,
)
from retrievegan.errors import InputError

OTHER_NAME = "other"


@dataclasses.dataclass(frozen=True)
class CocoStuffConfig:
    instances_train: str
    stuff_train: str
    image_dir_train: str
    instances_val: str
    stuff_val: str
    image_dir_val: str
    min_object_size: float = 0.02  # sg2im: keep if box area / image area > this
    min_objects_per_image: int = 3  # sg2im
    max_objects_per_image: int = 8  # sg2im's dataset class
    include_other: bool = False  # sg2im
    stuff_only: bool = True  # sg2im
    instance_whitelist: tuple[str, ...] | None = None  # None: every thing category
    stuff_whitelist: tuple[str, ...] | None = None  # None: every stuff category
    num_val: int = 1024  # first filtered val2017 images
    num_test: int = 2048  # next filtered val2017 images
    mask_size: int = 16  # M of the M x M object masks (sg2im: 16 at 64x64)
    box_tolerance_px: float = 1.0  # how far a box may leave its image before it is an error
    invalid_boxes: Literal["error", "skip"] = "error"  # zero-area / outside boxes: stop, or drop the object

    @classmethod
    def from_root(cls, root: str | Path, **overrides: object) -> CocoStuffConfig:
        """The standard layout under ``root`` (what `retrievegan synth` writes and the README asks for):
        ``annotations/{instances,stuff}_{train,val}2017.json`` and ``images/{train,val}2017/``."""
        root = Path(root)
        paths = {
            f"{kind}_{split}": str(root / f"annotations/{kind}_{split}2017.json")
            for kind in ("instances", "stuff")
            for split in ("train", "val")
        }
        paths |= {f"image_dir_{split}": str(root / f"images/{split}2017") for split in ("train", "val")}
        return cls(**(paths | overrides))  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class RawImage:
    """A kept image before canonicalisation: its scene graph and the file to read pixels from."""

    graph: SceneGraph
    path: Path


def _index(path: str, data: object) -> COCO:
    for key in ("images", "annotations", "categories"):
        require_list(require(data, key, path, "top level"), path, key)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(_io.StringIO()):
        coco.createIndex()
    return coco


def _validate_records(
    path: str, data: dict, known_images: dict[int, tuple[int, int]], known_categories: dict[int, str]
) -> None:
    for i, ann in enumerate(data["annotations"]):
        where = f"annotation #{i}"
        ann_id = require(ann, "id", path, where)
        where = f"annotation id {ann_id}"
        image_id = require(ann, "image_id", path, where)
        if image_id not in known_images:
            raise InputError(path, f"image_id {image_id} is not in the images list", where)
        category_id = require(ann, "category_id", path, where)
        if category_id not in known_categories:
            raise InputError(path, f"unknown category_id {category_id}", where)
        require(ann, "bbox", path, where)
        require(ann, "segmentation", path, where)


def _seg_to_mask(coco: COCO, ann: dict, height: int, width: int, path: str) -> np.ndarray:
    try:
        return coco.annToMask(ann).astype(bool)
    except Exception as exc:  # pycocotools raises bare exceptions on malformed segmentations
        raise InputError(path, f"cannot decode segmentation: {exc}", f"annotation id {ann['id']}") from exc


def _crop_mask(mask: np.ndarray, bbox: Sequence[float], size: int) -> np.ndarray:
    """sg2im: crop the full-image mask to the rounded box and resize to (size, size)."""
    x, y, w, h = bbox
    x0, x1 = int(round(x)), int(round(x + w))
    y0, y1 = int(round(y)), int(round(y + h))
    x1, y1 = max(x0 + 1, x1), max(y0 + 1, y1)
    crop = mask[y0:y1, x0:x1].astype(np.uint8) * 255
    if crop.size == 0:
        return np.zeros((size, size), dtype=bool)
    resized = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
    return resized > 128


def build_vocab(cfg: CocoStuffConfig, instances: dict, stuff: dict, paths: tuple[str, str]) -> Vocab:
    """``__image__`` then every whitelisted category (minus "other" unless included), by COCO id."""
    names: dict[int, str] = {}
    kinds: dict[int, str] = {}
    for data, path, kind in ((instances, paths[0], "thing"), (stuff, paths[1], "stuff")):
        for i, cat in enumerate(require_list(require(data, "categories", path, "top level"), path, "categories")):
            cid = require(cat, "id", path, f"category #{i}")
            name = require(cat, "name", path, f"category id {cid}")
            if cid in names and names[cid] != name:
                raise InputError(
                    path, f"category id {cid} is {name!r} here but {names[cid]!r} elsewhere", f"category id {cid}"
                )
            names[cid] = name
            kinds.setdefault(cid, kind)
    thing_ok = set(cfg.instance_whitelist) if cfg.instance_whitelist is not None else None
    stuff_ok = set(cfg.stuff_whitelist) if cfg.stuff_whitelist is not None else None
    kept = []
    for cid in sorted(names):
        name = names[cid]
        if name == OTHER_NAME and not cfg.include_other:
            continue
        allowed = thing_ok if kinds[cid] == "thing" else stuff_ok
        if allowed is not None and name not in allowed and name != OTHER_NAME:
            continue
        kept.append((cid, name))
    return Vocab(
        object_names=(IMAGE_OBJECT,) + tuple(n for _, n in kept),
        predicate_names=geometry.COCO_PREDICATES,
        object_source_ids=(None,) + tuple(c for c, _ in kept),
    )


def read_split_pair(
    cfg: CocoStuffConfig, instances_path: str, stuff_path: str, image_dir: str, vocab: Vocab | None, predicate_seed: int
) -> tuple[list[RawImage], Vocab, dict[str, int]]:
    """Filter one instances/stuff pair (train2017 or val2017) into scene graphs, in file order.

    ``vocab`` None builds it from these files (train); val reuses the train vocab.
    Returns the kept images, the vocab and counters of what was dropped and why.
    """
    instances = load_json(instances_path)
    stuff = load_json(stuff_path)
    coco_things = _index(instances_path, instances)
    coco_stuff = _index(stuff_path, stuff)
    if vocab is None:
        vocab = build_vocab(cfg, instances, stuff, (instances_path, stuff_path))
    all_names = {c["id"]: c["name"] for c in instances["categories"]} | {
        c["id"]: c["name"] for c in stuff["categories"]
    }
    cid_to_index = {cid: i for i, cid in enumerate(vocab.object_source_ids) if cid is not None}

    sizes: dict[int, tuple[int, int]] = {}
    order: list[int] = []
    for i, img in enumerate(instances["images"]):
        where = f"image #{i}"
        image_id = require(img, "id", instances_path, where)
        where = f"image id {image_id}"
        width, height = require(img, "width", instances_path, where), require(img, "height", instances_path, where)
        require(img, "file_name", instances_path, where)
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise InputError(instances_path, f"invalid size {width}x{height}", where)
        sizes[image_id] = (width, height)
        order.append(image_id)
    _validate_records(instances_path, instances, sizes, all_names)
    _validate_records(stuff_path, stuff, sizes, all_names)

    stuff_listed = {img["id"] for img in stuff["images"]}
    with_stuff = {ann["image_id"] for ann in stuff["annotations"]}
    for image_id in sorted(stuff_listed):
        if image_id not in with_stuff and not coco_things.imgToAnns.get(image_id):
            raise InputError(stuff_path, "image has no annotations in either file", f"image id {image_id}")

    counts = {
        "images_in_file": len(order),
        "objects_dropped_small": 0,
        "objects_dropped_other": 0,
        "objects_dropped_category": 0,
        "objects_dropped_invalid_box": 0,
        "images_dropped_no_stuff": 0,
        "images_dropped_object_count": 0,
    }
    kept: list[RawImage] = []
    for image_id in order:
        if cfg.stuff_only and image_id not in with_stuff:
            counts["images_dropped_no_stuff"] += 1
            continue
        width, height = sizes[image_id]
        objects: list[tuple[dict, COCO, str]] = []
        for coco, path in ((coco_things, instances_path), (coco_stuff, stuff_path)):
            for ann in coco.imgToAnns.get(image_id, []):
                where = f"annotation id {ann['id']}"
                bbox = require_list(ann["bbox"], path, where)
                if len(bbox) != 4:
                    raise InputError(path, f"bbox {bbox!r} must be [x, y, w, h]", where)
                try:
                    x, y, w, h = check_box(*bbox, width, height, cfg.box_tolerance_px, path, where)
                except InputError:
                    if cfg.invalid_boxes == "error":
                        raise
                    counts["objects_dropped_invalid_box"] += 1
                    continue
                name = all_names[ann["category_id"]]
                if name == OTHER_NAME and not cfg.include_other:
                    counts["objects_dropped_other"] += 1
                    continue
                if ann["category_id"] not in cid_to_index:
                    counts["objects_dropped_category"] += 1
                    continue
                if (w * h) / (width * height) <= cfg.min_object_size:
                    counts["objects_dropped_small"] += 1
                    continue
                objects.append((ann, coco, path))
        if not cfg.min_objects_per_image <= len(objects) <= cfg.max_objects_per_image:
            counts["images_dropped_object_count"] += 1
            continue
        img = coco_things.imgs[image_id]
        scene_objects, boxes, centers = [], [], []
        for ann, coco, path in objects:
            x, y, w, h = (float(v) for v in ann["bbox"])
            x, y = max(x, 0.0), max(y, 0.0)
            w, h = min(w, width - x), min(h, height - y)
            mask = _crop_mask(_seg_to_mask(coco, ann, height, width, path), (x, y, w, h), cfg.mask_size)
            box = (x / width, y / height, (x + w) / width, (y + h) / height)
            scene_objects.append(
                SceneObject(
                    category=cid_to_index[ann["category_id"]], box=box, source_id=int(ann["id"]), mask=encode_mask(mask)
                )
            )
            boxes.append(box)
            centers.append(geometry.mask_center(box, mask))
        rng = np.random.default_rng([predicate_seed, int(image_id)])
        triples = [(s, vocab.predicate_index(p), o) for s, p, o in geometry.draw_triples(boxes, centers, rng)]
        objs, trips = with_image_node(scene_objects, triples, cfg.mask_size)
        graph = SceneGraph(
            image_id=int(image_id),
            file_name=str(img["file_name"]),
            width=width,
            height=height,
            objects=objs,
            triples=trips,
            theme=img.get("synth_theme"),
        )
        kept.append(RawImage(graph=graph, path=Path(image_dir) / str(img["file_name"])))
    counts["images_kept"] = len(kept)
    assert vocab.predicate_names[0] == IN_IMAGE
    return kept, vocab, counts


def filter_summary(cfg: CocoStuffConfig, counts: dict[str, int], file_label: str) -> str:
    """Why images of one file were dropped, with the counts of ``read_split_pair`` (for error messages)."""
    dropped_objects = (
        f"objects dropped: {counts['objects_dropped_small']} with a box of at most min_object_size = "
        f"{cfg.min_object_size} of the image, {counts['objects_dropped_other']} of category "
        f"{OTHER_NAME!r}, {counts['objects_dropped_category']} of a category outside the whitelists, "
        f"{counts['objects_dropped_invalid_box']} with an invalid box"
    )
    return (
        f"of {counts['images_in_file']} {file_label} images, {counts['images_dropped_no_stuff']} have no stuff "
        f"annotations (stuff_only = {cfg.stuff_only}) and {counts['images_dropped_object_count']} keep fewer than "
        f"min_objects_per_image = {cfg.min_objects_per_image} or more than max_objects_per_image = "
        f"{cfg.max_objects_per_image} objects ({dropped_objects})"
    )


def read_coco_stuff(cfg: CocoStuffConfig, predicate_seed: int) -> tuple[dict[str, list[RawImage]], Vocab, dict]:
    """All three splits: train from train2017, val and test from the filtered val2017 images."""
    train, vocab, train_counts = read_split_pair(
        cfg, cfg.instances_train, cfg.stuff_train, cfg.image_dir_train, None, predicate_seed
    )
    val_all, _, val_counts = read_split_pair(
        cfg, cfg.instances_val, cfg.stuff_val, cfg.image_dir_val, vocab, predicate_seed
    )
    needed = cfg.num_val + cfg.num_test
    if len(vocab.object_names) == 1:
        raise InputError(
            cfg.instances_train,
            "no object category is left: every category is 'other' or outside instance_whitelist / stuff_whitelist",
        )
    if not train:
        raise InputError(
            cfg.instances_train,
            "the train split is empty after filtering: " + filter_summary(cfg, train_counts, "train2017"),
        )
    if len(val_all) < needed:
        raise InputError(
            cfg.instances_val,
            f"only {len(val_all)} val2017 images pass the filters, but num_val + "
            f"num_test = {needed}: " + filter_summary(cfg, val_counts, "val2017"),
        )
    splits = {"train": train, "val": val_all[: cfg.num_val], "test": val_all[cfg.num_val : needed]}
    for name, images in splits.items():
        if not images:  # only with num_val or num_test = 0: every filtered image is accounted for above
            raise InputError(cfg.instances_val, f"the {name} split is empty: num_{name} = 0")
    return splits, vocab, {"train2017": train_counts, "val2017": val_counts}
