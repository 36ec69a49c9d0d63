"""The paper's claims, each tested (`retrievegan claims`): ``claims.csv`` (one row per claim, with its verdict),
``<name>_comparisons.csv`` (every comparison) and ``claims.md`` (the section REPORT.md opens with).

**Verdict rule** (fixed here, before any number; printed above every table as :data:`RULE`): a claim is a list of
comparisons "arm A beats arm B on a metric in a stated direction". Arms are trained with several training seeds;
seed ``s`` of A and seed ``s`` of B share the initialisation seed, the data order and every per-image random draw
(they differ only in what the arm changes), so each comparison uses the **paired difference** ``A_s - B_s`` per
seed and its two-sided Student-t interval over the seeds (``confidence``, default 95 %; t because with 3-5 seeds a
bootstrap over seeds has too few distinct resamples). The interval excludes 0 in the claimed direction ->
*supported*; in the opposite direction -> *contradicted*; otherwise, or with fewer than ``min_seeds`` (3) paired
seeds, *inconclusive* (a bootstrap over scene graphs within one seed measures sampling noise, not training noise,
and is never a basis for a verdict). A claim is *supported* when all its deciding comparisons are, *contradicted*
when any is, else *inconclusive*; no correction for multiple comparisons (each claim is read on its own).
C6 (user preference) follows the study's own analysis (Wilson interval and Holm-corrected exact binomial test per
method pair) and is *inconclusive* whenever the participants are simulated: simulated participants are a model of
the benchmark's themes, not people.

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
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from retrievegan import io
from retrievegan.errors import InputError

Verdict = Literal["supported", "contradicted", "inconclusive"]
GUMBEL_STD = math.pi / math.sqrt(6.0)
RULE = ("**Verdict rule** (fixed in `retrievegan.eval.claims` before the numbers): per comparison, the paired "
        "difference arm A - arm B per training seed (the two arms share every seed-derived draw), and its two-sided "
        "{conf:.0%} Student-t interval over the seeds. The interval excludes 0 in the claimed direction -> "
        "**supported**; in the opposite direction -> **contradicted**; otherwise, or with fewer than {min_seeds} "
        "paired training seeds, **inconclusive** (an interval over test scene graphs within one seed is shown for "
        "orientation only: it does not cover training noise). A claim is supported when all its deciding "
        "comparisons are, contradicted when any is, else inconclusive; no multiple-comparison correction. C6: the "
        "study's Wilson interval and Holm-corrected exact binomial test per pair; simulated participants -> "
        "inconclusive (they are not people).")


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

    def __post_init__(self) -> None:
        if self.min_seeds < 2:
            raise ValueError("min_seeds must be >= 2 (an interval over seeds needs two)")
        if not 0 < self.confidence < 1:
            raise ValueError("confidence must be in (0, 1)")
        if not self.seeds or not self.full_seeds:
            raise ValueError("seeds and full_seeds must not be empty")


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str  # compat_pairwise, compat_single, fid, ds
    label: str
    higher_is_better: bool


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("compat_pairwise", "compatibility (pairwise same-theme rate)", True),
    Metric("compat_single", "compatibility (single-theme share)", True),
    Metric("fid", "FID", False),
    Metric("ds", "DS", True),
)}


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


TABLE1_RETRIEVEGAN = "retrievegan_table1"  # arm name of Table 1's RetrieveGAN run (both settings; C5)
TABLE1_ARMS: dict[str, list[str]] = {TABLE1_RETRIEVEGAN: ["retrievegan"], "sg2im": ["sg2im"], "layout2im": ["layout2im"]}


def _both(a: str, b: str, decides_fid: bool, info: bool = False) -> tuple[Comparison, ...]:
    """compatibility (pairwise: deciding unless ``info``; single theme: context) and FID (deciding if ``decides_fid``)."""
    return (Comparison(a, b, "compat_pairwise", decides=not info), Comparison(a, b, "compat_single", decides=False),
            Comparison(a, b, "fid", decides=decides_fid and not info))


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "differentiable retrieval lets the generation losses learn a better patch embedding than a fixed, "
          "pre-defined one (PasteGAN)", "§1 (first issue), §3.3, §5",
          "E_p trained by the generation losses only (`retrievegan_no_gt_no_occur`) vs E_p frozen at its "
          "initialisation (`retrievegan_ep_frozen`, same candidates, generator and budget) vs PasteGAN's pre-defined "
          "embedding (random among its first 10 of the same pre-filtered candidates)",
          _both("retrievegan_no_gt_no_occur", "retrievegan_ep_frozen", False)
          + _both("retrievegan_no_gt_no_occur", "pastegan", False),
          "PasteGAN's test-time selection does not depend on its training (random among fixed GCN candidate lists): "
          "its compatibility is the same for every training seed."),
    Claim("C2", "L_gt_sel improves compatibility and image quality", "§4.1 Ablation study, Table 2",
          "the full model vs without L_gt_sel (`retrievegan` vs `retrievegan_occur_only`); context: "
          "`retrievegan_gt_only` vs `retrievegan_no_gt_no_occur`",
          _both("retrievegan", "retrievegan_occur_only", True)
          + _both("retrievegan_gt_only", "retrievegan_no_gt_no_occur", True, info=True)),
    Claim("C3", "L_occur_sel improves compatibility and image quality", "§4.1 Ablation study, Table 2",
          "the full model vs without L_occur_sel (`retrievegan` vs `retrievegan_gt_only`; L_occur as eq. 3's sum); "
          "context: `retrievegan_occur_only` vs `retrievegan_no_gt_no_occur`",
          _both("retrievegan", "retrievegan_gt_only", True)
          + _both("retrievegan_occur_only", "retrievegan_no_gt_no_occur", True, info=True)),
    Claim("C4", "the iterative retrieval (query updated by the selected patches) selects more compatible sets than "
          "independent per-object retrieval", "§1 (second issue), §3.3 Iterative differentiable retrieval",
          "the full model vs `retrievegan_non_iterative` (retrieval.greedy false: the initial query is kept, the "
          "rest identical, in training and at test time)",
          _both("retrievegan", "retrievegan_non_iterative", False)),
    Claim("C5", "RetrieveGAN is more diverse than sg2im and layout2im", "Table 1 (DS)",
          "DS per method from Table 1: RetrieveGAN vs sg2im (predicted boxes), RetrieveGAN vs layout2im (ground-truth "
          "boxes: layout2im has no predicted-box setting)",
          (Comparison(TABLE1_RETRIEVEGAN, "sg2im", "ds", "pred_bbox"),
           Comparison(TABLE1_RETRIEVEGAN, "layout2im", "ds", "gt_bbox")),
          "the paper's own Table 1 has RetrieveGAN (GT) 0.21 below layout2im 0.29 (COCO-Stuff); its text says "
          "'comparably diverse'. sg2im and layout2im are trained with one seed (the full version seeds C1-C4)."),
    Claim("C6", "users prefer RetrieveGAN's patch sets over PasteGAN's and over the ablations",
          "§4.1 Patch compatibility, Fig. 3",
          "the user study (RetrieveGAN vs PasteGAN and vs each ablation, pairwise choice of the more compatible set)"),
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
    """The per-run values a claim reads: ``value(run, setting, metric)`` -> (value, metric name, interval)."""

    def __init__(self, metric_files: Sequence[str | os.PathLike[str]], compat_files: Sequence[str | os.PathLike[str]],
                 run_files: Mapping[str, str | os.PathLike[str]]):
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

    def value(self, run: str, setting: str, metric: str) -> tuple[float, str, tuple | None]:
        if metric.startswith("compat_"):
            if (run, setting) not in self.compat:
                raise InputError(f"metrics/compatibility/{run}_{setting}.json", "not given to `retrievegan claims`")
            rec, _ = self.compat[(run, setting)]
            name = {"compat_pairwise": "compat_pairwise_same_theme", "compat_single": "compat_single_theme"}[metric]
            m = rec["metrics"]
            return float(m[name]), name, (float(m[f"{name}_low"]), float(m[f"{name}_high"]))
        if (run, setting) not in self.metrics:
            raise InputError(f"metrics/{run}_{setting}.json", "not given to `retrievegan claims`")
        rec, path = self.metrics[(run, setting)]
        return _metric_value(rec, metric, setting, path)


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


def verdict(low: float, high: float, n: int, min_seeds: int, higher: bool) -> tuple[Verdict, str]:
    """The rule of :data:`RULE` for one comparison (``low`` / ``high``: interval of A - B over ``n`` paired seeds)."""
    if n < min_seeds:
        return "inconclusive", f"{n} paired training seed{'s' if n != 1 else ''} (< {min_seeds})"
    if math.isnan(low):
        return "inconclusive", "no interval"
    better = low > 0 if higher else high < 0
    worse = high < 0 if higher else low > 0
    if better:
        return "supported", "the interval excludes 0 in the claimed direction"
    if worse:
        return "contradicted", "the interval excludes 0 in the opposite direction"
    return "inconclusive", "the interval contains 0"


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


def compare(comp: Comparison, arms: Mapping[str, Sequence[str]], runs: Runs, cfg: ClaimsConfig) -> dict[str, Any]:
    """One comparison: per-seed values of both arms, the paired difference, its interval and verdict."""
    per_arm: dict[str, dict[int, tuple[float, str, tuple | None]]] = {}
    for arm in (comp.arm_a, comp.arm_b):
        values: dict[int, tuple[float, str, tuple | None]] = {}
        for run in arms.get(arm, ()):  # an arm left out of this run (config `claims.arms`) has no runs
            seed = runs.seeds.get(run)
            if seed is None:
                raise InputError(f"models/{run}/run.json", "not given to `retrievegan claims`")
            if seed in values:
                raise InputError(f"models/{run}/run.json", f"arm {arm} has two runs with training seed {seed}")
            values[seed] = runs.value(run, comp.setting, comp.metric)
        per_arm[arm] = values
    a, b = per_arm[comp.arm_a], per_arm[comp.arm_b]
    seeds = sorted(set(a) & set(b))
    diffs = [a[s][0] - b[s][0] for s in seeds]
    mean, low, high = t_interval(diffs, cfg.confidence)
    v, why = verdict(low, high, len(seeds), cfg.min_seeds, comp.direction == "higher")
    absent = [arm for arm in (comp.arm_a, comp.arm_b) if arm not in arms]
    if absent:  # no paired seeds, so inconclusive by the rule; say why
        why = (f"arm {', '.join(absent)} not trained in this run (config `claims.arms`; `snakemake claims_full` "
               "trains every arm)")
    row: dict[str, Any] = {"arm_a": comp.arm_a, "arm_b": comp.arm_b, "metric": comp.metric,
                           "metric_name": a[seeds[0]][1] if seeds else "", "setting": comp.setting,
                           "direction": comp.direction, "decides": comp.decides, "paired_seeds": len(seeds),
                           "seeds": " ".join(map(str, seeds)), "difference": mean, "difference_low": low,
                           "difference_high": high, "verdict": v, "reason": why}
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
    rows, verdicts = [], []
    for rec in pairs.to_dict("records"):
        low, high = float(rec["wilson_low"]), float(rec["wilson_high"])
        significant = str(rec.get("significant_holm")).lower() == "true"
        v: Verdict = "supported" if low > 0.5 and significant else (
            "contradicted" if high < 0.5 and significant else "inconclusive")
        verdicts.append(v)
        rows.append({"claim": claim.id, "arm_a": rec["reference"], "arm_b": rec["other"],
                     "metric": f"preference share ({population} participants)", "setting": "", "direction": "higher",
                     "decides": True, "paired_seeds": "", "seeds": "", "value_a": float(rec["share"]),
                     "value_a_low": low, "value_a_high": high, "value_a_interval": "Wilson", "value_b": math.nan,
                     "difference": float(rec["share"]) - 0.5, "difference_low": low - 0.5,
                     "difference_high": high - 0.5, "verdict": v,
                     "reason": f"n = {int(rec['n'])} trials, Holm p = {float(rec['p_holm']):.3g}"
                               + (f", simulated truth {float(rec['true_share_simulated']):.3f}"
                                  if not pd.isna(rec.get("true_share_simulated", math.nan)) else "")})
    if population != "participants":
        return rows, "inconclusive", (f"{population} participants, not people: by the rule they would give "
                                      f"'{combine(verdicts)}'; one training seed per method")
    return rows, combine(verdicts), "study analysis (Wilson interval + Holm-corrected binomial test) per pair"


def evaluate_claims(arms: Mapping[str, Sequence[str]], runs: Runs, cfg: ClaimsConfig,
                    study_csv: str | os.PathLike[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(claims: one row per claim, comparisons: one row per comparison)."""
    summary, detail = [], []
    for claim in CLAIMS:
        if claim.comparisons:
            rows = [{"claim": claim.id, **compare(c, arms, runs, cfg)} for c in claim.comparisons]
            deciding = [r for r in rows if r["decides"]]
            final = combine([r["verdict"] for r in deciding])
            parts = "; ".join(f"{r['metric']} {r['arm_a']} vs {r['arm_b']}: {r['verdict']} ({r['reason']})"
                              for r in deciding)
        else:
            rows, final, parts = study_claim(study_csv, claim)
            deciding = rows
        detail += rows
        # the row shown: the first deciding comparison with numbers (an arm left out of the run has none)
        head = next((r for r in deciding if r.get("paired_seeds")), deciding[0] if deciding else {})
        summary.append({
            "claim": claim.id, "statement": claim.statement, "source": claim.source, "experiment": claim.experiment,
            "metric": head.get("metric_name") or head.get("metric", ""), "setting": head.get("setting", ""),
            "arm_a": head.get("arm_a", ""), "value_a": head.get("value_a", math.nan),
            "value_a_low": head.get("value_a_low", math.nan), "value_a_high": head.get("value_a_high", math.nan),
            "arm_b": head.get("arm_b", ""), "value_b": head.get("value_b", math.nan),
            "value_b_low": head.get("value_b_low", math.nan), "value_b_high": head.get("value_b_high", math.nan),
            "difference": head.get("difference", math.nan), "difference_low": head.get("difference_low", math.nan),
            "difference_high": head.get("difference_high", math.nan), "paired_seeds": head.get("paired_seeds", ""),
            "verdict": final, "basis": parts, "note": claim.note})
    return pd.DataFrame(summary), pd.DataFrame(detail)


# --- C1 trace ----------------------------------------------------------------------------------------------------
def read_losses(path: str | os.PathLike[str]) -> pd.DataFrame:
    """losses.jsonl -> one row per logged step: step + every ``meta`` key that the trace writes."""
    rows = []
    for k, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not JSON: {exc}", f"line {k + 1}") from exc
        meta = rec.get("meta", {})
        rows.append({"step": rec["step"], **{key: v for key, v in meta.items()
                                             if key.startswith(("ep_grad/", "retrieval/"))}})
    return pd.DataFrame(rows)


def gradient_trace(losses: Mapping[str, str | os.PathLike[str]], arm_of: Mapping[str, str]
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


def trace_lines(grad: pd.DataFrame, traces: Sequence[Mapping[str, Any]], arms_trace: Mapping[str, str],
                untraced: Sequence[str] = ()) -> list[str]:
    """Markdown: the C1 trace tables and what they show, in words computed from the numbers."""
    lines = ["### C1 trace: does the generation loss teach E_p?", ""]
    if untraced:
        lines += [f"No gradient trace in the losses.jsonl of {', '.join(f'`{r}`' for r in untraced)} (trained "
                  "before `retrievegan.trace_retriever` existed, or with it off).", ""]
    if not grad.empty:
        lines += ["Gradient reaching E_p per logged step (L2 norm over E_p's parameters, mean over the logged steps; "
                  "`generation` = adversarial + auxiliary-classification terms on the retrieved-patch image, the "
                  "only generation terms that depend on E_p), and the retrieval's sharpness: `score_std` = spread of "
                  f"-||q - E_p(p)|| / tau over an object's candidates (the Gumbel noise added to it has std "
                  f"{GUMBEL_STD:.2f}); `entropy_ratio` = entropy of the selection distribution / log(#candidates).", "",
                  "Per arm (mean over its training seeds):", "",
                  "| arm | retrieval | ep_grad generation | ep_grad gt_sel | ep_grad occur_sel | score_std early -> "
                  "late | entropy_ratio early -> late |", "|---|---|---:|---:|---:|---:|---:|"]
        for rec in grad.to_dict("records"):
            def g(key: str) -> str:
                return "-" if key not in rec or pd.isna(rec[key]) else f"{rec[key]:.2e}"

            def el(key: str) -> str:
                return "-" if f"{key}@early" not in rec else f"{rec[key + '@early']:.3f} -> {rec[key + '@late']:.3f}"
            lines.append(f"| `{rec['run']}` | {arms_trace.get(rec['run'], '')} | {g('ep_grad/generation')} | "
                         f"{g('ep_grad/gt_sel')} | {g('ep_grad/occur_sel')} | {el('retrieval/score_std')} | "
                         f"{el('retrieval/entropy_ratio')} |")
        lines.append("")
        by_run = {r["run"]: r for r in grad.to_dict("records")}
        full = by_run.get("retrievegan")
        if full and not pd.isna(full.get("ep_grad/gt_sel", math.nan)) and full.get("ep_grad/generation"):
            ratio = full["ep_grad/gt_sel"] / full["ep_grad/generation"]
            lines.append(f"- In the full model the gradient that L_gt_sel sends to E_p is {ratio:.1f}x the one of the "
                         f"generation losses ({full['ep_grad/gt_sel']:.2e} vs {full['ep_grad/generation']:.2e} per "
                         "step, weighted as trained).")
        spreads = [r["retrieval/score_std@late"] for r in by_run.values() if "retrieval/score_std@late" in r
                   and not pd.isna(r["retrieval/score_std@late"])]
        gen_only = [r for name, r in by_run.items() if "no_gt_no_occur" in name or "ep_frozen" in name]
        for rec in gen_only:
            if "retrieval/score_std@late" in rec:
                s = rec["retrieval/score_std@late"]
                lines.append(f"- `{rec['run']}`: late in training the score spread over an object's candidates is "
                             f"{s:.2f}, {'below' if s < GUMBEL_STD else 'above'} the Gumbel noise's {GUMBEL_STD:.2f}: "
                             + ("the noise, not E_p, decides most selections." if s < GUMBEL_STD else
                                "E_p's distances can outweigh the noise."))
        if spreads and full and "retrieval/score_std@late" in full:
            lines.append(f"- The full model's spread ends at {full['retrieval/score_std@late']:.2f}.")
        lines.append("")
    if traces:
        lines += [f"Compatibility of each training snapshot's retrievals (pairwise same-theme rate, "
                  f"{traces[0]['split']} split, both sample seeds; random choice among the same candidates: "
                  f"{traces[0]['random_candidates']['compat_pairwise_same_theme']:.3f}):", ""]
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
            lows, highs = rec["scores"]["compat_pairwise_same_theme_low"], rec["scores"]["compat_pairwise_same_theme_high"]
            first, last = vals[0], vals[-1]
            overlap = not (lows[-1] > highs[0] or highs[-1] < lows[0])
            base = rec["random_candidates"]["compat_pairwise_same_theme"]
            lines.append(f"- `{rec['method']}`: {first:.3f} at step {rec['steps'][0]} -> {last:.3f} at step "
                         f"{rec['steps'][-1]} ({'intervals overlap' if overlap else 'intervals apart'}; random among "
                         f"the candidates {base:.3f})" + (" -- E_p frozen: constant by construction." if
                                                          rec.get("retriever_frozen") else "."))
        lines.append("")
    return lines


# --- writing -----------------------------------------------------------------------------------------------------
def claims_markdown(claims: pd.DataFrame, detail: pd.DataFrame, cfg: ClaimsConfig, seeds: Sequence[int],
                    title: str, extra: Sequence[str] = ()) -> str:
    lines = [f"## {title}", "", RULE.format(conf=cfg.confidence, min_seeds=cfg.min_seeds), "",
             f"Training seeds of the arms of C1-C4 in this run: {', '.join(map(str, seeds))}"
             + (" (one seed: every verdict of C1-C5 is inconclusive by the rule; `snakemake --cores 2 claims_full` "
                "trains >= 3 seeds -> claims_full.md)." if len(seeds) < cfg.min_seeds
                else "."), "",
             "| claim | experiment | metric | arm A | arm B | A - B [CI] | seeds | verdict |",
             "|---|---|---|---|---|---:|---:|---|"]
    for rec in claims.to_dict("records"):
        a = f"`{rec['arm_a']}` {_fmt(rec['value_a'])}{_interval(rec['value_a_low'], rec['value_a_high'])}"
        b = (f"`{rec['arm_b']}` {_fmt(rec['value_b'])}{_interval(rec['value_b_low'], rec['value_b_high'])}"
             if not pd.isna(rec["value_b"]) else f"`{rec['arm_b']}`")
        diff = f"{_fmt(rec['difference'])}{_interval(rec['difference_low'], rec['difference_high'])}"
        lines.append(f"| **{rec['claim']}** {rec['statement']} ({rec['source']}) | {rec['experiment']} | "
                     f"{rec['metric']} | {a} | {b} | {diff} | {rec['paired_seeds']} | **{rec['verdict']}**: "
                     f"{rec['basis']} |")
    lines += ["", "Values: mean over training seeds [t-interval over seeds]; with one seed the interval is over test "
              "scene graphs (compatibility: bootstrap; DS: normal approximation) and FID has none. Notes: "
              + " ".join(f"{r['claim']}: {r['note']}" for r in claims.to_dict("records") if r["note"]), "",
              "All comparisons (`decides` = part of the verdict):", "",
              "| claim | metric | setting | arm A (per seed) | arm B (per seed) | A - B [CI] | verdict | decides |",
              "|---|---|---|---|---|---:|---|---|"]
    for rec in detail.to_dict("records"):
        lines.append(f"| {rec['claim']} | {rec.get('metric_name') or rec['metric']} | {rec.get('setting', '')} | "
                     f"`{rec['arm_a']}` {rec.get('value_a_per_seed', _fmt(rec['value_a']))} | `{rec['arm_b']}` "
                     f"{rec.get('value_b_per_seed', '') if not pd.isna(rec.get('value_b_per_seed', math.nan)) else ''} "
                     f"| {_fmt(rec['difference'])}{_interval(rec['difference_low'], rec['difference_high'])} | "
                     f"{rec['verdict']} ({rec['reason']}) | {'yes' if rec['decides'] else 'no'} |")
    lines.append("")
    return "\n".join(list(lines) + list(extra)) + "\n"


def occur_sum_lines(runs: Runs, arms: Mapping[str, Sequence[str]], cfg: ClaimsConfig) -> list[str]:
    """Issue 11's finding (FID of the full model with eq. 3's sum vs the mean form) read against the seeds."""
    if ("retrievegan_occur_mean", "pred_bbox") not in runs.metrics or not arms.get("retrievegan"):
        return []
    mean_fid, name, _ = runs.value("retrievegan_occur_mean", "pred_bbox", "fid")
    seed_fids = [runs.value(r, "pred_bbox", "fid")[0] for r in arms.get("retrievegan", [])]
    gt_fids = [runs.value(r, "pred_bbox", "fid")[0] for r in arms.get("retrievegan_gt_only", [])]
    m, lo, hi = t_interval(seed_fids, cfg.confidence)
    spread = f"{min(seed_fids):.1f}-{max(seed_fids):.1f}" if len(seed_fids) > 1 else f"{seed_fids[0]:.1f}"
    out = ["### L_occur as eq. 3's sum: seed noise or the stronger weight?", "",
           f"{name}: the full model (sum form) over {len(seed_fids)} training seed(s) {m:.1f}{_interval(lo, hi, 1)} "
           f"(range {spread}); the mean form (`retrievegan_occur_mean`, seed {runs.seeds.get('retrievegan_occur_mean')})"
           f" {mean_fid:.1f}; without L_occur (`retrievegan_gt_only`) "
           + (f"{np.mean(gt_fids):.1f} over {len(gt_fids)} seed(s)." if gt_fids else "n/a.")]
    if len(seed_fids) >= 2:
        inside = lo <= mean_fid <= hi
        out.append(f"The mean form's FID is {'inside' if inside else 'outside'} the sum form's interval over seeds: "
                   + ("the difference is within seed noise." if inside else
                      "the difference is larger than seed noise (the mean form is one seed: a single draw)."))
    else:
        out.append("One seed: seed noise cannot be separated from the effect of the weight here (claims_full).")
    return out + [""]


def write_claims(out_csv: str | os.PathLike[str], out_md: str | os.PathLike[str],
                 out_comparisons: str | os.PathLike[str], arms: Mapping[str, Sequence[str]], runs: Runs,
                 cfg: ClaimsConfig, seeds: Sequence[int], study_csv: str | os.PathLike[str] | None = None,
                 losses: Mapping[str, str | os.PathLike[str]] | None = None,
                 trace_files: Sequence[str | os.PathLike[str]] = (), trace_modes: Mapping[str, str] | None = None,
                 title: str = "Claims") -> pd.DataFrame:
    """Evaluate every claim and write the three outputs; returns the claims table. An arm of C1-C4 absent from
    ``arms`` (left out of the run, config `claims.arms`) gives its comparisons no numbers and verdict inconclusive."""
    from retrievegan.eval.methods import CLAIM_ARMS, TRACE_ARMS

    known = (*CLAIM_ARMS, *TRACE_ARMS, *TABLE1_ARMS)
    unknown = sorted(set(arms) - set(known))
    if unknown:
        raise ValueError(f"unknown claim arm(s) {unknown}; known: {list(known)}")
    claims, detail = evaluate_claims(arms, runs, cfg, study_csv)
    arm_of = {run: arm for arm, arm_runs in arms.items() for run in arm_runs}
    grad, untraced = gradient_trace(losses or {}, arm_of)
    traces = [_read(p, "compatibility trace") for p in trace_files]
    extra = trace_lines(grad, traces, trace_modes or {}, untraced) + occur_sum_lines(runs, arms, cfg)
    io.write_text(out_csv, claims.to_csv(index=False))
    io.write_text(out_comparisons, detail.to_csv(index=False))
    io.write_text(out_md, claims_markdown(claims, detail, cfg, seeds, title, extra))
    return claims
