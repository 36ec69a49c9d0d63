"""Small building blocks shared by the networks: activations, normalisation, MLPs, CNNs from a spec."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

NORMALIZATIONS = ("batch", "instance", "none")


def activation(name: str) -> nn.Module:
    """``relu``, ``leakyrelu`` (slope 0.01) or ``leakyrelu-<slope>`` (e.g. ``leakyrelu-0.2``)."""
    lowered = name.lower()
    if lowered == "relu":
        return nn.ReLU()
    if lowered.startswith("leakyrelu"):
        slope = float(lowered.split("-", 1)[1]) if "-" in lowered else 0.01
        return nn.LeakyReLU(negative_slope=slope)
    raise ValueError(f"unknown activation {name!r}; expected relu, leakyrelu or leakyrelu-<slope>")


def norm2d(kind: str, channels: int) -> nn.Module | None:
    """2-D normalisation layer: ``batch``, ``instance`` (no affine, as sg2im) or ``none`` (-> None)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "none":
        return None
    raise ValueError(f"unknown normalization {kind!r}; expected one of {NORMALIZATIONS}")


def mlp(
    dims: Sequence[int], activation_name: str = "relu", normalization: str = "none", final_activation: bool = True
) -> nn.Sequential:
    """Linear layers ``dims[0] -> dims[1] -> ... -> dims[-1]``, each followed by optional BatchNorm1d and
    the activation (the last one only when ``final_activation``, sg2im's default)."""
    if len(dims) < 2:
        raise ValueError("an MLP needs at least an input and an output size")
    if normalization not in ("batch", "none"):
        raise ValueError(f"MLP normalization must be batch or none, got {normalization!r}")
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2 or final_activation:
            if normalization == "batch":
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(activation(activation_name))
    return nn.Sequential(*layers)


def cnn(
    arch: str,
    in_channels: int = 3,
    normalization: str = "batch",
    activation_name: str = "leakyrelu-0.2",
    padding: str = "valid",
) -> tuple[nn.Sequential, int]:
    """A CNN from a comma-separated spec (sg2im's notation); returns (network, output channels).

    ``CK-C`` / ``CK-C-S``: K x K convolution to C channels with stride S (default 1); ``PK``: K x K
    average pooling. Every convolution except the first is preceded by normalisation and activation.
    ``padding``: ``valid`` (none) or ``same`` (K // 2, odd K only).
    """
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be valid or same, got {padding!r}")
    layers: list[nn.Module] = []
    channels = in_channels
    first = True
    for spec in (s.strip() for s in arch.split(",") if s.strip()):
        if spec.startswith("C"):
            try:
                values = [int(v) for v in spec[1:].split("-")]
            except ValueError:
                raise ValueError(f"bad layer {spec!r} in {arch!r}") from None
            if len(values) not in (2, 3):
                raise ValueError(f"bad layer {spec!r} in {arch!r}: expected CK-C or CK-C-S")
            kernel, out_channels, stride = values[0], values[1], values[2] if len(values) == 3 else 1
            if padding == "same" and kernel % 2 == 0:
                raise ValueError(f"same padding needs an odd kernel, got {spec!r}")
            if not first:
                norm = norm2d(normalization, channels)
                if norm is not None:
                    layers.append(norm)
                layers.append(activation(activation_name))
            layers.append(
                nn.Conv2d(
                    channels, out_channels, kernel, stride=stride, padding=kernel // 2 if padding == "same" else 0
                )
            )
            channels, first = out_channels, False
        elif spec.startswith("P"):
            factor = int(spec[1:])
            layers.append(nn.AvgPool2d(factor, stride=factor))
        else:
            raise ValueError(f"unknown layer {spec!r} in {arch!r}")
    if first:
        raise ValueError(f"architecture {arch!r} has no convolution")
    return nn.Sequential(*layers), channels
