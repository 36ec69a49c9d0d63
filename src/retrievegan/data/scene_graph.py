"""Canonical scene graphs: the one format every model reads, whatever the source dataset.

One JSON file per split (``train.json``, ``val.json``, ``test.json``) holds, per image, the image id,
file name (relative to the split's ``image_dir``), original size, the objects (vocab index,
normalized box ``(x0, y0, x1, y1)`` in [0, 1], source annotation id, optional ``M x M`` mask as a hex
bit string) and the triples ``(subject, predicate, object)`` over object indices. As in sg2im the last
object of every image is ``__image__`` with box ``(0, 0, 1, 1)`` and every real object has an
``__in_image__`` triple to it. A ``vocab.json`` beside them names objects and predicates.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievegan import io
from retrievegan.errors import InputError

FORMAT_VERSION = 1
IMAGE_OBJECT = "__image__"
IN_IMAGE = "__in_image__"
SPLITS = ("train", "val", "test")

Box = tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Object and predicate names. Index 0 is ``__image__`` / ``__in_image__``."""

    object_names: tuple[str, ...]
    predicate_names: tuple[str, ...]
    object_source_ids: tuple[int | None, ...]  # the source dataset's category id (COCO), None for VG
    attribute_names: tuple[str, ...] = ()  # VG attribute vocab (kept for completeness; no model uses it)

    def __post_init__(self) -> None:
        if not self.object_names or self.object_names[0] != IMAGE_OBJECT:
            raise ValueError(f"object vocab must start with {IMAGE_OBJECT!r}")
        if not self.predicate_names or self.predicate_names[0] != IN_IMAGE:
            raise ValueError(f"predicate vocab must start with {IN_IMAGE!r}")
        if len(set(self.object_names)) != len(self.object_names):
            raise ValueError("duplicate object names in vocab")
        if len(set(self.predicate_names)) != len(self.predicate_names):
            raise ValueError("duplicate predicate names in vocab")
        if len(self.object_source_ids) != len(self.object_names):
            raise ValueError("object_source_ids must align with object_names")

    @property
    def num_objects(self) -> int:
        """Vocabulary size including ``__image__``."""
        return len(self.object_names)

    @property
    def num_categories(self) -> int:
        """Real categories (the paper's #Category): the vocab without ``__image__``."""
        return len(self.object_names) - 1

    @property
    def num_predicates(self) -> int:
        return len(self.predicate_names)

    def object_index(self, name: str) -> int:
        return self.object_names.index(name)

    def predicate_index(self, name: str) -> int:
        return self.predicate_names.index(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "object_names": list(self.object_names),
            "object_source_ids": list(self.object_source_ids),
            "predicate_names": list(self.predicate_names),
            "attribute_names": list(self.attribute_names),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocab:
        return cls(
            object_names=tuple(data["object_names"]),
            predicate_names=tuple(data["predicate_names"]),
            object_source_ids=tuple(data["object_source_ids"]),
            attribute_names=tuple(data.get("attribute_names", ())),
        )


@dataclasses.dataclass(frozen=True)
class SceneObject:
    category: int  # vocab index
    box: Box  # normalized (x0, y0, x1, y1)
    source_id: int | None = None  # annotation / object id in the source dataset
    mask: str | None = None  # M*M bits, row-major, as hex (see encode_mask)


@dataclasses.dataclass(frozen=True)
class SceneGraph:
    image_id: int
    file_name: str
    width: int
    height: int
    objects: tuple[SceneObject, ...]  # last one is __image__
    triples: tuple[tuple[int, int, int], ...]  # (subject idx, predicate idx, object idx)
    theme: int | None = None  # hidden theme of a synthetic image; evaluation only

    @property
    def num_real_objects(self) -> int:
        return len(self.objects) - 1

    def to_json(self) -> dict[str, Any]:
        objects = []
        for obj in self.objects:
            rec: dict[str, Any] = {"category": obj.category, "box": [round(v, 6) for v in obj.box]}
            if obj.source_id is not None:
                rec["source_id"] = obj.source_id
            if obj.mask is not None:
                rec["mask"] = obj.mask
            objects.append(rec)
        rec = {
            "image_id": self.image_id,
            "file_name": self.file_name,
            "width": self.width,
            "height": self.height,
            "objects": objects,
            "triples": [list(t) for t in self.triples],
        }
        if self.theme is not None:
            rec["theme"] = self.theme
        return rec

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SceneGraph:
        return cls(
            image_id=int(data["image_id"]),
            file_name=str(data["file_name"]),
            width=int(data["width"]),
            height=int(data["height"]),
            objects=tuple(
                SceneObject(
                    category=int(o["category"]),
                    box=tuple(float(v) for v in o["box"]),  # type: ignore[arg-type]
                    source_id=o.get("source_id"),
                    mask=o.get("mask"),
                )
                for o in data["objects"]
            ),
            triples=tuple(tuple(int(v) for v in t) for t in data["triples"]),  # type: ignore[misc]
            theme=data.get("theme"),
        )


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of one source dataset, in canonical form."""

    source: str
    split: str
    image_dir: str
    mask_size: int | None
    graphs: tuple[SceneGraph, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "split": self.split,
            "image_dir": self.image_dir,
            "mask_size": self.mask_size,
            "images": [g.to_json() for g in self.graphs],
        }


def encode_mask(mask: np.ndarray) -> str:
    """(M, M) bool -> hex string of the row-major bits (M*M must be a multiple of 4)."""
    bits = np.asarray(mask, dtype=bool).reshape(-1)
    if bits.size % 8:
        bits = np.concatenate([bits, np.zeros(8 - bits.size % 8, dtype=bool)])
    return np.packbits(bits).tobytes().hex()


def decode_mask(text: str, size: int) -> np.ndarray:
    """Inverse of encode_mask: hex string -> (size, size) bool."""
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))
    return bits[: size * size].reshape(size, size).astype(bool)


def write_split(path: str | Path, split: Split) -> None:
    io.write_json(path, split.to_json())


def read_split(path: str | Path) -> Split:
    path = Path(path)
    data = io.read_json(path, "canonical scene-graph file not found (run `retrievegan preprocess`)")
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise InputError(path, f"unsupported format_version {data.get('format_version')!r}")
    return Split(
        source=data["source"],
        split=data["split"],
        image_dir=data["image_dir"],
        mask_size=data.get("mask_size"),
        graphs=tuple(SceneGraph.from_json(g) for g in data["images"]),
    )


def write_vocab(path: str | Path, vocab: Vocab) -> None:
    io.write_json(path, vocab.to_json())


def read_vocab(path: str | Path) -> Vocab:
    path = Path(path)
    try:
        return Vocab.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise InputError(path, "vocab file not found (run `retrievegan preprocess`)") from exc
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise InputError(path, f"invalid vocab: {exc}") from exc


def with_image_node(
    objects: Sequence[SceneObject], triples: Sequence[tuple[int, int, int]], mask_size: int | None
) -> tuple[tuple[SceneObject, ...], tuple[tuple[int, int, int], ...]]:
    """Append the ``__image__`` object (index 0 in the vocab) and the ``__in_image__`` triples (index 0)."""
    full_mask = encode_mask(np.ones((mask_size, mask_size), dtype=bool)) if mask_size else None
    image_obj = SceneObject(category=0, box=(0.0, 0.0, 1.0, 1.0), source_id=None, mask=full_mask)
    n = len(objects)
    in_image = tuple((i, 0, n) for i in range(n))
    return tuple(objects) + (image_obj,), tuple(triples) + in_image
