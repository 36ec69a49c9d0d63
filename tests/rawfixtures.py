"""Hand-built raw COCO-Stuff and Visual Genome inputs for reader tests (tiny, explicit, edge cases)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

THINGS = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 3, "name": "car", "supercategory": "vehicle"}]
STUFF = [
    {"id": 105, "name": "grass", "supercategory": "plant"},
    {"id": 157, "name": "sky-other", "supercategory": "sky"},
    {"id": 183, "name": "other", "supercategory": "other"},
]


def write_image(path: Path, width: int, height: int, colour=(120, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), colour, dtype=np.uint8)).save(path)


def box_polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def box_rle(x: int, y: int, w: int, h: int, width: int, height: int) -> dict:
    mask = np.zeros((height, width), dtype=np.uint8, order="F")
    mask[y : y + h, x : x + w] = 1
    rle = mask_utils.encode(mask)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def coco_pair(images: list[dict], root: Path, split: str = "train") -> tuple[Path, Path, Path]:
    """Write instances/stuff json + images. Each image dict: id, w, h, things=[(cat, x, y, w, h)],
    stuff=[(cat, x, y, w, h)], optional no_file=True, optional in_stuff=False (not listed in stuff json)."""
    image_dir = root / "images" / f"{split}2017"
    img_recs, stuff_imgs, thing_anns, stuff_anns = [], [], [], []
    ann_id = 1
    for img in images:
        rec = {"id": img["id"], "file_name": f"{img['id']:012d}.png", "width": img["w"], "height": img["h"]}
        img_recs.append(rec)
        if img.get("in_stuff", True):
            stuff_imgs.append(rec)
        if not img.get("no_file"):
            write_image(image_dir / rec["file_name"], img["w"], img["h"])
        for cat, x, y, w, h in img.get("things", []):
            thing_anns.append(
                {
                    "id": ann_id,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": box_polygon(x, y, w, h),
                }
            )
            ann_id += 1
        for cat, x, y, w, h in img.get("stuff", []):
            seg = box_rle(int(x), int(y), max(int(w), 1), max(int(h), 1), img["w"], img["h"])
            stuff_anns.append(
                {
                    "id": ann_id,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": seg,
                }
            )
            ann_id += 1
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    inst = ann_dir / f"instances_{split}2017.json"
    stuff = ann_dir / f"stuff_{split}2017.json"
    inst.write_text(json.dumps({"images": img_recs, "annotations": thing_anns, "categories": THINGS}))
    stuff.write_text(json.dumps({"images": stuff_imgs, "annotations": stuff_anns, "categories": STUFF}))
    return inst, stuff, image_dir


def standard_image(image_id: int, n_things: int, w: int = 100, h: int = 100) -> dict:
    """An image with two stuff regions (grass bottom, sky top) and n_things person boxes (all > 2%)."""
    things = [(1, 5 + 10 * i, 40, 8, 30) for i in range(n_things)]  # 8*30/10000 = 2.4%
    return {"id": image_id, "w": w, "h": h, "things": things, "stuff": [(157, 0, 0, 100, 40), (105, 0, 60, 100, 40)]}


def vg_files(
    root: Path,
    images: list[dict],
    splits: dict[str, list[int]],
    object_aliases: str = "person,man,woman\n",
    predicate_aliases: str = "on,on top of\n",
) -> dict:
    """Write a VG-format dataset. Each image dict: id, w, h, objects=[(object_id, name_or_names, x, y, w, h)],
    relationships=[(rel_id, predicate, subject_object_id, object_object_id)]."""
    root.mkdir(parents=True, exist_ok=True)
    image_data, objects, rels, attrs = [], [], [], []
    for img in images:
        image_data.append(
            {
                "image_id": img["id"],
                "width": img["w"],
                "height": img["h"],
                "url": f"https://cs.stanford.edu/people/rak248/VG_100K/{img['id']}.jpg",
            }
        )
        if not img.get("no_file"):
            write_image(root / "images/VG_100K" / f"{img['id']}.jpg", img["w"], img["h"])
        objs = []
        by_id = {}
        for oid, names, x, y, w, h in img.get("objects", []):
            names = [names] if isinstance(names, str) else names
            rec = {"object_id": oid, "x": x, "y": y, "w": w, "h": h, "names": names}
            objs.append(rec)
            by_id[oid] = rec
        if not img.get("no_objects_entry"):
            objects.append({"image_id": img["id"], "objects": objs})
        rels.append(
            {
                "image_id": img["id"],
                "relationships": [
                    {"relationship_id": rid, "predicate": pred, "subject": {"object_id": s}, "object": {"object_id": o}}
                    for rid, pred, s, o in img.get("relationships", [])
                ],
            }
        )
        attrs.append(
            {
                "image_id": img["id"],
                "attributes": [{"object_id": rec["object_id"], "attributes": ["red"]} for rec in objs],
            }
        )
    paths = {
        "image_data": root / "image_data.json",
        "objects": root / "objects.json",
        "relationships": root / "relationships.json",
        "attributes": root / "attributes.json",
        "splits": root / "vg_splits.json",
        "object_aliases": root / "object_alias.txt",
        "predicate_aliases": root / "predicate_alias.txt",
    }
    paths["image_data"].write_text(json.dumps(image_data))
    paths["objects"].write_text(json.dumps(objects))
    paths["relationships"].write_text(json.dumps(rels))
    paths["attributes"].write_text(json.dumps(attrs))
    paths["splits"].write_text(json.dumps(splits))
    paths["object_aliases"].write_text(object_aliases)
    paths["predicate_aliases"].write_text(predicate_aliases)
    return {k: str(v) for k, v in paths.items()} | {"image_dir": str(root / "images")}
