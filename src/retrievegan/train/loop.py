"""The training loop every GAN method shares (``retrievegan train``).

``train(...)`` builds the method's networks, one Adam optimiser per network, and runs
``TrainConfig.steps`` steps of "generator update, then discriminator update" (sg2im's order) over
the training split. Features:

* resumable checkpoints written atomically every ``checkpoint_every`` steps to
  ``<out_dir>/state/<config hash>/last.pt`` (networks, optimisers, grad scalers, step; no global RNG
  state: every draw comes from an explicit generator); ``resume=True`` continues from there. Data order and per-image noise derive from
  ``(seed, epoch, image_id)``, so a killed and resumed run computes the same parameters as an
  uninterrupted one (bit for bit on the CPU with ``deterministic``); under the rarity batch sampler, which may
  repeat an image, the noise derives from ``(seed, global batch, slot)`` instead (:meth:`Trainer.noise_keys`);
* mixed precision (``amp``: autocast in bf16, or fp16 with grad scalers), ``torch.compile`` (``compile``,
  ``compile_mode``), fused Adam on CUDA (``adam``), channels-last memory (``channels_last``),
  DistributedDataParallel when launched by ``torchrun`` (NCCL on CUDA, gloo on the CPU);
* no host synchronisation inside a step beyond one read of the "losses finite" flags (none with fused
  Adam: :class:`Trainer`); the index tensors a step needs come from the collate function;
* a JSONL loss log, a tqdm progress bar with ETA, generator snapshots for progress figures;
* rarity rebalancing (``rarity.dataset`` / ``rarity.loss``, off by default; :mod:`retrievegan.train.rebalance`):
  the rarity batch sampler instead of the epoch permutation (its state goes into the checkpoint) and per-pixel
  weights of the reconstruction losses in ``StepContext.pixel_weights``. With both off nothing changes: no
  state, no hash key, the same checkpoint bytes.

When the run completes, ``<out_dir>`` receives ``checkpoint.pt`` (the final full checkpoint),
``losses.jsonl``, ``snapshots/step_<n>.pt`` and ``run.json``, and the state folder is removed. The state
folder lives outside the declared outputs so that Snakemake's clean-up of a failed job does not delete
what a resumed job needs; its name hashes everything that changes the computation, so a changed
config never resumes from a stale state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from retrievegan import io, runinfo
from retrievegan.data.dataset import DataSpec, SceneGraphBatch, SceneGraphDataset, check_spec, collate_scene_graphs
from retrievegan.data.rarity import RarityConfig
from retrievegan.device import pick_device
from retrievegan.errors import ConfigError, InputError
from retrievegan.progressbar import progress_bar
from retrievegan.seeds import INIT, TRAIN_NOISE, TRAIN_SLOT_NOISE, derive_seed, image_generators
from retrievegan.train import checkpoint as ckpt
from retrievegan.train.config import TrainConfig
from retrievegan.train.distributed import DistInfo, EpochBatchSampler, barrier, init_distributed
from retrievegan.train.method import Method, StepContext, as_is
from retrievegan.train.rebalance import Rebalancing, rebalancing
from retrievegan.train.registry import create_method

SNAPSHOT_FORMAT = "retrievegan-snapshot"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    steps: int
    resumed_from: int | None
    wall_seconds: float
    images_per_second: float  # over the steps of this invocation


@contextlib.contextmanager
def torch_flags(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms (warn-only on CUDA, where some kernels have no deterministic version) or
    cuDNN autotuning; the previous process-wide settings come back afterwards."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2], previous[3]


def adam_kernels(cfg: TrainConfig, device: torch.device) -> str:
    """``fused`` (one kernel per step for all parameters; CUDA default) or ``foreach`` (CPU default: the same
    numbers as PyTorch's per-parameter loop, bit for bit, in a handful of multi-tensor ops)."""
    if cfg.adam != "auto":
        return cfg.adam
    return "fused" if device.type == "cuda" else "foreach"


# torch.compile: graphs kept per compiled function before dynamo gives up on it. Its default (8) then runs the
# function eager from there on, silently; networks of one class share their ``forward``'s graphs (AttnGAN at the
# paper's three stages: 3 discriminators x {trained, frozen, with mismatched sentences} = 9). The loop allows 64
# and makes hitting them an error (dynamo's ``FailOnRecompileLimitHit``), never a silent eager fallback.
COMPILE_RECOMPILE_LIMIT = 64


@contextlib.contextmanager
def compile_settings(limit: int = COMPILE_RECOMPILE_LIMIT) -> Iterator[None]:
    """Context for calling compiled code: up to ``limit`` graphs per compiled function, an error past them; no
    donated buffers in compiled backward graphs (AOTAutograd frees saved activations into the gradients by default,
    which forbids a second backward through the graph: RetrieveGAN's E_p trace takes one gradient per selection
    loss with ``retain_graph``, and a compiled step failed at its first logged step); and no inductor layout
    optimisation (the memory format is ``train.channels_last``'s choice). With it, AOTAutograd gives the backward
    graph's saved activations the forward's concrete strides, and a stride check on them pins a dynamic size to
    the batch's value: the patch generators compiled one graph per object count (``set_replacement ...
    range_refined_to_singleton`` from ``is_channels_last_contiguous_2d``). Inductor always applies it to
    convolutions on the CPU (mkldnn), on CUDA only to graphs whose convolutions have static shapes."""
    import torch._inductor.config

    with (
        torch._dynamo.config.patch(recompile_limit=limit, fail_on_recompile_limit_hit=True),
        torch._functorch.config.patch(donated_buffer=False),
        torch._inductor.config.patch(layout_optimization=False),
    ):
        yield


def _same_layout(grad: torch.Tensor, param: torch.Tensor) -> bool:
    """Whether ``grad`` has ``param``'s strides in every dimension of size > 1 (autograd's layout contract for
    ``.grad``: a channels_last weight gets a channels_last gradient)."""
    return all(g == p for g, p, n in zip(grad.stride(), param.stride(), param.shape) if n > 1)


def _in_layout_of(param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad`` copied into ``param``'s layout: one ``contiguous`` copy for a contiguous or channels-last parameter
    (compiled backward graphs on the CPU return convolution weight gradients channels-last), else into a tensor of
    the parameter's strides."""
    for layout in (torch.contiguous_format, torch.channels_last):
        if param.is_contiguous(memory_format=layout):
            return grad.contiguous(memory_format=layout)
    return torch.empty_strided(param.shape, param.stride(), dtype=grad.dtype, device=grad.device).copy_(grad)


class Trainer:
    """A method's networks, optimisers and grad scalers, and one training step (no file I/O).

    A step is ``prepare`` (host side: per-image generators, ``Method.host_prepare``, the copy to the device)
    then ``step`` (device side). ``step`` runs both phases' forward and backward passes, then applies the
    updates: a phase whose loss is not finite is skipped, and a non-finite generator loss skips the
    discriminator update too (sg2im). Deciding that needs the losses' values on the host -- one
    synchronisation per step -- except with fused Adam and no grad scaler, where the flags go to the fused
    kernels on the device (``found_inf``) and the host reads them only when it logs (no synchronisation in a
    step). The discriminator's forward pass does not depend on the generator's update (it reads the generator
    step's detached ``cache``), so updating both after both backward passes gives sg2im's "G update, then D
    update" numbers exactly.
    """

    def __init__(
        self,
        method: Method,
        cfg: TrainConfig,
        device: torch.device,
        dist_info: DistInfo = DistInfo(),
        rebalance: Rebalancing | None = None,
    ):
        self.method, self.cfg, self.device, self.dist = method, cfg, device, dist_info
        self.rebalance = rebalance
        self.roles = dict(method.roles())
        nets = method.build_networks(torch.Generator().manual_seed(derive_seed(cfg.seed, INIT)))
        if set(nets) != set(self.roles):
            raise ValueError(f"{method.name}: networks {sorted(nets)} do not match roles {sorted(self.roles)}")
        if "generator" not in self.roles.values():
            raise ValueError(f"{method.name}: no network has the generator role")
        if dist_info.enabled and cfg.sync_batchnorm and device.type == "cuda":
            nets = {k: nn.SyncBatchNorm.convert_sync_batchnorm(v) for k, v in nets.items()}
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.nets: dict[str, nn.Module] = {k: v.to(device, memory_format=self.memory_format) for k, v in nets.items()}
        self.adam = adam_kernels(cfg, device)
        self.optimizers = {}
        for name, net in self.nets.items():
            opt = method.optimizer(name)
            kernels = {"fused": True} if self.adam == "fused" else {"foreach": True}
            self.optimizers[name] = torch.optim.Adam(
                net.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay, **kernels
            )
        self.amp = cfg.amp
        self.amp_dtype = torch.float16 if cfg.amp_dtype == "float16" else torch.bfloat16
        scale = self.amp and self.amp_dtype == torch.float16
        self.scalers = {
            phase: torch.amp.GradScaler(device.type, enabled=scale) for phase in ("generator", "discriminator")
        }
        # no synchronisation per step: fused kernels take the skip flags on the device (a grad scaler sets its own)
        self.device_skip = self.adam == "fused" and not scale
        self._pending: list[torch.Tensor] = []  # device skip flags of steps not yet read by the host
        self.wrapped: dict[str, nn.Module] = {}  # as trained in its own role's phase: DDP, compiled
        self.frozen: dict[str, nn.Module] = {}  # as called, frozen, in the other role's phase: compiled, no DDP
        compiled = functools.partial(
            torch.compile, backend=cfg.compile_backend, mode=None if cfg.compile_mode == "default" else cfg.compile_mode
        )
        for name, net in self.nets.items():
            ddp = dist_info.enabled and any(p.requires_grad for p in net.parameters())
            module: nn.Module = net
            if ddp:
                module = nn.parallel.DistributedDataParallel(
                    net,
                    device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=method.ddp_find_unused_parameters,
                )
            self.wrapped[name] = compiled(module) if cfg.compile else module
            if not cfg.compile:
                self.frozen[name] = net
            elif ddp:
                self.frozen[name] = compiled(net)
            else:  # the same compiled module (the frozen call is a second cache entry: other guards)
                self.frozen[name] = self.wrapped[name]
        # and the method's own step functions (RetrieveGAN: the retrieval iterations), or their eager forms
        method.compile_functions(compiled if cfg.compile else as_is)

    # --- one step -----------------------------------------------------------------------------------
    def names(self, role: str) -> list[str]:
        return [n for n, r in self.roles.items() if r == role]

    def _view(self, role: str) -> dict[str, nn.Module]:
        """Networks of ``role`` as wrapped for training; the others without DDP, compiled if ``compile`` (a
        discriminator in the generator's phase: its forward and the backward to the generator's outputs)."""
        return {n: self.wrapped[n] if r == role else self.frozen[n] for n, r in self.roles.items()}

    @contextlib.contextmanager
    def _frozen(self, role: str) -> Iterator[None]:
        """Freeze every network that is not of ``role`` (no gradient, no DDP hook) for one phase."""
        saved = [
            (param, param.requires_grad)
            for n, r in self.roles.items()
            if r != role
            for param in self.nets[n].parameters()
        ]
        for param, _ in saved:
            param.requires_grad_(False)
        try:
            yield
        finally:
            for param, flag in saved:  # parameters a method froze on purpose stay frozen
                param.requires_grad_(flag)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def _backward(self, role: str, loss: torch.Tensor) -> torch.Tensor:
        """Gradients of ``loss`` for the networks of ``role``; returns the device flag "the loss is finite".

        Without DDP the gradients come from ``torch.autograd.grad`` for the role's trainable parameters and are
        set as their ``.grad``: the same values as ``backward()`` into cleared gradients (the same graph, the
        same accumulation of a parameter's uses), without autograd's per-parameter ``AccumulateGrad`` node and
        its ``detach`` (one dispatched op per parameter: 140 of sg2im's step at the paper shapes). DDP reduces
        gradients in ``AccumulateGrad`` hooks: it keeps ``backward()``."""
        for name in self.names(role):
            self.optimizers[name].zero_grad(set_to_none=True)
        finite = torch.isfinite(loss.detach())
        scaled = self.scalers[role].scale(loss)
        params = [p for name in self.names(role) for p in self.nets[name].parameters() if p.requires_grad]
        if self.dist.enabled or not params:
            scaled.backward()
            return finite
        for param, grad in zip(params, torch.autograd.grad(scaled, params, allow_unused=True)):
            if grad is not None and not _same_layout(grad, param):  # AccumulateGrad's layout contract
                grad = _in_layout_of(param, grad)
            param.grad = grad
        return finite

    def _apply(self, role: str, skip: torch.Tensor | bool) -> None:
        """Adam step of the networks of ``role`` unless ``skip`` (a host bool, or a device flag for fused Adam)."""
        scaler = self.scalers[role]
        if isinstance(skip, torch.Tensor):
            for name in self.names(role):
                self.optimizers[name].found_inf = skip  # read by the fused kernels: skip without a sync
                try:
                    self.optimizers[name].step()
                finally:
                    del self.optimizers[name].found_inf
            return
        if skip:
            return
        for name in self.names(role):
            scaler.step(self.optimizers[name])
        scaler.update()

    def noise_keys(self, batch: SceneGraphBatch, step: int, epoch: int) -> tuple[tuple[int, ...], list[int]]:
        """``(prefix, keys)`` of the per-image noise generators (``derive_seed(*prefix, key)``): an image's id
        within its epoch (the epoch permutation shows every image once), or, under the rarity batch sampler
        (which draws with replacement: an image may fill several slots of a batch or of nearby batches), the
        image's slot in global batch ``step`` (= the sampler's batch number), so that every draw of an image
        gets its own noise. Neither depends on the number of processes (the sampler's ``local_slots``: this
        process's share of the global batch)."""
        if self.rebalance is not None and self.rebalance.sampler is not None:
            return (self.cfg.seed, TRAIN_SLOT_NOISE, step), list(self.rebalance.sampler.local_slots)
        return (self.cfg.seed, TRAIN_NOISE, epoch), batch.image_ids.tolist()

    def context(self, batch: SceneGraphBatch, step: int, epoch: int, log_step: bool = False) -> StepContext:
        gens = image_generators(*self.noise_keys(batch, step, epoch), self.device)
        weights = None if self.rebalance is None else self.rebalance.pixel_weights(batch)
        if weights is not None:
            weights = weights.to(self.device, non_blocking=True)
        return StepContext(
            step=step, epoch=epoch, device=self.device, generators=gens, log_step=log_step, pixel_weights=weights
        )

    def is_log_step(self, step: int) -> bool:
        """Whether the step after ``step`` completed steps is written to losses.jsonl."""
        return (step + 1) % self.cfg.log_every == 0 or step + 1 == self.cfg.steps

    def prepare(self, batch: SceneGraphBatch, step: int, epoch: int) -> tuple[SceneGraphBatch, StepContext]:
        """Host side of a step (CPU batch in): per-image generators, the method's host inputs, the copy to the
        device (asynchronous from pinned memory: the loader pins its batches, ``host_prepare``'s tensors are pinned
        here; pinned tensors are not copied again)."""
        ctx = self.context(batch, step, epoch, self.is_log_step(step))
        batch = self.method.host_prepare(batch)
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True)
        if self.memory_format is torch.channels_last:
            batch = dataclasses.replace(batch, images=batch.images.contiguous(memory_format=torch.channels_last))
        return batch, ctx

    def step(self, batch: SceneGraphBatch, ctx: StepContext) -> dict[str, Any]:
        """Device side of a step: both phases, then the updates (see the class docstring). Returns the logs:
        ``G`` / ``D`` detached loss terms (device tensors) and ``skipped`` (1 if the generator update was skipped;
        a device tensor when no synchronisation was made)."""
        if not self.cfg.compile:
            return self._step(batch, ctx)
        from torch._dynamo.exc import FailOnRecompileLimitHit

        try:
            with compile_settings():
                return self._step(batch, ctx)
        except FailOnRecompileLimitHit as exc:
            raise RuntimeError(
                f"train.compile: a compiled function of {self.method.name} needed more than "
                f"{COMPILE_RECOMPILE_LIMIT} graphs (COMPILE_RECOMPILE_LIMIT), i.e. it recompiled for new input shapes "
                "batch after batch (TORCH_LOGS=recompiles names the failing guards; docs/architecture.md, "
                "'torch.compile'); it is not run eager instead. Train without train.compile."
            ) from exc

    def _step(self, batch: SceneGraphBatch, ctx: StepContext) -> dict[str, Any]:
        self.method.train_modes(self.nets, ctx.step)
        with self._frozen("generator"):
            with self._autocast():
                g_out = self.method.generator_step(self._view("generator"), batch, ctx)
            g_ok = self._backward("generator", g_out.loss)
        logs: dict[str, Any] = {"G": dict(g_out.logs), "D": {}, "skipped": 0, "meta": dict(g_out.meta)}
        d_ok = None
        if self.names("discriminator"):
            with self._frozen("discriminator"):
                with self._autocast():
                    d_out = self.method.discriminator_step(self._view("discriminator"), batch, g_out.cache, ctx)
                if d_out is not None:
                    logs["D"] = dict(d_out.logs)
                    d_ok = self._backward("discriminator", d_out.loss)
        flags = torch.stack([g_ok, g_ok if d_ok is None else d_ok])
        if self.dist.enabled:  # every process takes the same decision
            flags = flags.to(torch.int32)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
            flags = flags.bool()
        g_skip = ~flags[0]
        d_skip = g_skip | ~flags[1]
        if self.device_skip:
            self._apply("generator", g_skip.float())
            if d_ok is not None:
                self._apply("discriminator", d_skip.float())
            self._pending.append(g_skip | d_skip)
            if len(self._pending) >= 64:  # fold on the device, without reading anything
                self._pending = [torch.stack(self._pending).any()]
            logs["skipped"] = g_skip.to(torch.int64)
            return logs
        g_skip_host, d_skip_host = torch.stack([g_skip, d_skip]).tolist()  # the step's one synchronisation
        if (g_skip_host or d_skip_host) and not self.cfg.skip_nonfinite:
            raise FloatingPointError(f"non-finite {'generator' if g_skip_host else 'discriminator'} loss")
        self._apply("generator", g_skip_host)
        if d_ok is not None:
            self._apply("discriminator", d_skip_host)
        logs["skipped"] = int(g_skip_host)
        return logs

    def train_step(self, batch: SceneGraphBatch, step: int, epoch: int) -> dict[str, Any]:
        """Generator update, then discriminator update, on one (local, CPU) batch. Returns detached logs (the
        generator step's diagnostics of a logged step under ``"meta"``)."""
        return self.step(*self.prepare(batch, step, epoch))

    def check_finite(self) -> None:
        """With device-side skipping: read the skip flags of the steps since the last call (one synchronisation)
        and stop if a loss was not finite and ``skip_nonfinite`` is off. Call before saving state."""
        if not self._pending:
            return
        skipped = bool(torch.stack(self._pending).any())
        self._pending.clear()
        if skipped and not self.cfg.skip_nonfinite:
            raise FloatingPointError("non-finite loss (update skipped on the device; skip_nonfinite is false)")

    # --- state --------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "networks": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "scalers": {k: v.state_dict() for k, v in self.scalers.items()},
        }

    def load_state(self, payload: Mapping[str, Any]) -> None:
        for name, net in self.nets.items():
            net.load_state_dict(payload["networks"][name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(payload["optimizers"][name])
        for name, scaler in self.scalers.items():
            if payload["scalers"].get(name):
                scaler.load_state_dict(payload["scalers"][name])


def make_loader(
    dataset: SceneGraphDataset,
    cfg: TrainConfig,
    epoch: int,
    start: int,
    dist_info: DistInfo,
    device: torch.device,
    rebalance: Rebalancing | None = None,
) -> torch.utils.data.DataLoader:
    if rebalance is not None and rebalance.sampler is not None:  # rarity.dataset: global batches = step numbers
        per_epoch = len(dataset) // cfg.batch_size
        sampler = rebalance.sampler.batches(epoch * per_epoch + start, per_epoch - start)
    else:
        sampler = EpochBatchSampler(
            len(dataset), cfg.batch_size, cfg.seed, epoch, start, dist_info.rank, dist_info.world_size
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_scene_graphs,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )


def _sha256_or_none(path: Path | None) -> str | None:
    return None if path is None else io.sha256_file(path)


def config_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(runinfo.to_jsonable(record), sort_keys=True).encode()).hexdigest()


class LossLog:
    """Append-only JSONL loss log (one line per ``log_every`` steps), truncated to a step on resume."""

    def __init__(self, path: Path, keep_until_step: int):
        self.path = path
        kept = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):  # a killed run may leave a torn last line
                    if json.loads(line).get("step", 0) <= keep_until_step:
                        kept.append(line + "\n")
        io.write_text(path, "".join(kept))
        self._handle = open(path, "a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _flat_logs(logs: Mapping[str, Any]) -> dict[str, float]:
    """``{"G/<term>": value, "D/<term>": value, "meta/<name>": value, "skipped": 0|1}`` from a step's logs
    (``meta``: the method's diagnostics of a logged step): every device value read in one copy to the host."""
    keys = [f"{phase}/{key}" for phase in ("G", "D", "meta") for key in logs.get(phase, {})]
    values = [logs[phase][key] for phase in ("G", "D", "meta") for key in logs.get(phase, {})]
    values.append(logs.get("skipped", 0))
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if tensors:
        host = iter(torch.stack([t.detach().float().reshape(()) for t in tensors]).tolist())
        values = [next(host) if isinstance(v, torch.Tensor) else float(v) for v in values]
    flat = {k: round(float(v), 6) for k, v in zip(keys, values)}
    flat["skipped"] = int(values[-1])
    return flat


def _snapshot(trainer: Trainer, method_name: str, step: int, path: Path) -> None:
    nets = {n: trainer.nets[n].state_dict() for n in trainer.names("generator")}
    ckpt.save(path, {"format": SNAPSHOT_FORMAT, "method": method_name, "step": step, "networks": nets})


def train(
    method_name: str,
    method_params: Mapping[str, Any] | None,
    cfg: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    patches_csv: str | Path | None = None,
    inputs: Mapping[str, str | Path] | None = None,
    resume: bool = False,
    progress: bool = True,
    rarity: RarityConfig | None = None,
    rarity_scores: str | Path | None = None,
) -> TrainResult:
    """Train ``method_name`` on ``<data_dir>/train.json`` and write its run folder ``out_dir``. ``rarity``: the
    ``rarity`` section (dataset / loss rebalancing; None: off), ``rarity_scores``: its ``rarity.npz``."""
    out_dir = Path(out_dir)
    data_dir = Path(data_dir)
    patches = None if patches_csv is None else Path(patches_csv)
    device = pick_device(cfg.device, "train.device", int(os.environ.get("LOCAL_RANK", "0")))
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    dist_info = init_distributed(device.type == "cuda")
    try:
        return _train(
            method_name,
            method_params,
            cfg,
            data_dir,
            out_dir,
            patches,
            inputs,
            resume,
            progress,
            device,
            dist_info,
            rarity or RarityConfig(),
            rarity_scores,
        )
    finally:
        if dist_info.enabled and owns_group:
            torch.distributed.destroy_process_group()


def _train(
    method_name: str,
    method_params: Mapping[str, Any] | None,
    cfg: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    patches: Path | None,
    inputs: Mapping[str, str | Path] | None,
    resume: bool,
    progress: bool,
    device: torch.device,
    dist_info: DistInfo,
    rarity: RarityConfig,
    rarity_scores: str | Path | None,
) -> TrainResult:
    with torch_flags(cfg, device):
        dataset = SceneGraphDataset(data_dir, "train", patches)
        method = create_method(method_name, method_params, dataset.spec, inputs)
        if method.needs_patch_ids and patches is None:
            raise ConfigError(f"{method_name} needs the patch table (--patches)")
        if rarity.loss and not method.supports_rarity_loss:
            raise ConfigError(
                f"rarity.loss: {method_name} has no reconstruction loss to weight (supported: sg2im, "
                "RetrieveGAN and PasteGAN)"
            )
        rebalance = rebalancing(
            rarity, rarity_scores, dataset, cfg.batch_size, cfg.seed, dist_info.rank, dist_info.world_size
        )
        resolved = {
            "method": method_name,
            "method_config": method.config,
            "train": cfg,
            "data_dir": str(data_dir),
            "patches": None if patches is None else str(patches),
            "inputs": {k: str(v) for k, v in method.inputs.items()},
            "spec": dataset.spec,
            # rarity rebalancing: recorded when a switch is on; absent = both off (a default run's run.json is
            # byte-identical to one of a harness without the option)
            **({} if rebalance is None else {"rarity": {"config": rarity, **rebalance.record()}}),
        }
        identity = {
            "method": method_name,
            "method_config": method.config,
            "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in TrainConfig.OPERATIONAL},
            "train_sha256": io.sha256_file(dataset.graphs_path),
            "patches_sha256": _sha256_or_none(patches),
            "inputs": {k: str(v) for k, v in method.inputs.items()},
        }
        if rebalance is not None:  # absent when off: the hash (and the checkpoint) of a default run is unchanged
            identity["rarity"] = rebalance.identity()
        chash = config_hash(identity)
        state_dir = out_dir / "state" / chash[:16]
        trainer = Trainer(method, cfg, device, dist_info, rebalance)
        step, resumed_from = 0, None
        last = state_dir / "last.pt"
        finished = out_dir / "checkpoint.pt"
        if resume and not last.exists() and finished.exists() and dist_info.is_main:
            # a finished run of the same configuration, asked for more steps: continue from its checkpoint
            previous = ckpt.load(finished)
            if previous.get("config_hash") == chash and int(previous["step"]) < cfg.steps:
                state_dir.mkdir(parents=True, exist_ok=True)
                if (out_dir / "losses.jsonl").exists():
                    shutil.copyfile(out_dir / "losses.jsonl", state_dir / "losses.jsonl")
                if (out_dir / "snapshots").is_dir():
                    shutil.copytree(out_dir / "snapshots", state_dir / "snapshots", dirs_exist_ok=True)
                shutil.copyfile(finished, last)
        barrier(dist_info)
        if resume and last.exists():
            payload = ckpt.load(last, map_location=device)
            if payload.get("config_hash") != chash:
                raise InputError(last, "state was written by another configuration")
            trainer.load_state(payload)
            step = resumed_from = int(payload["step"])
            if rebalance is not None and rebalance.sampler is not None:
                try:
                    next_batch = rebalance.sampler.load_state_dict(payload.get("batch_sampler") or {})
                except ValueError as exc:
                    raise InputError(last, str(exc)) from exc
                if next_batch != step:
                    raise InputError(last, f"batch sampler at batch {next_batch}, training at step {step}")
        elif dist_info.is_main:
            shutil.rmtree(state_dir, ignore_errors=True)
        barrier(dist_info)

        steps_per_epoch = len(dataset) // cfg.batch_size
        if steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size {cfg.batch_size} exceeds the {len(dataset)} training images")

        def payload_at(current: int) -> dict[str, Any]:
            return {
                "format": ckpt.FORMAT,
                "version": ckpt.VERSION,
                "method": method_name,
                "method_config": runinfo.to_jsonable(method.config),
                "train_config": runinfo.to_jsonable(cfg),
                "spec": runinfo.to_jsonable(dataset.spec),
                "inputs": {k: str(v) for k, v in method.inputs.items()},
                "config_hash": chash,
                "step": current,
                "epoch": current // steps_per_epoch,
                "world_size": dist_info.world_size,
                **trainer.state(),
                **(
                    {"batch_sampler": rebalance.sampler.state_dict(current)}
                    if rebalance is not None and rebalance.sampler is not None
                    else {}
                ),
            }

        log = None
        if dist_info.is_main:
            state_dir.mkdir(parents=True, exist_ok=True)
            runinfo.write_run_json(state_dir, "train", resolved, cfg.seed, {"config_hash": chash})
            log = LossLog(state_dir / "losses.jsonl", step)
            snapshot0 = state_dir / "snapshots" / f"step_{0:08d}.pt"
            if step == 0:
                _snapshot(trainer, method_name, 0, snapshot0)
            for stale in (state_dir / "snapshots").glob("step_*.pt"):
                if int(stale.stem.split("_")[1]) > step:
                    stale.unlink()
        start_step, start_time = step, time.perf_counter()
        bar = progress_bar(
            total=cfg.steps,
            initial=step,
            desc=f"train {method_name}",
            unit="step",
            disable=not (progress and dist_info.is_main),
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
        )
        try:
            while step < cfg.steps:
                epoch, offset = divmod(step, steps_per_epoch)
                for batch in make_loader(dataset, cfg, epoch, offset, dist_info, device, rebalance):
                    logs = trainer.train_step(batch, step, epoch)
                    step += 1
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        trainer.check_finite()
                    if log is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                        flat = _flat_logs(logs)
                        skipped = flat.pop("skipped")
                        meta = {k[len("meta/") :]: flat.pop(k) for k in list(flat) if k.startswith("meta/")}
                        # no wall times here (a tracked output: byte-identical across runs); those go to
                        # the provenance line of the job log and Snakemake's benchmark file
                        log.write({"step": step, "epoch": epoch, "meta": {"skipped": skipped, **meta}, **flat})
                        bar.set_postfix({k: f"{v:.3f}" for k, v in flat.items() if k.endswith("/total")})
                    if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                        trainer.check_finite()
                        if dist_info.is_main:
                            ckpt.save(last, payload_at(step))
                        barrier(dist_info)
                    if log is not None and cfg.snapshot_every and step % cfg.snapshot_every == 0:
                        _snapshot(trainer, method_name, step, state_dir / "snapshots" / f"step_{step:08d}.pt")
                    if step >= cfg.steps:
                        break
        finally:
            bar.close()
            if log is not None:
                log.close()
        trainer.check_finite()
        wall = time.perf_counter() - start_time
        throughput = (step - start_step) * cfg.batch_size / max(wall, 1e-9)
        final = out_dir / "checkpoint.pt"
        if dist_info.is_main:
            final_snapshot = state_dir / "snapshots" / f"step_{step:08d}.pt"
            if not final_snapshot.exists():
                _snapshot(trainer, method_name, step, final_snapshot)
            ckpt.save(final, payload_at(step))
            io.write_text(out_dir / "losses.jsonl", (state_dir / "losses.jsonl").read_text(encoding="utf-8"))
            snapshots = out_dir / "snapshots"
            shutil.rmtree(snapshots, ignore_errors=True)
            os.replace(state_dir / "snapshots", snapshots)
            # resumed_from and the times differ between an interrupted and an uninterrupted run of the same
            # computation: provenance (job log), not run.json
            runinfo.write_run_json(
                out_dir,
                "train",
                resolved,
                cfg.seed,
                {
                    "config_hash": chash,
                    "steps": step,
                    "world_size": dist_info.world_size,
                    "method_notes": dict(method.notes()),
                    "device": str(device),
                    "checkpoint_sha256": io.sha256_file(final),
                },
                measured={
                    "resumed_from": resumed_from,
                    "wall_seconds_this_invocation": round(wall, 3),
                    "images_per_second_this_invocation": round(throughput, 3),
                },
            )
            shutil.rmtree(state_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                (out_dir / "state").rmdir()
        barrier(dist_info)
    return TrainResult(
        checkpoint=final, steps=step, resumed_from=resumed_from, wall_seconds=wall, images_per_second=throughput
    )


# --- trained methods --------------------------------------------------------------------------------
def load_trained(
    checkpoint_path: str | Path, device: torch.device | str = "cpu", inputs: Mapping[str, str | Path] | None = None
) -> tuple[Method, dict[str, nn.Module], dict[str, Any]]:
    """Rebuild a trained method and its networks (eval mode) from a checkpoint; returns (method, nets, payload).

    ``inputs`` overrides the extra input paths recorded at training time (e.g. after moving files)."""
    from retrievegan.config import from_mapping

    payload = ckpt.load(checkpoint_path, map_location="cpu")
    spec = from_mapping(DataSpec, payload["spec"], "checkpoint spec")
    merged_inputs = {**payload.get("inputs", {}), **{k: str(v) for k, v in (inputs or {}).items()}}
    method = create_method(payload["method"], payload["method_config"], spec, merged_inputs)
    nets = method.build_networks(torch.Generator().manual_seed(0))
    for name, net in nets.items():
        try:
            net.load_state_dict(payload["networks"][name])
        except (KeyError, RuntimeError) as exc:
            raise InputError(checkpoint_path, f"network {name!r} does not match the method's config: {exc}") from exc
        net.to(device).eval()
    return method, nets, payload


def load_trained_on(
    checkpoint_path: str | Path,
    data_dir: str | Path,
    split: str,
    device_name: str = "cpu",
    inputs: Mapping[str, str | Path] | None = None,
    patches_csv: str | Path | None = None,
    use_masks: bool = True,
) -> tuple[Method, dict[str, nn.Module], dict[str, Any], SceneGraphDataset, torch.device]:
    """A trained run ready to evaluate on a split: (method, nets (eval mode), checkpoint payload, the split's dataset
    checked against the model's training data, the device of ``device_name``)."""
    device = pick_device(device_name)
    method, nets, payload = load_trained(checkpoint_path, device, inputs)
    dataset = SceneGraphDataset(data_dir, split, patches_csv, use_masks=use_masks)
    check_spec(method.spec, dataset.spec, dataset.graphs_path)
    return method, nets, payload, dataset, device


def load_snapshot(path: str | Path, nets: Mapping[str, nn.Module]) -> int:
    """Load a generator snapshot into ``nets`` (in place); returns its step."""
    payload = io.read_torch(path, "generator snapshot not found")
    if not isinstance(payload, dict) or payload.get("format") != SNAPSHOT_FORMAT:
        raise InputError(path, f"not a {SNAPSHOT_FORMAT} file")
    for name, state in payload["networks"].items():
        if name not in nets:
            raise InputError(path, f"snapshot has network {name!r} that the method does not build")
        nets[name].load_state_dict(state)
    return int(payload["step"])
