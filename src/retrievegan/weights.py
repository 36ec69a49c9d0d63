"""Where the pretrained evaluation networks' weights come from. Nothing is ever downloaded.

* Inception-v3 (torch-fidelity's ``inception-v3-compat``, for FID / IS on the real datasets): a
  configured path, else the torch hub cache (``<torch hub dir>/checkpoints/<file>``, where
  torch-fidelity's own download would have put it). The resolved file is handed to torch-fidelity as
  ``feature_extractor_weights_path``, so torch-fidelity never reaches for the network.
* AlexNet (the LPIPS v0.1 trunk, for DS): a configured path, else the torch hub cache where
  torchvision puts ``alexnet-owt-7be5be79.pth``. LPIPS's own linear layers ship inside the lpips
  package.

A missing file raises :class:`MissingWeightsError` naming the file, where to put it and its URL.
"""

from __future__ import annotations

import os
from pathlib import Path

from retrievegan.errors import InputError

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"  # perceptual loss (RetrieveGAN, PasteGAN)


class MissingWeightsError(InputError):
    """Pretrained weights an evaluation network needs are not on this machine."""


def torch_hub_checkpoints() -> Path:
    """``<torch.hub.get_dir()>/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, default ~/.cache/torch/...)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(
    configured: str | os.PathLike[str] | None, url: str, what: str, config_key: str, alternative: str = ""
) -> Path:
    """The weights file ``configured``, else ``<torch hub dir>/checkpoints/<file name of url>``.

    A missing file raises :class:`MissingWeightsError` naming the file, where to put it, its URL, the
    config key that points elsewhere and ``alternative`` (e.g. "or use features.backbone: category_cnn").
    """
    file_name = url.rsplit("/", 1)[1]
    tail = f" {alternative}" if alternative else ""
    if configured is not None:
        path = Path(configured)
        if path.is_file():
            return path
        raise MissingWeightsError(
            path,
            f"{what} weights not found at the configured path ({config_key}). Put the file {file_name} there "
            f"(download it on a machine with network access from {url}), or set {config_key}: null to use "
            f"the torch hub cache ({torch_hub_checkpoints() / file_name}).{tail} Nothing is downloaded "
            f"automatically.",
        )
    path = torch_hub_checkpoints() / file_name
    if path.is_file():
        return path
    raise MissingWeightsError(
        path,
        f"{what} weights not found in the torch hub cache. Put the file {file_name} at {path} "
        f"(the torch hub cache: $TORCH_HOME/hub/checkpoints) or set {config_key} to its path; "
        f"download it on a machine with network access from {url}.{tail} Nothing is downloaded automatically "
        f"and no other network is substituted.",
    )


def resolve_inception_weights(configured: str | os.PathLike[str] | None) -> Path:
    return resolve_weights(
        configured, INCEPTION_URL, "Inception-v3 (torch-fidelity inception-v3-compat)", "evaluation.inception_weights"
    )


def resolve_alexnet_weights(configured: str | os.PathLike[str] | None) -> Path:
    return resolve_weights(
        configured,
        ALEXNET_URL,
        "AlexNet (ImageNet, torchvision; the LPIPS alex trunk)",
        "evaluation.lpips_alex_weights",
    )


def resolve_vgg19_weights(configured: str | os.PathLike[str] | None, config_key: str) -> Path:
    """ImageNet VGG-19 (torchvision) for the training-time perceptual loss; ``config_key`` names the option."""
    return resolve_weights(configured, VGG19_URL, "VGG-19 (ImageNet, torchvision; the perceptual loss)", config_key)


def portable_path(path: str | os.PathLike[str]) -> str:
    """How a weights file is named in a tracked output: a path relative to the working directory stays as it
    is (a workflow output), one inside it is made relative, any other absolute location (the torch hub cache
    in a home folder, a site-packages folder) is machine-specific and recorded by file name only (its sha256
    beside it identifies the content; the full path is in the job log's provenance)."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name
