"""The discriminator probe (`retrievegan d-probe`; claim C1): does a trained patch method's discriminator see patch
compatibility?

C1 says the generation losses teach E_p a better patch embedding through the differentiable retrieval. Of those
losses only the adversarial ones (and the auxiliary classification, which is about categories) can carry a
compatibility signal, and only if the discriminator scores compatible patch sets differently from incompatible
ones. The probe measures that directly, on a split the verdict may look at (val: a diagnostic that gates a verdict,
never test).

For every scene graph two sets of patches are drawn from the **same** candidates of its objects (the first ``k``
columns of the pre-filter's ``candidates.npy``), with the hidden themes of the synthetic benchmark:

* **same-theme**: a theme ``T`` that every object has among its candidates (drawn uniformly among those themes),
  then per object one of its theme-``T`` candidates;
* **mixed-theme**: per object one candidate of a theme other than ``T``, preferring a theme not yet in the set.

Scene graphs where no such pair exists (no theme common to every object's candidates, or an object with only
theme-``T`` candidates) are skipped and counted. Both sets are composed by the method's own generator at the
ground-truth boxes (the images its discriminators judged in training) and scored by each discriminator in eval
mode: ``d_img`` = D_img's mean logit over its patch map, ``d_obj`` = D_obj's mean real/fake logit over the image's
objects, and for a RetrieveGAN trained with a composite discriminator (``composite_adv_weight`` > 0, claims_c1)
``d_comp`` = D_comp's logit on the chosen patches pasted at the boxes (what it judges in training). For each discriminator the probe reports the **AUC** (Mann-Whitney: the probability that a same-theme
composite scores above a mixed-theme one, ties counting one half) with a percentile bootstrap interval that
resamples scene graphs, and the paired win rate (share of scene graphs whose same-theme composite scores higher).

AUC 0.5 is blind. A discriminator **sees compatibility** when its interval excludes 0.5 (above: it prefers
compatible sets, so its adversarial loss pushes E_p towards them; below: it prefers mixed sets). Where neither
discriminator sees it, the adversarial loss carries no compatibility signal to E_p on this benchmark and C1 cannot
be tested with it (:mod:`retrievegan.eval.claims`).

Randomness: the draws of a scene graph come from ``default_rng([seed, crc32("d_probe"), image_id])`` (independent
of the batch size and order); the bootstrap from ``default_rng([seed, crc32("d_probe/<run>/<discriminator>")])``.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from retrievegan import io
from retrievegan.errors import InputError

PROBE_TAG = zlib.crc32(b"d_probe")
DISCRIMINATORS: tuple[str, ...] = ("d_img", "d_obj")


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """The ``claims.probe`` config section."""

    split: str = "val"  # ours: the probe gates C1's verdict, so it never reads test
    k: int = 32  # candidates per object the composites are drawn from (<= prefilter.k; retrieval.k by default)
    seed: int = 0
    bootstrap_samples: int = 2000
    confidence: float = 0.95
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {self.split!r}")
        if self.k < 2 or self.bootstrap_samples < 100 or self.batch_size < 1:
            raise ValueError("k must be >= 2, bootstrap_samples >= 100 and batch_size >= 1")
        if not 0 < self.confidence < 1:
            raise ValueError("confidence must be in (0, 1)")


# --- the composites --------------------------------------------------------------------------------------------
def draw_pair(
    cand: np.ndarray, themes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``cand`` ``(n, K)`` int64 candidate bank rows of an image's ``n`` objects (-1 padding), ``themes`` ``(P,)`` the
    theme of every bank row -> (same-theme ids ``(n,)``, mixed-theme ids ``(n,)``, the theme ``T``), or None when
    the image has no such pair (module docstring)."""
    pools = [row[row >= 0] for row in cand]
    if len(pools) < 2 or any(len(p) == 0 for p in pools):
        return None
    pool_themes = [themes[p] for p in pools]
    common = set(pool_themes[0].tolist())
    for t in pool_themes[1:]:
        common &= set(t.tolist())
    if not common:
        return None
    theme = int(rng.choice(sorted(common)))
    same = np.array([rng.choice(p[t == theme]) for p, t in zip(pools, pool_themes)], dtype=np.int64)
    mixed, used = [], {theme}
    for p, t in zip(pools, pool_themes):
        others = t != theme
        if not others.any():
            return None
        fresh = others & ~np.isin(t, list(used))
        pick = int(rng.choice(p[fresh if fresh.any() else others]))
        used.add(int(themes[pick]))
        mixed.append(pick)
    return same, np.array(mixed, dtype=np.int64), theme


# --- the statistic ---------------------------------------------------------------------------------------------
def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Mann-Whitney AUC: P(a positive scores above a negative), ties counting one half."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def auc_interval(
    same: np.ndarray, mixed: np.ndarray, n_boot: int, confidence: float, rng: np.random.Generator
) -> dict[str, float]:
    """AUC of paired scores (one same-theme and one mixed-theme score per scene graph), its percentile bootstrap
    interval over scene graphs, and the paired win rate (ties: one half)."""
    same, mixed = np.asarray(same, float), np.asarray(mixed, float)
    if same.shape != mixed.shape or same.ndim != 1 or len(same) < 2:
        raise ValueError("the probe needs paired scores of at least two scene graphs")
    draws = rng.integers(0, len(same), size=(n_boot, len(same)))
    boots = np.array([auc(same[d], mixed[d]) for d in draws])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boots, [alpha, 1.0 - alpha])
    wins = float(np.mean((same > mixed) + 0.5 * (same == mixed)))
    return {
        "auc": auc(same, mixed),
        "auc_low": float(low),
        "auc_high": float(high),
        "paired_win_rate": wins,
        "mean_same": float(same.mean()),
        "mean_mixed": float(mixed.mean()),
    }


def sees_compatibility(rec: Mapping[str, float]) -> bool:
    """Whether a probe result's interval excludes 0.5 (the discriminator tells same- from mixed-theme sets)."""
    return bool(rec["auc_low"] > 0.5 or rec["auc_high"] < 0.5)


# --- the probe -------------------------------------------------------------------------------------------------
ScoreFn = Callable[[Any, Any], Mapping[str, Any]]  # (batch, chosen ids (B, N)) -> {discriminator: scores (B,)}


def probe_scores(
    dataset: Any,
    candidates: np.ndarray,
    themes: np.ndarray,
    score: ScoreFn,
    cfg: ProbeConfig,
    desc: str = "d-probe",
    progress: bool = True,
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Draw the composites of every scene graph of ``dataset`` and score them with ``score``; returns ({scorer:
    {"same": (G,), "mixed": (G,)}}, counts) over the ``G`` scene graphs that have a pair."""
    import torch

    from retrievegan.data.dataset import sequential_loader
    from retrievegan.models.patch_method import slot_rows
    from retrievegan.progressbar import progress_bar

    out: dict[str, dict[str, list[np.ndarray]]] = {}
    used = skipped = 0
    for batch in progress_bar(sequential_loader(dataset, cfg.batch_size, 0), desc=desc, disable=not progress):
        rows = slot_rows(batch).numpy()  # (B, N) patch rows of the objects, -1 padding
        chosen = {"same": np.full(rows.shape, -1, np.int64), "mixed": np.full(rows.shape, -1, np.int64)}
        keep = np.zeros(len(rows), bool)
        for b, image_id in enumerate(batch.image_ids.tolist()):
            objects = rows[b][rows[b] >= 0]
            rng = np.random.default_rng([cfg.seed, PROBE_TAG, int(image_id)])
            pair = draw_pair(candidates[objects, : cfg.k], themes, rng)
            # an image without a pair keeps its first candidates (rendered with the batch, never scored)
            first = candidates[objects, 0]
            same, mixed = (pair[0], pair[1]) if pair is not None else (first, first)
            chosen["same"][b, : len(objects)], chosen["mixed"][b, : len(objects)] = same, mixed
            keep[b] = pair is not None
        used, skipped = used + int(keep.sum()), skipped + int((~keep).sum())
        for kind, ids in chosen.items():
            for name, values in score(batch, torch.from_numpy(ids)).items():
                vals = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values, float)
                out.setdefault(name, {"same": [], "mixed": []})[kind].append(vals[keep])
    result = {name: {kind: np.concatenate(parts) for kind, parts in kinds.items()} for name, kinds in out.items()}
    return result, {"scene_graphs": used + skipped, "with_a_pair": used, "skipped_without_a_pair": skipped}


def discriminator_scorer(method: Any, nets: Mapping[str, Any], device: Any) -> ScoreFn:
    """The scorer of a trained patch method: its generator composes the chosen patches at the ground-truth boxes,
    D_img (mean logit over its patch map) and D_obj (mean real/fake logit over the image's objects) score them."""
    import torch

    from retrievegan.models.patch_method import slots_to_objects

    def score(batch: Any, chosen: Any) -> dict[str, Any]:
        with torch.no_grad():
            batch = batch.to(device)
            crops = slots_to_objects(method.bank.crops(chosen.to(device)), batch)
            images = method.render(nets["generator"], batch, crops, "gt_bbox")
            d_img = nets["d_img"](images).flatten(1).mean(1)
            real = batch.real_index()
            owners = batch.obj_to_img.index_select(0, real)
            logits, _ = nets["d_obj"](images, batch.boxes.index_select(0, real), owners)
            sums = torch.zeros(batch.num_images, device=device).index_add(0, owners, logits.reshape(-1).float())
            counts = torch.bincount(owners, minlength=batch.num_images).clamp(min=1)
            out = {"d_img": d_img.float(), "d_obj": sums / counts}
            if "d_comp" in nets:  # RetrieveGAN's composite discriminator (claims_c1): the composite of the chosen set
                out["d_comp"] = nets["d_comp"](method.composite(batch, crops)).float()
            return out

    return score


def bank_themes(patch_table: Any, path: str | os.PathLike[str]) -> np.ndarray:
    """``(P,)`` int64 theme of every patch-table row (the synthetic benchmark's hidden themes)."""
    if patch_table["theme"].isna().any():
        raise InputError(
            path,
            "the patch bank has patches without a theme: the discriminator probe needs the "
            "synthetic benchmark's themes",
        )
    return patch_table["theme"].to_numpy(dtype=np.int64)


def summarise(
    run: str, scores: Mapping[str, Mapping[str, np.ndarray]], counts: Mapping[str, int], cfg: ProbeConfig
) -> dict[str, Any]:
    """The probe record of a run from its paired scores (one AUC and interval per scorer)."""
    out: dict[str, Any] = {}
    for name in sorted(scores):
        rng = np.random.default_rng([cfg.seed, zlib.crc32(f"d_probe/{run}/{name}".encode())])
        rec = auc_interval(scores[name]["same"], scores[name]["mixed"], cfg.bootstrap_samples, cfg.confidence, rng)
        out[name] = {**rec, "sees_compatibility": sees_compatibility(rec)}
    return {
        "method": run,
        "split": cfg.split,
        **counts,
        "probe": dataclasses.asdict(cfg),
        "discriminators": out,
        "sees_compatibility": any(r["sees_compatibility"] for r in out.values()),
    }


def discriminator_probe(
    checkpoint: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    patches_csv: str | os.PathLike[str],
    candidates_path: str | os.PathLike[str],
    out_json: str | os.PathLike[str] | None,
    cfg: ProbeConfig,
    device_name: str = "cpu",
    inputs: Mapping[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Probe the discriminators of a trained patch method (RetrieveGAN, its ablations and variants, PasteGAN) on
    ``cfg.split`` (module docstring); writes ``out_json`` if given and returns the record."""
    from retrievegan.data.patches import load_patch_table
    from retrievegan.embed.prefilter import load_candidates
    from retrievegan.io import sha256_file
    from retrievegan.train.loop import load_trained_on

    method, nets, payload, dataset, device = load_trained_on(
        checkpoint, data_dir, cfg.split, device_name, dict(inputs or {}), patches_csv
    )
    missing = [n for n in ("generator", *DISCRIMINATORS) if n not in nets]
    if missing or not hasattr(method, "bank"):
        raise InputError(
            checkpoint,
            f"{payload['method']} is not a patch method with D_img and D_obj (missing {missing or ['a patch bank']})",
        )
    table = load_patch_table(patches_csv)
    themes = bank_themes(table, patches_csv)
    candidates = np.asarray(load_candidates(candidates_path, cfg.k, len(table)))
    scorer = discriminator_scorer(method, nets, device)
    scores, counts = probe_scores(dataset, candidates, themes, scorer, cfg, f"d-probe {payload['method']}", progress)
    if counts["with_a_pair"] < 2:
        raise InputError(
            candidates_path,
            f"only {counts['with_a_pair']} {cfg.split} scene graph(s) have a same-theme "
            "and a mixed-theme set among their candidates",
        )
    result = summarise(payload["method"], scores, counts, cfg)
    result.update(
        {
            "checkpoint_sha256": sha256_file(checkpoint),
            "discriminator_mode": "eval (BatchNorm running statistics)",
            "composed_at": "ground-truth boxes, by the method's generator",
        }
    )
    if out_json is not None:
        io.write_json(out_json, result)
    return result


def probe_line(rec: Mapping[str, Any]) -> str:
    """One line: each discriminator's AUC and interval, and whether it sees compatibility."""
    parts = [
        f"{name} AUC {r['auc']:.3f} [{r['auc_low']:.3f}, {r['auc_high']:.3f}]"
        for name, r in sorted(rec["discriminators"].items())
    ]
    return (
        f"{rec['method']} ({rec['split']}, {rec['with_a_pair']} scene graphs): "
        + ", ".join(parts)
        + (": sees compatibility" if rec["sees_compatibility"] else ": blind to compatibility")
    )


def read_probe(path: str | os.PathLike[str]) -> dict[str, Any]:
    from retrievegan.eval.samples import read_json_object

    rec = read_json_object(path, "discriminator probe file")
    if "discriminators" not in rec or "sees_compatibility" not in rec:
        raise InputError(path, "not a discriminator probe file (no 'discriminators')")
    return rec
