"""DS: LPIPS distance between the two samples of one scene graph (sample0 vs sample1).

* ``alex`` (the paper's): LPIPS v0.1 from the lpips package: its linear layers ship in the package
  (``lpips/weights/v0.1/alex.pth``); its AlexNet trunk needs torchvision's ImageNet weights, which
  are loaded from an explicit file (configured, or the torch hub cache; see
  ``retrievegan.weights``) — never downloaded, never replaced by another network.
  Metric names ``ds_lpips_alex_<split>_<pred|gt>``.
* ``synthnet`` (embedded benchmark, for machines without ImageNet weights): the same LPIPS form —
  channel-normalised features (``lpips.normalize_tensor``), squared difference summed over channels,
  spatial mean (``lpips.spatial_average``), summed over layers — on the four stage maps of the trained
  synthnet, with uniform layer weights (LPIPS's uncalibrated "baseline" variant). Named
  ``ds_lpips_synthnet_...`` and marked not comparable to the paper.

Images enter at their native resolution; both samples of a pair must have the same size.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from retrievegan import io
from retrievegan import weights as weights_mod
from retrievegan.errors import ConfigError, InputError

BACKBONES = ("alex", "synthnet")


def lpips_linear_weights_path(version: str = "0.1", net: str = "alex") -> Path:
    import lpips

    return Path(lpips.__file__).resolve().parent / "weights" / f"v{version}" / f"{net}.pth"


class LpipsAlex(nn.Module):
    """LPIPS v0.1 (alex) with an explicitly loaded AlexNet trunk. forward: two (B, 3, H, W) uint8 -> (B,)."""

    def __init__(self, alexnet_weights: str | os.PathLike[str]):
        super().__init__()
        import lpips

        lin_path = lpips_linear_weights_path()
        if not lin_path.is_file():
            raise weights_mod.MissingWeightsError(
                lin_path,
                "LPIPS v0.1 linear-layer weights missing from the lpips package installation (reinstall lpips==0.1.4)",
            )
        # pnet_rand: torchvision builds a randomly initialised trunk (no download); fork_rng keeps that
        # initialisation from advancing the global RNG. The trunk is then overwritten from the file.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
            model = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
        trunk = io.read_torch(alexnet_weights, "AlexNet weights not found")
        mapped = {}
        for key in model.net.state_dict():
            _, index, param = key.split(".")  # slice<k>.<features index>.<weight|bias>
            source = f"features.{index}.{param}"
            if source not in trunk:
                raise InputError(alexnet_weights, f"not a torchvision AlexNet state dict (missing {source!r})")
            mapped[key] = trunk[source]
        model.net.load_state_dict(mapped, strict=True)
        lin = io.read_torch(lin_path, "LPIPS linear-layer weights not found")
        lin_keys = {k for k in model.state_dict() if re.match(r"lin\d+\.", k)}  # (lins.<i> aliases lin<i>)
        if set(lin) != lin_keys:
            raise InputError(lin_path, f"unexpected LPIPS linear-layer keys {sorted(set(lin) ^ lin_keys)}")
        model.load_state_dict(lin, strict=False)
        self.model = model.eval().requires_grad_(False)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        a = x0.float() / 127.5 - 1.0
        b = x1.float() / 127.5 - 1.0
        return self.model(a, b).reshape(-1)


class LpipsSynthNet(nn.Module):
    """LPIPS form (uniform layer weights) on synthnet stage maps. forward: two (B, 3, H, W) uint8 -> (B,)."""

    def __init__(self, synthnet_weights: str | os.PathLike[str]):
        super().__init__()
        from retrievegan.eval.synthnet import load_synthnet

        self.net = load_synthnet(synthnet_weights)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        import lpips

        total = torch.zeros(len(x0), dtype=torch.float32, device=x0.device)
        for f0, f1 in zip(self.net.stage_maps(x0), self.net.stage_maps(x1)):
            diff = (lpips.normalize_tensor(f0) - lpips.normalize_tensor(f1)) ** 2
            total = total + lpips.spatial_average(diff.sum(dim=1, keepdim=True)).reshape(-1)
        return total


@dataclasses.dataclass(frozen=True)
class DsBackbone:
    key: str  # alex | synthnet
    weights: Path
    weights_sha256: str

    @property
    def network(self) -> str:
        """Metric-name part: ``lpips_alex`` / ``lpips_synthnet``."""
        return f"lpips_{self.key}"

    @property
    def comparable_to_paper(self) -> bool:
        return self.key == "alex"

    def describe(self) -> dict[str, Any]:
        info = {
            "key": self.key,
            "metric_network": self.network,
            "weights": weights_mod.portable_path(self.weights),
            "weights_sha256": self.weights_sha256,
            "comparable_to_paper": self.comparable_to_paper,
        }
        if self.key == "alex":
            info.update(
                lpips_version="0.1", lpips_linear_weights=weights_mod.portable_path(lpips_linear_weights_path())
            )
        else:
            info.update(
                form="LPIPS baseline form (unit-normalised channels, uniform layer weights) on synthnet "
                "stem/stage1/stage2/stage3 maps; not LPIPS-calibrated, not comparable to the paper"
            )
        return info

    def build(self) -> nn.Module:
        return LpipsAlex(self.weights) if self.key == "alex" else LpipsSynthNet(self.weights)


def resolve_backbone(
    kind: str,
    alex_weights: str | os.PathLike[str] | None = None,
    synthnet_weights: str | os.PathLike[str] | None = None,
) -> DsBackbone:
    if kind == "alex":
        path = weights_mod.resolve_alexnet_weights(alex_weights)
    elif kind == "synthnet":
        if synthnet_weights is None:
            raise ConfigError("DS with the synthnet backbone needs its checkpoint (--synthnet)")
        path = Path(synthnet_weights)
        if not path.is_file():
            raise InputError(path, "synthnet checkpoint not found (the workflow trains it: `retrievegan synthnet`)")
    else:
        raise ConfigError(f"unknown DS backbone {kind!r}; expected one of {BACKBONES}")
    return DsBackbone(key=kind, weights=path, weights_sha256=io.sha256_file(path))


@torch.no_grad()
def pair_distances(pairs: Dataset, model: nn.Module, batch_size: int, device: str = "cpu") -> np.ndarray:
    """(N,) float64 distances, one per item of ``pairs`` ((2, 3, H, W) uint8), in order."""
    model = model.to(device).eval()
    out = []
    for batch in DataLoader(pairs, batch_size=batch_size, shuffle=False, num_workers=0):
        batch = batch.to(device)
        out.append(model(batch[:, 0], batch[:, 1]).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
