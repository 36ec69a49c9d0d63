"""Claim C1's mechanism check (`retrievegan c1-mechanism`): can a loss on the composed image teach E_p compatibility
through the differentiable retrieval, when the loss certainly sees compatibility?

C1's test with a GAN mixes two questions: does the gradient path (loss -> composed image -> relaxed selection -> E_p)
work, and does the adversarial loss carry a compatibility signal at all (:mod:`retrievegan.eval.d_probe`)? This
positive control answers the first alone. The adversary is replaced by a frozen **compatibility critic**:

1. the critic (:class:`CompatCritic`: a small CNN whose last layer sees the whole image) is trained on the **train**
   split only to tell composites of a same-theme candidate set (label 1) from composites of a mixed-theme set of
   the same candidates (label 0), the pairs of :func:`retrievegan.eval.d_probe.draw_pair` drawn afresh every step;
   it never sees val or test. Its AUC on val (the probe's statistic) shows that it sees compatibility;
2. a **composite** (:func:`retrievegan.models.critic.paste_composite`) pastes each object's patch into its ground-truth box through the object's
   mask (the box where the source has no masks), in object order: theme clashes are visible to the critic;
3. E_p restarts from its initialisation (the learned arm's step-0 snapshot, the weights C1's arms start from) and is
   trained with the critic's non-saturating loss ``softplus(-critic(composite))`` on the retrieval's selection, in
   each retrieval mode (``hard`` straight-through, ``soft``, ``relaxed`` = eq. 4): the only trainable parameters are
   E_p's, and the loss reaches them only through the selection weights;
4. each trained E_p is scored like the learned arm (:mod:`retrievegan.eval.c1_controls`: test-time hard retrieval,
   scale 1, the sample seeds), on val along training and once on test at the end.

If E_p reaches the compatibility of the best fixed embedding (or more), the gradient path can teach compatibility,
and a learned arm that does not get there under the GAN lacks the signal, not the path.

Randomness: the critic's initial weights from ``seed``, E_p's from the run's snapshot; batches and the composites'
draws per (seed, step, image id); the retrieval's noise per (seed, mode, step, image id).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievegan import io
from retrievegan.errors import InputError

MECHANISM_TAG = zlib.crc32(b"c1_mechanism")
RETRIEVAL_MODES = ("hard", "soft", "relaxed")  # retrievegan.models.retrieval.MODES (that module imports torch)


@dataclasses.dataclass(frozen=True)
class MechanismConfig:
    """The ``claims.mechanism`` config section."""

    modes: tuple[str, ...] = ("hard", "soft", "relaxed")  # retrieval modes E_p is trained in
    critic_steps: int = 300  # ours: critic training steps (train split)
    critic_lr: float = 2.0e-3
    critic_channels: tuple[int, ...] = (16, 32, 64)  # conv stride-2 stages, then one linear layer over the whole map
    steps: int = 200  # ours: E_p steps under the critic (the RetrieveGAN runs: 240)
    lr: float = 1.0e-3  # E_p's Adam learning rate (the RetrieveGAN generator's)
    batch_size: int = 16
    eval_every: int = 50  # val compatibility along training
    k: int = 32  # candidates per object (the critic's pairs; the retrieval uses the method's retrieval.k)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.modes or any(m not in RETRIEVAL_MODES for m in self.modes):
            raise ValueError(f"mechanism.modes must be a non-empty subset of {RETRIEVAL_MODES}")
        if min(self.critic_steps, self.steps, self.batch_size, self.eval_every) < 1 or self.k < 2:
            raise ValueError("mechanism: steps, critic_steps, batch_size, eval_every must be >= 1 and k >= 2")
        if self.lr <= 0 or self.critic_lr <= 0 or not self.critic_channels:
            raise ValueError("mechanism: learning rates must be > 0 and critic_channels non-empty")


def build_critic(channels: Sequence[int], size: int, generator: Any) -> Any:
    """:class:`~retrievegan.models.critic.CompatCritic` for ``size`` px images, initialised from ``generator``."""
    from retrievegan.models.critic import CompatCritic
    from retrievegan.models.init import build

    return build(lambda: CompatCritic(channels, size), generator)


# --- data --------------------------------------------------------------------------------------------------------
def _batches(dataset: Any, batch_size: int, steps: int, seed: int, tag: int) -> Any:
    """``steps`` batches of ``dataset`` in epochs of a permutation from ``default_rng([seed, tag, epoch])``."""
    from retrievegan.data.dataset import collate_scene_graphs

    order: list[int] = []
    epoch = 0
    for _ in range(steps):
        while len(order) < batch_size:
            order += np.random.default_rng([seed, tag, epoch]).permutation(len(dataset)).tolist()
            epoch += 1
        take, order = order[:batch_size], order[batch_size:]
        yield collate_scene_graphs([dataset[i] for i in take])


def _pairs(
    batch: Any, candidates: np.ndarray, themes: np.ndarray, k: int, seed: int, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Same- and mixed-theme chosen ids ``(B, N)`` of a batch (images without a pair: first candidates, kept False)."""
    from retrievegan.eval.d_probe import draw_pair
    from retrievegan.models.patch_method import slot_rows

    rows = slot_rows(batch).numpy()
    same, mixed = np.full(rows.shape, -1, np.int64), np.full(rows.shape, -1, np.int64)
    keep = np.zeros(len(rows), bool)
    for b, image_id in enumerate(batch.image_ids.tolist()):
        objects = rows[b][rows[b] >= 0]
        pair = draw_pair(candidates[objects, :k], themes, np.random.default_rng([seed, MECHANISM_TAG, step, image_id]))
        first = candidates[objects, 0]
        same[b, : len(objects)], mixed[b, : len(objects)] = (pair[0], pair[1]) if pair is not None else (first, first)
        keep[b] = pair is not None
    return same, mixed, keep


def composite_of(method: Any, batch: Any, chosen: Any) -> Any:
    """Composites ``(B, 3, S, S)`` of the chosen bank ids ``(B, N)`` at the batch's ground-truth boxes and masks."""
    from retrievegan.models.critic import batch_composite
    from retrievegan.models.patch_method import slots_to_objects

    return batch_composite(batch, slots_to_objects(method.bank.crops(chosen), batch), method.spec.image_size)


def train_critic(
    method: Any, dataset: Any, candidates: np.ndarray, themes: np.ndarray, cfg: MechanismConfig, progress: bool = True
) -> tuple[Any, list[float]]:
    """The frozen compatibility critic (module docstring, step 1): (critic in eval mode, logged losses)."""
    import torch

    from retrievegan.progressbar import progress_bar

    critic = build_critic(
        cfg.critic_channels,
        method.spec.image_size,
        torch.Generator().manual_seed(int(zlib.crc32(f"critic/{cfg.seed}".encode()))),
    )
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr, betas=(0.5, 0.999))
    losses = []
    batches = _batches(dataset, cfg.batch_size, cfg.critic_steps, cfg.seed, zlib.crc32(b"critic"))
    for step, batch in enumerate(progress_bar(batches, total=cfg.critic_steps, desc="critic", disable=not progress)):
        same, mixed, keep = _pairs(batch, candidates, themes, cfg.k, cfg.seed, step)
        if not keep.any():
            continue
        idx = torch.from_numpy(np.flatnonzero(keep))
        images = torch.cat(
            [
                composite_of(method, batch, torch.from_numpy(same)).index_select(0, idx),
                composite_of(method, batch, torch.from_numpy(mixed)).index_select(0, idx),
            ]
        )
        labels = torch.cat([torch.ones(len(idx)), torch.zeros(len(idx))])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(critic(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    critic.eval().requires_grad_(False)
    return critic, losses


def train_ep(
    method: Any,
    retriever: Any,
    critic: Any,
    dataset: Any,
    mode: str,
    cfg: MechanismConfig,
    evaluate: Any = None,
    progress: bool = True,
) -> tuple[Any, list[dict[str, float]]]:
    """E_p (a copy of ``retriever``) trained under the frozen critic in retrieval ``mode`` (module docstring, step 3);
    ``evaluate(retriever) -> float`` every ``eval_every`` steps and at the end. Returns (E_p, the curve)."""
    import torch

    from retrievegan.models.critic import batch_composite
    from retrievegan.models.patch_method import slots_to_objects
    from retrievegan.progressbar import progress_bar
    from retrievegan.seeds import image_generators

    ep = copy.deepcopy(retriever).train().requires_grad_(True)
    opt = torch.optim.Adam(ep.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    mode_tag = zlib.crc32(mode.encode())
    curve = [{"step": 0, "compat_pairwise_same_theme": evaluate(ep)}] if evaluate else []
    batches = _batches(dataset, cfg.batch_size, cfg.steps, cfg.seed, zlib.crc32(b"ep"))
    for step, batch in enumerate(progress_bar(batches, total=cfg.steps, desc=f"E_p {mode}", disable=not progress), 1):
        batch = method.host_prepare(batch)
        host = batch.extras
        ids, counts = host["candidate_ids"], host["counts"]
        gens = image_generators((MECHANISM_TAG, cfg.seed, mode_tag, step), batch.image_ids.tolist())
        out = method.retrieve(method.embed(ep, ids), ids >= 0, gens, mode, True, counts=counts)
        crops = slots_to_objects(method.select_pixels(out, ids, mode), batch)
        loss = torch.nn.functional.softplus(-critic(batch_composite(batch, crops, method.spec.image_size))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if evaluate and (step % cfg.eval_every == 0 or step == cfg.steps):
            curve.append({"step": step, "compat_pairwise_same_theme": evaluate(ep), "loss": float(loss.detach())})
    return ep.eval().requires_grad_(False), curve


def c1_mechanism(
    checkpoint: str | os.PathLike[str],
    snapshots: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    patches_csv: str | os.PathLike[str],
    candidates_path: str | os.PathLike[str],
    controls_json: str | os.PathLike[str] | None,
    out_json: str | os.PathLike[str] | None,
    cfg: MechanismConfig,
    controls: Any,
    test_split: str = "test",
    inputs: Mapping[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The mechanism check of the learned arm's run ``checkpoint`` (module docstring); ``controls``: the
    :class:`~retrievegan.eval.c1_controls.ControlsConfig` (sample seeds, bootstrap) the scores share with C1's
    controls, whose file (``controls_json``, optional) gives the fixed arms' test values to compare with."""
    import torch

    from retrievegan.data.dataset import SceneGraphDataset, check_spec
    from retrievegan.data.patches import load_patch_table
    from retrievegan.data.scene_graph import read_split
    from retrievegan.embed.prefilter import load_candidates
    from retrievegan.eval.c1_controls import SplitRetrieval, _table, read_controls
    from retrievegan.eval.compatibility import bootstrap_seed, score_means
    from retrievegan.eval.d_probe import ProbeConfig, bank_themes, probe_scores, summarise
    from retrievegan.eval.sampled_retrieval import require_retrieval
    from retrievegan.io import sha256_file
    from retrievegan.train.loop import load_snapshot, load_trained

    method, nets, payload = load_trained(checkpoint, "cpu", dict(inputs or {}))
    name = payload["method"]
    require_retrieval(method, name)
    first = Path(snapshots) / f"step_{0:08d}.pt"
    init = {k: copy.deepcopy(v) for k, v in nets.items()}
    if not first.exists() or load_snapshot(first, init) != 0:
        raise InputError(snapshots, f"no step-0 generator snapshot ({first.name}): E_p's initial weights are needed")
    table = load_patch_table(patches_csv)
    themes = bank_themes(table, patches_csv)
    candidates = np.asarray(load_candidates(candidates_path, cfg.k, len(table)))
    data = {}
    for split in ("train", controls.search_split, test_split):
        dataset = SceneGraphDataset(data_dir, split, patches_csv)
        check_spec(method.spec, dataset.spec, dataset.graphs_path)
        data[split] = dataset
    graphs = {
        s: {g.image_id: g for g in read_split(data[s].graphs_path).graphs} for s in (controls.search_split, test_split)
    }
    critic, critic_losses = train_critic(method, data["train"], candidates, themes, cfg, progress)
    probe_cfg = ProbeConfig(split=controls.search_split, k=cfg.k, seed=cfg.seed)

    def critic_score(batch: Any, chosen: Any) -> dict[str, Any]:
        with torch.no_grad():
            return {"critic": critic(composite_of(method, batch, chosen))}

    scores, counts = probe_scores(
        data[controls.search_split], candidates, themes, critic_score, probe_cfg, "critic probe", progress
    )
    critic_probe = summarise(f"{name}/critic", scores, counts, probe_cfg)
    val = SplitRetrieval(method, data[controls.search_split], controls, "cpu", progress)
    test = SplitRetrieval(method, data[test_split], controls, "cpu", progress)
    gumbel = bool(method.config.sample_gumbel)

    def score(split: SplitRetrieval, split_name: str, retriever: Any) -> Any:
        return _table(
            split.records(split.embeddings(lambda ids: method.embed(retriever, ids)), 1.0, gumbel),
            table,
            patches_csv,
            graphs[split_name],
        )

    def val_score(retriever: Any) -> float:
        return float(score(val, controls.search_split, retriever)["pairwise_same_theme"].mean())

    def test_scores(retriever: Any, tag: str) -> dict[str, float]:
        rng = np.random.default_rng(bootstrap_seed(controls.seed, f"c1_mechanism/{name}/{tag}", test_split))
        means = score_means(score(test, test_split, retriever), controls.bootstrap_samples, controls.confidence, rng)
        return {k: v for k, v in means.items() if "pairwise" in k}

    modes = {}
    for mode in cfg.modes:
        ep, curve = train_ep(method, init["retriever"], critic, data["train"], mode, cfg, val_score, progress)
        modes[mode] = {"val_curve": curve, "test": test_scores(ep, mode)}
    result: dict[str, Any] = {
        "method": name,
        "test_split": test_split,
        "search_split": controls.search_split,
        "mechanism": dataclasses.asdict(cfg),
        "checkpoint_sha256": sha256_file(checkpoint),
        "critic": {
            "final_loss": float(np.mean(critic_losses[-20:])) if critic_losses else None,
            "probe": critic_probe["discriminators"]["critic"],
            "scene_graphs": critic_probe["with_a_pair"],
        },
        "ep_init": {"test": test_scores(init["retriever"], "ep_init")},
        "modes": modes,
    }
    if controls_json is not None:
        rec = read_controls(controls_json)
        result["fixed"] = {
            "best_fixed": rec["best_fixed"],
            "best_fixed_test": rec["arms"][rec["best_fixed"]]["test"]["compat_pairwise_same_theme"],
            "learned_test": rec["arms"]["learned"]["test"]["compat_pairwise_same_theme"],
            "random_candidates_test": rec["arms"]["random_candidates"]["test"]["compat_pairwise_same_theme"],
        }
    if out_json is not None:
        io.write_json(out_json, result)
    return result


def mechanism_line(rec: Mapping[str, Any]) -> str:
    p = rec["critic"]["probe"]
    parts = [f"{m} {v['test']['compat_pairwise_same_theme']:.3f}" for m, v in rec["modes"].items()]
    fixed = rec.get("fixed")
    return (
        f"{rec['method']}: critic AUC (val) {p['auc']:.3f}; E_p under the critic (test): "
        + ", ".join(parts)
        + f"; E_p at init {rec['ep_init']['test']['compat_pairwise_same_theme']:.3f}"
        + (
            f"; best fixed ({fixed['best_fixed']}) {fixed['best_fixed_test']:.3f}, learned under the GAN "
            f"{fixed['learned_test']:.3f}"
            if fixed
            else ""
        )
    )


def read_mechanism(path: str | os.PathLike[str]) -> dict[str, Any]:
    from retrievegan.eval.samples import read_json_object

    rec = read_json_object(path, "C1 mechanism file")
    if "modes" not in rec or "critic" not in rec:
        raise InputError(path, "not a C1 mechanism file (no 'modes')")
    return rec
