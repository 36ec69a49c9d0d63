"""``synthnet``: the embedded benchmark's evaluation network, registered with torch-fidelity.

Inception-v3 needs ImageNet weights (absent on an offline CPU machine) and says little about the
synthetic benchmark's images anyway. So, for the embedded default, FID / IS use a small classifier
trained in the workflow on the benchmark's *real training images*:

* inputs: the canonical ``train_images.npy`` (uint8 RGB, S x S), horizontal flips as augmentation;
* targets: the image's hidden **theme** (softmax over themes) and the **categories present**
  (multi-label, one sigmoid per category). Evaluation networks may read the theme (methods never do):
  theme is what makes patches compatible, categories are what the scene graph asks for, so features
  that separate both are sensitive to exactly what the generators must get right;
* architecture: conv stem + 3 stages (stride-2 conv, conv; ReLU), channels w, 2w, 4w, 8w;
  global average pooling -> ``pool`` (8w-d) -> linear heads ``logits_theme`` (T), ``logits_category`` (C).
  No normalisation layers (GroupNorm / BatchNorm cost 3-4x the convolutions on a small CPU), hence no
  batch statistics: features do not depend on the batch size.

torch-fidelity reads it as feature extractor ``synthnet``: FID on ``pool``, IS on ``logits_theme``
(its upper bound is the number of themes, not 1000 like Inception's). DS can use the LPIPS form
on its stage maps (``ds_lpips_synthnet``, see ``retrievegan.eval.diversity``). None of these numbers is
comparable to the paper's Inception / AlexNet numbers; the metric names say which network made them.

Initialisation and data order come from an explicit ``torch.Generator`` (the model is built on the
meta device and initialised from that generator, so the global RNG is neither read nor advanced).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrievegan import io
from retrievegan.errors import InputError
from retrievegan.models.init import meta_device

EXTRACTOR_NAME = "synthnet"
CHECKPOINT_FORMAT = "retrievegan-synthnet-v1"
FEATURES = ("pool", "logits_theme", "logits_category")
DEFAULT_LAYERS = {"fid": "pool", "kid": "pool", "prc": "pool", "isc": "logits_theme"}


@dataclasses.dataclass(frozen=True)
class SynthNetConfig:
    """Training of the embedded evaluation network (all values ours: the paper uses Inception-v3)."""

    width: int = 16  # channels of the stem; stages have 2w, 4w, 8w (pool features: 8w = 128)
    epochs: int = 8
    batch_size: int = 16  # small batches: more updates per epoch (category learning is step-limited)
    lr: float = 2e-3  # peak of a one-cycle schedule
    weight_decay: float = 1e-4
    category_loss_weight: float = 3.0  # categories are much harder than themes (small, occluded shapes)
    hflip: bool = True
    seed: int = 0


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU(inplace=True))


class SynthNet(nn.Module):
    """Theme + category classifier.

    ``forward(x)``: x (B, 3, H, W) uint8 RGB -> dict ``pool`` (B, 8w), ``logits_theme`` (B, T),
    ``logits_category`` (B, C). Inputs of another size are resized (bilinear) to ``image_size``.
    """

    def __init__(self, num_themes: int, num_categories: int, width: int = 16, image_size: int = 64):
        super().__init__()
        self.arch = {
            "num_themes": int(num_themes),
            "num_categories": int(num_categories),
            "width": int(width),
            "image_size": int(image_size),
        }
        w = width
        self.stem = _block(3, w, 1)
        self.stage1 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w, 1))
        self.stage2 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1))
        self.stage3 = nn.Sequential(_block(4 * w, 8 * w, 2), _block(8 * w, 8 * w, 1))
        self.theme_head = nn.Linear(8 * w, num_themes)
        self.category_head = nn.Linear(8 * w, num_categories)

    @classmethod
    def initialised(cls, generator: torch.Generator, **arch: Any) -> SynthNet:
        """A new model whose parameters are drawn from ``generator`` only."""
        with meta_device():
            model = cls(**arch)
        model = model.to_empty(device="cpu")
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01, generator=generator)
                nn.init.zeros_(module.bias)
        return model

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, 3, S, S) float in [-1, 1]."""
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"synthnet expects (B, 3, H, W) uint8 images, got {tuple(x.shape)} {x.dtype}")
        y = x.float() / 127.5 - 1.0
        size = self.arch["image_size"]
        if y.shape[-2:] != (size, size):
            y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False, antialias=y.shape[-1] > size)
        return y

    def stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) uint8 -> [stem (B, w, S, S), stage1 (B, 2w, S/2, S/2), stage2, stage3 (B, 8w, S/8, S/8)]."""
        h0 = self.stem(self.preprocess(x))
        h1 = self.stage1(h0)
        h2 = self.stage2(h1)
        h3 = self.stage3(h2)
        return [h0, h1, h2, h3]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pool = self.stage_maps(x)[-1].mean(dim=(2, 3))
        return {"pool": pool, "logits_theme": self.theme_head(pool), "logits_category": self.category_head(pool)}


def save_synthnet(path: str | os.PathLike[str], model: SynthNet, extra: dict[str, Any] | None = None) -> None:
    """Atomically save the checkpoint (arch + state dict + ``extra`` metadata)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": dict(model.arch),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": json.dumps(extra or {}, sort_keys=True),
    }
    io.save_torch(path, payload)


def load_synthnet(path: str | os.PathLike[str]) -> SynthNet:
    path = Path(path)
    payload = io.read_torch(path, "synthnet checkpoint not found (the workflow trains it: `retrievegan synthnet`)")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, f"not a synthnet checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    with meta_device():
        model = SynthNet(**payload["arch"])
    model = model.to_empty(device="cpu")
    model.load_state_dict(payload["state_dict"])
    model.requires_grad_(False)
    return model.eval()


# --- torch-fidelity feature extractor ----------------------------------------------------------


def _extractor_class():
    """Defined lazily so that importing this module does not import torch_fidelity."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.helpers import vassert

    class SynthNetFeatureExtractor(FeatureExtractorBase):
        """torch-fidelity view of a trained :class:`SynthNet` (weights from ``feature_extractor_weights_path``)."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if feature_extractor_weights_path is None:
                raise InputError(
                    "<feature_extractor_weights_path>",
                    "the synthnet feature extractor needs the "
                    "path of its trained checkpoint; it is never randomly initialised",
                )
            self.net = load_synthnet(feature_extractor_weights_path)
            self.requires_grad_(False)
            self.eval()

        @staticmethod
        def get_provided_features_list():
            return FEATURES

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return DEFAULT_LAYERS[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros((1, 3, 8, 8), dtype=torch.uint8)

        def forward(self, x):
            vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=uint8")
            vassert(x.dim() == 4 and x.shape[1] == 3, f"Input is not Bx3xHxW: {x.shape}")
            out = self.net(x)
            return tuple(out[name] for name in self.features_list)

    return SynthNetFeatureExtractor


def register_synthnet() -> None:
    """Register ``synthnet`` with torch-fidelity (idempotent).

    torch-fidelity keeps its extractors in a process-global dict
    (``torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY``) and refuses to register a name twice.
    This function is the only place that touches it: it is called right before each use, adds the
    class once per process, and raises if another class already holds the name.
    """
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    existing = FEATURE_EXTRACTORS_REGISTRY.get(EXTRACTOR_NAME)
    if existing is not None:
        if (
            getattr(existing, "__qualname__", "").endswith("SynthNetFeatureExtractor")
            and existing.__module__ == __name__
        ):
            return
        raise RuntimeError(
            f"torch-fidelity already has a different feature extractor named {EXTRACTOR_NAME!r}: {existing!r}"
        )
    register_feature_extractor(EXTRACTOR_NAME, _extractor_class())


# --- training ----------------------------------------------------------------------------------


def _labels(split, num_categories: int, path: Path) -> tuple[np.ndarray, np.ndarray]:
    themes = np.empty(len(split.graphs), dtype=np.int64)
    cats = np.zeros((len(split.graphs), num_categories), dtype=np.float32)
    for i, graph in enumerate(split.graphs):
        if graph.theme is None:
            raise InputError(
                path,
                "image has no theme: synthnet is for the synthetic benchmark only "
                "(use evaluation.feature_extractor: inception for real data)",
                f"image id {graph.image_id}",
            )
        themes[i] = graph.theme
        for obj in graph.objects[:-1]:
            cats[i, obj.category - 1] = 1.0
    return themes, cats


def _load_images(path: Path, expected: int) -> torch.Tensor:
    images = io.load_array(path, "image array not found (run `retrievegan preprocess`)")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) != expected:
        raise InputError(path, f"expected ({expected}, S, S, 3) uint8, got {images.shape} {images.dtype}")
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate_synthnet(
    model: SynthNet, images: torch.Tensor, themes: np.ndarray, cats: np.ndarray, batch_size: int = 256
) -> dict[str, float]:
    """Theme accuracy and category (multi-label, threshold 0.5) accuracy / macro F1 on held-out images."""
    model.eval()
    theme_pred, cat_prob = [], []
    for start in range(0, len(images), batch_size):
        out = model(images[start : start + batch_size])
        theme_pred.append(out["logits_theme"].argmax(1).numpy())
        cat_prob.append(torch.sigmoid(out["logits_category"]).numpy())
    tp = np.concatenate(theme_pred)
    cp = np.concatenate(cat_prob) > 0.5
    truth = cats > 0.5
    f1 = []
    for c in range(truth.shape[1]):
        if truth[:, c].any() or cp[:, c].any():
            inter = np.sum(truth[:, c] & cp[:, c])
            f1.append(2 * inter / (truth[:, c].sum() + cp[:, c].sum()))
    counts = np.bincount(themes, minlength=model.arch["num_themes"])
    return {
        "theme_accuracy": float(np.mean(tp == themes)),
        "theme_majority_baseline": float(counts.max() / counts.sum()),
        "category_label_accuracy": float(np.mean(cp == truth)),
        "category_macro_f1": float(np.mean(f1)) if f1 else float("nan"),
        "num_images": int(len(images)),
    }


def train_synthnet(
    data_dir: str | os.PathLike[str],
    cfg: SynthNetConfig,
    out_path: str | os.PathLike[str],
    eval_split: str = "val",
    verbose: bool = True,
) -> dict[str, Any]:
    """Train on ``data_dir/train_images.npy`` (+ themes / categories of ``train.json``), save the
    checkpoint to ``out_path`` and return the quality record (held-out accuracy on ``eval_split``)."""
    from retrievegan.data.scene_graph import read_split, read_vocab

    data_dir = Path(data_dir)
    vocab = read_vocab(data_dir / "vocab.json")
    train = read_split(data_dir / "train.json")
    held = read_split(data_dir / f"{eval_split}.json")
    num_categories = vocab.num_categories
    t_themes, t_cats = _labels(train, num_categories, data_dir / "train.json")
    h_themes, h_cats = _labels(held, num_categories, data_dir / f"{eval_split}.json")
    num_themes = int(max(t_themes.max(), h_themes.max())) + 1
    t_images = _load_images(data_dir / "train_images.npy", len(train.graphs))
    h_images = _load_images(data_dir / f"{eval_split}_images.npy", len(held.graphs))
    image_size = int(t_images.shape[-1])

    generator = torch.Generator().manual_seed(cfg.seed)
    model = SynthNet.initialised(
        generator, num_themes=num_themes, num_categories=num_categories, width=cfg.width, image_size=image_size
    )
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(t_images) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    theme_t = torch.from_numpy(t_themes)
    cats_t = torch.from_numpy(t_cats)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(t_images), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            x = t_images[idx]
            if cfg.hflip:
                flip = torch.rand(len(idx), generator=generator) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            out = model(x)
            loss = F.cross_entropy(
                out["logits_theme"], theme_t[idx]
            ) + cfg.category_loss_weight * F.binary_cross_entropy_with_logits(out["logits_category"], cats_t[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        quality = evaluate_synthnet(model, h_images, h_themes, h_cats)
        history.append(
            {"epoch": epoch + 1, "train_loss": total / seen, **{k: v for k, v in quality.items() if k != "num_images"}}
        )
        if verbose:
            print(
                f"synthnet epoch {epoch + 1}/{cfg.epochs}: loss {total / seen:.4f}, "
                f"{eval_split} theme acc {quality['theme_accuracy']:.3f}, "
                f"category F1 {quality['category_macro_f1']:.3f}",
                flush=True,
            )
    model.eval()
    model.requires_grad_(False)
    final = evaluate_synthnet(model, h_images, h_themes, h_cats)
    record = {
        "extractor": EXTRACTOR_NAME,
        "arch": dict(model.arch),
        "config": dataclasses.asdict(cfg),
        "trained_on": str(data_dir / "train_images.npy"),
        "num_train_images": int(len(t_images)),
        "evaluated_on": eval_split,
        f"{eval_split}_quality": final,
        "history": history,
        "category_names": list(vocab.object_names[1:]),
    }
    save_synthnet(out_path, model, {k: record[k] for k in ("arch", "config", "trained_on", "evaluated_on")})
    return record
