"""Frozen patch features (`retrievegan category-cnn`, `retrievegan patch-features`).

RetrieveGAN's patch embedding E_p is an MLP over *frozen* CNN features of the patches (supplement:
ImageNet ResNet features, extracted offline). E_p has to discover which patches are mutually
compatible (on the synthetic benchmark: palette and texture; on COCO: scene context, lighting,
style), so the frozen features must keep colour and texture statistics, not only what a category
classifier needs. A category-invariant penultimate layer would throw exactly that away.

Feature design (``pooling: multiscale``, the default): the per-channel spatial mean and standard
deviation (AdaIN "style statistics") of the input and of every stage of the backbone, concatenated.
The input and early stages carry colour and texture, the last stage the object shape; each
dimension is standardised with the training patches' mean and standard deviation so every scale
starts on an equal footing for E_p. ``pooling: last`` keeps only the globally averaged last stage
(the usual penultimate feature), for comparison.

Backbones:

* ``resnet``: a torchvision ImageNet ResNet (18/34/50). Weights come from ``resnet_weights`` or the
  torch hub cache (``<torch hub dir>/checkpoints/<file>``); a missing file is an error naming the
  file, where to put it and its URL. Nothing is downloaded, nothing is substituted.
* ``category_cnn`` (embedded default, no pretrained weights needed): a small CNN trained in the
  workflow (`retrievegan category-cnn`) to classify the *category* of training-split patches. It never
  sees the synthetic theme.

Outputs: ``patch_features.npy`` ``(P, F)`` float32, row ``i`` = row ``i`` of ``patches.csv`` (all splits),
and ``patch_features.run.json`` with the config, the backbone, the feature layout and a k-NN probe
(evaluation only: val patches against train patches; category accuracy and, on the synthetic
benchmark, the share of nearest neighbours with the same hidden theme).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from retrievegan import io, runinfo, seeds
from retrievegan.device import pick_device
from retrievegan.embed.bank import load_bank
from retrievegan.embed.nets import CategoryCNN, mean_std, to_input
from retrievegan.errors import InputError
from retrievegan.models.init import meta_device
from retrievegan.progressbar import progress_bar as tqdm  # tqdm optional (the GPU checks import this module)

RESNET_ARCHS = ("resnet18", "resnet34", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    backbone: Literal["category_cnn", "resnet"] = "category_cnn"
    pooling: Literal["multiscale", "last"] = "multiscale"
    standardize: bool = True  # z-score every dimension with the training patches' statistics
    batch_size: int = 256  # extraction batch
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # category_cnn (trained by `retrievegan category-cnn` on category labels of train patches)
    seed: int = 0
    channels: tuple[int, ...] = (32, 64, 128)
    epochs: int = 4
    train_batch_size: int = 128
    lr: float = 0.002
    # resnet
    resnet_arch: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    resnet_weights: str | None = None  # None: the torch hub cache
    resnet_input_size: int = 112  # patches are resized to this before the ResNet (bilinear)
    probe_max_queries: int = 2000  # val patches in the k-NN probe

    def __post_init__(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError("channels must be a non-empty list of positive integers")
        for name in ("batch_size", "epochs", "train_batch_size", "resnet_input_size", "probe_max_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0:
            raise ValueError("lr must be > 0")


# --------------------------------------------------------------------------------------------------
# Category CNN


def category_classes(table: pd.DataFrame) -> np.ndarray:
    """Sorted vocab category ids of the training patches (class ``c`` of the CNN = ``classes[c]``)."""
    return np.unique(table.loc[table["split"] == "train", "category"].to_numpy())


def train_category_cnn(
    bank: np.ndarray,
    table: pd.DataFrame,
    cfg: FeaturesConfig,
    progress: bool = True,
    device: torch.device | None = None,
) -> tuple[CategoryCNN, dict[str, Any]]:
    """Train ``CategoryCNN`` on the category labels of the train-split patches (never the theme).

    Random horizontal flips; Adam; ``cfg.epochs`` passes. Returns the model (eval mode, CPU) and a
    record with the class list, per-epoch loss and the val-split category accuracy.
    """
    from retrievegan.models.init import build

    device = device or pick_device(cfg.device, "features.device")
    classes = category_classes(table)
    if len(classes) < 2:
        raise InputError("patches.csv", f"the category CNN needs >= 2 categories in train, got {len(classes)}")
    lookup = {int(c): i for i, c in enumerate(classes)}
    train_rows = np.flatnonzero(table["split"].to_numpy() == "train")
    labels = torch.as_tensor([lookup[int(c)] for c in table["category"].to_numpy()[train_rows]])
    images = to_input(np.asarray(bank[train_rows]))  # (N, 3, C, C); a few MB at the embedded scale
    gen = seeds.torch_generator(seeds.derive_seed(cfg.seed, seeds.INIT, seeds.tag("category_cnn")))
    model = build(lambda: CategoryCNN(cfg.channels, len(classes)), gen).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = seeds.numpy_rng(cfg.seed, seeds.TRAIN_NOISE, seeds.tag("category_cnn"))
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(train_rows))
        total, count = 0.0, 0
        for start in tqdm(
            range(0, len(order), cfg.train_batch_size),
            desc=f"category cnn epoch {epoch}",
            disable=not progress,
            unit="batch",
        ):
            idx = torch.as_tensor(order[start : start + cfg.train_batch_size])
            x = images[idx]
            flip = torch.as_tensor(rng.random(len(idx)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(3), x).to(device)
            loss = F.cross_entropy(model(x), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append({"epoch": epoch, "train_loss": total / count})
    model.eval()
    record: dict[str, Any] = {
        "classes": [int(c) for c in classes],
        "history": history,
        "train_patches": int(len(train_rows)),
    }
    val_rows = np.flatnonzero(table["split"].to_numpy() == "val")
    known = np.isin(table["category"].to_numpy()[val_rows], classes)
    if known.any():
        val_rows = val_rows[known]
        with torch.no_grad():
            preds = torch.cat(
                [
                    model(to_input(np.asarray(bank[val_rows[s : s + 512]]), device)).argmax(1).cpu()
                    for s in range(0, len(val_rows), 512)
                ]
            )
        truth = torch.as_tensor([lookup[int(c)] for c in table["category"].to_numpy()[val_rows]])
        record["val_accuracy"] = float((preds == truth).float().mean())
    return model.cpu(), record


def save_category_cnn(path: str | Path, model: CategoryCNN, cfg: FeaturesConfig, record: dict[str, Any]) -> None:
    io.save_torch(
        path,
        {
            "state_dict": model.state_dict(),
            "channels": list(cfg.channels),
            "classes": record["classes"],
            "config": runinfo.to_jsonable(cfg),
        },
    )


def load_category_cnn(path: str | Path) -> CategoryCNN:
    """The trained ``CategoryCNN`` of ``retrievegan category-cnn`` (eval mode, CPU)."""
    ckpt = io.read_torch(path, "category CNN checkpoint not found (run `retrievegan category-cnn`)")
    try:
        with meta_device():
            model = CategoryCNN(ckpt["channels"], len(ckpt["classes"]))
        model.load_state_dict(ckpt["state_dict"], assign=True)
    except (KeyError, RuntimeError) as exc:
        raise InputError(path, f"not a category CNN checkpoint: {exc}") from exc
    return model.eval()


# --------------------------------------------------------------------------------------------------
# ResNet


def resnet_weights_url(arch: str) -> str:
    """The torchvision URL of the ImageNet weights of ``arch`` (IMAGENET1K_V1); nothing is downloaded."""
    from torchvision import models

    enum = {
        "resnet18": models.ResNet18_Weights,
        "resnet34": models.ResNet34_Weights,
        "resnet50": models.ResNet50_Weights,
    }[arch]
    return enum.IMAGENET1K_V1.url


def resolve_resnet_weights(arch: str, configured: str | None) -> Path:
    """The weights file of ``arch``: ``configured`` or the torch hub cache; else MissingWeightsError."""
    from retrievegan.weights import resolve_weights

    return resolve_weights(
        configured,
        resnet_weights_url(arch),
        f"ImageNet {arch}",
        "features.resnet_weights",
        "Or use features.backbone: category_cnn.",
    )


def load_resnet(arch: str, weights_path: str | Path) -> nn.Module:
    """torchvision ResNet ``arch`` with the ImageNet weights in ``weights_path`` (eval mode, CPU)."""
    from torchvision import models

    state = io.read_torch(weights_path, "ResNet weights not found")
    with meta_device():  # no random initialisation: every tensor comes from the file
        model = getattr(models, arch)(weights=None)
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as exc:
        raise InputError(weights_path, f"not {arch} ImageNet weights: {exc}") from exc
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Extraction


class FeatureExtractor(nn.Module):
    """Frozen backbone -> ``(B, F)`` features of ``(B, C, C, 3)`` uint8 patches (see module docstring)."""

    def __init__(self, backbone: nn.Module, kind: str, pooling: str, input_size: int | None = None):
        super().__init__()
        self.backbone, self.kind, self.pooling, self.input_size = backbone.eval(), kind, pooling, input_size
        self.requires_grad_(False)

    def stages(self, patches: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """uint8 ``(B, C, C, 3)`` -> (network input ``(B, 3, H, W)``, stage maps)."""
        x = to_input(patches, patches.device)
        if self.kind == "category_cnn":
            return x, self.backbone.trunk.stages(x)
        rgb = (x + 1.0) / 2.0
        if self.input_size is not None and rgb.shape[-1] != self.input_size:
            rgb = F.interpolate(rgb, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=rgb.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=rgb.device).view(1, 3, 1, 1)
        h = (rgb - mean) / std
        net = self.backbone
        outs = [net.relu(net.bn1(net.conv1(h)))]
        y = net.maxpool(outs[0])
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            y = layer(y)
            outs.append(y)
        return h, outs

    @torch.no_grad()
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x, stages = self.stages(patches)
        if self.pooling == "last":
            return stages[-1].mean(dim=(2, 3))
        return torch.cat([mean_std(x)] + [mean_std(s) for s in stages], dim=1)

    def layout(self, probe: torch.Tensor) -> list[dict[str, Any]]:
        """Which columns hold which statistics (for run.json)."""
        x, stages = self.stages(probe)
        if self.pooling == "last":
            return [{"stage": f"stage{len(stages) - 1}", "stat": "mean", "width": int(stages[-1].shape[1])}]
        names = ["input"] + (
            ["stem", "layer1", "layer2", "layer3", "layer4"]
            if self.kind == "resnet"
            else [f"stage{i}" for i in range(len(stages))]
        )
        out = []
        for name, t in zip(names, [x] + stages):
            out.append({"stage": name, "stat": "mean", "width": int(t.shape[1])})
            out.append({"stage": name, "stat": "std", "width": int(t.shape[1])})
        return out


def build_extractor(cfg: FeaturesConfig, category_cnn: str | Path | None = None) -> FeatureExtractor:
    if cfg.backbone == "category_cnn":
        if category_cnn is None:
            raise ValueError("backbone category_cnn needs the checkpoint of `retrievegan category-cnn`")
        return FeatureExtractor(load_category_cnn(category_cnn), "category_cnn", cfg.pooling)
    weights = resolve_resnet_weights(cfg.resnet_arch, cfg.resnet_weights)
    return FeatureExtractor(load_resnet(cfg.resnet_arch, weights), "resnet", cfg.pooling, cfg.resnet_input_size)


def knn_probe(features: np.ndarray, table: pd.DataFrame, max_queries: int) -> dict[str, Any]:
    """Evaluation only: 1-NN / 10-NN of val patches among train patches (L2 on the stored features).

    Reports the category accuracy of the 1-NN and, where ``theme`` is known (synthetic benchmark), the
    share of the 10 nearest train patches that come from an image of the query's theme, with the
    chance level (theme frequencies of the train patches).
    """
    split = table["split"].to_numpy()
    train = np.flatnonzero(split == "train")
    val = np.flatnonzero(split == "val")[:max_queries]
    if len(train) == 0 or len(val) == 0:
        return {}
    if len(train) > 20 * max_queries:  # bounded cost at paper scale: evenly spaced train rows
        train = train[np.unique(np.linspace(0, len(train) - 1, 20 * max_queries).astype(np.int64))]
    ref = torch.as_tensor(np.asarray(features[train]), dtype=torch.float32)
    qry = torch.as_tensor(np.asarray(features[val]), dtype=torch.float32)
    k = min(10, len(train))
    nn_idx = torch.cdist(qry, ref).topk(k, largest=False).indices.numpy()  # (Q, k) into train
    cats = table["category"].to_numpy()
    out: dict[str, Any] = {
        "queries": int(len(val)),
        "references": int(len(train)),
        "category_1nn_accuracy": float(np.mean(cats[train][nn_idx[:, 0]] == cats[val])),
    }
    theme = table["theme"]
    if theme.notna().all():
        th = theme.to_numpy(dtype=np.int64)
        same = th[train][nn_idx] == th[val][:, None]
        freq = np.bincount(th[train]) / len(train)
        out.update(
            {f"theme_{k}nn_precision": float(same.mean()), "theme_chance": float(np.sum(freq[th[val]]) / len(val))}
        )
    return out


def extract_patch_features(
    patches_dir: str | Path,
    cfg: FeaturesConfig,
    out_dir: str | Path,
    category_cnn: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``<out_dir>/patch_features.npy`` ``(P, F)`` float32 and ``patch_features.run.json``."""
    start_time = time.perf_counter()
    out_dir = Path(out_dir)
    bank, table = load_bank(patches_dir)
    device = pick_device(cfg.device, "features.device")
    extractor = build_extractor(cfg, category_cnn).to(device)
    layout = extractor.layout(torch.from_numpy(np.array(bank[:1])).to(device))
    dim = sum(item["width"] for item in layout)
    train_mask = table["split"].to_numpy() == "train"
    with io.atomic_memmap(out_dir / "patch_features.npy", (len(bank), dim), np.float32) as feats:
        for s in tqdm(range(0, len(bank), cfg.batch_size), desc="patch features", disable=not progress, unit="batch"):
            chunk = torch.from_numpy(np.array(bank[s : s + cfg.batch_size])).to(device)
            block = extractor(chunk).cpu().numpy()
            if not np.isfinite(block).all():
                raise InputError(
                    Path(patches_dir) / "patches.npy", "non-finite features", f"patches {s}..{s + len(chunk) - 1}"
                )
            feats[s : s + len(chunk)] = block
        stats = None
        if cfg.standardize:
            if not train_mask.any():
                raise InputError(Path(patches_dir) / "patches.csv", "no train patches to standardise with")
            total = np.zeros(dim)
            total_sq = np.zeros(dim)
            count = int(train_mask.sum())
            for s in range(0, len(feats), 65536):  # chunked: the paper-scale array is gigabytes
                block = np.asarray(feats[s : s + 65536], dtype=np.float64)[train_mask[s : s + 65536]]
                total += block.sum(0)
                total_sq += np.square(block).sum(0)
            mean = total / count
            std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
            std = np.where(std > 1e-6, std, 1.0)  # constant dimensions stay centred, not blown up
            for s in range(0, len(feats), 65536):
                feats[s : s + 65536] = ((feats[s : s + 65536] - mean) / std).astype(np.float32)
            stats = {"constant_dims": int(np.sum(std == 1.0))}
        probe = knn_probe(feats, table, cfg.probe_max_queries)
    seconds = time.perf_counter() - start_time
    extra = {
        "patches_dir": str(patches_dir),
        "category_cnn": None if category_cnn is None else str(category_cnn),
        "shape": [int(len(bank)), int(dim)],
        "layout": layout,
        "standardize_stats": stats,
        "probe": probe,
    }
    if cfg.backbone == "resnet":
        from retrievegan.weights import portable_path

        extra["resnet_weights_file"] = portable_path(resolve_resnet_weights(cfg.resnet_arch, cfg.resnet_weights))
    io.write_json(
        out_dir / "patch_features.run.json",
        runinfo.run_record("patch-features", cfg, cfg.seed if cfg.backbone == "category_cnn" else None, extra),
    )
    runinfo.report_provenance(out_dir / "patch_features.run.json", {"seconds": round(seconds, 3)})
    return {**extra, "seconds": seconds}


def load_patch_features(path: str | Path, num_patches: int | None = None) -> np.ndarray:
    """``(P, F)`` float32 memmap of ``patch_features.npy``; checks the row count when given."""
    return io.load_table_array(
        path, np.float32, num_patches, "patch features not found (run `retrievegan patch-features`)"
    )
