"""Co-occurrence embedding F_occur (`retrievegan cooccur`), paper §3.3 "co-occurrence penalty".

F_occur maps a patch to a unit vector such that patches cut from the *same* image are close and
patches from *different* images are far; RetrieveGAN's co-occurrence loss (eq. 5) is the pairwise
distance of the retrieved patches in this space. The paper trains it with a triplet loss on the
training patches and does not say on what input; ours:

* input: the patch pixels (``(C, C, 3)`` crops of the bank), through ``CooccurNet``: a small CNN whose
  multi-scale mean/std statistics (input + every stage) go through a linear layer to an L2-normalised
  ``embed_dim`` vector. Pixels rather than the frozen patch features keep F_occur independent of the
  patch-feature backbone that E_p (the thing the co-occurrence loss trains) sees.
* triplets: each batch takes ``images_per_batch`` distinct training images with >= 2 patches and two
  distinct patches of each; every patch is an anchor, its partner the positive, and each of the other
  ``2P - 2`` patches of the batch (all from other images) a negative ("batch-all" triplets, Hermans et
  al. 2017): ``max(0, d(a, p) - d(a, n) + margin)`` averaged over the triplets with a positive loss.
  Only ``split == "train"`` patches and their image ids are used; never the synthetic theme.

Evaluation (val split): same-image recall@k -- for each val patch, whether at least one other patch
of its image is among its k nearest val patches (the standard Recall@K of metric learning) -- for the
trained network, for the same network untrained (a random embedding) and the analytic chance level.
On the synthetic benchmark, theme precision@k (share of the k neighbours with the query's hidden
theme) is reported too: evaluation only.

Outputs: ``<model_dir>/checkpoint.pt``, ``<model_dir>/run.json``, ``<embeddings>`` ``(P, E)`` float32 (every
bank row, all splits) and the metrics JSON.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from retrievegan import io, runinfo, seeds
from retrievegan.device import pick_device
from retrievegan.embed.bank import image_keys, load_bank
from retrievegan.embed.nets import CooccurNet, to_input
from retrievegan.errors import InputError
from retrievegan.models.init import meta_device
from retrievegan.progressbar import progress_bar


@dataclasses.dataclass(frozen=True)
class CooccurConfig:
    seed: int = 0
    channels: tuple[int, ...] = (16, 32, 64)
    embed_dim: int = 64
    images_per_batch: int = 32  # P distinct images x 2 patches per step
    steps: int = 300
    lr: float = 0.002
    margin: float = 0.2  # on unit vectors (FaceNet's value)
    recall_k: tuple[int, ...] = (1, 5, 10)
    eval_max_queries: int = 6000  # val patches in the recall evaluation (first rows)
    batch_size: int = 512  # embedding batch
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 50

    def __post_init__(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError("channels must be a non-empty list of positive integers")
        if self.images_per_batch < 2:
            raise ValueError("images_per_batch must be >= 2 (negatives come from other images)")
        if not self.recall_k or any(k < 1 for k in self.recall_k):
            raise ValueError("recall_k must be a non-empty list of positive integers")
        for name in ("embed_dim", "steps", "eval_max_queries", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or self.margin < 0:
            raise ValueError("lr must be > 0 and margin >= 0")


@dataclasses.dataclass(frozen=True)
class TripletBatch:
    """One batch: ``rows`` ``(2P,)`` patch rows to embed; triplets index into ``rows``."""

    rows: np.ndarray  # (2P,) bank rows: rows[2i], rows[2i+1] from the i-th image of the batch
    anchor: np.ndarray  # (T,) T = 2P (2P - 2)
    positive: np.ndarray  # (T,)
    negative: np.ndarray  # (T,)


class TripletSampler:
    """Batch-all triplets over patch rows grouped by image (anchor, positive: same image; negative: other).

    ``rows`` ``(N,)`` bank rows of the usable patches and ``keys`` ``(N,)`` their image ids. Images with
    fewer than two patches cannot give a positive and are left out.
    """

    def __init__(self, rows: np.ndarray, keys: np.ndarray):
        rows, keys = np.asarray(rows, dtype=np.int64), np.asarray(keys, dtype=np.int64)
        if rows.shape != keys.shape:
            raise ValueError("rows and keys must have the same shape")
        order = np.argsort(keys, kind="stable")
        self.rows, keys = rows[order], keys[order]
        uniq, start, count = np.unique(keys, return_index=True, return_counts=True)
        usable = count >= 2
        self.image_start, self.image_count = start[usable], count[usable]
        self.num_images = int(usable.sum())

    def sample(self, rng: np.random.Generator, num_images: int) -> TripletBatch:
        if self.num_images < 2:
            raise ValueError("triplets need at least two images with two or more patches each")
        num_images = min(num_images, self.num_images)
        images = rng.choice(self.num_images, size=num_images, replace=False)
        start, count = self.image_start[images], self.image_count[images]
        first = rng.integers(0, count)
        second = rng.integers(0, count - 1)
        second = second + (second >= first)  # a different patch of the same image
        rows = np.stack([self.rows[start + first], self.rows[start + second]], axis=1).reshape(-1)
        n = 2 * num_images
        anchor = np.repeat(np.arange(n), n)
        other = np.tile(np.arange(n), n)
        partner = anchor ^ 1  # 2i <-> 2i + 1
        keep = (other // 2) != (anchor // 2)  # negatives: every patch of another image
        return TripletBatch(rows=rows, anchor=anchor[keep], positive=partner[keep], negative=other[keep])


def batch_all_triplet_loss(emb: torch.Tensor, batch: TripletBatch, margin: float) -> tuple[torch.Tensor, float]:
    """``emb`` ``(2P, E)`` -> (mean hinge over the active triplets, share of active triplets)."""
    d = torch.cdist(emb, emb)  # (2P, 2P)
    a, p, n = (torch.as_tensor(x, device=emb.device) for x in (batch.anchor, batch.positive, batch.negative))
    hinge = torch.relu(d[a, p] - d[a, n] + margin)
    active = hinge > 0
    loss = hinge.sum() / active.sum().clamp(min=1)
    return loss, float(active.float().mean())


def recall_at_k(emb: torch.Tensor, keys: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Same-image recall@k: share of queries with another patch of their image among their k nearest.

    ``emb`` ``(Q, E)``, ``keys`` ``(Q,)`` image ids. Each query's neighbours are the other Q - 1 rows
    (itself excluded); queries whose image has no other row are skipped.
    """
    keys_t = torch.as_tensor(np.asarray(keys, dtype=np.int64))
    q = len(keys_t)
    valid = (keys_t[:, None] == keys_t[None, :]).sum(1) >= 2
    d = torch.cdist(emb.float(), emb.float())
    d.fill_diagonal_(float("inf"))
    kmax = min(max(ks), q - 1)
    nn_idx = d.topk(kmax, dim=1, largest=False).indices  # (Q, kmax)
    same = keys_t[nn_idx] == keys_t[:, None]
    hits = same.cumsum(1) > 0
    return {f"recall@{k}": float(hits[valid, min(k, kmax) - 1].float().mean()) for k in ks}


def chance_recall_at_k(keys: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Expected same-image recall@k of a uniformly random ranking (hypergeometric, exact)."""
    from scipy.stats import hypergeom

    keys = np.asarray(keys)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    others = counts[inverse] - 1
    valid = others >= 1
    n = len(keys) - 1
    return {f"recall@{k}": float(np.mean(hypergeom.sf(0, n, others[valid], min(k, n)))) for k in ks}


def theme_precision_at_k(emb: torch.Tensor, themes: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Evaluation only: share of each query's k nearest other rows that have the query's theme."""
    th = torch.as_tensor(np.asarray(themes, dtype=np.int64))
    d = torch.cdist(emb.float(), emb.float())
    d.fill_diagonal_(float("inf"))
    kmax = min(max(ks), len(th) - 1)
    same = (th[d.topk(kmax, dim=1, largest=False).indices] == th[:, None]).float()
    return {f"theme_precision@{k}": float(same[:, : min(k, kmax)].mean()) for k in ks}


@torch.no_grad()
def embed_rows(
    model: CooccurNet,
    bank: np.ndarray,
    rows: np.ndarray | None,
    batch_size: int,
    device: torch.device,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """F_occur of bank ``rows`` (all rows when None) -> ``(len(rows), E)`` float32 (into ``out`` if given)."""
    model.eval()
    total = len(bank) if rows is None else len(rows)
    if out is None:
        out = np.empty((total, model.head.out_features), dtype=np.float32)
    for s in range(0, total, batch_size):
        chunk = bank[s : s + batch_size] if rows is None else bank[rows[s : s + batch_size]]
        out[s : s + len(chunk)] = model(to_input(np.asarray(chunk), device)).cpu().numpy()
    return out


def evaluate(
    model: CooccurNet,
    bank: np.ndarray,
    table: pd.DataFrame,
    cfg: CooccurConfig,
    device: torch.device,
    split: str = "val",
) -> dict[str, Any]:
    rows = np.flatnonzero(table["split"].to_numpy() == split)[: cfg.eval_max_queries]
    keys = image_keys(table)[rows]
    if len(rows) < 2 or not (np.unique(keys, return_counts=True)[1] >= 2).any():
        raise InputError("patches.csv", f"the {split} split has no image with two patches: no recall to compute")
    emb = torch.as_tensor(embed_rows(model, bank, rows, cfg.batch_size, device))
    out: dict[str, Any] = recall_at_k(emb, keys, cfg.recall_k)
    theme = table["theme"].to_numpy()[rows]
    if table["theme"].notna().all():
        out.update(theme_precision_at_k(emb, np.asarray(theme, dtype=np.int64), cfg.recall_k))
    return out


def build_model(cfg: CooccurConfig, device: torch.device) -> CooccurNet:
    from retrievegan.models.init import build

    gen = seeds.torch_generator(seeds.derive_seed(cfg.seed, seeds.INIT, seeds.tag("cooccur")))
    return build(lambda: CooccurNet(cfg.channels, cfg.embed_dim), gen).to(device)


def train_cooccur(
    patches_dir: str | Path,
    cfg: CooccurConfig,
    model_dir: str | Path,
    embeddings_path: str | Path,
    metrics_path: str | Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Train F_occur on train patches, evaluate on val, embed every bank patch; write all outputs."""
    t0 = time.perf_counter()
    bank, table = load_bank(patches_dir)
    device = pick_device(cfg.device, "cooccur.device")
    keys = image_keys(table)
    train_rows = np.flatnonzero(table["split"].to_numpy() == "train")
    sampler = TripletSampler(train_rows, keys[train_rows])
    if sampler.num_images < 2:
        raise InputError(
            Path(patches_dir) / "patches.csv",
            "need >= 2 training images with >= 2 patches to train the co-occurrence embedding",
        )
    model = build_model(cfg, device)
    untrained = evaluate(model, bank, table, cfg, device)
    val_keys = keys[np.flatnonzero(table["split"].to_numpy() == "val")[: cfg.eval_max_queries]]
    chance = chance_recall_at_k(val_keys, cfg.recall_k)
    theme = table["theme"]
    if theme.notna().all():
        val_theme = theme.to_numpy()[np.flatnonzero(table["split"].to_numpy() == "val")[: cfg.eval_max_queries]]
        # chance theme precision: a random other val row has the query's theme (leave-one-out)
        counts = np.bincount(np.asarray(val_theme, dtype=np.int64))
        loo = (counts[np.asarray(val_theme, dtype=np.int64)] - 1) / max(len(val_theme) - 1, 1)
        chance.update({f"theme_precision@{k}": float(loo.mean()) for k in cfg.recall_k})
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = seeds.numpy_rng(cfg.seed, seeds.TRAIN_NOISE, seeds.tag("cooccur"))
    history = []
    running, running_active, n_running = 0.0, 0.0, 0
    model.train()
    for step in progress_bar(range(cfg.steps), desc="cooccur", disable=not progress, unit="step"):
        batch = sampler.sample(rng, cfg.images_per_batch)
        x = to_input(np.asarray(bank[batch.rows]), device)
        loss, active = batch_all_triplet_loss(model(x), batch, cfg.margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += float(loss.detach())
        running_active += active
        n_running += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            history.append(
                {"step": step + 1, "loss": running / n_running, "active_triplets": running_active / n_running}
            )
            running, running_active, n_running = 0.0, 0.0, 0
    model.eval()
    trained = evaluate(model, bank, table, cfg, device)
    train_seconds = time.perf_counter() - t0
    model_dir = Path(model_dir)
    io.save_torch(
        model_dir / "checkpoint.pt",
        {
            "state_dict": model.cpu().state_dict(),
            "channels": list(cfg.channels),
            "embed_dim": cfg.embed_dim,
            "config": runinfo.to_jsonable(cfg),
        },
    )
    model.to(device)
    with io.atomic_memmap(embeddings_path, (len(bank), cfg.embed_dim), np.float32) as out:
        embed_rows(model, bank, None, cfg.batch_size, device, out=out)
    metrics = {
        "split": "val",
        "queries": int(len(val_keys)),
        "images": int(len(np.unique(val_keys))),
        "definition": "recall@k: share of val patches with >= 1 other patch of their image among their k nearest "
        "val patches (L2 in F_occur space, the query itself excluded)",
        "trained": trained,
        "untrained": untrained,
        "chance": chance,
        "beats_untrained": {k: trained[k] > untrained[k] for k in trained if k.startswith("recall@")},
        "beats_chance": {k: trained[k] > chance[k] for k in trained if k.startswith("recall@")},
    }
    io.write_json(metrics_path, metrics)
    seconds = time.perf_counter() - t0
    runinfo.write_run_json(
        model_dir,
        "cooccur",
        cfg,
        cfg.seed,
        {
            "patches_dir": str(patches_dir),
            "embeddings": str(embeddings_path),
            "metrics": str(metrics_path),
            "train_images": sampler.num_images,
            "history": history,
            "input": "patch pixels (CooccurNet: PatchCNN multi-scale mean/std -> linear -> L2 normalise)",
        },
        measured={"train_seconds": round(train_seconds, 3), "seconds": round(seconds, 3)},
    )
    return metrics


def load_cooccur(path: str | Path) -> CooccurNet:
    """The trained F_occur of ``retrievegan cooccur`` (eval mode, CPU)."""
    ckpt = io.read_torch(path, "co-occurrence checkpoint not found (run `retrievegan cooccur`)")
    try:
        with meta_device():
            model = CooccurNet(ckpt["channels"], ckpt["embed_dim"])
        model.load_state_dict(ckpt["state_dict"], assign=True)
    except (KeyError, RuntimeError) as exc:
        raise InputError(path, f"not a co-occurrence checkpoint: {exc}") from exc
    return model.eval()


def load_cooccur_embeddings(path: str | Path, num_patches: int | None = None) -> np.ndarray:
    """``(P, E)`` float32 memmap of ``cooccur_embeddings.npy`` (unit vectors, one per bank row)."""
    return io.load_table_array(
        path, np.float32, num_patches, "co-occurrence embeddings not found (run `retrievegan cooccur`)"
    )
