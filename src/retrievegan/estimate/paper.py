"""The paper configs and synthetic data at their scale: the methods built by the training code itself.

``load_paper_config`` layers a paper config on the embedded one (Snakemake's ``--configfile`` merge);
a method's sections come from the run catalogue as the rules build them (``retrievegan.runs.run_params`` /
``train_params``); ``DatasetScale`` holds what the
paper's dataset statistics say; ``synthetic_items`` draws scene graphs like the dataset's and ``write_inputs``
the retrieval methods' input arrays at paper dimensions (sparse files); ``random_damsm`` /
``install_random_perceptual`` give frozen pretrained loss networks random weights (timing / FLOPs / device
checks only, never a result).
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrievegan import runinfo
from retrievegan.config import from_mapping, load_yaml, merge
from retrievegan.errors import ConfigError, InputError
from retrievegan.estimate.config import EstimateConfig
from retrievegan.models.init import meta_device
from retrievegan.runs import run_params, train_params


def load_paper_config(base: str | Path, paper: str | Path) -> dict[str, Any]:
    """``paper`` layered on ``base`` (Snakemake's recursive ``--configfile`` merge)."""
    return merge(load_yaml(base), load_yaml(paper))


@dataclasses.dataclass(frozen=True)
class DatasetScale:
    """What the estimate takes from a paper config and the paper's dataset statistics."""

    source: str  # coco_stuff | visual_genome (the config's model_source)
    train_images: int
    val_images: int
    test_images: int
    categories: int
    patches: int  # patch bank rows (all splits)
    image_size: int
    mask_size: int | None  # COCO-Stuff masks; Visual Genome has none
    crop_size: int  # patch bank crops
    objects_per_image: tuple[int, int]  # real objects (without __image__), inclusive range
    num_predicates: int  # including __in_image__


def read_dataset_stats(path: str | Path) -> dict[str, dict[str, int]]:
    """The paper's dataset statistics (``dataset,train,val,test,categories,patches,image_size``) by dataset."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError as exc:
        raise InputError(path, "dataset statistics not found") from exc
    need = ("dataset", "train", "val", "test", "categories", "patches", "image_size")
    out = {}
    for i, row in enumerate(rows):
        try:
            out[row["dataset"]] = {k: int(row[k]) for k in need if k != "dataset"}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                path, f"expected columns {list(need)} with integer counts ({exc})", f"row {i + 1}"
            ) from exc
    return out


def dataset_scale(
    config: Mapping[str, Any], stats: Mapping[str, Mapping[str, int]], cfg: EstimateConfig
) -> DatasetScale:
    from retrievegan.data.geometry import COCO_PREDICATES

    source = config["model_source"]
    if source not in stats:
        raise ConfigError(f"no paper dataset statistics for {source!r} (have {sorted(stats)})")
    row = stats[source]
    if source == "coco_stuff":
        section = config["coco_stuff"]
        objects = (int(section["min_objects_per_image"]), int(section["max_objects_per_image"]))
        mask_size, predicates = int(section["mask_size"]), len(COCO_PREDICATES)
    else:
        section = config["visual_genome"]
        objects = (int(section["min_objects_per_image"]), int(section["max_objects_at_load"]) - 1)
        mask_size, predicates = None, cfg.vg_num_predicates
    return DatasetScale(
        source=source,
        train_images=row["train"],
        val_images=row["val"],
        test_images=row["test"],
        categories=row["categories"],
        patches=row["patches"],
        image_size=int(config["preprocess"]["image_size"]),
        mask_size=mask_size,
        crop_size=int(config["patches"]["crop_size"]),
        objects_per_image=objects,
        num_predicates=predicates,
    )


# --- synthetic data at paper scale ---------------------------------------------------------------------------
def synthetic_spec(scale: DatasetScale):
    """DataSpec with the paper's vocab sizes (placeholder one-word names: AttnGAN's sentences need names)."""
    from retrievegan.data.dataset import DataSpec
    from retrievegan.data.geometry import COCO_PREDICATES

    objects = ("__image__",) + tuple(f"object{i}" for i in range(1, scale.categories + 1))
    if scale.source == "coco_stuff":
        predicates = tuple(COCO_PREDICATES)
    else:
        predicates = ("__in_image__",) + tuple(f"relation{i}" for i in range(1, scale.num_predicates))
    return DataSpec(
        num_objects=len(objects),
        num_predicates=len(predicates),
        image_size=scale.image_size,
        mask_size=scale.mask_size,
        object_names=objects,
        predicate_names=predicates,
    )


def synthetic_items(scale: DatasetScale, spec, count: int, rng: np.random.Generator) -> list:
    """``count`` scene graphs drawn like the dataset: n real objects (uniform in the dataset's range) + __image__,
    random boxes covering >= 2% of the image, one relationship per real object (sg2im's COCO geometric triples;
    ours for VG) + one ``__in_image__`` triple each, COCO masks, random pixels; object j of the i-th graph has
    patch-bank row ``sum(n before i) + j``."""
    from retrievegan.data.dataset import SceneGraphItem

    low, high = scale.objects_per_image
    items, next_patch = [], 0
    size = scale.image_size
    for i in range(count):
        n = int(rng.integers(low, high + 1))
        objs = np.concatenate([rng.integers(1, spec.num_objects, n), [0]]).astype(np.int64)
        x0, y0 = rng.uniform(0.0, 0.6, n), rng.uniform(0.0, 0.6, n)
        w, h = rng.uniform(0.15, 1.0 - x0), rng.uniform(0.15, 1.0 - y0)
        boxes = np.concatenate([np.stack([x0, y0, x0 + w, y0 + h], 1), [[0.0, 0.0, 1.0, 1.0]]]).astype(np.float32)
        triples = []
        for s in range(n):
            if n > 1:
                o = int(rng.integers(0, n - 1))
                triples.append((s, int(rng.integers(1, spec.num_predicates)), o if o < s else o + 1))
            triples.append((s, 0, n))
        masks = None
        if scale.mask_size:
            masks = torch.from_numpy((rng.random((n + 1, scale.mask_size, scale.mask_size)) < 0.5).astype(np.float32))
            masks[-1] = 1.0
        patch_ids = np.concatenate([np.arange(next_patch, next_patch + n), [-1]]).astype(np.int64)
        next_patch += n
        items.append(
            SceneGraphItem(
                image=torch.from_numpy(rng.standard_normal((3, size, size), dtype=np.float32)),
                objs=torch.from_numpy(objs),
                boxes=torch.from_numpy(boxes),
                masks=masks,
                triples=torch.tensor(triples, dtype=torch.int64).view(-1, 3),
                patch_ids=torch.from_numpy(patch_ids),
                image_id=i,
                image_index=i,
            )
        )
    return items


def patch_feature_dim(features: Mapping[str, Any]) -> int:
    """Width F of ``features/patch_features.npy`` for a ``features`` config section (meta-device probe)."""
    from retrievegan.embed.features import FeatureExtractor, FeaturesConfig
    from retrievegan.embed.nets import CategoryCNN

    cfg = from_mapping(FeaturesConfig, features, "features")
    with meta_device():
        if cfg.backbone == "resnet":
            from torchvision import models

            backbone, size = getattr(models, cfg.resnet_arch)(weights=None), cfg.resnet_input_size
        else:
            backbone, size = CategoryCNN(cfg.channels, 2), 32
        extractor = FeatureExtractor(backbone, cfg.backbone, cfg.pooling, cfg.resnet_input_size)
        probe = torch.zeros((1, size, size, 3), dtype=torch.uint8)
        return sum(item["width"] for item in extractor.layout(probe))


def write_inputs(
    folder: Path, config: Mapping[str, Any], scale: DatasetScale, real_objects: int, rng: np.random.Generator
) -> dict[str, Path]:
    """The retrieval methods' ``--input`` arrays at paper dimensions (sparse ``.npy`` files): patches ``(P, C, C, 3)``,
    candidates ``(P, prefilter.k)``, patch_features ``(P, F)``, cooccur_embeddings ``(P, cooccur.embed_dim)``.
    Rows ``0 .. real_objects - 1`` (the batch's objects) get random distinct-ish candidates; the rows the batch
    reads get random values, every other row stays zero (never read)."""
    p, k = scale.patches, int(config["prefilter"]["k"])
    if real_objects > p:
        raise ConfigError(f"the synthetic batch has {real_objects} objects but the bank only {p} patches")
    candidates = rng.integers(0, p, (real_objects, k), dtype=np.int64)
    used = np.unique(np.concatenate([np.arange(real_objects), candidates.ravel()]))
    dims = {
        "patch_features": patch_feature_dim(config["features"]),
        "cooccur_embeddings": int(config["cooccur"]["embed_dim"]),
    }
    paths = {name: folder / f"{name}.npy" for name in ("patches", "candidates", *dims)}
    array = np.lib.format.open_memmap(paths["candidates"], mode="w+", dtype=np.int64, shape=(p, k))
    array[:real_objects] = candidates
    array.flush()
    del array
    array = np.lib.format.open_memmap(
        paths["patches"], mode="w+", dtype=np.uint8, shape=(p, scale.crop_size, scale.crop_size, 3)
    )
    array[used] = rng.integers(0, 256, (len(used), scale.crop_size, scale.crop_size, 3), dtype=np.uint8)
    array.flush()
    del array
    for name, dim in dims.items():
        array = np.lib.format.open_memmap(paths[name], mode="w+", dtype=np.float32, shape=(p, dim))
        values = rng.standard_normal((len(used), dim), dtype=np.float32)
        if name == "cooccur_embeddings":
            values /= np.linalg.norm(values, axis=1, keepdims=True)
        array[used] = values
        array.flush()
        del array
    return paths


# --- random-weight stand-ins for frozen pretrained networks (estimate only) --------------------------------
def random_damsm(config: Mapping[str, Any], spec, generator: torch.Generator, path: Path | None = None):
    """AttnGAN's DAMSM (paper config: Inception-v3 image encoder) with RANDOM weights (no ImageNet file is read);
    with ``path``, also written as a ``retrievegan-damsm`` checkpoint for AttnGAN's ``--input damsm``."""
    from retrievegan.text import WordVocab
    from retrievegan.train import checkpoint as ckpt
    from retrievegan.train.damsm import FORMAT, VERSION, Damsm, DamsmConfig, build_image_encoder, build_text_encoder

    cfg = from_mapping(DamsmConfig, config["damsm"], "damsm")
    vocab = WordVocab.from_names(spec.object_names, spec.predicate_names)
    model = Damsm(cfg, spec, vocab, build_text_encoder(cfg, vocab, generator), build_image_encoder(cfg, generator))
    if path is not None:
        ckpt.save(
            path,
            {
                "format": FORMAT,
                "version": VERSION,
                "config": runinfo.to_jsonable(cfg),
                "spec": runinfo.to_jsonable(spec),
                "words": list(vocab.words),
                "step": 0,
                "text_encoder": model.text_encoder.state_dict(),
                "image_encoder": model.image_encoder.state_dict(),
            },
        )
    return model


def damsm_note(cfg) -> str:
    what = "Inception-v3 trunk" if cfg.image_encoder == "inception" else "CNN"
    return (
        f"DAMSM encoders ({what} image encoder) with random weights (FLOPs / timing only; AttnGAN trains with "
        "the pre-trained DAMSM)"
    )


def install_random_perceptual(method, generator: torch.Generator) -> str | None:
    """A PasteGAN / RetrieveGAN method whose config uses the VGG-19 perceptual loss gets a VGG-19 with RANDOM
    weights as its (lazily loaded) loss network, in this process only; returns a note, None if not used."""
    from retrievegan.models.patch_method import PatchMethod

    if not (isinstance(method, PatchMethod) and method.uses_perceptual()):
        return None
    from torchvision.models import vgg19

    from retrievegan.models.init import build
    from retrievegan.models.perceptual import VggPerceptualLoss

    method._perceptual_net = build(lambda: VggPerceptualLoss(vgg19(weights=None).features), generator)
    return "perceptual loss: VGG-19 with random weights (FLOPs / timing only; training loads the ImageNet weights)"


# --- building the methods at paper scale --------------------------------------------------------------------------
class PaperData:
    """Everything building a paper config's methods at its scale needs, in ``workdir``: ``count`` synthetic scene
    graphs drawn like the dataset (``items``), the retrieval methods' input arrays at paper dimensions (when one of
    ``methods`` retrieves patches) and, for AttnGAN, a random-weight DAMSM. The estimate, the device checks and
    the tests build their methods here, through the training code itself (``train.registry.create_method``).

    Random draws: per dataset, from ``seed`` (scene graphs, then inputs); frozen pretrained networks get random
    weights from one generator seeded from ``(seed, INIT)``, DAMSM first, then each method's VGG-19 in order.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        scale: DatasetScale,
        workdir: str | Path,
        seed: int,
        count: int,
        methods: tuple[str, ...] | list[str],
    ):
        import zlib

        from retrievegan.runs import METHODS
        from retrievegan.seeds import INIT, derive_seed

        self.config, self.scale, self.spec = config, scale, synthetic_spec(scale)
        workdir = Path(workdir)
        rng = np.random.default_rng([seed, zlib.crc32(scale.source.encode())])  # per dataset, batch-size free
        self.items = synthetic_items(scale, self.spec, count, rng)
        real_objects = sum(int((item.objs != 0).sum()) for item in self.items)
        needs_inputs = any(METHODS[m].retrieves_patches for m in methods)
        self.inputs: dict[str, Path] = write_inputs(workdir, config, scale, real_objects, rng) if needs_inputs else {}
        self.init = torch.Generator().manual_seed(derive_seed(seed, INIT))
        self.damsm = None
        self.damsm_notes: list[str] = []
        if "attngan" in methods:
            path = workdir / "damsm.pt"
            self.damsm = random_damsm(config, self.spec, self.init, path)
            self.inputs["damsm"] = path
            self.damsm_notes.append(damsm_note(self.damsm.config))

    def batch(self, size: int, start: int = 0):
        """A collated batch of ``size`` scene graphs from ``start`` (CPU)."""
        from retrievegan.data.dataset import collate_scene_graphs

        if start + size > len(self.items):
            raise ValueError(f"{start + size} scene graphs asked, {len(self.items)} drawn")
        return collate_scene_graphs(self.items[start : start + size])

    def train_config(self, method: str, **overrides: Any):
        """The method's ``train`` section as the rules merge it (``train_params``), with ``overrides``."""
        from retrievegan.train.config import TrainConfig

        return from_mapping(TrainConfig, {**train_params(self.config, method), **overrides}, "train")

    def method(self, name: str, params: Mapping[str, Any] | None = None):
        """(the method built from the paper config's section [+ ``params``], notes on random-weight stand-ins)."""
        from retrievegan.train.registry import create_method

        names = ("patches", "candidates", "patch_features", "cooccur_embeddings", "damsm")
        inputs = {k: v for k, v in self.inputs.items() if k in names}
        obj = create_method(name, {**run_params(self.config, name), **(params or {})}, self.spec, inputs)
        notes = [n for n in [install_random_perceptual(obj, self.init)] if n]
        if name == "attngan":
            notes += self.damsm_notes
        return obj, notes


def paper_data(
    base: str | Path,
    paper: str | Path,
    dataset_stats: str | Path,
    workdir: str | Path,
    count: int,
    methods: tuple[str, ...] | list[str],
    seed: int = 0,
) -> PaperData:
    """:class:`PaperData` for the paper config ``paper`` layered on ``base``."""
    config = load_paper_config(base, paper)
    cfg = EstimateConfig()
    scale = dataset_scale(config, read_dataset_stats(dataset_stats), cfg)
    return PaperData(config, scale, workdir, seed, count, methods)


def write_canonical(folder: str | Path, data: PaperData, split: str = "train", images: int | None = None) -> Path:
    """``data``'s first ``images`` scene graphs as a canonical data folder (``vocab.json``, ``<split>.json``,
    ``<split>_images.npy`` with random pixels), what ``retrievegan train`` reads; for device checks of the whole
    training command without the preprocessing stack (pycocotools)."""
    from retrievegan.data.scene_graph import (
        SceneGraph,
        SceneObject,
        Split,
        Vocab,
        encode_mask,
        write_split,
        write_vocab,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = data.items[:images]
    spec = data.spec
    write_vocab(folder / "vocab.json", Vocab(spec.object_names, spec.predicate_names, (None,) * spec.num_objects))
    graphs = []
    for item in items:
        masks = item.masks.numpy() > 0.5 if item.masks is not None else None
        objects = tuple(
            SceneObject(
                category=int(c),
                box=tuple(float(v) for v in box),
                mask=encode_mask(masks[i]) if masks is not None else None,
            )
            for i, (c, box) in enumerate(zip(item.objs.tolist(), item.boxes.tolist()))
        )
        graphs.append(
            SceneGraph(
                image_id=item.image_id,
                file_name=f"{item.image_id}.png",
                width=spec.image_size,
                height=spec.image_size,
                objects=objects,
                triples=tuple(tuple(t) for t in item.triples.tolist()),
            )
        )
    write_split(folder / f"{split}.json", Split(data.scale.source, split, "", spec.mask_size, tuple(graphs)))
    rng = np.random.default_rng(0)
    np.save(
        folder / f"{split}_images.npy",
        rng.integers(0, 256, (len(items), spec.image_size, spec.image_size, 3), dtype=np.uint8),
    )
    return folder
