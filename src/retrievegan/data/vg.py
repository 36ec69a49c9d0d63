"""Visual Genome v1.4 reader implementing sg2im's ``preprocess_vg.py`` and its dataset class.

Thresholds (sg2im defaults): images with min side >= 200; object and attribute vocab from names with
>= 2000 training instances, predicate vocab >= 500 (counted on train only, after aliasing);
objects at least 32 px wide *and* high; 3..30 objects, 1..30 relationships per image. sg2im's
dataset class then keeps at most 10 objects including ``__image__``, objects in relationships
first; we apply that once here with a generator seeded per image, and fix two known sg2im issues:
its ``random.sample(obj_idxs, max_objects)`` kept one object too many, and its predicate
normalisation (lower-case, strip, alias) only touched training relationships.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections import Counter
from pathlib import Path

import numpy as np

from retrievegan.data.coco import RawImage
from retrievegan.data.rawjson import check_box, load_json, require, require_list
from retrievegan.data.scene_graph import IMAGE_OBJECT, IN_IMAGE, SPLITS, SceneGraph, SceneObject, Vocab, with_image_node
from retrievegan.errors import InputError


@dataclasses.dataclass(frozen=True)
class VisualGenomeConfig:
    image_data: str
    objects: str
    relationships: str
    attributes: str
    splits: str  # sg2im's vg_splits.json: {"train": [ids], "val": [ids], "test": [ids]}
    object_aliases: str
    predicate_aliases: str
    image_dir: str  # holds VG_100K/ and VG_100K_2/
    min_image_size: int = 200
    min_object_instances: int = 2000
    min_attribute_instances: int = 2000
    min_relationship_instances: int = 500
    min_object_size: int = 32
    min_objects_per_image: int = 3
    max_objects_per_image: int = 30
    min_relationships_per_image: int = 1
    max_relationships_per_image: int = 30
    max_objects_at_load: int = 10  # including __image__
    use_orphaned_objects: bool = True
    box_tolerance_px: float = 1.0

    @classmethod
    def from_root(cls, root: str | Path, **overrides: object) -> VisualGenomeConfig:
        """The standard layout under ``root`` (what `retrievegan synth` writes): the json files, sg2im's
        ``vg_splits.json`` and alias files, and ``images/VG_100K*/``."""
        root = Path(root)
        paths = {
            "image_data": "image_data.json",
            "objects": "objects.json",
            "relationships": "relationships.json",
            "attributes": "attributes.json",
            "splits": "vg_splits.json",
            "object_aliases": "object_alias.txt",
            "predicate_aliases": "predicate_alias.txt",
            "image_dir": "images",
        }
        return cls(**({key: str(root / name) for key, name in paths.items()} | overrides))  # type: ignore[arg-type]


def load_aliases(path: str | Path) -> dict[str, str]:
    """sg2im alias files: each line ``canonical,alias,alias...``; every name maps to the first."""
    aliases: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise InputError(path, "alias file not found") from exc
    for line in lines:
        names = [s.strip().lower() for s in line.split(",") if s.strip()]
        for name in names:
            aliases[name] = names[0]
    return aliases


def normalize_predicate(raw: str, aliases: dict[str, str]) -> str:
    pred = " ".join(raw.lower().split())
    return aliases.get(pred, pred)


def _ranked(counter: Counter, minimum: int) -> list[str]:
    return [name for name, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])) if count >= minimum]


def _most_common(counter: Counter) -> str:
    if not counter:
        return "none occurs at all"
    name, count = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return f"the most frequent, {name!r}, occurs {count} times"


def _filter_summary(
    cfg: VisualGenomeConfig, stats: dict[str, int], vocab: Vocab, name_counter: Counter, pred_counter: Counter
) -> str:
    """Why every image of ``split`` was dropped: the empty vocabulary, else the per-filter image counts."""
    causes = []
    if len(vocab.object_names) == 1:
        causes.append(
            f"the object vocabulary is empty: no object name occurs min_object_instances = "
            f"{cfg.min_object_instances} times in the train split ({_most_common(name_counter)})"
        )
    if len(vocab.predicate_names) == 1 and cfg.min_relationships_per_image > 0:
        causes.append(
            f"the predicate vocabulary is empty: no predicate occurs min_relationship_instances = "
            f"{cfg.min_relationship_instances} times between kept train objects "
            f"({_most_common(pred_counter)})"
        )
    causes.append(
        f"of {stats['images_in_split']} images, {stats['images_dropped_small']} are smaller than min_image_size = "
        f"{cfg.min_image_size} px, {stats['images_dropped_object_count']} keep fewer than min_objects_per_image = "
        f"{cfg.min_objects_per_image} or more than max_objects_per_image = {cfg.max_objects_per_image} objects, "
        f"{stats['images_dropped_relationship_count']} keep fewer than min_relationships_per_image = "
        f"{cfg.min_relationships_per_image} or more than max_relationships_per_image = "
        f"{cfg.max_relationships_per_image} relationships"
    )
    return "; ".join(causes)


def _by_image(path: str, records: object, field: str) -> dict[int, list]:
    out: dict[int, list] = {}
    for i, rec in enumerate(require_list(records, path, "top level")):
        image_id = require(rec, "image_id", path, f"entry #{i}")
        out[image_id] = require_list(require(rec, field, path, f"image id {image_id}"), path, f"image id {image_id}")
    return out


def read_visual_genome(cfg: VisualGenomeConfig, seed: int) -> tuple[dict[str, list[RawImage]], Vocab, dict]:
    """Canonical scene graphs of the three VG splits, the vocab and counters of what was dropped."""
    images = {}
    for i, rec in enumerate(require_list(load_json(cfg.image_data), cfg.image_data, "top level")):
        image_id = require(rec, "image_id", cfg.image_data, f"entry #{i}")
        for key in ("width", "height", "url"):
            require(rec, key, cfg.image_data, f"image id {image_id}")
        images[image_id] = rec
    raw_splits = load_json(cfg.splits)
    splits: dict[str, list[int]] = {}
    for name in SPLITS:
        ids = require_list(require(raw_splits, name, cfg.splits, "top level"), cfg.splits, name)
        if not ids:
            raise InputError(cfg.splits, f"the {name} split is empty", name)
        for image_id in ids:
            if image_id not in images:
                raise InputError(cfg.splits, f"image id {image_id} is not in {cfg.image_data}", name)
        splits[name] = [i for i in ids if min(images[i]["width"], images[i]["height"]) >= cfg.min_image_size]
    counts: dict = {
        name: {
            "images_in_split": len(raw_splits[name]),
            "images_dropped_small": len(raw_splits[name]) - len(splits[name]),
        }
        for name in SPLITS
    }

    obj_aliases = load_aliases(cfg.object_aliases)
    pred_aliases = load_aliases(cfg.predicate_aliases)
    objects = _by_image(cfg.objects, load_json(cfg.objects), "objects")
    attributes = _by_image(cfg.attributes, load_json(cfg.attributes), "attributes")
    relationships = _by_image(cfg.relationships, load_json(cfg.relationships), "relationships")
    for name in SPLITS:
        for image_id in splits[name]:
            if image_id not in objects:
                raise InputError(cfg.objects, "image has no annotations (no entry)", f"image id {image_id}")

    def names_of(obj: dict, where: str) -> list[str]:
        raw = obj.get("names", [obj["name"]] if "name" in obj else None)
        if not isinstance(raw, list) or not raw:
            raise InputError(cfg.objects, "object has no names", where)
        return [obj_aliases.get(n.strip().lower(), n.strip().lower()) for n in raw]

    train_ids = set(splits["train"])
    name_counter: Counter = Counter()
    for image_id in train_ids:
        for obj in objects[image_id]:
            name_counter.update(set(names_of(obj, f"image id {image_id}, object {obj.get('object_id')}")))
    object_names = _ranked(name_counter, cfg.min_object_instances)
    attr_counter: Counter = Counter()
    for image_id in train_ids:
        for rec in attributes.get(image_id, []):
            attr_counter.update({str(a).strip().lower() for a in rec.get("attributes", []) or []})
    attribute_names = _ranked(attr_counter, cfg.min_attribute_instances)
    name_to_idx = {n: i + 1 for i, n in enumerate(object_names)}

    # Keep objects with a vocab name and a box of at least min_object_size px in both directions.
    kept_objects: dict[int, dict] = {}
    all_ids = [i for name in SPLITS for i in splits[name]]
    dropped_small = 0
    for image_id in all_ids:
        img = images[image_id]
        for obj in objects[image_id]:
            where = f"image id {image_id}, object id {obj.get('object_id')}"
            object_id = require(obj, "object_id", cfg.objects, where)
            box = check_box(
                require(obj, "x", cfg.objects, where),
                require(obj, "y", cfg.objects, where),
                require(obj, "w", cfg.objects, where),
                require(obj, "h", cfg.objects, where),
                img["width"],
                img["height"],
                cfg.box_tolerance_px,
                cfg.objects,
                where,
            )
            final = next((n for n in names_of(obj, where) if n in name_to_idx), None)
            too_small = box[2] < cfg.min_object_size or box[3] < cfg.min_object_size
            dropped_small += int(too_small)
            if final is not None and not too_small:
                kept_objects[object_id] = {"name_idx": name_to_idx[final], "box": box, "image_id": image_id}

    def rel_ends(rel: dict, image_id: int) -> tuple[int, int]:
        where = f"image id {image_id}, relationship id {rel.get('relationship_id')}"
        subj = require(rel, "subject", cfg.relationships, where)
        obj = require(rel, "object", cfg.relationships, where)
        return require(subj, "object_id", cfg.relationships, where), require(obj, "object_id", cfg.relationships, where)

    pred_counter: Counter = Counter()
    for image_id in train_ids:
        for rel in relationships.get(image_id, []):
            sid, oid = rel_ends(rel, image_id)
            if sid in kept_objects and oid in kept_objects:
                pred_counter[normalize_predicate(str(rel.get("predicate", "")), pred_aliases)] += 1
    predicate_names = _ranked(pred_counter, cfg.min_relationship_instances)
    pred_to_idx = {p: i + 1 for i, p in enumerate(predicate_names)}
    vocab = Vocab(
        object_names=(IMAGE_OBJECT,) + tuple(object_names),
        predicate_names=(IN_IMAGE,) + tuple(predicate_names),
        object_source_ids=(None,) * (len(object_names) + 1),
        attribute_names=tuple(attribute_names),
    )

    out: dict[str, list[RawImage]] = {}
    for name in SPLITS:
        stats = counts[name]
        stats.update(images_dropped_object_count=0, images_dropped_relationship_count=0)
        kept: list[RawImage] = []
        for image_id in splits[name]:
            img = images[image_id]
            obj_ids = [o["object_id"] for o in objects[image_id] if o["object_id"] in kept_objects]
            if not cfg.min_objects_per_image <= len(obj_ids) <= cfg.max_objects_per_image:
                stats["images_dropped_object_count"] += 1
                continue
            position = {oid: i for i, oid in enumerate(obj_ids)}
            rels = []
            for rel in relationships.get(image_id, []):
                sid, oid = rel_ends(rel, image_id)
                pred = pred_to_idx.get(normalize_predicate(str(rel.get("predicate", "")), pred_aliases))
                if pred is not None and sid in position and oid in position:
                    rels.append((position[sid], pred, position[oid]))
            if not cfg.min_relationships_per_image <= len(rels) <= cfg.max_relationships_per_image:
                stats["images_dropped_relationship_count"] += 1
                continue
            chosen = _select_objects(len(obj_ids), rels, cfg, np.random.default_rng([seed, int(image_id)]))
            remap = {old: new for new, old in enumerate(chosen)}
            width, height = img["width"], img["height"]
            scene_objects = []
            for old in chosen:
                rec = kept_objects[obj_ids[old]]
                x, y, w, h = rec["box"]
                x0, y0 = max(x, 0.0) / width, max(y, 0.0) / height
                x1, y1 = min(x + w, width) / width, min(y + h, height) / height
                scene_objects.append(
                    SceneObject(category=rec["name_idx"], box=(x0, y0, x1, y1), source_id=int(obj_ids[old]))
                )
            triples = [(remap[s], p, remap[o]) for s, p, o in rels if s in remap and o in remap]
            objs, trips = with_image_node(scene_objects, triples, None)
            graph = SceneGraph(
                image_id=int(image_id),
                file_name=image_path(img["url"]),
                width=width,
                height=height,
                objects=objs,
                triples=trips,
                theme=img.get("synth_theme"),
            )
            kept.append(RawImage(graph=graph, path=Path(cfg.image_dir) / graph.file_name))
        if not kept:
            raise InputError(
                cfg.splits,
                f"the {name} split is empty after filtering: "
                + _filter_summary(cfg, stats, vocab, name_counter, pred_counter),
                name,
            )
        stats["images_kept"] = len(kept)
        out[name] = kept
    counts["objects_dropped_small"] = dropped_small
    return out, vocab, counts


def image_path(url: str) -> str:
    """sg2im: the last folder and file name of the image URL, e.g. ``VG_100K/1.jpg``."""
    base, filename = posixpath.split(url)
    return posixpath.join(posixpath.basename(base), filename)


def _select_objects(
    num_objects: int, rels: list[tuple[int, int, int]], cfg: VisualGenomeConfig, rng: np.random.Generator
) -> list[int]:
    """sg2im's load-time selection: objects in relationships first, then orphans, max_objects_at_load - 1."""
    limit = cfg.max_objects_at_load - 1
    in_rels = {s for s, _, _ in rels} | {o for _, _, o in rels}
    chosen = sorted(in_rels)
    if len(chosen) > limit:
        chosen = sorted(int(i) for i in rng.choice(chosen, size=limit, replace=False))
    if cfg.use_orphaned_objects and len(chosen) < limit:
        orphans = [i for i in range(num_objects) if i not in in_rels]
        take = min(limit - len(chosen), len(orphans))
        if take:
            chosen += sorted(int(i) for i in rng.choice(orphans, size=take, replace=False))
    return chosen
