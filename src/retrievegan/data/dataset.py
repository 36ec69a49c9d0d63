"""Torch dataset over the canonical scene graphs, and the collate function that batches graphs.

One item is one image with its scene graph (sg2im's convention): the image from the memory-mapped
``{split}_images.npy`` normalised with ImageNet mean/std, the objects (last one ``__image__``), their
normalised boxes ``(x0, y0, x1, y1)``, their ``M x M`` masks when the source has them, and the triples
``(s, p, o)`` including the ``__in_image__`` ones. Every item also keeps its image id, its row in the
split, and, when a patch table is given, the patch-bank row of every real object (``patches.csv`` is
ordered by split, image_index, object_index), which retrieval methods need as ground truth.

``collate_scene_graphs`` concatenates the objects and triples of a batch (triple indices shifted into
the batch) with ``obj_to_img`` / ``triple_to_img`` indices, as sg2im. Loading is deterministic: the
dataset draws nothing at random; methods derive per-image randomness from ``(seed, image_id)``
(``retrievegan.seeds``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrievegan import io
from retrievegan.data.scene_graph import IMAGE_OBJECT, decode_mask, read_split, read_vocab
from retrievegan.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its data (stored in checkpoints to rebuild the model)."""

    num_objects: int  # object vocab size, including __image__ (index 0)
    num_predicates: int  # predicate vocab size, including __in_image__ (index 0)
    image_size: int  # S of the S x S images
    mask_size: int | None  # M of the M x M object masks; None when the source has no masks
    object_names: tuple[str, ...] = ()
    predicate_names: tuple[str, ...] = ()


@dataclasses.dataclass
class SceneGraphItem:
    """One image and its scene graph (O objects including __image__, T triples)."""

    image: torch.Tensor  # (3, S, S) float32, ImageNet-normalised
    objs: torch.Tensor  # (O,) int64 vocab indices
    boxes: torch.Tensor  # (O, 4) float32 normalised (x0, y0, x1, y1)
    masks: torch.Tensor | None  # (O, M, M) float32 in {0, 1}, or None
    triples: torch.Tensor  # (T, 3) int64 (s, p, o) over this image's objects
    patch_ids: torch.Tensor  # (O,) int64 patch-bank row per object; -1 for __image__ or without a bank
    image_id: int
    image_index: int  # row in the split (and in {split}_images.npy)


@dataclasses.dataclass
class SceneGraphBatch:
    """A batch of N scene graphs with O objects and T triples in total (sg2im's layout)."""

    images: torch.Tensor  # (N, 3, S, S) float32, ImageNet-normalised
    objs: torch.Tensor  # (O,) int64
    boxes: torch.Tensor  # (O, 4) float32
    masks: torch.Tensor | None  # (O, M, M) float32, or None
    triples: torch.Tensor  # (T, 3) int64; s and o index the batch's objects
    obj_to_img: torch.Tensor  # (O,) int64 in [0, N)
    triple_to_img: torch.Tensor  # (T,) int64 in [0, N)
    object_index: torch.Tensor  # (O,) int64 position of each object in its image
    patch_ids: torch.Tensor  # (O,) int64; -1 for __image__ objects or without a patch bank
    image_ids: torch.Tensor  # (N,) int64
    image_index: torch.Tensor  # (N,) int64 row in the split
    # --- computed once per batch on the host by the collate function (index tensors move with the batch, the
    # Python values stay on the host): models read them instead of deriving them from device data, which would
    # make the host wait for the device (a synchronisation) on a GPU ---
    objects_per_image: tuple[int, ...] = ()  # objects of each image, __image__ included (host)
    real_rows: torch.Tensor | None = None  # (R,) int64 rows of the real objects (not __image__), in batch order
    image_rows: torch.Tensor | None = None  # (N,) int64 row of each image's __image__ node
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)  # method-specific (Method.host_prepare):
    #   tensors move with the batch, other values stay on the host

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def max_objects(self) -> int:
        """Most objects of one image, __image__ included (host value; computed from the data if the batch was
        not made by :func:`collate_scene_graphs`, which synchronises on a GPU)."""
        counts = self.objects_per_image or tuple(torch.bincount(self.obj_to_img, minlength=self.num_images).tolist())
        return max(counts, default=0)

    @property
    def max_real_objects(self) -> int:
        """Most real objects of one image (>= 1, host value)."""
        return max(self.max_objects - 1, 1)

    def real_index(self) -> torch.Tensor:
        """(R,) int64 rows of the real objects (``real_rows``; derived from ``objs`` if missing)."""
        return self.real_rows if self.real_rows is not None else torch.nonzero(self.objs != 0).squeeze(1)

    def image_index_rows(self) -> torch.Tensor:
        """(N,) int64 row of each image's ``__image__`` node (``image_rows``; derived from ``objs`` if missing)."""
        return self.image_rows if self.image_rows is not None else torch.nonzero(self.objs == 0).squeeze(1)

    @property
    def real_objects(self) -> torch.Tensor:
        """(O,) bool: True for real objects, False for the ``__image__`` nodes."""
        return self.objs != 0

    def _map(self, fn: Any) -> SceneGraphBatch:
        """Apply ``fn`` to every tensor (the fields and the tensors of ``extras``); other values are kept."""

        def apply(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return fn(value)
            if isinstance(value, dict):
                return {k: apply(v) for k, v in value.items()}
            return value

        return SceneGraphBatch(**{f.name: apply(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> SceneGraphBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> SceneGraphBatch:
        return self._map(lambda t: t.pin_memory())

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the batch (fields and ``extras``)."""
        found: list[torch.Tensor] = []
        self._map(lambda t: found.append(t) or t)
        return found


def normalize_images(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(..., S, S, 3) uint8 -> (..., 3, S, S) float32 ImageNet-normalised."""
    x = torch.as_tensor(np.asarray(pixels)).float().div_(255.0)
    x = x.movedim(-1, -3)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) ImageNet-normalised -> (N, H, W, 3) uint8 (clamped, rounded)."""
    images = images.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = (images * std + mean).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


class SceneGraphDataset(torch.utils.data.Dataset):
    """The scene graphs of one split of a canonical data folder (``retrievegan preprocess`` output).

    ``patches_csv``: the patch table (``retrievegan patches``); when given, each item carries the bank row
    of every real object and the table is checked against the scene graphs.
    """

    def __init__(self, data_dir: str | Path, split: str, patches_csv: str | Path | None = None, use_masks: bool = True):
        self.data_dir = Path(data_dir)
        self.split = split
        self.graphs_path = self.data_dir / f"{split}.json"
        self.images_path = self.data_dir / f"{split}_images.npy"
        vocab = read_vocab(self.data_dir / "vocab.json")
        canonical = read_split(self.graphs_path)
        graphs = canonical.graphs
        mask_size = canonical.mask_size if use_masks else None
        self._check_images(len(graphs))
        self.image_size = int(self._image_shape[1])
        self.spec = DataSpec(
            num_objects=vocab.num_objects,
            num_predicates=vocab.num_predicates,
            image_size=self.image_size,
            mask_size=mask_size,
            object_names=vocab.object_names,
            predicate_names=vocab.predicate_names,
        )
        self.image_ids = np.array([g.image_id for g in graphs], dtype=np.int64)
        self._objs: list[np.ndarray] = []
        self._boxes: list[np.ndarray] = []
        self._triples: list[np.ndarray] = []
        self._masks: list[tuple[str, ...] | None] = []
        for index, graph in enumerate(graphs):
            record = f"image id {graph.image_id} (row {index})"
            objs = np.array([o.category for o in graph.objects], dtype=np.int64)
            boxes = np.array([o.box for o in graph.objects], dtype=np.float32).reshape(-1, 4)
            triples = np.array(graph.triples, dtype=np.int64).reshape(-1, 3)
            self._validate(objs, boxes, triples, vocab.num_objects, vocab.num_predicates, record)
            if mask_size:
                if any(o.mask is None for o in graph.objects):
                    raise InputError(self.graphs_path, f"mask_size is {mask_size} but an object has no mask", record)
                self._masks.append(tuple(o.mask for o in graph.objects))  # type: ignore[misc]
            else:
                self._masks.append(None)
            self._objs.append(objs)
            self._boxes.append(boxes)
            self._triples.append(triples)
        if vocab.object_names[0] != IMAGE_OBJECT:
            raise InputError(self.data_dir / "vocab.json", f"object 0 must be {IMAGE_OBJECT!r}")
        self._patch_offsets = None if patches_csv is None else self._patch_offsets_from(Path(patches_csv))
        self._images: np.ndarray | None = None  # opened lazily in each process (worker)

    # --- checks ---------------------------------------------------------------------------------
    def _check_images(self, num_graphs: int) -> None:
        images = io.load_array(self.images_path, "image array not found (run `retrievegan preprocess`)")
        shape = images.shape
        if images.dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise InputError(self.images_path, f"expected (N, S, S, 3) uint8, got {shape} {images.dtype}")
        if shape[0] != num_graphs:
            raise InputError(
                self.images_path, f"{shape[0]} images but {self.graphs_path.name} has {num_graphs} scene graphs"
            )
        self._image_shape = shape

    def _validate(
        self,
        objs: np.ndarray,
        boxes: np.ndarray,
        triples: np.ndarray,
        num_objects: int,
        num_predicates: int,
        record: str,
    ) -> None:
        path = self.graphs_path
        if len(objs) < 1 or objs[-1] != 0:
            raise InputError(path, "the last object must be __image__ (vocab index 0)", record)
        if (objs[:-1] == 0).any():
            raise InputError(path, "__image__ appears before the last object", record)
        if objs.min() < 0 or objs.max() >= num_objects:
            raise InputError(path, f"object category out of the vocab range [0, {num_objects})", record)
        if not np.isfinite(boxes).all() or (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
            raise InputError(path, "a box is empty or not finite (need x0 < x1 and y0 < y1)", record)
        if len(triples):
            if triples[:, [0, 2]].min() < 0 or triples[:, [0, 2]].max() >= len(objs):
                raise InputError(path, f"a triple refers to an object outside [0, {len(objs)})", record)
            if triples[:, 1].min() < 0 or triples[:, 1].max() >= num_predicates:
                raise InputError(path, f"a predicate is outside the vocab range [0, {num_predicates})", record)

    def _patch_offsets_from(self, path: Path) -> np.ndarray:
        """First patch id of every image of this split, checked against the scene graphs."""
        import pandas as pd

        try:
            table = pd.read_csv(
                path, usecols=["patch_id", "split", "image_index", "image_id", "object_index"], dtype={"split": str}
            )
        except FileNotFoundError as exc:
            raise InputError(path, "patch table not found (run `retrievegan patches`)") from exc
        except ValueError as exc:
            raise InputError(path, f"not a patch table: {exc}") from exc
        rows = table[table["split"] == self.split]
        counts = np.array([len(o) - 1 for o in self._objs], dtype=np.int64)
        if len(rows) != counts.sum():
            raise InputError(
                path, f"{len(rows)} {self.split} patches but {self.graphs_path.name} has {counts.sum()} real objects"
            )
        offsets = np.zeros(len(counts), dtype=np.int64)
        if len(rows):
            patch_id = rows["patch_id"].to_numpy()
            image_index = np.repeat(np.arange(len(counts)), counts)
            object_index = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, int)
            bad = np.flatnonzero(
                (rows["image_index"].to_numpy() != image_index)
                | (rows["object_index"].to_numpy() != object_index)
                | (rows["image_id"].to_numpy() != self.image_ids[image_index])
            )
            if len(bad):
                raise InputError(
                    path,
                    f"row does not match {self.graphs_path.name} (image {image_index[bad[0]]}, "
                    f"object {object_index[bad[0]]})",
                    f"patch_id {patch_id[bad[0]]}",
                )
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            offsets = patch_id[starts.clip(max=len(patch_id) - 1)]
            if not (np.diff(patch_id) == 1).all():
                raise InputError(path, f"{self.split} patch ids are not consecutive")
        return offsets

    # --- Dataset --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._objs)

    def object_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(O,) categories and (O, 4) boxes of image ``index`` (without loading its pixels)."""
        return self._objs[index], self._boxes[index]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = None  # never pickle the memory map into workers
        return state

    def _pixels(self, index: int) -> np.ndarray:
        if self._images is None:
            self._images = io.load_array(self.images_path)
        return np.array(self._images[index])

    def __getitem__(self, index: int) -> SceneGraphItem:
        if not 0 <= index < len(self):
            raise IndexError(index)
        objs = self._objs[index]
        masks = None
        hex_masks = self._masks[index]
        if hex_masks is not None:
            size = self.spec.mask_size
            assert size is not None
            masks = torch.from_numpy(np.stack([decode_mask(h, size) for h in hex_masks]).astype(np.float32))
        patch_ids = np.full(len(objs), -1, dtype=np.int64)
        if self._patch_offsets is not None:
            patch_ids[:-1] = self._patch_offsets[index] + np.arange(len(objs) - 1)
        return SceneGraphItem(
            image=normalize_images(self._pixels(index)),
            objs=torch.from_numpy(objs),
            boxes=torch.from_numpy(self._boxes[index]),
            masks=masks,
            triples=torch.from_numpy(self._triples[index]),
            patch_ids=torch.from_numpy(patch_ids),
            image_id=int(self.image_ids[index]),
            image_index=index,
        )


def collate_scene_graphs(items: Sequence[SceneGraphItem]) -> SceneGraphBatch:
    """Concatenate scene graphs into one batch (triple indices shifted to the batch's objects), and compute the
    batch's index tensors and object counts here, on the host, once per batch (``objects_per_image``,
    ``real_rows``, ``image_rows``)."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    has_masks = items[0].masks is not None
    if any((item.masks is not None) != has_masks for item in items):
        raise ValueError("items disagree on whether masks are present")
    counts = [int(item.objs.shape[0]) for item in items]
    triple_counts = [int(item.triples.shape[0]) for item in items]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    triples = torch.cat([item.triples for item in items])
    shift = torch.from_numpy(np.repeat(offsets, triple_counts))
    triples = triples + torch.stack([shift, torch.zeros_like(shift), shift], dim=1)
    objs = torch.cat([item.objs for item in items])
    real = (objs != 0).numpy()
    return SceneGraphBatch(
        images=torch.stack([item.image for item in items]),
        objs=objs,
        boxes=torch.cat([item.boxes for item in items]),
        masks=torch.cat([item.masks for item in items]) if has_masks else None,  # type: ignore[misc]
        triples=triples,
        obj_to_img=torch.from_numpy(np.repeat(np.arange(len(items), dtype=np.int64), counts)),
        triple_to_img=torch.from_numpy(np.repeat(np.arange(len(items), dtype=np.int64), triple_counts)),
        object_index=torch.from_numpy(np.concatenate([np.arange(c, dtype=np.int64) for c in counts])),
        patch_ids=torch.cat([item.patch_ids for item in items]),
        image_ids=torch.tensor([item.image_id for item in items], dtype=torch.int64),
        image_index=torch.tensor([item.image_index for item in items], dtype=torch.int64),
        objects_per_image=tuple(counts),
        real_rows=torch.from_numpy(np.flatnonzero(real).astype(np.int64)),
        image_rows=torch.from_numpy(np.flatnonzero(~real).astype(np.int64)),
    )


def check_spec(trained: DataSpec, data: DataSpec, where: Path) -> None:
    """The data must match what the model was trained on (vocab sizes, image and mask sizes)."""
    for field in ("num_objects", "num_predicates", "image_size", "object_names", "predicate_names"):
        if getattr(trained, field) != getattr(data, field):
            raise InputError(
                where,
                f"{field} differs from the model's training data "
                f"({getattr(data, field)!r} vs {getattr(trained, field)!r})",
            )


def sequential_loader(dataset: SceneGraphDataset, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_scene_graphs
    )
