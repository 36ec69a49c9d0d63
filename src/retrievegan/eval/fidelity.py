"""FID and IS through torch-fidelity, with the real-image statistics in a declared file.

Every number comes from torch-fidelity's own code:

* features: ``torch_fidelity.utils.create_feature_extractor`` + ``get_featuresdict_from_dataset`` (the
  functions ``calculate_metrics`` runs), with the extractor registered under its torch-fidelity name
  (``inception-v3-compat`` or ``synthnet``) and its weights passed as ``feature_extractor_weights_path``;
* FID: ``torch_fidelity.metric_fid.fid_features_to_statistics`` (mu, sigma) and
  ``fid_statistics_to_metric``;
* IS: ``torch_fidelity.metric_isc.isc_features_to_metric`` (splits and shuffle seed from the config).

The real split's statistics are computed once (``retrievegan real-stats``) into a declared ``.npz``
file (``mu``, ``sigma``, the IS-layer features, and a JSON ``meta`` naming the extractor, its weights'
sha256, the layers and the images) instead of torch-fidelity's hidden cache keyed by a name; each
sample set then needs one feature pass. ``calculate_metrics`` on the same two inputs gives the same
numbers (tested), it just recomputes the real features every time.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from retrievegan import io
from retrievegan import weights as weights_mod
from retrievegan.device import pick_device
from retrievegan.errors import ConfigError, InputError

REFERENCE_FORMAT = "retrievegan-fid-reference-v1"
FIDELITY_NAMES = {"synthnet": "synthnet", "inception": "inception-v3-compat"}


@dataclasses.dataclass(frozen=True)
class Extractor:
    """A resolved feature extractor: its metric-name key, torch-fidelity name, weights and layers."""

    key: str  # part of the metric name: synthnet | inception
    fidelity_name: str  # torch-fidelity registry name
    weights: Path
    weights_sha256: str
    fid_layer: str
    isc_layer: str

    @property
    def comparable_to_paper(self) -> bool:
        return self.key == "inception"

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "torch_fidelity_name": self.fidelity_name,
            "weights": weights_mod.portable_path(self.weights),
            "weights_sha256": self.weights_sha256,
            "fid_layer": self.fid_layer,
            "isc_layer": self.isc_layer,
            "comparable_to_paper": self.comparable_to_paper,
        }


def resolve_extractor(
    kind: str,
    synthnet_weights: str | os.PathLike[str] | None = None,
    inception_weights: str | os.PathLike[str] | None = None,
) -> Extractor:
    """``kind``: ``synthnet`` (weights: the trained checkpoint) or ``inception`` (weights: configured path
    or the torch hub cache; :class:`~retrievegan.weights.MissingWeightsError` when absent)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if kind == "synthnet":
        from retrievegan.eval.synthnet import register_synthnet

        register_synthnet()
        if synthnet_weights is None:
            raise ConfigError("the synthnet extractor needs its checkpoint (--synthnet)")
        path = Path(synthnet_weights)
        if not path.is_file():
            raise InputError(path, "synthnet checkpoint not found (the workflow trains it: `retrievegan synthnet`)")
    elif kind == "inception":
        path = weights_mod.resolve_inception_weights(inception_weights)
    else:
        raise ConfigError(f"unknown feature extractor {kind!r}; expected synthnet or inception")
    cls = FEATURE_EXTRACTORS_REGISTRY[FIDELITY_NAMES[kind]]
    return Extractor(
        key=kind,
        fidelity_name=FIDELITY_NAMES[kind],
        weights=path,
        weights_sha256=io.sha256_file(path),
        fid_layer=cls.get_default_feature_layer_for_metric("fid"),
        isc_layer=cls.get_default_feature_layer_for_metric("isc"),
    )


def extract_features(
    dataset: Dataset, extractor: Extractor, batch_size: int, device: str = "cpu", verbose: bool = False
) -> dict[str, torch.Tensor]:
    """The FID and IS layers of ``extractor`` for every item of ``dataset`` ((3, H, W) uint8), in order."""
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    cuda = pick_device(device, "evaluation.device").type == "cuda"
    layers = list(dict.fromkeys([extractor.fid_layer, extractor.isc_layer]))
    feat_extractor = create_feature_extractor(
        extractor.fidelity_name,
        layers,
        cuda=cuda,
        verbose=verbose,
        feature_extractor_weights_path=str(extractor.weights),
    )
    return get_featuresdict_from_dataset(dataset, feat_extractor, batch_size, cuda, True, verbose)


def fid_statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    """(N, D) features -> {"mu": (D,), "sigma": (D, D)} (torch-fidelity's function)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features.cpu())


def fid_from_statistics(stats_1: dict[str, np.ndarray], stats_2: dict[str, np.ndarray]) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return float(fid_statistics_to_metric(stats_1, stats_2, False)[KEY_METRIC_FID])


def inception_score(logits: torch.Tensor, splits: int, seed: int) -> tuple[float, float]:
    """(mean, std over splits) of torch-fidelity's IS on (N, K) logits; the split shuffle is seeded."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    if len(logits) < splits:
        raise ConfigError(f"IS with {splits} splits needs at least {splits} images, got {len(logits)}")
    out = isc_features_to_metric(logits.cpu(), splits, True, seed)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


@dataclasses.dataclass(frozen=True)
class Reference:
    """Stored real-image statistics of one split."""

    path: Path
    stats: dict[str, np.ndarray]
    isc_features: torch.Tensor
    meta: dict[str, Any]

    def check_extractor(self, extractor: Extractor) -> None:
        """Raise if the statistics were computed by another network or other layers."""
        stored = self.meta.get("extractor", {})
        for key, value in (
            ("key", extractor.key),
            ("weights_sha256", extractor.weights_sha256),
            ("fid_layer", extractor.fid_layer),
            ("isc_layer", extractor.isc_layer),
        ):
            if stored.get(key) != value:
                raise InputError(
                    self.path,
                    f"reference statistics were computed with extractor {key} "
                    f"{stored.get(key)!r}, this evaluation uses {value!r}; recompute them "
                    "(`retrievegan real-stats`)",
                )


def compute_reference(
    images_path: str | os.PathLike[str],
    split: str,
    extractor: Extractor,
    batch_size: int,
    device: str,
    out_path: str | os.PathLike[str],
    verbose: bool = False,
) -> dict[str, Any]:
    """Features of the real ``{split}_images.npy`` -> ``out_path`` (.npz: mu, sigma, isc_features, meta)."""
    from retrievegan.eval.image_datasets import ArrayDataset
    from retrievegan.eval.samples import load_image_array

    images = load_image_array(images_path)
    features = extract_features(ArrayDataset(images), extractor, batch_size, device, verbose)
    stats = fid_statistics(features[extractor.fid_layer])
    meta = {
        "format": REFERENCE_FORMAT,
        "split": split,
        "images": str(images_path),
        "images_sha256": io.sha256_file(images_path),
        "num_images": int(len(images)),
        "image_size": int(images.shape[1]),
        "extractor": extractor.describe(),
        "batch_size": batch_size,
        "device": pick_device(device, "evaluation.device").type,
    }
    io.save_npz(
        out_path,
        {
            "mu": stats["mu"],
            "sigma": stats["sigma"],
            "isc_features": features[extractor.isc_layer].numpy(),
            "meta": np.array(json.dumps(meta, sort_keys=True)),
        },
    )
    return meta


def load_reference(path: str | os.PathLike[str]) -> Reference:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            stats = {"mu": data["mu"], "sigma": data["sigma"]}
            isc = torch.from_numpy(data["isc_features"])
    except FileNotFoundError as exc:
        raise InputError(path, "reference statistics not found (run `retrievegan real-stats`)") from exc
    except (KeyError, ValueError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a reference-statistics file: {exc}") from exc
    if meta.get("format") != REFERENCE_FORMAT:
        raise InputError(path, f"unsupported format {meta.get('format')!r} (expected {REFERENCE_FORMAT!r})")
    return Reference(path=path, stats=stats, isc_features=isc, meta=meta)
