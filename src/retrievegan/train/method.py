"""The interface every trainable method implements (sg2im, PasteGAN, layout2im, RetrieveGAN, ...).

A method is a small object built from its frozen config dataclass and the data's ``DataSpec``. It
builds its networks (each with a *role*: ``generator`` networks are updated with the generator loss,
``discriminator`` networks with the discriminator loss), computes the two losses for a batch, and
generates samples. The loop (``retrievegan.train.loop``) owns everything else: optimisers (Adam, one
per network, from ``method.optimizer(name)``), mixed precision, DDP, compilation, checkpoints, logs.

Per step the loop calls, in this order (sg2im's order: G first, then D):

0. ``host_prepare(batch)`` on the CPU batch, before it moves to the device;
1. ``train_modes(nets, step)``;
2. ``generator_step(nets, batch, ctx)`` -> ``StepOutput(loss, logs, cache)``; the loop back-propagates
   ``loss`` into the generator networks (discriminators are frozen during this call);
3. ``discriminator_step(nets, batch, cache, ctx)`` -> ``StepOutput`` or None; back-propagated into
   the discriminator networks. ``cache`` is whatever step 2 returned (e.g. detached fake images). It must
   not depend on the generator networks' parameters: the loop applies both updates after both backward
   passes (the same numbers as updating G before D's forward pass, with one host synchronisation per step).

Inside steps 1-3 nothing should need a device value on the host (``.item()``, ``bool(t)``, ``.tolist()``,
boolean-mask indexing, ``nonzero``, ``unique``...): each is a GPU synchronisation. Use the host values and
index tensors of the batch (``objects_per_image``, ``real_rows``, ``image_rows``, ``extras``).

Randomness: ``ctx.generators`` holds one ``torch.Generator`` per image of the batch, seeded from
``(seed, epoch, image_id)``; draw every per-image random tensor from its image's generator so that
results do not depend on batch composition, DDP sharding or resumption. ``sample`` gets generators
seeded from ``(sample seed, image_id)`` the same way.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from retrievegan.data.dataset import DataSpec, SceneGraphBatch
from retrievegan.train.config import AdamConfig

Role = Literal["generator", "discriminator"]
SETTINGS = ("pred_bbox", "gt_bbox")


@dataclasses.dataclass(frozen=True)
class StepContext:
    step: int  # optimisation steps completed before this one
    epoch: int
    device: torch.device
    generators: Sequence[torch.Generator]  # one per image of the batch, on ``device``
    # rarity.loss (train/rebalance.py): (N, 1, S, S) per-pixel weights in (0, 1] of the reconstruction losses;
    # None: unweighted (methods declaring ``supports_rarity_loss`` use it)
    pixel_weights: torch.Tensor | None = None
    log_step: bool = False  # this step's logs go to losses.jsonl: the time for costly diagnostics (``meta``)


@dataclasses.dataclass
class StepOutput:
    loss: torch.Tensor  # scalar to back-propagate
    logs: Mapping[str, torch.Tensor]  # detached scalars for losses.jsonl (weighted terms + "total")
    cache: Any = None  # handed from generator_step to discriminator_step
    meta: Mapping[str, float] = dataclasses.field(default_factory=dict)  # diagnostics -> losses.jsonl ``meta``


@dataclasses.dataclass
class SampleOutput:
    images: torch.Tensor  # (N, 3, S, S) ImageNet-normalised
    patch_ids: list[list[int]] | None = None  # retrieval methods: one bank patch id per real object, per image


def as_is(function: Any) -> Any:
    """The function (or module) itself: what ``Method.compile_functions`` gets when nothing is compiled."""
    return function


class Method(abc.ABC):
    """Base class of a trainable method. Subclasses set the class attributes and implement the hooks."""

    name: ClassVar[str]
    config_class: ClassVar[type]  # frozen dataclass of the method's config section
    settings: ClassVar[tuple[str, ...]] = SETTINGS  # sample settings the method supports
    needs_patch_ids: ClassVar[bool] = False  # the dataset must carry each object's patch-bank row
    required_inputs: ClassVar[tuple[str, ...]] = ()  # named extra files (``--input name=path``)
    # DDP: tolerate parameters that get no gradient in a step (e.g. a head whose loss weight is 0)
    ddp_find_unused_parameters: ClassVar[bool] = True
    # loss rebalancing (rarity.loss): the method weights its reconstruction losses with ``ctx.pixel_weights``
    supports_rarity_loss: ClassVar[bool] = False

    def __init__(self, config: Any, spec: DataSpec, inputs: Mapping[str, Path] | None = None):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.spec = spec
        self.inputs = {k: Path(v) for k, v in (inputs or {}).items()}
        missing = [k for k in self.required_inputs if k not in self.inputs]
        if missing:
            from retrievegan.errors import ConfigError

            raise ConfigError(f"{self.name}: missing input(s) {missing} (pass --input NAME=PATH)")

    # --- networks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def build_networks(self, generator: torch.Generator) -> dict[str, nn.Module]:
        """Fresh networks on the CPU, initialised from ``generator`` only (see ``models.init.build``)."""

    @abc.abstractmethod
    def roles(self) -> Mapping[str, Role]:
        """Network name -> ``generator`` or ``discriminator`` (same keys as ``build_networks``)."""

    @abc.abstractmethod
    def optimizer(self, network: str) -> AdamConfig:
        """Adam settings of one network."""

    def host_prepare(self, batch: SceneGraphBatch) -> SceneGraphBatch:
        """Host-side inputs of a CPU batch before it moves to the device (default: none). Work that needs the
        batch's values in Python (e.g. AttnGAN's sentences) goes here, into ``batch.extras``: done on the device
        inside a step it would make the host wait for the GPU. The loop and the sampler call it."""
        return batch

    def with_host_inputs(self, batch: SceneGraphBatch, key: str) -> SceneGraphBatch:
        """``batch`` with :meth:`host_prepare`'s extras: itself if ``key`` is among them, else prepared now from a
        host copy of the batch (a synchronisation on a GPU: for callers that skip ``host_prepare``)."""
        if key in batch.extras:
            return batch
        return self.host_prepare(batch.to("cpu")).to(batch.images.device)

    def compile_functions(self, compile: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """Called by every ``Trainer`` built on the method, with ``torch.compile`` at the run's backend and mode under
        ``train.compile``, else with :func:`as_is`: set the step's own functions that are not networks to
        ``compile(function)`` (a method trained compiled and then eager, as the estimate's modes do, must not keep
        compiled functions). Default: none (the loop compiles the networks)."""

    def train_modes(self, nets: Mapping[str, nn.Module], step: int) -> None:
        """Put networks in train/eval mode before a step (default: all in train mode)."""
        for net in nets.values():
            net.train()

    # --- losses -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def generator_step(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, ctx: StepContext) -> StepOutput:
        """Generator loss for one batch."""

    def discriminator_step(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, cache: Any, ctx: StepContext
    ) -> StepOutput | None:
        """Discriminator loss for one batch (None: the method has no discriminator)."""
        return None

    # --- inference --------------------------------------------------------------------------------
    @abc.abstractmethod
    def sample(
        self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch, setting: str, generators: Sequence[torch.Generator]
    ) -> SampleOutput:
        """Images for a batch of scene graphs in ``setting`` (networks are in eval mode, no grad)."""

    def predict_boxes(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch) -> torch.Tensor:
        """(O, 4) predicted boxes (methods with a box regressor)."""
        raise NotImplementedError(f"{self.name} does not predict boxes")

    def object_features(self, nets: Mapping[str, nn.Module], batch: SceneGraphBatch) -> torch.Tensor:
        """(O, D) per-object features of the scene-graph encoder (methods that have one)."""
        raise NotImplementedError(f"{self.name} has no scene-graph encoder features")

    def notes(self) -> Mapping[str, str]:
        """Facts about the run the config alone does not show (e.g. a loss left out and why); the loop
        writes them into run.json as ``method_notes``."""
        return {}
