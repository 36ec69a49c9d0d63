"""Build networks without touching torch's global RNG.

``build(factory, generator)`` constructs the module on the ``meta`` device (no memory, no random
draws), materialises it on the CPU and initialises every parameter and buffer from the explicit
``torch.Generator`` (``meta_device()``: the meta-device context, without the constructors' own random
initialisation):

* ``nn.Linear`` / ``nn.Conv2d`` / ``nn.ConvTranspose2d``: PyTorch's default scheme (Kaiming-uniform
  with a = sqrt(5), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))), or Kaiming-normal weights (fan_in,
  leaky-ReLU gain with slope 0, as sg2im's graph convolution and CRN) inside any module whose class
  sets ``kaiming_normal_init = True``;
* ``nn.Embedding``: N(0, 1); normalisation layers: weight 1, bias 0, running statistics reset;
* any other module with its own parameters or buffers must define ``init_parameters(generator)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

M = TypeVar("M", bound=nn.Module)

_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.LayerNorm,
)
_CONVS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def _fan_in(weight: torch.Tensor, transposed: bool) -> int:
    if weight.dim() < 2:
        raise ValueError("fan_in needs a weight with at least 2 dimensions")
    receptive = weight[0][0].numel() if weight.dim() > 2 else 1
    return (weight.shape[0] if transposed else weight.shape[1]) * receptive


@torch.no_grad()
def _init_leaf(module: nn.Module, kaiming_normal: bool, generator: torch.Generator) -> None:
    if isinstance(module, _CONVS):
        transposed = isinstance(module, nn.ConvTranspose2d)
        if kaiming_normal:
            # Kaiming-normal, fan_in, gain sqrt(2) (nn.init defaults as sg2im calls them)
            std = math.sqrt(2.0) / math.sqrt(_fan_in(module.weight, transposed))
            module.weight.normal_(0.0, std, generator=generator)
        else:
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
        if module.bias is not None:
            fan_in = _fan_in(module.weight, transposed)
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            module.bias.uniform_(-bound, bound, generator=generator)
    elif isinstance(module, nn.Embedding):
        module.weight.normal_(0.0, 1.0, generator=generator)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    elif isinstance(module, _NORMS):
        if getattr(module, "weight", None) is not None:
            module.weight.fill_(1.0)
        if getattr(module, "bias", None) is not None:
            module.bias.fill_(0.0)
        if getattr(module, "track_running_stats", False) and getattr(module, "running_mean", None) is not None:
            module.reset_running_stats()
    elif hasattr(module, "init_parameters"):
        module.init_parameters(generator)
    elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        raise TypeError(f"do not know how to initialise {type(module).__name__}: give it init_parameters(generator)")


def initialize_(root: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialise every parameter and buffer of ``root`` in place (module order), from ``generator``."""

    def visit(module: nn.Module, kaiming: bool) -> None:
        kaiming = kaiming or bool(getattr(type(module), "kaiming_normal_init", False))
        if hasattr(module, "init_parameters") and module is not root:
            module.init_parameters(generator)  # a custom module initialises its whole subtree
            return
        _init_leaf(module, kaiming, generator)
        for child in module.children():
            visit(child, kaiming)

    if hasattr(root, "init_parameters"):
        root.init_parameters(generator)
    else:
        visit(root, False)
    return root


# the random initialisations module constructors run (reset_parameters); their meta-device forms are skipped
_RANDOM_INIT = frozenset(
    {
        torch.Tensor.normal_,
        torch.Tensor.uniform_,
        nn.init.normal_,
        nn.init.uniform_,
        nn.init.trunc_normal_,
        nn.init.kaiming_normal_,
        nn.init.kaiming_uniform_,
        nn.init.xavier_normal_,
        nn.init.xavier_uniform_,
        nn.init.orthogonal_,
    }
)


class _SkipMetaInit(TorchFunctionMode):
    """A constructor's random initialisation of a meta tensor returns the tensor untouched: a meta tensor holds no
    values, and PyTorch computes meta-device random draws through its Python references, whose first call imports
    ``torch._dynamo`` (~1.3 s in every process that builds a network; measured on the 2-core machine)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        if func in _RANDOM_INIT:
            target = args[0] if args else kwargs.get("tensor")  # nn.init passes its tensor by keyword
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


@contextlib.contextmanager
def meta_device() -> Iterator[None]:
    """``torch.device("meta")`` as the default device, skipping the constructors' random initialisation of meta
    tensors (their values do not exist: a module built here is materialised with ``to_empty`` and initialised
    afterwards, or only its shapes are used)."""
    with torch.device("meta"), _SkipMetaInit():
        yield


def build(factory: Callable[[], M], generator: torch.Generator, device: torch.device | str = "cpu") -> M:
    """``factory()`` built on the meta device, materialised on ``device`` and initialised from ``generator``."""
    with meta_device():
        module = factory()
    module = module.to_empty(device=device)
    initialize_(module, generator)
    return module
