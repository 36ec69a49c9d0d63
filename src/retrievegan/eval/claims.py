"""The paper's claims, each tested (`retrievegan claims`): ``claims.csv`` (one row per claim, with its verdict),
``<name>_comparisons.csv`` (every comparison) and ``claims.md`` (the section REPORT.md opens with).

**Verdict rule** (fixed here, before any number; printed above every table as :data:`RULE`): a claim is a list of
comparisons "arm A beats arm B on a metric in a stated direction". Arms are trained with several training seeds;
seed ``s`` of A and seed ``s`` of B share the initialisation seed, the data order and every per-image random draw
(they differ only in what the arm changes), so each comparison uses the **paired difference** ``A_s - B_s`` per
seed. Its standard error combines the spread over seeds with the comparison's own sampling error where it is
measured (C1's controls: a paired bootstrap over test scene graphs within each seed, :mod:`retrievegan.eval.
c1_controls`): ``se = sqrt(sd_seeds^2 / n + mean_s se_s^2)``; the interval and the two-sided p-value use Student's t
with ``n - 1`` degrees of freedom. The p-values of every deciding comparison of C1-C5 form one family, corrected
with Holm's step-down method at ``alpha = 1 - confidence``. A comparison is *supported* when its Holm-corrected
p-value is below alpha, the difference is in the claimed direction and at least the **minimum effect** declared for
its metric in the config (``claims.min_effect``, before the numbers); *contradicted* when the Holm-corrected p-value
is below alpha in the opposite direction; otherwise, or with fewer than ``min_seeds`` (3) paired seeds,
*inconclusive* (an effect in the claimed direction below the declared minimum is inconclusive, and says so). A
claim is *supported* when all its deciding comparisons are, *contradicted* when any is, else *inconclusive*.
Choices are made on val (C1's fixed-embedding scales, the discriminator probe); verdicts read test only.
C1 is **not testable** here when the discriminator probe (:mod:`retrievegan.eval.d_probe`, val) finds that the
learned arm's discriminators do not see compatibility (every discriminator's AUC interval contains 0.5) in more than
half of the training seeds: the generation losses then carry no compatibility signal to E_p, and a loss against a
fixed embedding says nothing of the gradient path. C6 (user preference) follows the study's own analysis (Wilson
interval and Holm-corrected exact binomial test per method pair) and is *inconclusive* whenever the participants are
simulated: simulated participants are a model of the benchmark's themes, not people.

Metrics (names as in the metric files): the **compatibility score** (``compat_pairwise_same_theme``: share of the
retrieved patch pairs from one hidden theme, the objective measure of this benchmark; ``compat_single_theme`` is
reported beside it: it is near 0 for every arm without L_gt_sel, a floor that hides partial learning), **FID** and
**DS** of the run's evaluation network (``fid_<extractor>_...``, ``ds_lpips_<backbone>_...``: synthnet on the
embedded benchmark, not comparable to the paper).

The module also summarises claim C1's trace: the gradient norm reaching E_p per loss group (losses.jsonl ``meta``,
``RetrieveGan.trace``) and the compatibility of each training snapshot's retrievals on val
(:mod:`retrievegan.eval.compat_trace`), and states what they show in plain words computed from the numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from retrievegan import io
from retrievegan.errors import InputError
from retrievegan.eval.c1_controls import ControlsConfig
from retrievegan.eval.d_probe import ProbeConfig
from retrievegan.eval.mechanism import MechanismConfig

Verdict = Literal["supported", "contradicted", "inconclusive", "not testable"]
GUMBEL_STD = math.pi / math.sqrt(6.0)
RULE = (
    "**Verdict rule** (fixed in `retrievegan.eval.claims` before the numbers): per comparison, the paired "
    "difference arm A - arm B per training seed (the two arms share every seed-derived draw); its standard error "
    "combines the spread over the seeds with the comparison's sampling error over test scene graphs where it is "
    "measured (C1's controls: paired bootstrap within each seed), with a {conf:.0%} Student-t interval and a "
    "two-sided p-value; Holm's correction over every deciding comparison of C1-C5. **Supported**: Holm-corrected "
    "p < {alpha:g}, the difference in the claimed direction and at least the minimum effect declared for its "
    "metric ({effects}); **contradicted**: Holm-corrected p < {alpha:g} in the opposite direction; otherwise, or "
    "with fewer than {min_seeds} paired training seeds, **inconclusive**. A claim is supported when all its "
    "deciding comparisons are, contradicted when any is, else inconclusive. C1 is **not testable** where the "
    "discriminator probe (val) finds the learned arm's discriminators blind to compatibility (every AUC interval "
    "containing 0.5) in more than half of the training seeds. Choices (C1's scales, "
    "the probe) on val, verdicts on test. C6: the study's Wilson interval and Holm-corrected exact binomial test "
    "per pair; simulated participants -> inconclusive (they are not people)."
)
DEFAULT_MIN_EFFECT: dict[str, float] = {
    "compat_pairwise_same_theme": 0.05,
    "compat_single_theme": 0.05,
    "fid": 10.0,
    "ds": 0.1,
}


@dataclasses.dataclass(frozen=True)
class ClaimsConfig:
    """The ``claims`` config section."""

    seeds: tuple[int, ...] = (0,)  # ours: training seeds per arm of C1-C4 in `rule all`
    full_seeds: tuple[int, ...] = (0, 1, 2)  # ours: `snakemake claims_full`
    min_seeds: int = 3  # ours: fewer paired seeds -> inconclusive
    confidence: float = 0.95  # two-sided t-interval over seeds
    trace_split: Literal["train", "val", "test"] = "val"  # compatibility over training steps (never tune on test)
    long_training: bool = False  # claims_full also trains the C1 arm for 4x the steps (the rules read it)
    arms: tuple[str, ...] | None = None  # ours: arms of C1-C4 in `claims` (the rules read it; None: every arm)
    c1_seeds: tuple[int, ...] = (
        0,
        1,
        2,
        3,
        4,
    )  # ours: C1's learned arms in claims_full / claims_c1 (the rules read it)
    min_effect: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_MIN_EFFECT))
    controls: ControlsConfig = ControlsConfig()  # C1's fixed embeddings at a val-tuned scale (eval.c1_controls)
    probe: ProbeConfig = ProbeConfig()  # the discriminator probe (eval.d_probe; `claims.probe`)
    mechanism: MechanismConfig = MechanismConfig()  # C1's positive control (eval.mechanism; claims_full)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.min_effect) - set(METRICS)) + sorted(set(METRICS) - set(self.min_effect))
        if unknown:
            raise ValueError(
                f"min_effect must declare exactly the metrics {sorted(METRICS)} (got {sorted(self.min_effect)})"
            )
        if any(v < 0 for v in self.min_effect.values()):
            raise ValueError("min_effect values must be >= 0")
        if self.min_seeds < 2:
            raise ValueError("min_seeds must be >= 2 (an interval over seeds needs two)")
        if not 0 < self.confidence < 1:
            raise ValueError("confidence must be in (0, 1)")
        if not self.seeds or not self.full_seeds:
            raise ValueError("seeds and full_seeds must not be empty")


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str  # the compatibility files' names; fid / ds: the family (the file names the network: fid_synthnet_...)
    label: str
    higher_is_better: bool


METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("compat_pairwise_same_theme", "compatibility (pairwise same-theme rate)", True),
        Metric("compat_single_theme", "compatibility (single-theme share)", True),
        Metric("fid", "FID", False),
        Metric("ds", "DS", True),
    )
}


@dataclasses.dataclass(frozen=True)
class Comparison:
    arm_a: str
    arm_b: str
    metric: str  # a METRICS key
    setting: str = "pred_bbox"
    decides: bool = True  # False: shown for context, not part of the verdict

    @property
    def direction(self) -> str:
        return "higher" if METRICS[self.metric].higher_is_better else "lower"


@dataclasses.dataclass(frozen=True)
class Claim:
    id: str
    statement: str  # the paper's claim
    source: str  # where the paper makes it
    experiment: str  # what tests it here
    comparisons: tuple[Comparison, ...] = ()
    note: str = ""


# C1's fixed-embedding controls (retrievegan.eval.c1_controls): arms read from the controls file of the learned arm's
# run with the same training seed (E_p's initial weights are that run's), not trained runs of their own.
C1_LEARNED = "retrievegan_no_gt_no_occur"  # C1's learned arm, hard (straight-through) retrieval
C1_LEARNED_RELAXED = "retrievegan_no_gt_no_occur_relaxed"  # the same in eq. 4's relaxed retrieval (claim "C1-eq4")
C1_CLAIM_ARMS: dict[str, str] = {"C1": C1_LEARNED, "C1-eq4": C1_LEARNED_RELAXED}  # claim -> its learned arm
C1_LEARNED_POOL_LAST = "retrievegan_no_gt_no_occur_pool_last"  # context (claims_full): last-stage patch features
BEST_FIXED = "best_fixed_embedding"
PASTEGAN_SETS = "pastegan_sets"  # PasteGAN's test-time sets, paired per scene graph with the learned arm's
CONTROL_ARMS: dict[str, str] = {
    BEST_FIXED: "",
    PASTEGAN_SETS: "pastegan",
    "fixed_identity": "identity",
    "fixed_ep_init": "ep_init",
    "random_candidates": "random_candidates",
}  # arm -> file key
PAIRED_ARMS: dict[str, str] = {BEST_FIXED: "best_fixed", PASTEGAN_SETS: "pastegan"}  # arm -> its `paired` entry
TABLE1_RETRIEVEGAN = "retrievegan_table1"  # arm name of Table 1's RetrieveGAN run (both settings; C5)
TABLE1_ARMS: dict[str, list[str]] = {
    TABLE1_RETRIEVEGAN: ["retrievegan"],
    "sg2im": ["sg2im"],
    "layout2im": ["layout2im"],
}


def _both(a: str, b: str, decides_fid: bool, info: bool = False) -> tuple[Comparison, ...]:
    """compatibility (pairwise: deciding unless ``info``; single theme: context) and FID (deciding if ``decides_fid``)."""
    return (
        Comparison(a, b, "compat_pairwise_same_theme", decides=not info),
        Comparison(a, b, "compat_single_theme", decides=False),
        Comparison(a, b, "fid", decides=decides_fid and not info),
    )


def _c1_claim(claim_id: str, learned: str, mode: str) -> Claim:
    """C1 for the learned arm ``learned`` trained in one retrieval mode: it must beat the best fixed embedding at a
    val-tuned scale and PasteGAN's pre-defined embedding (both paired per test scene graph: the controls file)."""
    return Claim(
        claim_id,
        "differentiable retrieval lets the generation losses learn a better patch embedding than a fixed, "
        f"pre-defined one (PasteGAN); {mode}",
        "§1 (first issue), §3.3, §5",
        f"E_p trained by the generation losses only (`{learned}`) vs the best fixed embedding at a val-tuned scale (the "
        "frozen patch features themselves, or E_p frozen at its initialisation: `retrievegan c1-controls`, same "
        "candidates and test-time retrieval) and vs PasteGAN's pre-defined embedding (its test-time sets: random among "
        "its first 10 of the same pre-filtered candidates); context: each fixed arm, random choice among the same "
        "candidates, the trained E_p-frozen arm (`retrievegan_ep_frozen`), PasteGAN's FID",
        (
            Comparison(learned, BEST_FIXED, "compat_pairwise_same_theme"),
            Comparison(learned, PASTEGAN_SETS, "compat_pairwise_same_theme"),
            Comparison(learned, "fixed_identity", "compat_pairwise_same_theme", decides=False),
            Comparison(learned, "fixed_ep_init", "compat_pairwise_same_theme", decides=False),
            Comparison(learned, "random_candidates", "compat_pairwise_same_theme", decides=False),
        )
        + (_both(learned, "retrievegan_ep_frozen", False, info=True) if learned == C1_LEARNED else ())
        + (Comparison(learned, "pastegan", "fid", decides=False),)
        + (
            (
                Comparison(C1_LEARNED_POOL_LAST, BEST_FIXED, "compat_pairwise_same_theme", decides=False),
                Comparison(C1_LEARNED_POOL_LAST, "random_candidates", "compat_pairwise_same_theme", decides=False),
            )
            if learned == C1_LEARNED
            else ()
        ),
        "the fixed arms' scales (and whether Gumbel noise is added) are chosen on val and scored once on test; "
        "PasteGAN's test-time selection does not depend on its training (random among fixed GCN candidate lists): "
        "its sets are the same for every training seed, and their sampling error enters through the paired bootstrap.",
    )


CLAIMS: tuple[Claim, ...] = (
    _c1_claim("C1", C1_LEARNED, "hard (straight-through) retrieval"),
    _c1_claim("C1-eq4", C1_LEARNED_RELAXED, "eq. 4's relaxed retrieval (the paper's relaxation as written)"),
    Claim(
        "C2",
        "L_gt_sel improves compatibility and image quality",
        "§4.1 Ablation study, Table 2",
        "the full model vs without L_gt_sel (`retrievegan` vs `retrievegan_occur_only`); context: "
        "`retrievegan_gt_only` vs `retrievegan_no_gt_no_occur`, and the full model on last-stage patch features "
        "(`retrievegan_pool_last`, claims_full: features that do not see the themes' colour statistics)",
        _both("retrievegan", "retrievegan_occur_only", True)
        + _both("retrievegan_gt_only", "retrievegan_no_gt_no_occur", True, info=True)
        + (Comparison("retrievegan_pool_last", "retrievegan", "compat_pairwise_same_theme", decides=False),),
    ),
    Claim(
        "C3",
        "L_occur_sel improves compatibility and image quality",
        "§4.1 Ablation study, Table 2",
        "the full model vs without L_occur_sel (`retrievegan` vs `retrievegan_gt_only`; L_occur as eq. 3's sum); "
        "context: `retrievegan_occur_only` vs `retrievegan_no_gt_no_occur`",
        _both("retrievegan", "retrievegan_gt_only", True)
        + _both("retrievegan_occur_only", "retrievegan_no_gt_no_occur", True, info=True),
    ),
    Claim(
        "C4",
        "the iterative retrieval (query updated by the selected patches) selects more compatible sets than "
        "independent per-object retrieval",
        "§1 (second issue), §3.3 Iterative differentiable retrieval",
        "the full model vs `retrievegan_non_iterative` (retrieval.greedy false: the initial query is kept, the "
        "rest identical, in training and at test time)",
        _both("retrievegan", "retrievegan_non_iterative", False),
    ),
    Claim(
        "C5",
        "RetrieveGAN is more diverse than sg2im and layout2im",
        "Table 1 (DS)",
        "DS per method from Table 1: RetrieveGAN vs sg2im (predicted boxes), RetrieveGAN vs layout2im (ground-truth "
        "boxes: layout2im has no predicted-box setting)",
        (
            Comparison(TABLE1_RETRIEVEGAN, "sg2im", "ds", "pred_bbox"),
            Comparison(TABLE1_RETRIEVEGAN, "layout2im", "ds", "gt_bbox"),
        ),
        "the paper's own Table 1 has RetrieveGAN (GT) 0.21 below layout2im 0.29 (COCO-Stuff); its text says "
        "'comparably diverse'. sg2im and layout2im are trained with one seed (the full version seeds C1-C4).",
    ),
    Claim(
        "C6",
        "users prefer RetrieveGAN's patch sets over PasteGAN's and over the ablations",
        "§4.1 Patch compatibility, Fig. 3",
        "the user study (RetrieveGAN vs PasteGAN and vs each ablation, pairwise choice of the more compatible set)",
    ),
)


# --- inputs ------------------------------------------------------------------------------------------------------
def _read(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    from retrievegan.eval.samples import read_json_object

    return read_json_object(path, what)


def _metric_value(rec: Mapping[str, Any], family: str, setting: str, path: Any) -> tuple[float, str, tuple | None]:
    """(value, metric name, within-seed interval or None) of ``fid`` / ``ds`` in a metric file."""
    tag = {"pred_bbox": "pred", "gt_bbox": "gt"}[setting]
    prefix = "ds_lpips_" if family == "ds" else "fid_"
    names = [k for k in rec["metrics"] if k.startswith(prefix) and k.endswith(f"_{tag}")]
    if len(names) != 1:
        raise InputError(path, f"expected one {prefix}*_{tag} metric, found {names}")
    name = names[0]
    value = float(rec["metrics"][name])
    interval = None
    std, n = rec["metrics"].get(f"{name}_std"), rec.get("num_images")
    if family == "ds" and std is not None and n:
        half = 1.959964 * float(std) / math.sqrt(int(n))
        interval = (value - half, value + half)
    return value, name, interval


class Runs:
    """The per-run values a claim reads: ``value(run, setting, metric)`` -> (value, metric name, interval); C1's
    controls (``controls[run]``: :mod:`retrievegan.eval.c1_controls` files of the learned arm's runs) and the
    discriminator probes (``probes[run]``: :mod:`retrievegan.eval.d_probe` files)."""

    def __init__(
        self,
        metric_files: Sequence[str | os.PathLike[str]],
        compat_files: Sequence[str | os.PathLike[str]],
        run_files: Mapping[str, str | os.PathLike[str]],
        controls_files: Sequence[str | os.PathLike[str]] = (),
        probe_files: Sequence[str | os.PathLike[str]] = (),
        mechanism_files: Sequence[str | os.PathLike[str]] = (),
    ):
        from retrievegan.eval.c1_controls import read_controls
        from retrievegan.eval.d_probe import read_probe
        from retrievegan.eval.mechanism import read_mechanism

        self.metrics: dict[tuple[str, str], tuple[dict[str, Any], Path]] = {}
        for path in metric_files:
            rec = _read(path, "metric file")
            self.metrics[(rec["method"], rec.get("setting"))] = (rec, Path(path))
        self.compat: dict[tuple[str, str], tuple[dict[str, Any], Path]] = {}
        for path in compat_files:
            rec = _read(path, "compatibility file")
            self.compat[(rec["method"], rec["setting"])] = (rec, Path(path))
        self.seeds: dict[str, int] = {}
        for run, path in run_files.items():
            rec = _read(path, "run.json")
            if rec.get("seed") is None:
                raise InputError(path, "run.json has no training seed")
            self.seeds[run] = int(rec["seed"])
        self.controls = {rec["method"]: rec for rec in map(read_controls, controls_files)}
        self.probes = {rec["method"]: rec for rec in map(read_probe, probe_files)}
        self.mechanism = {rec["method"]: rec for rec in map(read_mechanism, mechanism_files)}

    def value(self, run: str, setting: str, metric: str) -> tuple[float, str, tuple | None]:
        if metric.startswith("compat_"):
            if (run, setting) not in self.compat:
                raise InputError(f"metrics/compatibility/{run}_{setting}.json", "not given to `retrievegan claims`")
            rec, _ = self.compat[(run, setting)]
            m = rec["metrics"]
            return float(m[metric]), metric, (float(m[f"{metric}_low"]), float(m[f"{metric}_high"]))
        if (run, setting) not in self.metrics:
            raise InputError(f"metrics/{run}_{setting}.json", "not given to `retrievegan claims`")
        rec, path = self.metrics[(run, setting)]
        return _metric_value(rec, metric, setting, path)

    def control_value(self, run: str, arm: str, metric: str) -> tuple[float, str, tuple | None, float, float]:
        """A C1 control arm of the learned arm's run ``run``: (the arm's test value, metric name, its interval, the
        learned arm's value in the same file, the paired difference's within-seed standard error: the scene-graph
        bootstrap's for the best fixed arm and PasteGAN's sets, nan for the context arms)."""
        if run not in self.controls:
            raise InputError(f"metrics/c1_controls/{run}.json", "not given to `retrievegan claims`")
        rec = self.controls[run]
        key = CONTROL_ARMS[arm] or rec["best_fixed"]
        if key not in rec["arms"]:
            raise InputError(f"metrics/c1_controls/{run}.json", f"no arm {key} (PasteGAN's retrievals not given?)")
        test = rec["arms"][key]["test"]
        if metric not in test:
            raise InputError(f"metrics/c1_controls/{run}.json", f"no {metric} for arm {key}")
        se = float(rec["paired"][PAIRED_ARMS[arm]]["se"]) if arm in PAIRED_ARMS else math.nan
        return (
            float(test[metric]),
            metric,
            (float(test[f"{metric}_low"]), float(test[f"{metric}_high"])),
            float(rec["arms"]["learned"]["test"][metric]),
            se,
        )


# --- statistics --------------------------------------------------------------------------------------------------
def t_interval(values: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): two-sided Student-t interval of the mean; (mean, nan, nan) for fewer than two values
    (all nan for none)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2.0, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def paired_interval(
    diffs: Sequence[float], within_se: Sequence[float], confidence: float
) -> tuple[float, float, float, float]:
    """(mean, low, high, two-sided p) of the mean paired difference over ``n`` seeds: se = sqrt(sd^2 / n + mean of
    the measured within-seed se^2) (``within_se``: one per seed, or empty / nan where not measured), Student t with
    n - 1 degrees of freedom. Fewer than two seeds: (mean, nan, nan, nan)."""
    from scipy import stats

    x = np.asarray(diffs, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    w = np.asarray([v for v in within_se if not math.isnan(v)], dtype=float)
    se = math.sqrt(float(x.var(ddof=1)) / len(x) + (float(np.mean(w**2)) if len(w) else 0.0))
    df = len(x) - 1
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df) * se)
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = float(2.0 * stats.t.sf(abs(mean) / se, df))
    return mean, mean - half, mean + half, p


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan and is not counted in the family)."""
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), math.nan)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[idx]))
        out[idx] = running
    return out.tolist()


def verdict(
    difference: float,
    p_holm: float,
    n: int,
    min_seeds: int,
    higher: bool,
    min_effect: float,
    alpha: float,
    label: str = "Holm p",
) -> tuple[Verdict, str]:
    """The rule of :data:`RULE` for one comparison: ``difference`` = mean of A - B over ``n`` paired seeds,
    ``p_holm`` its Holm-corrected two-sided p-value (``label``: how the reason names it), ``min_effect`` the metric's
    declared minimum (>= 0)."""
    if n < min_seeds:
        return "inconclusive", f"{n} paired training seed{'s' if n != 1 else ''} (< {min_seeds})"
    if math.isnan(p_holm):
        return "inconclusive", "no interval"
    effect = difference if higher else -difference  # > 0: the claimed direction
    if p_holm >= alpha:
        return "inconclusive", f"not significant ({label} = {p_holm:.3g} >= {alpha:g})"
    if effect < 0:
        return "contradicted", f"significant in the opposite direction ({label} = {p_holm:.3g})"
    if effect < min_effect:
        return "inconclusive", (
            f"significant ({label} = {p_holm:.3g}) but {abs(difference):.3g} is below the declared "
            f"minimum effect {min_effect:g}"
        )
    return "supported", f"significant ({label} = {p_holm:.3g}) and at least the minimum effect {min_effect:g}"


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    if not verdicts:
        return "inconclusive"
    if "contradicted" in verdicts:
        return "contradicted"
    return "supported" if all(v == "supported" for v in verdicts) else "inconclusive"


# --- evaluation --------------------------------------------------------------------------------------------------
def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _interval(low: float, high: float, digits: int = 3) -> str:
    return "" if math.isnan(low) else f" [{low:.{digits}f}, {high:.{digits}f}]"


def _arm_values(
    comp: Comparison, arm: str, arms: Mapping[str, Sequence[str]], runs: Runs
) -> dict[int, tuple[float, str, tuple | None, float]]:
    """{training seed: (value, metric name, within-seed interval, within-seed se of A - B)} of one arm; a C1 control
    arm takes its values from the controls file of arm A's run of the same seed."""
    values: dict[int, tuple[float, str, tuple | None, float]] = {}
    control = arm in CONTROL_ARMS
    for run in arms.get(comp.arm_a if control else arm, ()):  # an arm left out of this run has no runs
        seed = runs.seeds.get(run)
        if seed is None:
            raise InputError(f"models/{run}/run.json", "not given to `retrievegan claims`")
        if seed in values:
            raise InputError(f"models/{run}/run.json", f"arm {arm} has two runs with training seed {seed}")
        if control:
            if run not in runs.controls:
                continue
            value, name, interval, _, se = runs.control_value(run, arm, comp.metric)
            values[seed] = (value, name, interval, se)
        else:
            values[seed] = (*runs.value(run, comp.setting, comp.metric), math.nan)
    return values


def compare(comp: Comparison, arms: Mapping[str, Sequence[str]], runs: Runs, cfg: ClaimsConfig) -> dict[str, Any]:
    """One comparison: per-seed values of both arms, the paired difference, its interval and p-value (the verdict
    is given by :func:`evaluate_claims`, after Holm's correction over the claims' deciding comparisons)."""
    a, b = _arm_values(comp, comp.arm_a, arms, runs), _arm_values(comp, comp.arm_b, arms, runs)
    if comp.arm_b in CONTROL_ARMS:  # arm A's value as the controls file scored it (the same retrieval: the same sets)
        a = {
            s: (runs.control_value(r, comp.arm_b, comp.metric)[3], *a[s][1:])
            for s, r in ((runs.seeds[r], r) for r in arms.get(comp.arm_a, ()))
            if s in b
        }
    seeds = sorted(set(a) & set(b))
    diffs = [a[s][0] - b[s][0] for s in seeds]
    within = [b[s][3] for s in seeds]
    mean, low, high, p = paired_interval(diffs, within, cfg.confidence)
    if len(seeds) == 1 and not math.isnan(within[0]):  # one seed: the within-seed interval, for orientation
        run = next(r for r in arms[comp.arm_a] if runs.seeds.get(r) == seeds[0])
        rec = runs.controls[run]["paired"][PAIRED_ARMS[comp.arm_b]]
        low, high = float(rec["low"]), float(rec["high"])
    absent = [arm for arm in (comp.arm_a, comp.arm_b) if arm not in arms and arm not in CONTROL_ARMS]
    reason = ""
    if absent:  # no paired seeds, so inconclusive by the rule; say why
        reason = (
            f"arm {', '.join(absent)} not trained in this run (config `claims.arms`; `snakemake claims_full` "
            "trains every arm)"
        )
    elif comp.arm_b in CONTROL_ARMS and not b:
        reason = "no C1 controls file for the learned arm's runs (`retrievegan c1-controls`)"
    row: dict[str, Any] = {
        "arm_a": comp.arm_a,
        "arm_b": comp.arm_b,
        "metric": comp.metric,
        "metric_name": a[seeds[0]][1] if seeds else comp.metric,
        "setting": comp.setting,
        "direction": comp.direction,
        "decides": comp.decides,
        "paired_seeds": len(seeds),
        "seeds": " ".join(map(str, seeds)),
        "difference": mean,
        "difference_low": low,
        "difference_high": high,
        "p": p,
        "within_seed_se": float(np.nanmean(within)) if within and not all(math.isnan(w) for w in within) else math.nan,
        "absent": reason,
    }
    for tag, vals in (("a", a), ("b", b)):
        m, lo, hi = t_interval([vals[s][0] for s in sorted(vals)], cfg.confidence)
        row[f"value_{tag}"], row[f"value_{tag}_low"], row[f"value_{tag}_high"] = m, lo, hi
        row[f"value_{tag}_per_seed"] = " ".join(f"{vals[s][0]:.4g}" for s in sorted(vals))
        if len(vals) == 1 and next(iter(vals.values()))[2] is not None:  # one seed: the within-seed interval
            lo, hi = next(iter(vals.values()))[2]
            row[f"value_{tag}_low"], row[f"value_{tag}_high"] = lo, hi
            row[f"value_{tag}_interval"] = "test scene graphs (1 seed)"
        else:
            row[f"value_{tag}_interval"] = "training seeds (t)" if len(vals) > 1 else "none"
    return row


def study_claim(study_csv: str | os.PathLike[str] | None, claim: Claim) -> tuple[list[dict[str, Any]], Verdict, str]:
    """C6 rows (one per method pair) from the study report's aggregates CSV, the verdict and its reason."""
    if study_csv is None:
        return [], "inconclusive", "no user-study analysis in this run"
    try:
        table = pd.read_csv(study_csv)
    except (OSError, pd.errors.ParserError) as exc:
        raise InputError(study_csv, f"cannot read the study aggregates: {exc}") from exc
    pairs = table[table["measure"] == "preference"]
    if pairs.empty:
        raise InputError(study_csv, "no preference rows")
    population = str(pairs["population"].iloc[0])
    metric = f"preference_share_{population}"
    rows, verdicts = [], []
    for rec in pairs.to_dict("records"):
        low, high = float(rec["wilson_low"]), float(rec["wilson_high"])
        significant = str(rec.get("significant_holm")).lower() == "true"
        v: Verdict = (
            "supported"
            if low > 0.5 and significant
            else ("contradicted" if high < 0.5 and significant else "inconclusive")
        )
        verdicts.append(v)
        share = float(rec["share"])
        rows.append(
            {
                "claim": claim.id,
                "arm_a": rec["reference"],
                "arm_b": rec["other"],
                "metric": metric,
                "metric_name": metric,
                "setting": "",
                "direction": "higher",
                "decides": True,
                "paired_seeds": "",
                "seeds": "",
                "value_a": share,
                "value_a_low": low,
                "value_a_high": high,
                "value_a_interval": "Wilson",
                "value_a_per_seed": f"{share:.4g} [{low:.4g}, {high:.4g}]",
                "value_b": 1.0 - share,
                "value_b_per_seed": f"{1.0 - share:.4g}",
                "difference": share - 0.5,
                "difference_low": low - 0.5,
                "difference_high": high - 0.5,
                "verdict": v,
                "reason": f"n = {int(rec['n'])} trials, Holm p = {float(rec['p_holm']):.3g}"
                + (
                    f", simulated truth {float(rec['true_share_simulated']):.3f}"
                    if not pd.isna(rec.get("true_share_simulated", math.nan))
                    else ""
                ),
            }
        )
    if population != "participants":
        return (
            rows,
            "inconclusive",
            (
                f"{population} participants, not people: by the rule they would give "
                f"'{combine(verdicts)}'; one training seed per method"
            ),
        )
    return rows, combine(verdicts), "study analysis (Wilson interval + Holm-corrected binomial test) per pair"


def probe_gate(arms: Mapping[str, Sequence[str]], runs: Runs, learned: str = C1_LEARNED) -> tuple[bool | None, str]:
    """Whether C1 is testable for its learned arm ``learned``: (True / False, the probe in words), or (None, why not
    known) without probe files for its runs. Testable when, in at least half of the training seeds, a discriminator
    of the learned arm's run sees compatibility (its AUC interval excludes 0.5:
    :func:`retrievegan.eval.d_probe.sees_compatibility`); a majority, so that one seed's discriminator does not decide
    whether the claim can be tested."""
    probes = [runs.probes[r] for r in arms.get(learned, ()) if r in runs.probes]
    if not probes:
        return None, "no discriminator probe of the learned arm's runs in this run"
    parts = []
    for rec in probes:
        cells = ", ".join(
            f"{name} AUC {d['auc']:.2f} [{d['auc_low']:.2f}, {d['auc_high']:.2f}]"
            for name, d in sorted(rec["discriminators"].items())
        )
        parts.append(f"`{rec['method']}`: {cells}")
    seeing = 2 * sum(bool(rec["sees_compatibility"]) for rec in probes) >= len(probes)
    return seeing, "; ".join(parts)


def probe_summary(arms: Mapping[str, Sequence[str]], runs: Runs, learned: str) -> str:
    """The probe of the learned arm's runs in a few words: per discriminator the AUC (its range over training seeds)
    and in how many seeds its interval excludes 0.5."""
    probes = [runs.probes[r] for r in arms.get(learned, ()) if r in runs.probes]
    if not probes:
        return "no discriminator probe"
    parts = []
    for name in sorted({n for rec in probes for n in rec["discriminators"]}):
        recs = [rec["discriminators"][name] for rec in probes if name in rec["discriminators"]]
        aucs = [d["auc"] for d in recs]
        value = (
            f"{aucs[0]:.2f} [{recs[0]['auc_low']:.2f}, {recs[0]['auc_high']:.2f}]"
            if len(recs) == 1
            else f"{min(aucs):.2f}-{max(aucs):.2f}"
        )
        parts.append(
            f"{name.replace('d_', 'D_')} AUC {value}, sees it in {sum(d['sees_compatibility'] for d in recs)} "
            f"of {len(recs)} seed{'s' if len(recs) != 1 else ''}"
        )
    return "; ".join(parts)


def evaluate_claims(
    arms: Mapping[str, Sequence[str]],
    runs: Runs,
    cfg: ClaimsConfig,
    study_csv: str | os.PathLike[str] | None = None,
    only: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(claims: one row per claim, comparisons: one row per comparison); ``only``: these claim ids (Holm's family is
    then their deciding comparisons)."""
    alpha = 1.0 - cfg.confidence
    unknown = sorted(set(only or ()) - {c.id for c in CLAIMS})
    if unknown:
        raise ValueError(f"unknown claim(s) {unknown}; known: {[c.id for c in CLAIMS]}")
    claims_run = [c for c in CLAIMS if only is None or c.id in only]
    rows_of = {
        c.id: [{"claim": c.id, **compare(comp, arms, runs, cfg)} for comp in c.comparisons]
        for c in claims_run
        if c.comparisons
    }
    family = [r for rows in rows_of.values() for r in rows if r["decides"]]
    for r, p in zip(family, holm([r["p"] for r in family])):
        r["p_holm"] = p
    for rows in rows_of.values():
        for r in rows:
            r.setdefault("p_holm", math.nan)  # context comparisons: not in the family
            p = r["p_holm"] if r["decides"] else r["p"]
            r["verdict"], r["reason"] = verdict(
                r["difference"],
                p,
                r["paired_seeds"],
                cfg.min_seeds,
                r["direction"] == "higher",
                cfg.min_effect[r["metric"]],
                alpha,
                "Holm p" if r["decides"] else "uncorrected p (context)",
            )
            if r["absent"]:
                r["reason"] = r["absent"]
    summary, detail = [], []
    for claim in claims_run:
        if claim.comparisons:
            rows = rows_of[claim.id]
            deciding = [r for r in rows if r["decides"]]
            final: Verdict = combine([r["verdict"] for r in deciding])
            parts = "; ".join(
                f"{r['metric_name']} {r['arm_a']} vs {r['arm_b']}: {r['verdict']} ({r['reason']})" for r in deciding
            )
            if claim.id in C1_CLAIM_ARMS:
                testable, probe = probe_gate(arms, runs, C1_CLAIM_ARMS[claim.id])
                if testable is False:
                    parts = (
                        f"the discriminator does not see compatibility ({probe}): the generation losses carry no "
                        f"compatibility signal to E_p here, so C1 is not testable on this benchmark; by the rule "
                        f"the comparisons would give '{final}': {parts}"
                    )
                    final = "not testable"
                elif testable:
                    parts = f"the discriminator sees compatibility ({probe}); {parts}"
                else:
                    parts = f"{probe}; {parts}"
        else:
            rows, final, parts = study_claim(study_csv, claim)
            deciding = rows
        detail += rows
        # the row shown: the first deciding comparison with numbers (an arm left out of the run has none)
        head = next((r for r in deciding if r.get("paired_seeds")), deciding[0] if deciding else {})
        summary.append(
            {
                "claim": claim.id,
                "statement": claim.statement,
                "source": claim.source,
                "experiment": claim.experiment,
                "metric": head.get("metric_name") or head.get("metric", ""),
                "setting": head.get("setting", ""),
                "arm_a": head.get("arm_a", ""),
                "value_a": head.get("value_a", math.nan),
                "value_a_low": head.get("value_a_low", math.nan),
                "value_a_high": head.get("value_a_high", math.nan),
                "arm_b": head.get("arm_b", ""),
                "value_b": head.get("value_b", math.nan),
                "value_b_low": head.get("value_b_low", math.nan),
                "value_b_high": head.get("value_b_high", math.nan),
                "difference": head.get("difference", math.nan),
                "difference_low": head.get("difference_low", math.nan),
                "difference_high": head.get("difference_high", math.nan),
                "paired_seeds": head.get("paired_seeds", ""),
                "verdict": final,
                "basis": parts,
                "note": claim.note,
                "answer": answer(claim, final, deciding, arms, runs),
            }
        )
    return pd.DataFrame(summary), pd.DataFrame(detail).drop(columns=["absent"], errors="ignore")


def answer(
    claim: Claim, final: Verdict, deciding: Sequence[Mapping[str, Any]], arms: Mapping[str, Sequence[str]], runs: Runs
) -> str:
    """The claim's answer in one plain sentence with its numbers (C1: the learned arm against the best fixed one
    and the discriminator probe)."""
    if not claim.comparisons:  # C6: the study's pairs
        if not deciding:
            return f"{claim.id}: **{final}** (no user-study analysis in this run)."
        shares = ", ".join(f"`{r['arm_a']}` over `{r['arm_b']}` {r['value_a']:.1%}" for r in deciding)
        return f"{claim.id}: preference shares ({deciding[0]['metric_name']}) {shares} -> **{final}**."
    with_numbers = [r for r in deciding if r.get("paired_seeds")]
    if not with_numbers:
        return f"{claim.id}: **{final}** ({deciding[0]['reason'] if deciding else 'no comparison'})."
    r = with_numbers[0]
    seeds = r["paired_seeds"]
    deciding_row = next((d for d in deciding if d["verdict"] == final), None)  # the comparison that decided
    why = (
        final
        if final == "supported" or deciding_row is None
        else (f"{final}: {deciding_row['metric_name']} vs `{deciding_row['arm_b']}`, {deciding_row['reason']}")
    )
    from retrievegan.runs import SEED_SEPARATOR

    shown = (arms.get(r["arm_a"]) or [r["arm_a"]])[0].split(SEED_SEPARATOR)[0]  # claims_c1: the runs' own name
    text = (
        f"{claim.id}: {r['metric_name']} `{shown}` {_fmt(r['value_a'])} vs `{r['arm_b']}` "
        f"{_fmt(r['value_b'])} ({_fmt(r['difference'], 3)}{_interval(r['difference_low'], r['difference_high'])}"
        + (f", {seeds} training seed{'s' if seeds != 1 else ''}" if seeds != "" else "")
        + ")"
    )
    if claim.id in C1_CLAIM_ARMS and r["arm_b"] == BEST_FIXED:
        learned = C1_CLAIM_ARMS[claim.id]
        fixed = {runs.controls[run]["best_fixed"] for run in arms.get(learned, ()) if run in runs.controls}
        text = text.replace(
            f"`{BEST_FIXED}`", f"the best fixed embedding ({', '.join(sorted(fixed))}, val-tuned scale)"
        )
        testable, _ = probe_gate(arms, runs, learned)
        probe = probe_summary(arms, runs, learned)
        learned_loses = r["difference"] < 0
        text += (
            ": the learned embedding is " + ("worse than" if learned_loses else "not clearly better than")
            if final != "supported"
            else ": the learned embedding beats"
        )
        text += " a fixed one at a matched scale"
        if final == "not testable":
            text += f"; the discriminator is blind to compatibility ({probe}), so C1 is not testable here."
        else:
            text += f" -> **{why}**" + (f" (discriminator probe: {probe})." if testable is not None else ".")
        return text
    return text + f" -> **{why}**."


# --- C1 trace ----------------------------------------------------------------------------------------------------
def read_losses(path: str | os.PathLike[str]) -> pd.DataFrame:
    """losses.jsonl -> one row per logged step: step + every ``meta`` key that the trace writes."""
    rows = [
        {
            "step": rec["step"],
            **{key: v for key, v in rec.get("meta", {}).items() if key.startswith(("ep_grad/", "retrieval/"))},
        }
        for rec in io.read_loss_log(path)
    ]
    return pd.DataFrame(rows)


def gradient_trace(
    losses: Mapping[str, str | os.PathLike[str]], arm_of: Mapping[str, str]
) -> tuple[pd.DataFrame, list[str]]:
    """(one row per arm: mean over its runs and logged steps, and over the first / second half of the steps, of
    every trace key; the runs whose losses.jsonl has no trace, e.g. trained with ``trace_retriever: false``)."""
    frames: dict[str, list[pd.DataFrame]] = {}
    untraced = []
    for run, path in losses.items():
        frame = read_losses(path)
        if frame.empty or len(frame.columns) == 1:
            untraced.append(run)
            continue
        half = len(frame) // 2
        frame["half"] = ["early"] * half + ["late"] * (len(frame) - half)
        frames.setdefault(arm_of.get(run, run), []).append(frame.assign(run=run))
    rows = []
    for arm, parts in frames.items():
        frame = pd.concat(parts, ignore_index=True)
        keys = [c for c in frame.columns if c.startswith(("ep_grad/", "retrieval/"))]
        row: dict[str, Any] = {"run": arm, "runs": len(parts), "last_step": int(frame["step"].max())}
        for key in keys:
            row[key] = float(frame[key].mean())
            row[f"{key}@early"] = float(frame.loc[frame["half"] == "early", key].mean())
            row[f"{key}@late"] = float(frame.loc[frame["half"] == "late", key].mean())
        rows.append(row)
    return pd.DataFrame(rows), untraced


def trace_lines(
    grad: pd.DataFrame, traces: Sequence[Mapping[str, Any]], arms_trace: Mapping[str, str], untraced: Sequence[str] = ()
) -> list[str]:
    """Markdown: the C1 trace tables and what they show, in words computed from the numbers."""
    lines = ["### C1 trace: does the generation loss teach E_p?", ""]
    if untraced:
        lines += [
            f"No gradient trace in the losses.jsonl of {', '.join(f'`{r}`' for r in untraced)} (trained "
            "before `retrievegan.trace_retriever` existed, or with it off).",
            "",
        ]
    if not grad.empty:
        lines += [
            "Gradient reaching E_p per logged step (L2 norm over E_p's parameters, mean over the logged steps; "
            "`generation` = adversarial + auxiliary-classification terms on the retrieved-patch image, the "
            "only generation terms that depend on E_p), and the retrieval's sharpness: `score_std` = spread of "
            f"-||q - E_p(p)|| / tau over an object's candidates (the Gumbel noise added to it has std "
            f"{GUMBEL_STD:.2f}); `entropy_ratio` = entropy of the selection distribution / log(#candidates).",
            "",
            "Per arm (mean over its training seeds):",
            "",
            "| arm | retrieval | ep_grad generation | ep_grad gt_sel | ep_grad occur_sel | score_std early -> "
            "late | entropy_ratio early -> late |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for rec in grad.to_dict("records"):

            def g(key: str) -> str:
                return "-" if key not in rec or pd.isna(rec[key]) else f"{rec[key]:.2e}"

            def el(key: str) -> str:
                return "-" if f"{key}@early" not in rec else f"{rec[key + '@early']:.3f} -> {rec[key + '@late']:.3f}"

            lines.append(
                f"| `{rec['run']}` | {arms_trace.get(rec['run'], '')} | {g('ep_grad/generation')} | "
                f"{g('ep_grad/gt_sel')} | {g('ep_grad/occur_sel')} | {el('retrieval/score_std')} | "
                f"{el('retrieval/entropy_ratio')} |"
            )
        lines.append("")
        by_run = {r["run"]: r for r in grad.to_dict("records")}
        full = by_run.get("retrievegan")
        if full and not pd.isna(full.get("ep_grad/gt_sel", math.nan)) and full.get("ep_grad/generation"):
            ratio = full["ep_grad/gt_sel"] / full["ep_grad/generation"]
            lines.append(
                f"- In the full model the gradient that L_gt_sel sends to E_p is {ratio:.1f}x the one of the "
                f"generation losses ({full['ep_grad/gt_sel']:.2e} vs {full['ep_grad/generation']:.2e} per "
                "step, weighted as trained)."
            )
        spreads = [
            r["retrieval/score_std@late"]
            for r in by_run.values()
            if "retrieval/score_std@late" in r and not pd.isna(r["retrieval/score_std@late"])
        ]
        gen_only = [r for name, r in by_run.items() if "no_gt_no_occur" in name or "ep_frozen" in name]
        for rec in gen_only:
            if "retrieval/score_std@late" in rec:
                s = rec["retrieval/score_std@late"]
                lines.append(
                    f"- `{rec['run']}`: late in training the score spread over an object's candidates is "
                    f"{s:.2f}, {'below' if s < GUMBEL_STD else 'above'} the Gumbel noise's {GUMBEL_STD:.2f}: "
                    + (
                        "the noise, not E_p, decides most selections."
                        if s < GUMBEL_STD
                        else "E_p's distances can outweigh the noise."
                    )
                )
        if spreads and full and "retrieval/score_std@late" in full:
            lines.append(f"- The full model's spread ends at {full['retrieval/score_std@late']:.2f}.")
        lines.append("")
    if traces:
        lines += [
            f"Compatibility of each training snapshot's retrievals (pairwise same-theme rate, "
            f"{traces[0]['split']} split, both sample seeds; random choice among the same candidates: "
            f"{traces[0]['random_candidates']['compat_pairwise_same_theme']:.3f}):",
            "",
        ]
        schedules: dict[tuple[int, ...], list[dict]] = {}  # runs with the same snapshot steps share a table
        for rec in traces:
            schedules.setdefault(tuple(rec["steps"]), []).append(rec)
        for steps, recs in schedules.items():
            lines += ["| run | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---:|" * len(steps)]
            for rec in recs:
                cells = [f"{v:.3f}" for v in rec["scores"]["compat_pairwise_same_theme"]]
                lines.append(f"| `{rec['method']}` | " + " | ".join(cells) + " |")
            lines.append("")
        for rec in traces:
            vals = rec["scores"]["compat_pairwise_same_theme"]
            lows, highs = (
                rec["scores"]["compat_pairwise_same_theme_low"],
                rec["scores"]["compat_pairwise_same_theme_high"],
            )
            first, last = vals[0], vals[-1]
            overlap = not (lows[-1] > highs[0] or highs[-1] < lows[0])
            base = rec["random_candidates"]["compat_pairwise_same_theme"]
            lines.append(
                f"- `{rec['method']}`: {first:.3f} at step {rec['steps'][0]} -> {last:.3f} at step "
                f"{rec['steps'][-1]} ({'intervals overlap' if overlap else 'intervals apart'}; random among "
                f"the candidates {base:.3f})"
                + (" -- E_p frozen: constant by construction." if rec.get("retriever_frozen") else ".")
            )
        lines.append("")
    return lines


# --- writing -----------------------------------------------------------------------------------------------------
def _cell(rec: Mapping[str, Any], key: str, default: str = "") -> str:
    """A text cell of a comparison row (a missing or NaN value -> ``default``)."""
    value = rec.get(key)
    return default if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def claims_markdown(
    claims: pd.DataFrame,
    detail: pd.DataFrame,
    cfg: ClaimsConfig,
    seeds: Sequence[int],
    title: str,
    extra: Sequence[str] = (),
) -> str:
    effects = ", ".join(f"{k} {v:g}" for k, v in sorted(cfg.min_effect.items()))
    lines = [
        f"## {title}",
        "",
        RULE.format(conf=cfg.confidence, alpha=1.0 - cfg.confidence, min_seeds=cfg.min_seeds, effects=effects),
        "",
        f"Training seeds of the arms of C1-C4 in this run: {', '.join(map(str, seeds))}"
        + (
            " (one seed: every verdict of C1-C5 is inconclusive by the rule; `snakemake --cores 2 claims_full` "
            "trains >= 3 seeds -> claims_full.md)."
            if len(seeds) < cfg.min_seeds
            else "."
        ),
        "",
        "**The answers in one sentence each:**",
        "",
    ]
    lines += [f"- {rec['answer']}" for rec in claims.to_dict("records")]
    lines += [
        "",
        "| claim | experiment | metric | arm A | arm B | A - B [CI] | seeds | verdict |",
        "|---|---|---|---|---|---:|---:|---|",
    ]
    for rec in claims.to_dict("records"):
        a = f"`{rec['arm_a']}` {_fmt(rec['value_a'])}{_interval(rec['value_a_low'], rec['value_a_high'])}"
        b = (
            f"`{rec['arm_b']}` {_fmt(rec['value_b'])}{_interval(rec['value_b_low'], rec['value_b_high'])}"
            if not pd.isna(rec["value_b"])
            else f"`{rec['arm_b']}`"
        )
        diff = f"{_fmt(rec['difference'])}{_interval(rec['difference_low'], rec['difference_high'])}"
        lines.append(
            f"| **{rec['claim']}** {rec['statement']} ({rec['source']}) | {rec['experiment']} | "
            f"{rec['metric']} | {a} | {b} | {diff} | {rec['paired_seeds']} | **{rec['verdict']}**: "
            f"{rec['basis']} |"
        )
    lines += [
        "",
        "Values: mean over training seeds [t-interval over seeds]; with one seed the interval is over test "
        "scene graphs (compatibility: bootstrap; DS: normal approximation) and FID has none. Notes: "
        + " ".join(f"{r['claim']}: {r['note']}" for r in claims.to_dict("records") if r["note"]),
        "",
        "All comparisons (`decides` = part of the verdict and of Holm's family; the others are context, their "
        "p-values uncorrected):",
        "",
        "| claim | metric | setting | arm A (per seed) | arm B (per seed) | A - B [CI] | verdict | decides |",
        "|---|---|---|---|---|---:|---|---|",
    ]
    for rec in detail.to_dict("records"):
        lines.append(
            f"| {rec['claim']} | {_cell(rec, 'metric_name') or rec['metric']} | {_cell(rec, 'setting')} | "
            f"`{rec['arm_a']}` {_cell(rec, 'value_a_per_seed', _fmt(rec['value_a']))} | `{rec['arm_b']}` "
            f"{_cell(rec, 'value_b_per_seed')} "
            f"| {_fmt(rec['difference'])}{_interval(rec['difference_low'], rec['difference_high'])} | "
            f"{rec['verdict']} ({rec['reason']}) | {'yes' if rec['decides'] else 'no'} |"
        )
    lines.append("")
    return "\n".join(list(lines) + list(extra)) + "\n"


def controls_lines(runs: Runs, arms: Mapping[str, Sequence[str]]) -> list[str]:
    """Markdown: C1's fixed-embedding controls per learned arm and training seed (val search, choice, test scores)."""
    recs = [
        runs.controls[r]
        for learned in (*C1_CLAIM_ARMS.values(), C1_LEARNED_POOL_LAST)
        for r in arms.get(learned, ())
        if r in runs.controls
    ]
    if not recs:
        return []
    first = recs[0]
    out = [
        "### C1 controls: fixed embeddings at a val-tuned scale",
        "",
        f"Every arm retrieves as `retrievegan sample` does (hard selection among the first {first['k']} pre-filter "
        "candidates, random query candidate, the sample seeds' per-image generators). A fixed arm's embedding is "
        f"multiplied by each scale of the declared grid ({', '.join(first['controls']['grid'])}; `no noise` = "
        f"without Gumbel noise, the nearest candidate) and scored on {first['search_split']}; the best grid point "
        f"is its choice, and the better fixed arm on {first['search_split']} is the best fixed arm. Test is read "
        "once per arm, at its choice. `learned_tuned` (context): the trained E_p with its scale tuned the same way; "
        "`pastegan`: PasteGAN's own test-time sets.",
        "",
        "Why C1 is decided against these controls and not against E_p frozen at its initialisation as trained "
        "(`retrievegan_ep_frozen`, kept as context): at scale 1 that arm's score spread is far smaller than the Gumbel "
        "noise's, so it draws at random whatever it encodes, and beating it shows nothing about learning. The paper's "
        "claim is against a fixed, pre-defined embedding (§1, §3.3), which a user would run at its best scale; the "
        "scale is the one free parameter the learned E_p had, so each fixed arm gets it too, chosen on val.",
        "",
        f"| run (training seed) | arm | choice | {first['search_split']} at the choice | test [95% bootstrap] |",
        "|---|---|---|---:|---:|",
    ]
    for rec in recs:
        seed = runs.seeds.get(rec["method"], "")
        for arm in ("learned", "ep_init", "identity", "learned_tuned", "random_candidates", "pastegan"):
            if arm not in rec["arms"]:
                continue
            a = rec["arms"][arm]
            chosen = a.get("chosen", {})
            t = a["test"]
            mark = " (best fixed)" if arm == rec["best_fixed"] else ""
            low, high = t["compat_pairwise_same_theme_low"], t["compat_pairwise_same_theme_high"]
            out.append(
                f"| `{rec['method']}` ({seed}) | {arm}{mark} | {chosen.get('label', 'its own rule')} | "
                f"{_fmt(chosen.get('compat_pairwise_same_theme', math.nan))} | "
                f"{_fmt(t['compat_pairwise_same_theme'])}{_interval(low, high)} |"
            )
        for key, d in rec["paired"].items():
            out.append(
                f"| `{rec['method']}` ({seed}) | learned - {key.replace('_', ' ')} (paired per test scene "
                f"graph) | | | {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |"
            )
    out += [
        "",
        f"The {first['search_split']} search (pairwise same-theme rate per grid point):",
        "",
        "| run | arm | " + " | ".join(first["controls"]["grid"]) + " |",
        "|---|---|" + "---:|" * len(first["controls"]["grid"]),
    ]
    for rec in recs:
        for arm in ("ep_init", "identity", "learned_tuned"):
            cells = [f"{row['compat_pairwise_same_theme']:.3f}" for row in rec["arms"][arm]["search"]]
            out.append(f"| `{rec['method']}` | {arm} | " + " | ".join(cells) + " |")
    return out + [""]


def mechanism_lines(runs: Runs) -> list[str]:
    """Markdown: C1's mechanism check (E_p trained through the retrieval by a frozen compatibility critic)."""
    if not runs.mechanism:
        return []
    recs = [runs.mechanism[name] for name in sorted(runs.mechanism)]
    modes = list(recs[0]["modes"])
    out = [
        "### C1 mechanism check: can the gradient path teach E_p compatibility?",
        "",
        "A frozen critic (whole-image receptive field) trained on the train split only to tell same-theme from "
        "mixed-theme composites of the same candidates replaces the adversary; its loss on the composite of the "
        "selected patches (pasted at the boxes through the masks) reaches E_p only through the retrieval's selection. "
        "E_p restarts from its initialisation in every mode and is scored like the learned arm (test-time hard "
        "retrieval; pairwise same-theme rate on test, 95% bootstrap) beside the best fixed arm of the same run "
        "(`retrievegan c1-mechanism`).",
        "",
        "| run (training seed) | critic AUC (val) | E_p at init | "
        + " | ".join(f"E_p under the critic, {m}" for m in modes)
        + " | best fixed (val-tuned) | learned under the GAN |",
        "|---|---:|---:|" + "---:|" * (len(modes) + 2),
    ]
    for rec in recs:
        p = rec["critic"]["probe"]
        cells = []
        for m in modes:
            t = rec["modes"][m]["test"]
            cells.append(
                f"{t['compat_pairwise_same_theme']:.3f}{_interval(t['compat_pairwise_same_theme_low'], t['compat_pairwise_same_theme_high'])}"
            )
        fixed = rec.get("fixed", {})
        out.append(
            f"| `{rec['method']}` ({runs.seeds.get(rec['method'], '')}) | {p['auc']:.3f} "
            f"[{p['auc_low']:.3f}, {p['auc_high']:.3f}] | "
            f"{rec['ep_init']['test']['compat_pairwise_same_theme']:.3f} | "
            + " | ".join(cells)
            + f" | {_fmt(fixed.get('best_fixed_test', math.nan))} ({fixed.get('best_fixed', '')}) | "
            f"{_fmt(fixed.get('learned_test', math.nan))} |"
        )
    means = {m: float(np.mean([r["modes"][m]["test"]["compat_pairwise_same_theme"] for r in recs])) for m in modes}
    fixed = [r["fixed"]["best_fixed_test"] for r in recs if "fixed" in r]
    if fixed:
        best = float(np.mean(fixed))
        reach = [m for m in modes if means[m] >= best]
        out += [
            "",
            f"Mean over {len(recs)} run(s): "
            + ", ".join(f"{m} {v:.3f}" for m, v in means.items())
            + f"; best fixed {best:.3f}. "
            + (
                f"Under a loss that sees compatibility, E_p learned through the "
                f"retrieval reaches the best fixed embedding in {', '.join(reach)} "
                "mode: the gradient path works."
                if reach
                else "E_p trained under the critic stays below the best fixed embedding in every mode."
            ),
        ]
    return out + [""]


def probe_lines(runs: Runs) -> list[str]:
    """Markdown: the discriminator probe of every trained patch method given."""
    if not runs.probes:
        return []
    first = next(iter(runs.probes.values()))
    out = [
        "### Does the discriminator see compatibility? (discriminator probe)",
        "",
        f"Per scene graph of {first['split']}, a same-theme and a mixed-theme set drawn from the same "
        f"{first['probe']['k']} candidates per object, composed by the method's generator at the ground-truth boxes "
        "and scored by its discriminators in eval mode (`retrievegan d-probe`). AUC = P(same-theme scores above "
        "mixed-theme), 0.5 = blind; 95% bootstrap over scene graphs.",
        "",
        "| run | scene graphs | D_img AUC | D_obj AUC | D_comp AUC | sees compatibility |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name in sorted(runs.probes):
        rec = runs.probes[name]
        cells = [
            f"{d['auc']:.3f} [{d['auc_low']:.3f}, {d['auc_high']:.3f}]" if d else "-"
            for d in (rec["discriminators"].get(k) for k in ("d_img", "d_obj", "d_comp"))
        ]
        out.append(
            f"| `{name}` | {rec['with_a_pair']} | {' | '.join(cells)} | "
            f"{'yes' if rec['sees_compatibility'] else 'no'} |"
        )
    return out + [""]


def occur_sum_lines(runs: Runs, arms: Mapping[str, Sequence[str]], cfg: ClaimsConfig) -> list[str]:
    """Issue 11's finding (FID of the full model with eq. 3's sum vs the mean form) read against the seeds."""
    if ("retrievegan_occur_mean", "pred_bbox") not in runs.metrics or not arms.get("retrievegan"):
        return []
    mean_fid, name, _ = runs.value("retrievegan_occur_mean", "pred_bbox", "fid")
    seed_fids = [runs.value(r, "pred_bbox", "fid")[0] for r in arms.get("retrievegan", [])]
    gt_fids = [runs.value(r, "pred_bbox", "fid")[0] for r in arms.get("retrievegan_gt_only", [])]
    m, lo, hi = t_interval(seed_fids, cfg.confidence)
    spread = f"{min(seed_fids):.1f}-{max(seed_fids):.1f}" if len(seed_fids) > 1 else f"{seed_fids[0]:.1f}"
    out = [
        "### L_occur as eq. 3's sum: seed noise or the stronger weight?",
        "",
        f"{name}: the full model (sum form) over {len(seed_fids)} training seed(s) {m:.1f}{_interval(lo, hi, 1)} "
        f"(range {spread}); the mean form (`retrievegan_occur_mean`, seed {runs.seeds.get('retrievegan_occur_mean')})"
        f" {mean_fid:.1f}; without L_occur (`retrievegan_gt_only`) "
        + (f"{np.mean(gt_fids):.1f} over {len(gt_fids)} seed(s)." if gt_fids else "n/a."),
    ]
    if len(seed_fids) >= 2:
        inside = lo <= mean_fid <= hi
        out.append(
            f"The mean form's FID is {'inside' if inside else 'outside'} the sum form's interval over seeds: "
            + (
                "the difference is within seed noise."
                if inside
                else "the difference is larger than seed noise (the mean form is one seed: a single draw)."
            )
        )
    else:
        out.append("One seed: seed noise cannot be separated from the effect of the weight here (claims_full).")
    return out + [""]


def write_claims(
    out_csv: str | os.PathLike[str],
    out_md: str | os.PathLike[str],
    out_comparisons: str | os.PathLike[str],
    arms: Mapping[str, Sequence[str]],
    runs: Runs,
    cfg: ClaimsConfig,
    seeds: Sequence[int],
    study_csv: str | os.PathLike[str] | None = None,
    losses: Mapping[str, str | os.PathLike[str]] | None = None,
    trace_files: Sequence[str | os.PathLike[str]] = (),
    trace_modes: Mapping[str, str] | None = None,
    title: str = "Claims",
    only: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Evaluate every claim and write the three outputs; returns the claims table. An arm of C1-C4 absent from
    ``arms`` (left out of the run, config `claims.arms`) gives its comparisons no numbers and verdict inconclusive."""
    from retrievegan.runs import CLAIM_ARMS, FEATURE_ARMS, TRACE_ARMS

    known = (*CLAIM_ARMS, *TRACE_ARMS, *FEATURE_ARMS, *TABLE1_ARMS)
    unknown = sorted(set(arms) - set(known))
    if unknown:
        raise ValueError(f"unknown claim arm(s) {unknown}; known: {list(known)}")
    claims, detail = evaluate_claims(arms, runs, cfg, study_csv, only)
    arm_of = {run: arm for arm, arm_runs in arms.items() for run in arm_runs}
    grad, untraced = gradient_trace(losses or {}, arm_of)
    traces = [_read(p, "compatibility trace") for p in trace_files]
    extra = (
        controls_lines(runs, arms)
        + probe_lines(runs)
        + mechanism_lines(runs)
        + trace_lines(grad, traces, trace_modes or {}, untraced)
        + (occur_sum_lines(runs, arms, cfg) if only is None else [])
    )
    if only is not None:
        extra = [
            "Runs per arm in this evaluation: "
            + "; ".join(
                f"`{arm}`: {', '.join(f'`{r}`' for r in rs)}" for arm, rs in arms.items() if arm not in TABLE1_ARMS
            ),
            "",
        ] + extra
    io.write_text(out_csv, claims.to_csv(index=False))
    io.write_text(out_comparisons, detail.to_csv(index=False))
    io.write_text(out_md, claims_markdown(claims, detail, cfg, seeds, title, extra))
    return claims
