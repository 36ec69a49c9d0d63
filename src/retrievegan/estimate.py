"""Paper-scale compute estimate (``retrievegan paper-estimate``): projected GPU-hours of the paper's Tables 1 and 2.

For every training run the paper's tables need — Table 1: sg2im, AttnGAN (+ its DAMSM pre-training),
layout2im, PasteGAN and RetrieveGAN on COCO-Stuff and on Visual Genome; Table 2: the four RetrieveGAN variants
on COCO-Stuff — under a paper config (``config/paper-{coco,vg}.yaml`` merged onto ``config/config.yaml`` as
Snakemake merges ``--configfile`` layers; each method section's ``train:`` overrides merged onto ``train`` as
``train_json`` in ``workflow/rules/common.smk`` does; the RetrieveGAN variants get the ``retrieval`` section and
their ablation switches as ``workflow/rules/retrievegan.smk`` does):

1. the method is built through the training code itself (``train.registry.create_method`` +
   ``train.loop.Trainer``) with the paper config's widths and image size, on a synthetic batch at paper scale:
   the method's global batch, real objects per image drawn uniformly from the dataset's range (COCO-Stuff 3-8,
   Visual Genome 3-9 + ``__image__``), vocab sizes from the paper's dataset statistics, and the method's
   required input arrays (patch bank, pre-filter candidates, patch features, co-occurrence embeddings) written
   at paper dimensions into a temporary folder (sparse ``.npy`` files: only their shapes and the rows the
   batch reads matter);
2. the FLOPs of one full training step (``Trainer.train_step``: generator forward + backward + Adam, then
   discriminator forward + backward + Adam) at the paper batch are counted with
   ``torch.utils.flop_counter.FlopCounterMode`` on real tensors (matmul / convolution / attention FLOPs,
   forward and backward, ``2 x`` multiply-adds; element-wise ops, normalisation and the optimiser are not
   counted — the usual model-FLOP convention);
3. a few real steps are timed on this CPU (``warmup_steps`` + ``timed_steps``), at ``timing_batch_size``
   images (the first images of the same synthetic batch) when the paper batch is too slow; the median time
   is scaled to the paper batch by the FLOP ratio of the two batches (= the image ratio for per-image work);
4. total steps come from the paper config's schedule (``steps``; DAMSM: ``epochs x floor(train / batch)``);
5. projected GPU-hours = total FLOPs / (peak FLOP/s x model FLOP utilisation) for the configured reference GPU,
   a range over the configured utilisation interval, at the FP32 and the TF32 (tensor core) peak; the CPU-hours
   implied by the measured step time are a sanity number.

Sampling (two samples per test scene graph and setting the tables need, forward only, counted on the method's
batch and divided by its images) and evaluation (FID / IS Inception-v3 at 299 px on sample0, LPIPS AlexNet on the
sample pairs, the real-image statistics once per dataset) are estimated too.

**Random weights.** Frozen pretrained networks that only enter a loss — the VGG-19 of the perceptual loss,
AttnGAN's DAMSM encoders (ImageNet Inception-v3 trunk) — are built here with random weights from an explicit
generator: they are only timed and FLOP-counted, never used for a result, and the output says so. Nothing of
this touches the training path: training still loads the real weights or fails with a clear message.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from retrievegan import io, runinfo
from retrievegan.config import from_mapping, load_yaml, merge
from retrievegan.errors import ConfigError, InputError



@dataclasses.dataclass(frozen=True)
class EstimateConfig:
    """The ``estimate`` config section (``paper_configs`` is read by the rule, which passes the files)."""

    reference_gpu: str = "NVIDIA A100-SXM4-40GB"  # the GPU the GPU-hours are projected for
    peak_tflops_fp32: float = 19.5  # A100 dense FP32 (datasheet)
    peak_tflops_tf32: float = 156.0  # A100 dense TF32 tensor cores (datasheet)
    utilization: tuple[float, float] = (0.15, 0.4)  # model FLOP utilisation range (ours: small-batch GANs)
    warmup_steps: int = 1  # untimed steps before timing (at the timing batch)
    timed_steps: int = 3  # timed CPU steps (the fastest counts: other processes only ever slow a step down)
    timing_batch_size: int | None = 4  # images per timed CPU step (None: the paper batch); scaled by FLOPs
    methods: tuple[str, ...] = ("sg2im", "attngan", "layout2im", "pastegan", "retrievegan",
                                "retrievegan_no_gt_no_occur", "retrievegan_gt_only", "retrievegan_occur_only")
    table2_dataset: Literal["coco_stuff", "visual_genome"] = "coco_stuff"  # paper: Table 2 is COCO-Stuff only
    sampling: bool = True  # estimate the sampling cost (2 samples x test graphs x settings)
    evaluation: bool = True  # estimate the FID / IS / DS cost
    vg_num_predicates: int = 46  # sg2im's Visual Genome vocab: 45 relationships + __in_image__
    seed: int = 0

    def __post_init__(self) -> None:
        low, high = self.utilization
        if not 0 < low <= high <= 1:
            raise ValueError("utilization must be (low, high) with 0 < low <= high <= 1")
        if self.peak_tflops_fp32 <= 0 or self.peak_tflops_tf32 <= 0:
            raise ValueError("peak TFLOP/s must be > 0")
        if self.warmup_steps < 0 or self.timed_steps < 1:
            raise ValueError("warmup_steps must be >= 0 and timed_steps >= 1")
        if self.timing_batch_size is not None and self.timing_batch_size < 1:
            raise ValueError("timing_batch_size must be >= 1 (or null: the paper batch)")
        from retrievegan.eval.methods import METHODS

        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty list of registered methods (unknown: {unknown})")


# --- arithmetic ------------------------------------------------------------------------------------------
def steps_from_epochs(epochs: int, images: int, batch_size: int) -> int:
    """Optimisation steps of ``epochs`` passes over ``images`` at ``batch_size`` (last partial batch dropped)."""
    if batch_size < 1 or images < batch_size:
        raise ConfigError(f"batch size {batch_size} does not fit {images} images")
    return epochs * (images // batch_size)


def gpu_hours(total_flops: float, peak_tflops: float, utilization: float) -> float:
    """Hours one GPU of ``peak_tflops`` TFLOP/s needs for ``total_flops`` at model FLOP utilisation ``utilization``."""
    if peak_tflops <= 0 or not 0 < utilization <= 1:
        raise ValueError("peak_tflops must be > 0 and utilization in (0, 1]")
    return total_flops / (peak_tflops * 1e12 * utilization) / 3600.0


def gpu_hour_range(total_flops: float, peak_tflops: float, utilization: tuple[float, float]) -> tuple[float, float]:
    """(low, high) GPU-hours: the high utilisation gives the low number."""
    return gpu_hours(total_flops, peak_tflops, utilization[1]), gpu_hours(total_flops, peak_tflops, utilization[0])


def gpu_note(cfg: EstimateConfig) -> str:
    """How the peak numbers are meant (the defaults are the NVIDIA A100 datasheet's dense numbers)."""
    return (f"peak {cfg.peak_tflops_fp32:g} TFLOP/s FP32 and {cfg.peak_tflops_tf32:g} TFLOP/s TF32 tensor cores, "
            "dense; the paper configs train in FP32 (amp: false), and PyTorch runs cuDNN convolutions in TF32 by "
            "default on Ampere (torch.backends.cudnn.allow_tf32), matmuls in FP32")


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run ``fn`` under FlopCounterMode: (total FLOPs, FLOPs per aten op, e.g. ``convolution`` (forward) and
    ``convolution_backward``). Per-module numbers are not returned: FlopCounterMode's module tracker attributes
    backward ops of a generator to the discriminator whose backward runs at the same time."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    by_op = {str(op).removeprefix("aten.").split(".")[0]: int(n)
             for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


# --- paper configs -----------------------------------------------------------------------------------------
def load_paper_config(base: str | Path, paper: str | Path) -> dict[str, Any]:
    """``paper`` layered on ``base`` (Snakemake's recursive ``--configfile`` merge)."""
    return merge(load_yaml(base), load_yaml(paper))


def method_section(method: str) -> str:
    """The config section a method reads (the RetrieveGAN ablations read ``retrievegan``)."""
    return "retrievegan" if method.startswith("retrievegan") else method


def method_params(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The method's ``--params`` as the rules build them (``section_json`` / ``patch_method_json``)."""
    section = method_section(method)
    params = {k: v for k, v in config[section].items() if k != "train"}
    if section == "retrievegan":
        from retrievegan.eval.methods import method_info

        gt_selection, cooccurrence = method_info(method).ablation
        params.update(retrieval=config["retrieval"], gt_selection=gt_selection, cooccurrence=cooccurrence)
    return params


def train_params(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The common ``train`` section with the method section's ``train`` overrides (``train_json``)."""
    return {**config["train"], **config[method_section(method)].get("train", {})}


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
            raise InputError(path, f"expected columns {list(need)} with integer counts ({exc})", f"row {i + 1}") from exc
    return out


def dataset_scale(config: Mapping[str, Any], stats: Mapping[str, Mapping[str, int]], cfg: EstimateConfig) -> DatasetScale:
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
    return DatasetScale(source=source, train_images=row["train"], val_images=row["val"], test_images=row["test"],
                        categories=row["categories"], patches=row["patches"],
                        image_size=int(config["preprocess"]["image_size"]), mask_size=mask_size,
                        crop_size=int(config["patches"]["crop_size"]), objects_per_image=objects,
                        num_predicates=predicates)


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
    return DataSpec(num_objects=len(objects), num_predicates=len(predicates), image_size=scale.image_size,
                    mask_size=scale.mask_size, object_names=objects, predicate_names=predicates)


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
        items.append(SceneGraphItem(
            image=torch.from_numpy(rng.standard_normal((3, size, size), dtype=np.float32)),
            objs=torch.from_numpy(objs), boxes=torch.from_numpy(boxes), masks=masks,
            triples=torch.tensor(triples, dtype=torch.int64).view(-1, 3), patch_ids=torch.from_numpy(patch_ids),
            image_id=i, image_index=i))
    return items


def patch_feature_dim(features: Mapping[str, Any]) -> int:
    """Width F of ``features/patch_features.npy`` for a ``features`` config section (meta-device probe)."""
    from retrievegan.embed.features import FeatureExtractor, FeaturesConfig
    from retrievegan.embed.nets import CategoryCNN

    cfg = from_mapping(FeaturesConfig, features, "features")
    with torch.device("meta"):
        if cfg.backbone == "resnet":
            from torchvision import models

            backbone, size = getattr(models, cfg.resnet_arch)(weights=None), cfg.resnet_input_size
        else:
            backbone, size = CategoryCNN(cfg.channels, 2), 32
        extractor = FeatureExtractor(backbone, cfg.backbone, cfg.pooling, cfg.resnet_input_size)
        probe = torch.zeros((1, size, size, 3), dtype=torch.uint8)
        return sum(item["width"] for item in extractor.layout(probe))


def write_inputs(folder: Path, config: Mapping[str, Any], scale: DatasetScale, real_objects: int,
                 rng: np.random.Generator) -> dict[str, Path]:
    """The retrieval methods' ``--input`` arrays at paper dimensions (sparse ``.npy`` files): patches ``(P, C, C, 3)``,
    candidates ``(P, prefilter.k)``, patch_features ``(P, F)``, cooccur_embeddings ``(P, cooccur.embed_dim)``.
    Rows ``0 .. real_objects - 1`` (the batch's objects) get random distinct-ish candidates; the rows the batch
    reads get random values, every other row stays zero (never read)."""
    p, k = scale.patches, int(config["prefilter"]["k"])
    if real_objects > p:
        raise ConfigError(f"the synthetic batch has {real_objects} objects but the bank only {p} patches")
    candidates = rng.integers(0, p, (real_objects, k), dtype=np.int64)
    used = np.unique(np.concatenate([np.arange(real_objects), candidates.ravel()]))
    dims = {"patch_features": patch_feature_dim(config["features"]),
            "cooccur_embeddings": int(config["cooccur"]["embed_dim"])}
    paths = {name: folder / f"{name}.npy" for name in ("patches", "candidates", *dims)}
    array = np.lib.format.open_memmap(paths["candidates"], mode="w+", dtype=np.int64, shape=(p, k))
    array[:real_objects] = candidates
    array.flush()
    del array
    array = np.lib.format.open_memmap(paths["patches"], mode="w+", dtype=np.uint8,
                                      shape=(p, scale.crop_size, scale.crop_size, 3))
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
    from retrievegan.train.damsm import (FORMAT, VERSION, Damsm, DamsmConfig, build_image_encoder,
                                         build_text_encoder)

    cfg = from_mapping(DamsmConfig, config["damsm"], "damsm")
    vocab = WordVocab.from_names(spec.object_names, spec.predicate_names)
    model = Damsm(cfg, spec, vocab, build_text_encoder(cfg, vocab, generator), build_image_encoder(cfg, generator))
    if path is not None:
        ckpt.save(path, {"format": FORMAT, "version": VERSION, "config": runinfo.to_jsonable(cfg),
                         "spec": runinfo.to_jsonable(spec), "words": list(vocab.words), "step": 0,
                         "text_encoder": model.text_encoder.state_dict(),
                         "image_encoder": model.image_encoder.state_dict()})
    return model


def damsm_note(cfg) -> str:
    what = "Inception-v3 trunk" if cfg.image_encoder == "inception" else "CNN"
    return (f"DAMSM encoders ({what} image encoder) with random weights (FLOPs / timing only; AttnGAN trains with "
            "the pre-trained DAMSM)")


def install_random_perceptual(method, generator: torch.Generator) -> str | None:
    """A PasteGAN / RetrieveGAN method whose config uses the VGG-19 perceptual loss gets a VGG-19 with RANDOM
    weights as its (lazily loaded) loss network, in this process only; returns a note, None if not used."""
    from retrievegan.models.patch_gan import PatchGanMethod

    if not (isinstance(method, PatchGanMethod) and method.uses_perceptual()):
        return None
    from torchvision.models import vgg19

    from retrievegan.models.init import build
    from retrievegan.models.perceptual import VggPerceptualLoss

    method._perceptual_net = build(lambda: VggPerceptualLoss(vgg19(weights=None).features), generator)
    return "perceptual loss: VGG-19 with random weights (FLOPs / timing only; training loads the ImageNet weights)"


# --- measuring -----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StepMeasurement:
    flops: int  # one step at the full batch
    flops_by_op: dict[str, int]  # aten op -> FLOPs (full batch)
    timing_batch: int
    timing_flops: int  # one step at the timing batch
    seconds: tuple[float, ...]  # the timed steps at the timing batch

    @property
    def cpu_seconds(self) -> float:
        """Fastest measured seconds per step, scaled to the full batch by the FLOP ratio."""
        return min(self.seconds) * self.flops / max(self.timing_flops, 1)


def measure_step(step: Callable[[Any], Any], full: Any, small: Any, timing_batch: int, cfg: EstimateConfig,
                 same: bool) -> StepMeasurement:
    """Count the FLOPs of ``step(full)``; time ``step(small)`` (``same``: small is full)."""
    flops, by_op = count_flops(lambda: step(full))
    timing_flops = flops if same else count_flops(lambda: step(small))[0]
    for _ in range(cfg.warmup_steps):
        step(small)
    seconds = []
    for _ in range(cfg.timed_steps):
        start = time.perf_counter()
        step(small)
        seconds.append(time.perf_counter() - start)
    return StepMeasurement(flops, by_op, timing_batch, timing_flops, tuple(seconds))


def _param_counts(nets: Mapping[str, nn.Module]) -> dict[str, dict[str, int]]:
    return {name: {"trainable": sum(p.numel() for p in net.parameters() if p.requires_grad),
                   "frozen": sum(p.numel() for p in net.parameters() if not p.requires_grad)}
            for name, net in nets.items()}


def _row(kind: str, method: str, scale: DatasetScale, batch: int, steps: int, flops_per_step: float,
         cfg: EstimateConfig, **extra: Any) -> dict[str, Any]:
    total = flops_per_step * steps
    row = {"kind": kind, "method": method, "dataset": scale.source, "batch_size": batch, "steps": steps,
           "flops_per_step": flops_per_step, "total_flops": total,
           "gpu_hours_fp32": list(gpu_hour_range(total, cfg.peak_tflops_fp32, cfg.utilization)),
           "gpu_hours_tf32": list(gpu_hour_range(total, cfg.peak_tflops_tf32, cfg.utilization))}
    row.update(extra)
    if row.get("cpu_seconds_per_step") is not None:
        row["cpu_hours"] = row["cpu_seconds_per_step"] * steps / 3600.0
    return row


def estimate_dataset(config: Mapping[str, Any], scale: DatasetScale, cfg: EstimateConfig, workdir: Path,
                     progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """All rows (training, DAMSM, sampling, evaluation) of one paper config."""
    from retrievegan.data.dataset import collate_scene_graphs
    from retrievegan.eval.methods import METHODS
    from retrievegan.seeds import INIT, SAMPLE_NOISE, derive_seed, image_generators
    from retrievegan.train.config import TrainConfig
    from retrievegan.train.loop import Trainer
    from retrievegan.train.registry import create_method

    spec = synthetic_spec(scale)
    methods = [m for m in cfg.methods if not (METHODS[m].ablation is not None and m != "retrievegan"
                                                and scale.source != cfg.table2_dataset)]
    batches = {m: int(train_params(config, m)["batch_size"]) for m in methods}
    damsm_batch = int(config["damsm"]["batch_size"])
    largest = max([*batches.values(), damsm_batch if "attngan" in methods else 0])
    rng = np.random.default_rng([cfg.seed, zlib.crc32(scale.source.encode())])  # per dataset, batch-size free
    items = synthetic_items(scale, spec, largest, rng)
    real_objects = sum(int((item.objs != 0).sum()) for item in items)
    needs_inputs = any(METHODS[m].retrieves_patches for m in methods)
    inputs = write_inputs(workdir, config, scale, real_objects, rng) if needs_inputs else {}
    rows: list[dict[str, Any]] = []
    init = torch.Generator().manual_seed(derive_seed(cfg.seed, INIT))

    def batches_for(size: int):
        small_size = min(size, cfg.timing_batch_size or size)
        return collate_scene_graphs(items[:size]), collate_scene_graphs(items[:small_size]), small_size

    damsm_notes = []
    if "attngan" in methods:
        damsm_path = workdir / "damsm.pt"
        damsm = random_damsm(config, spec, init, damsm_path)
        inputs["damsm"] = damsm_path
        damsm_notes.append(damsm_note(damsm.config))
        rows.append(_damsm_row(damsm, scale, cfg, batches_for(damsm_batch), progress))

    for method in methods:
        full, small, small_size = batches_for(batches[method])
        progress(f"{scale.source}: {method} (batch {batches[method]}, timing batch {small_size})")
        train_cfg = from_mapping(TrainConfig, {**train_params(config, method), "device": "cpu", "amp": False,
                                               "compile": False, "num_workers": 0}, "train")
        names = ("patches", "candidates", "patch_features", "cooccur_embeddings", "damsm")
        method_inputs = {k: v for k, v in inputs.items() if k in names}
        obj = create_method(method, method_params(config, method), spec, method_inputs)
        notes = [n for n in [install_random_perceptual(obj, init)] if n]
        if method == "attngan":
            notes += damsm_notes
        trainer = Trainer(obj, train_cfg, torch.device("cpu"))
        counter = iter(range(1 << 30))

        def train_step(batch, trainer=trainer, counter=counter):
            trainer.train_step(batch, next(counter), 0)

        measured = measure_step(train_step, full, small, small_size, cfg, small_size == batches[method])
        steps = int(train_cfg.steps)
        params = _param_counts(trainer.nets)
        rows.append(_row(
            "train", method, scale, batches[method], steps, measured.flops, cfg,
            epochs=steps * batches[method] / scale.train_images, real_objects=int(full.real_objects.sum()),
            params_trainable=sum(v["trainable"] for v in params.values()),
            params_frozen=sum(v["frozen"] for v in params.values()), params_by_network=params,
            flops_by_op=measured.flops_by_op, timing_batch=measured.timing_batch,
            timing_flops=measured.timing_flops, timed_seconds=list(measured.seconds),
            cpu_seconds_per_step=measured.cpu_seconds, threads=torch.get_num_threads(), notes=notes))
        if cfg.sampling:
            for setting in _table_settings(method, cfg, scale):
                for net in trainer.nets.values():
                    net.eval()
                gens = image_generators((SAMPLE_NOISE, 0), full.image_ids.tolist())
                with torch.no_grad():
                    flops, _ = count_flops(lambda s=setting, g=gens: obj.sample(trainer.nets, full, s, g))
                # 2 samples (sample0, sample1) per test scene graph, per image of the method's batch
                rows.append(_row("sample", method, scale, batches[method], 2 * scale.test_images,
                                 flops / batches[method], cfg, setting=setting, unit="image"))
        del trainer, obj
    if cfg.evaluation:
        rows.extend(_evaluation_rows(rows, scale, cfg))
    return rows


def _table_settings(method: str, cfg: EstimateConfig, scale: DatasetScale) -> list[str]:
    """Settings whose samples the paper's tables need: Table 1 (both where the method applies), Table 2 (pred)."""
    from retrievegan.eval.methods import METHODS, TABLE1_ROWS

    info = METHODS[method]
    settings = [s for s, rows in TABLE1_ROWS.items() if method in rows and info.applies_to(s)]
    if info.ablation is not None and scale.source == cfg.table2_dataset and "pred_bbox" not in settings:
        settings.append("pred_bbox")
    return settings


def _damsm_row(damsm, scale: DatasetScale, cfg: EstimateConfig, batches, progress) -> dict[str, Any]:
    """AttnGAN's DAMSM pre-training step (as ``train.damsm.pretrain_damsm``: both matching losses, backward,
    gradient clipping of the text encoder, Adam)."""
    from retrievegan.models.damsm import damsm_losses, identical_texts

    full, small, small_size = batches
    c = damsm.config
    progress(f"{scale.source}: damsm pre-training (batch {c.batch_size}, timing batch {small_size})")
    text, image = damsm.text_encoder.train(), damsm.image_encoder.train()
    params = [p for net in (text, image) for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=c.lr, betas=c.betas)
    dropout = torch.Generator().manual_seed(cfg.seed)

    def step(batch):
        tokens, lengths = damsm.tokens(batch)
        words, sentence = text(tokens, lengths, dropout)
        regions, code = image(batch.images)
        terms = damsm_losses(regions, code, words, sentence, lengths, c.gamma1, c.gamma2, c.gamma3,
                             identical_texts(tokens))
        loss = terms["w0"] + terms["w1"] + terms["s0"] + terms["s1"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(text.parameters(), c.rnn_grad_clip)
        optimizer.step()

    measured = measure_step(step, full, small, small_size, cfg, small_size == c.batch_size)
    steps = steps_from_epochs(c.epochs, scale.train_images, c.batch_size)
    nets = {"text_encoder": text, "image_encoder": image}
    counts = _param_counts(nets)
    text.eval(), image.eval()
    return _row("damsm", "damsm", scale, c.batch_size, steps, measured.flops, cfg, epochs=float(c.epochs),
                real_objects=int(full.real_objects.sum()),
                params_trainable=sum(v["trainable"] for v in counts.values()),
                params_frozen=sum(v["frozen"] for v in counts.values()), params_by_network=counts,
                flops_by_op=measured.flops_by_op, timing_batch=measured.timing_batch,
                timing_flops=measured.timing_flops, timed_seconds=list(measured.seconds),
                cpu_seconds_per_step=measured.cpu_seconds, threads=torch.get_num_threads(),
                notes=[damsm_note(c)])


def evaluation_flops_per_image(image_size: int) -> dict[str, int]:
    """Forward FLOPs per image of the paper's evaluation networks (meta tensors, no weights): torch-fidelity's
    Inception-v3 at 299 px (FID + IS share one pass) and LPIPS's AlexNet trunk at the image size."""
    from torchvision.models import alexnet, inception_v3

    with torch.device("meta"):
        inception = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        alex = alexnet(weights=None).features[:12].eval()  # LPIPS taps relu1..relu5 (no last max-pool)
        with torch.no_grad():
            fid = count_flops(lambda: inception(torch.zeros(1, 3, 299, 299)))[0]
            lpips = count_flops(lambda: alex(torch.zeros(1, 3, image_size, image_size)))[0]
    return {"inception": fid, "alexnet": lpips}


def _evaluation_rows(rows: Sequence[Mapping[str, Any]], scale: DatasetScale, cfg: EstimateConfig) -> list[dict]:
    """FID / IS on sample0 + DS (LPIPS, two AlexNet passes per pair) per sampled (method, setting); the real
    statistics (test + val through Inception) once per dataset."""
    per_image = evaluation_flops_per_image(scale.image_size)
    out = []
    for row in rows:
        if row["kind"] == "sample":
            flops = per_image["inception"] + 2 * per_image["alexnet"]
            out.append(_row("evaluate", row["method"], scale, 1, scale.test_images, flops, cfg,
                            setting=row["setting"], unit="image"))
    out.append(_row("evaluate", "real_data", scale, 1, scale.test_images + scale.val_images,
                    per_image["inception"], cfg, unit="image"))
    return out


# --- totals and output -----------------------------------------------------------------------------------------
def table_totals(rows: Sequence[Mapping[str, Any]], cfg: EstimateConfig) -> dict[str, dict[str, Any]]:
    """Total FLOPs and GPU-hours of Table 1 (all its runs, both datasets), Table 2 (the four variants on
    ``table2_dataset``) and both together (shared runs once), each over training, DAMSM pre-training,
    sampling and evaluation rows. DAMSM belongs to AttnGAN (Table 1); sg2im, which RetrieveGAN's pre-filter
    needs, is counted in Table 1 only."""
    from retrievegan.eval.methods import TABLE1_ROWS, TABLE2_ROWS

    table1 = {m for ms in TABLE1_ROWS.values() for m in ms} | {"damsm", "real_data"}

    def in_table1(row: Mapping[str, Any]) -> bool:
        return row["method"] in table1

    def in_table2(row: Mapping[str, Any]) -> bool:
        return (row["dataset"] == cfg.table2_dataset and row["method"] in TABLE2_ROWS
                and row.get("setting", "pred_bbox") == "pred_bbox")

    out = {}
    for name, test in (("table1", in_table1), ("table2", in_table2),
                       ("both", lambda r: in_table1(r) or in_table2(r))):
        chosen = [r for r in rows if test(r)]
        total = sum(r["total_flops"] for r in chosen)
        training = [r for r in chosen if r["kind"] in ("train", "damsm")]
        out[name] = {"training_runs": len(training), "rows": len(chosen), "total_flops": total,
                     "training_flops": sum(r["total_flops"] for r in training),
                     "cpu_hours_training": sum(r["cpu_hours"] for r in training),
                     "gpu_hours_fp32": list(gpu_hour_range(total, cfg.peak_tflops_fp32, cfg.utilization)),
                     "gpu_hours_tf32": list(gpu_hour_range(total, cfg.peak_tflops_tf32, cfg.utilization))}
    return out


def _num(value: float) -> str:
    """3 significant digits, thousands separators from 1,000 on."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _hours(pair: Sequence[float]) -> str:
    return f"{_num(pair[0])}–{_num(pair[1])}"


def render_markdown(result: Mapping[str, Any]) -> str:
    """The report's Markdown: training table, sampling / evaluation, totals per paper table, assumptions."""
    cfg = result["config"]
    low, high = cfg["utilization"]
    rows = result["rows"]
    lines = [
        "# Paper-scale compute estimate (projection, not a measurement on a GPU)",
        "",
        f"GPU-hours projected for one **{cfg['reference_gpu']}** ({result['gpu_note']}) at a model FLOP "
        f"utilisation of {low:g}–{high:g} (the high utilisation gives the low number): GPU-hours = FLOPs / "
        "(peak x utilisation). FLOPs per step: one full training step at the paper batch (generator forward + "
        "backward + Adam, then discriminator forward + backward + Adam, `train.loop.Trainer.train_step`) counted "
        "with `torch.utils.flop_counter.FlopCounterMode` (matmul / convolution FLOPs, 2 per multiply-add; "
        "element-wise ops, normalisation and Adam not counted). Networks built by the training code from "
        f"{' and '.join(result['paper_configs'])} (layered on {result['base_config']}) on synthetic scene graphs "
        "drawn like the datasets; steps from the configs' schedules.",
        "",
        f"**Measured CPU s/step**: this machine ({result['cpu']}, {result['threads']} torch threads, load "
        f"average {result['load_average'][0]:.2f} at the start: other jobs on the machine slow it down), fastest "
        f"of {cfg['timed_steps']} timed steps after {cfg['warmup_steps']} warm-up at the batch in brackets, "
        "scaled to the paper batch by the FLOP ratio of the two batches. CPU-hours = that x steps: a sanity "
        "number, not a plan.",
        "",
        "**Random weights (timing / FLOPs only, never a result):** " + "; ".join(result["random_weights"]) + ".",
        "",
        "## Training runs",
        "",
        "| method | dataset | params (M, trainable) | batch (objects) | GFLOPs/step | steps | epochs | measured CPU "
        "s/step (batch used) | CPU-hours | GPU-hours FP32 | GPU-hours TF32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["kind"] not in ("train", "damsm"):
            continue
        name = "DAMSM pre-training (for AttnGAN)" if r["kind"] == "damsm" else r["method"]
        lines.append(
            f"| {name} | {r['dataset']} | {r['params_trainable'] / 1e6:.2f} | {r['batch_size']} ({r['real_objects']}) | "
            f"{_num(r['flops_per_step'] / 1e9)} | {r['steps']:,} | {r['epochs']:.1f} | "
            f"{_num(r['cpu_seconds_per_step'])} ({r['timing_batch']}) | {_num(r['cpu_hours'])} | "
            f"{_hours(r['gpu_hours_fp32'])} | {_hours(r['gpu_hours_tf32'])} |")
    samples = [r for r in rows if r["kind"] == "sample"]
    if samples:
        lines += ["", "## Sampling", "",
                  "Two samples per test scene graph in each setting the tables need; forward only, FLOPs counted "
                  "on the method's training batch and divided by its images.", "",
                  "| method | dataset | setting | GFLOPs/image | images | GPU-hours FP32 | GPU-hours TF32 |",
                  "|---|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['dataset']} | {r['setting']} | {_num(r['flops_per_step'] / 1e9)} | "
                  f"{r['steps']:,} | {_hours(r['gpu_hours_fp32'])} | {_hours(r['gpu_hours_tf32'])} |" for r in samples]
    evaluations = [r for r in rows if r["kind"] == "evaluate"]
    if evaluations:
        lines += ["", "## Evaluation", "",
                  "FID + IS: one Inception-v3 pass at 299 px per sample0 image; DS: two AlexNet (LPIPS) passes per "
                  "sample pair; real data: Inception on the test and val images, once per dataset.", "",
                  "| dataset | sample runs evaluated | GFLOPs | GPU-hours FP32 | GPU-hours TF32 |",
                  "|---|---:|---:|---:|---:|"]
        for dataset in dict.fromkeys(r["dataset"] for r in evaluations):
            chosen = [r for r in evaluations if r["dataset"] == dataset]
            total = sum(r["total_flops"] for r in chosen)
            runs = sum(1 for r in chosen if r["method"] != "real_data")
            lines.append(f"| {dataset} | {runs} (+ real data) | {_num(total / 1e9)} | "
                         f"{_hours(gpu_hour_range(total, cfg['peak_tflops_fp32'], cfg['utilization']))} | "
                         f"{_hours(gpu_hour_range(total, cfg['peak_tflops_tf32'], cfg['utilization']))} |")
    labels = {"table1": "Table 1 (all its methods x datasets, DAMSM, sampling, evaluation)",
              "table2": f"Table 2 (the four RetrieveGAN variants on {cfg['table2_dataset']})",
              "both": "Tables 1 + 2 (shared runs once)"}
    lines += ["", "## Totals", "",
              "| tables | training runs | total PFLOPs | CPU-hours (training) | GPU-hours FP32 | GPU-hours TF32 |",
              "|---|---:|---:|---:|---:|---:|"]
    for key, total in result["totals"].items():
        lines.append(f"| {labels[key]} | {total['training_runs']} | {_num(total['total_flops'] / 1e15)} | "
                     f"{_num(total['cpu_hours_training'])} | {_hours(total['gpu_hours_fp32'])} | "
                     f"{_hours(total['gpu_hours_tf32'])} |")
    lines += ["", "## Assumptions", ""] + [f"- {a}" for a in result["assumptions"]] + [""]
    return "\n".join(lines)


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


ASSUMPTIONS = (
    "Batch, steps, widths and image size are the paper configs' (sg2im 1M steps x 32, layout2im 300k x 8, AttnGAN "
    "120 epochs x 14, PasteGAN / RetrieveGAN 90 epochs x 16, DAMSM 600 epochs x 48; epochs = steps x batch / "
    "train images).",
    "Synthetic scene graphs: real objects per image uniform in the dataset's range (COCO-Stuff 3-8, Visual Genome "
    "3-9, + __image__), one relationship per object + its __in_image__ triple, vocab sizes of the paper's dataset "
    "statistics; the real object-count distribution shifts the per-object costs (crop encoder, object refiner, "
    "object discriminator, object perceptual loss) accordingly.",
    "Model FLOPs only: data loading, element-wise ops, the optimiser, checkpoints and logging are not counted "
    "(they are in the measured CPU time); the utilisation range is what covers them on a GPU.",
    "GPU-hours are single-GPU hours: several GPUs divide the wall time, not the GPU-hours.",
    "Not included: preprocessing, the patch bank, patch-feature extraction, the co-occurrence embedding and the "
    "pre-filter (RetrieveGAN's inputs; sg2im, whose GCN features the pre-filter uses, is in Table 1).",
    "FLOPs cannot be counted on meta tensors here: the methods use data-dependent ops (unique, nonzero, boolean "
    "masks), so the counted step runs for real on the CPU.",
)


def run_estimate(cfg: EstimateConfig, base_config: str | Path, paper_configs: Sequence[str | Path],
                 dataset_stats: str | Path, out_dir: str | Path,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Estimate every paper config; write ``paper_estimate.json``, ``paper_estimate.md`` and ``run.json``."""
    import os
    import resource

    out_dir = Path(out_dir)
    stats = read_dataset_stats(dataset_stats)
    load = os.getloadavg()
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    scales = {}
    for paper in paper_configs:
        config = load_paper_config(base_config, paper)
        scale = dataset_scale(config, stats, cfg)
        if scale.source in scales:
            raise ConfigError(f"two paper configs for {scale.source}")
        scales[scale.source] = dataclasses.asdict(scale)
        with tempfile.TemporaryDirectory(prefix="paper-estimate-") as tmp:
            rows.extend(estimate_dataset(config, scale, cfg, Path(tmp), progress))
    random_weights = sorted({n for r in rows for n in r.get("notes", [])}) or ["none"]
    result = {
        "config": runinfo.to_jsonable(cfg),
        "paper_configs": [str(p) for p in paper_configs],
        "base_config": str(base_config),
        "dataset_stats": str(dataset_stats),
        "gpu_note": gpu_note(cfg),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in load],
        "datasets": scales,
        "random_weights": random_weights,
        "rows": rows,
        "totals": table_totals(rows, cfg),
        "assumptions": list(ASSUMPTIONS),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    io.write_json(out_dir / "paper_estimate.json", result)
    io.write_text(out_dir / "paper_estimate.md", render_markdown(result))
    runinfo.write_run_json(out_dir, "paper-estimate", cfg, cfg.seed, {
        "base_config": str(base_config), "paper_configs": [str(p) for p in paper_configs],
        "dataset_stats": str(dataset_stats), "wall_seconds": result["wall_seconds"], "threads": result["threads"],
        "load_average": result["load_average"], "peak_rss_mb": result["peak_rss_mb"],
        "random_weights": random_weights})
    return result


def estimate_config(params: Mapping[str, Any] | None) -> EstimateConfig:
    """The ``estimate`` config section as a frozen dataclass (unknown keys are errors)."""
    return from_mapping(EstimateConfig, params, "estimate")
