"""Per-run metric files: FID / IS (torch-fidelity) and DS (LPIPS) of one sample folder, and the
real-data row.

``metrics/<method>_<setting>.json`` (lean: what ``dvc metrics show`` lists)::

    {"method", "setting", "split", "num_images", "image_size", "checkpoint_sha256", "seed",
     "extractor": "synthnet" | "inception", "ds_network": "lpips_synthnet" | "lpips_alex",
     "metrics": {"fid_synthnet_test_pred": .., "is_synthnet_test_pred": .., "is_synthnet_test_pred_std": ..,
                 "ds_lpips_synthnet_test_pred": .., "ds_lpips_synthnet_test_pred_std": ..}}

``metrics/details/<method>_<setting>.json``: the same plus the networks' weights files and sha256, the
reference statistics (file, images sha256), protocol, device, batch size, the sample manifest and the
library versions. ``metrics/real_data.json``: IS of the real test split and FID test vs another real split.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Literal

from retrievegan import io, runinfo
from retrievegan.device import pick_device
from retrievegan.errors import InputError
from retrievegan.runs import METHOD_NAMES, PAPER_NETWORKS, REAL_TAG, SETTINGS, metric_name


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """The ``evaluation`` config section. Defaults are the paper's protocol (Inception-v3, LPIPS alex)."""

    methods: tuple[str, ...] = METHOD_NAMES
    settings: tuple[str, ...] = SETTINGS
    split: str = "test"  # sg2im protocol: metrics on the test split
    real_reference_split: str = "val"  # ours: the real-data FID row compares the test split with this split
    feature_extractor: Literal["inception", "synthnet"] = "inception"
    inception_weights: str | None = None  # null: torch hub cache
    ds_backbone: Literal["alex", "synthnet"] = "alex"
    lpips_alex_weights: str | None = None  # null: torch hub cache
    is_splits: int = 10  # ours (paper silent): the usual 10
    batch_size: int = 64
    device: Literal["cpu", "cuda", "auto"] = "auto"  # auto: cuda when available (recorded in the metric file)
    seed: int = 0  # IS split shuffle, bootstrap
    compatibility: bool = False  # compatibility score of retrieved patches (needs the synthetic benchmark's themes)
    bootstrap_samples: int = 1000  # compatibility score interval
    confidence: float = 0.95
    require_full_split: bool = True  # every test scene graph must have its two samples

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHOD_NAMES]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {list(METHOD_NAMES)}")
        bad = [s for s in self.settings if s not in SETTINGS]
        if bad:
            raise ValueError(f"unknown setting(s) {bad}; known: {list(SETTINGS)}")
        if self.is_splits < 1 or self.batch_size < 1 or self.bootstrap_samples < 1:
            raise ValueError("is_splits, batch_size and bootstrap_samples must be positive")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError("confidence must lie in (0, 1)")
        if self.split == self.real_reference_split:
            raise ValueError("real_reference_split must differ from split (the real-data FID compares two sets)")


def _split_ids(split_json: str | os.PathLike[str]) -> list[int]:
    from retrievegan.data.scene_graph import read_split

    return [g.image_id for g in read_split(split_json).graphs]


def families_of(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{fid|is|ds: {"name", "network", "comparable_to_paper"}} of a metric file, from its ``extractor`` and
    ``ds_network`` fields (the metric names are built from them)."""
    setting = record.get("setting") or REAL_TAG
    out = {}
    for family, network in (
        ("fid", record.get("extractor")),
        ("is", record.get("extractor")),
        ("ds", record.get("ds_network")),
    ):
        if network is None:
            continue
        name = metric_name(family, network, record["split"], setting)
        if name in record["metrics"]:
            out[family] = {"name": name, "network": network, "comparable_to_paper": network in PAPER_NETWORKS}
    return out


def evaluate_run(
    run_dir: str | os.PathLike[str],
    method: str,
    setting: str,
    split_json: str | os.PathLike[str],
    reference_npz: str | os.PathLike[str],
    cfg: EvaluationConfig,
    out_json: str | os.PathLike[str],
    synthnet_weights: str | os.PathLike[str] | None = None,
    verbose: bool = False,
    details_json: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """FID + IS of ``sample0`` against the stored reference, DS between ``sample0`` and ``sample1``.

    Writes the lean metric file ``out_json`` (what DVC shows) and, if given, ``details_json`` (extractor
    weights and their hashes, reference statistics, protocol, manifest, library versions)."""
    from retrievegan.eval import diversity, fidelity
    from retrievegan.eval.image_datasets import PairDataset, PngDataset
    from retrievegan.eval.samples import open_run

    started = time.perf_counter()
    device = pick_device(cfg.device, "evaluation.device").type
    run = open_run(run_dir, method, setting, _split_ids(split_json), cfg.require_full_split)
    if run.manifest.get("split", cfg.split) != cfg.split:
        raise InputError(
            run.root / "manifest.json",
            f"samples are of split {run.manifest['split']!r}, the evaluation uses {cfg.split!r}",
        )
    extractor = fidelity.resolve_extractor(cfg.feature_extractor, synthnet_weights, cfg.inception_weights)
    backbone = diversity.resolve_backbone(cfg.ds_backbone, cfg.lpips_alex_weights, synthnet_weights)
    reference = fidelity.load_reference(reference_npz)
    reference.check_extractor(extractor)
    if reference.meta.get("split") != cfg.split:
        raise InputError(
            reference_npz,
            f"reference statistics are of split {reference.meta.get('split')!r}, the evaluation uses {cfg.split!r}",
        )
    size = (reference.meta["image_size"], reference.meta["image_size"])
    sample0 = PngDataset(run.paths(0), size)
    features = fidelity.extract_features(sample0, extractor, cfg.batch_size, device, verbose)
    fid = fidelity.fid_from_statistics(fidelity.fid_statistics(features[extractor.fid_layer]), reference.stats)
    is_mean, is_std = fidelity.inception_score(features[extractor.isc_layer], cfg.is_splits, cfg.seed)
    distances = diversity.pair_distances(
        PairDataset(sample0, PngDataset(run.paths(1), size)), backbone.build(), cfg.batch_size, device
    )
    names = {
        family: metric_name(family, network, cfg.split, setting)
        for family, network in (("fid", extractor.key), ("is", extractor.key), ("ds", backbone.network))
    }
    record = {  # the DVC metric file: numbers plus what identifies them
        "method": method,
        "setting": setting,
        "split": cfg.split,
        "num_images": len(run.image_ids),
        "num_split_images": reference.meta["num_images"],  # < num_images only with require_full_split: false
        "image_size": reference.meta["image_size"],
        "checkpoint_sha256": run.checkpoint_sha256,
        "seed": cfg.seed,
        "extractor": extractor.key,
        "ds_network": backbone.network,
        "metrics": {
            names["fid"]: fid,
            names["is"]: is_mean,
            names["is"] + "_std": is_std,
            names["ds"]: float(distances.mean()),
            names["ds"] + "_std": float(distances.std()),
        },
    }
    details = {
        **record,
        "extractor_details": extractor.describe(),
        "ds_backbone_details": backbone.describe(),
        "reference": {
            "path": str(reference_npz),
            **{k: reference.meta[k] for k in ("split", "num_images", "images_sha256", "image_size")},
        },
        "protocol": {
            "fid": "torch-fidelity fid_statistics_to_metric(sample0 features, stored real statistics)",
            "is": f"torch-fidelity isc_features_to_metric, {cfg.is_splits} splits, shuffle seed {cfg.seed}",
            "ds": "LPIPS(sample0, sample1) per scene graph; mean and std (ddof=0) over the split",
            "device": device,
            "batch_size": cfg.batch_size,
        },
        "manifest": {k: v for k, v in run.manifest.items() if k not in ("image_ids", "config")},
        "versions": runinfo.library_versions(),
    }
    if details_json is not None:
        io.write_json(details_json, details)
    io.write_json(out_json, record)
    runinfo.report_provenance(out_json, {"seconds": round(time.perf_counter() - started, 2)})
    return record


def real_data_metrics(
    test_npz: str | os.PathLike[str],
    reference_npz: str | os.PathLike[str],
    cfg: EvaluationConfig,
    out_json: str | os.PathLike[str],
    synthnet_weights: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The tables' "Real data" row from stored statistics only: IS of the real test images and FID
    between the test split and ``real_reference_split`` (ours: the paper does not say which sets)."""
    from retrievegan.eval import fidelity

    extractor = fidelity.resolve_extractor(cfg.feature_extractor, synthnet_weights, cfg.inception_weights)
    test = fidelity.load_reference(test_npz)
    other = fidelity.load_reference(reference_npz)
    for ref, split in ((test, cfg.split), (other, cfg.real_reference_split)):
        ref.check_extractor(extractor)
        if ref.meta.get("split") != split:
            raise InputError(ref.path, f"statistics of split {ref.meta.get('split')!r}, expected {split!r}")
    is_mean, is_std = fidelity.inception_score(test.isc_features, cfg.is_splits, cfg.seed)
    fid_name = metric_name("fid", extractor.key, cfg.split, "real")
    is_name = metric_name("is", extractor.key, cfg.split, "real")
    record = {
        "method": "real_data",
        "split": cfg.split,
        "num_images": test.meta["num_images"],
        "seed": cfg.seed,
        "extractor": extractor.key,
        "metrics": {
            fid_name: fidelity.fid_from_statistics(test.stats, other.stats),
            is_name: is_mean,
            is_name + "_std": is_std,
        },
        "fid_reference_split": other.meta["split"],
        "fid_reference_images": other.meta["num_images"],
    }
    io.write_json(out_json, record)
    return record


def read_metric_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    from retrievegan.eval.samples import read_json_object

    data = read_json_object(path, "metric file")
    for key in ("method", "split", "metrics", "extractor"):
        if key not in data:
            raise InputError(path, f"not a metric file (missing {key!r})")
    data["families"] = families_of(data)
    return data
