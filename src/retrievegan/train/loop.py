"""The training loop every GAN method shares (``retrievegan train``).

``train(...)`` builds the method's networks, one Adam optimiser per network, and runs
``TrainConfig.steps`` steps of "generator update, then discriminator update" (sg2im's order) over
the training split. Features:

* resumable checkpoints written atomically every ``checkpoint_every`` steps to
  ``<out_dir>/state/<config hash>/last.pt`` (networks, optimisers, grad scalers, step, global RNG
  states); ``resume=True`` continues from there. Data order and per-image noise derive from
  ``(seed, epoch, image_id)``, so a killed and resumed run computes the same parameters as an
  uninterrupted one (bit for bit on the CPU with ``deterministic``);
* mixed precision on CUDA (``amp``), ``torch.compile`` (``compile``), DistributedDataParallel when
  launched by ``torchrun`` (NCCL on CUDA, gloo on the CPU);
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
from tqdm import tqdm

from retrievegan import io, runinfo
from retrievegan.data.dataset import DataSpec, SceneGraphBatch, SceneGraphDataset, collate_scene_graphs
from retrievegan.data.rarity import RarityConfig
from retrievegan.errors import ConfigError, InputError
from retrievegan.seeds import INIT, TRAIN_NOISE, derive_seed, image_generators
from retrievegan.train import checkpoint as ckpt
from retrievegan.train.config import TrainConfig
from retrievegan.train.distributed import DistInfo, EpochBatchSampler, all_true, barrier, init_distributed
from retrievegan.train.method import Method, StepContext
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


def pick_device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@contextlib.contextmanager
def torch_flags(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms (warn-only on CUDA, where some kernels have no deterministic version) or
    cuDNN autotuning; the previous process-wide settings come back afterwards."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
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


class Trainer:
    """A method's networks, optimisers and grad scalers, and one training step (no file I/O)."""

    def __init__(self, method: Method, cfg: TrainConfig, device: torch.device, dist_info: DistInfo = DistInfo(),
                 rebalance: Rebalancing | None = None):
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
        self.nets: dict[str, nn.Module] = {k: v.to(device) for k, v in nets.items()}
        self.optimizers = {}
        for name, net in self.nets.items():
            opt = method.optimizer(name)
            self.optimizers[name] = torch.optim.Adam(net.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps,
                                                     weight_decay=opt.weight_decay)
        self.amp = cfg.amp and device.type == "cuda"
        self.amp_dtype = torch.float16 if cfg.amp_dtype == "float16" else torch.bfloat16
        scale = self.amp and self.amp_dtype == torch.float16
        self.scalers = {phase: torch.amp.GradScaler(device.type, enabled=scale)
                        for phase in ("generator", "discriminator")}
        self.wrapped: dict[str, nn.Module] = {}
        for name, net in self.nets.items():
            module: nn.Module = net
            if dist_info.enabled and any(p.requires_grad for p in net.parameters()):
                module = nn.parallel.DistributedDataParallel(
                    module, device_ids=[device.index] if device.type == "cuda" else None,
                    find_unused_parameters=method.ddp_find_unused_parameters)
            if cfg.compile:
                module = torch.compile(module, backend=cfg.compile_backend)
            self.wrapped[name] = module

    # --- one step -----------------------------------------------------------------------------------
    def names(self, role: str) -> list[str]:
        return [n for n, r in self.roles.items() if r == role]

    def _view(self, role: str) -> dict[str, nn.Module]:
        """Networks of ``role`` as wrapped for training; the others as plain modules."""
        return {n: self.wrapped[n] if r == role else self.nets[n] for n, r in self.roles.items()}

    @contextlib.contextmanager
    def _frozen(self, role: str) -> Iterator[None]:
        """Freeze every network that is not of ``role`` (no gradient, no DDP hook) for one phase."""
        saved = [(param, param.requires_grad) for n, r in self.roles.items() if r != role
                 for param in self.nets[n].parameters()]
        for param, _ in saved:
            param.requires_grad_(False)
        try:
            yield
        finally:
            for param, flag in saved:  # parameters a method froze on purpose stay frozen
                param.requires_grad_(flag)

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def _update(self, role: str, loss: torch.Tensor) -> bool:
        finite = all_true(bool(torch.isfinite(loss.detach()).item()), self.dist, self.device)
        if not finite:
            if not self.cfg.skip_nonfinite:
                raise FloatingPointError(f"non-finite {role} loss")
            return False
        names = self.names(role)
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        scaler = self.scalers[role]
        scaler.scale(loss).backward()
        for name in names:
            scaler.step(self.optimizers[name])
        scaler.update()
        return True

    def context(self, batch: SceneGraphBatch, step: int, epoch: int) -> StepContext:
        gens = image_generators((self.cfg.seed, TRAIN_NOISE, epoch), batch.image_ids.tolist(), self.device)
        weights = None if self.rebalance is None else self.rebalance.pixel_weights(batch)
        if weights is not None:
            weights = weights.to(self.device, non_blocking=True)
        return StepContext(step=step, epoch=epoch, device=self.device, generators=gens, pixel_weights=weights)

    def train_step(self, batch: SceneGraphBatch, step: int, epoch: int) -> dict[str, Any]:
        """Generator update, then discriminator update, on one (local) batch. Returns detached logs."""
        ctx = self.context(batch, step, epoch)
        batch = batch.to(self.device, non_blocking=True)
        self.method.train_modes(self.nets, step)
        with self._frozen("generator"), self._autocast():
            g_out = self.method.generator_step(self._view("generator"), batch, ctx)
        logs: dict[str, Any] = {"G": dict(g_out.logs), "D": {}, "skipped": 0}
        with self._frozen("generator"):
            g_ok = self._update("generator", g_out.loss)
        if not g_ok:
            logs["skipped"] = 1  # sg2im skips the whole iteration on a non-finite generator loss
            return logs
        if self.names("discriminator"):
            with self._frozen("discriminator"), self._autocast():
                d_out = self.method.discriminator_step(self._view("discriminator"), batch, g_out.cache, ctx)
            if d_out is not None:
                logs["D"] = dict(d_out.logs)
                with self._frozen("discriminator"):
                    if not self._update("discriminator", d_out.loss):
                        logs["skipped"] = 1
        return logs

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


def make_loader(dataset: SceneGraphDataset, cfg: TrainConfig, epoch: int, start: int, dist_info: DistInfo,
                device: torch.device, rebalance: Rebalancing | None = None) -> torch.utils.data.DataLoader:
    if rebalance is not None and rebalance.sampler is not None:  # rarity.dataset: global batches = step numbers
        per_epoch = len(dataset) // cfg.batch_size
        sampler = rebalance.sampler.batches(epoch * per_epoch + start, per_epoch - start)
    else:
        sampler = EpochBatchSampler(len(dataset), cfg.batch_size, cfg.seed, epoch, start, dist_info.rank,
                                    dist_info.world_size)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_scene_graphs, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))


def _sha256_or_none(path: Path | None) -> str | None:
    return None if path is None else ckpt.sha256_file(path)


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
    flat = {}
    for phase in ("G", "D"):
        for key, value in logs.get(phase, {}).items():
            flat[f"{phase}/{key}"] = round(float(value), 6)
    return flat


def _snapshot(trainer: Trainer, method_name: str, step: int, path: Path) -> None:
    nets = {n: trainer.nets[n].state_dict() for n in trainer.names("generator")}
    ckpt.save(path, {"format": SNAPSHOT_FORMAT, "method": method_name, "step": step, "networks": nets})


def train(method_name: str, method_params: Mapping[str, Any] | None, cfg: TrainConfig, data_dir: str | Path,
          out_dir: str | Path, patches_csv: str | Path | None = None, inputs: Mapping[str, str | Path] | None = None,
          resume: bool = False, progress: bool = True, rarity: RarityConfig | None = None,
          rarity_scores: str | Path | None = None) -> TrainResult:
    """Train ``method_name`` on ``<data_dir>/train.json`` and write its run folder ``out_dir``. ``rarity``: the
    ``rarity`` section (dataset / loss rebalancing; None: off), ``rarity_scores``: its ``rarity.npz``."""
    out_dir = Path(out_dir)
    data_dir = Path(data_dir)
    patches = None if patches_csv is None else Path(patches_csv)
    device = pick_device(cfg, int(os.environ.get("LOCAL_RANK", "0")))
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    dist_info = init_distributed(device.type == "cuda")
    try:
        return _train(method_name, method_params, cfg, data_dir, out_dir, patches, inputs, resume, progress, device,
                      dist_info, rarity or RarityConfig(), rarity_scores)
    finally:
        if dist_info.enabled and owns_group:
            torch.distributed.destroy_process_group()


def _train(method_name: str, method_params: Mapping[str, Any] | None, cfg: TrainConfig, data_dir: Path,
           out_dir: Path, patches: Path | None, inputs: Mapping[str, str | Path] | None, resume: bool, progress: bool,
           device: torch.device, dist_info: DistInfo, rarity: RarityConfig,
           rarity_scores: str | Path | None) -> TrainResult:
    with torch_flags(cfg, device):
        dataset = SceneGraphDataset(data_dir, "train", patches)
        method = create_method(method_name, method_params, dataset.spec, inputs)
        if method.needs_patch_ids and patches is None:
            raise ConfigError(f"{method_name} needs the patch table (--patches)")
        if rarity.loss and not method.supports_rarity_loss:
            raise ConfigError(f"rarity.loss: {method_name} has no reconstruction loss to weight (supported: sg2im, "
                              "RetrieveGAN and PasteGAN)")
        rebalance = rebalancing(rarity, rarity_scores, dataset, cfg.batch_size, cfg.seed, dist_info.rank,
                                dist_info.world_size)
        resolved = {
            "method": method_name,
            "method_config": method.config,
            "train": cfg,
            "data_dir": str(data_dir),
            "patches": None if patches is None else str(patches),
            "inputs": {k: str(v) for k, v in method.inputs.items()},
            "spec": dataset.spec,
            "rarity": {"config": rarity, **({} if rebalance is None else rebalance.record())},
        }
        identity = {
            "method": method_name,
            "method_config": method.config,
            "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in TrainConfig.OPERATIONAL},
            "train_sha256": ckpt.sha256_file(dataset.graphs_path),
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
            ckpt.restore_rng(payload["rng"])
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
            return {"format": ckpt.FORMAT, "version": ckpt.VERSION, "method": method_name,
                    "method_config": runinfo.to_jsonable(method.config), "train_config": runinfo.to_jsonable(cfg),
                    "spec": runinfo.to_jsonable(dataset.spec), "inputs": {k: str(v) for k, v in method.inputs.items()},
                    "config_hash": chash, "step": current, "epoch": current // steps_per_epoch,
                    "world_size": dist_info.world_size, "rng": ckpt.capture_rng(), **trainer.state(),
                    **({"batch_sampler": rebalance.sampler.state_dict(current)}
                       if rebalance is not None and rebalance.sampler is not None else {})}
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
        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {method_name}", unit="step",
                   disable=not (progress and dist_info.is_main), dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)
        try:
            while step < cfg.steps:
                epoch, offset = divmod(step, steps_per_epoch)
                for batch in make_loader(dataset, cfg, epoch, offset, dist_info, device, rebalance):
                    logs = trainer.train_step(batch, step, epoch)
                    step += 1
                    bar.update(1)
                    if log is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                        elapsed = time.perf_counter() - start_time
                        flat = _flat_logs(logs)
                        rate = (step - start_step) * cfg.batch_size / max(elapsed, 1e-9)
                        log.write({"step": step, "epoch": epoch, "seconds": round(elapsed, 3),
                                   "meta": {"images_per_s": round(rate, 3), "skipped": logs["skipped"]}, **flat})
                        bar.set_postfix({k: f"{v:.3f}" for k, v in flat.items() if k.endswith("/total")})
                    if step % cfg.checkpoint_every == 0 and step < cfg.steps:
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
            runinfo.write_run_json(out_dir, "train", resolved, cfg.seed, {
                "config_hash": chash, "steps": step, "resumed_from": resumed_from, "world_size": dist_info.world_size,
                "method_notes": dict(method.notes()),
                "device": str(device), "wall_seconds_this_invocation": round(wall, 3),
                "images_per_second_this_invocation": round(throughput, 3),
                "checkpoint_sha256": ckpt.sha256_file(final)})
            shutil.rmtree(state_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                (out_dir / "state").rmdir()
        barrier(dist_info)
    return TrainResult(checkpoint=final, steps=step, resumed_from=resumed_from, wall_seconds=wall,
                       images_per_second=throughput)


# --- trained methods --------------------------------------------------------------------------------
def load_trained(checkpoint_path: str | Path, device: torch.device | str = "cpu",
                 inputs: Mapping[str, str | Path] | None = None) -> tuple[Method, dict[str, nn.Module], dict[str, Any]]:
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
