"""`retrievegan study-report`: preference shares, intervals, tests, biases, exclusions, the figure.

Input: exported responses (``Store.export_responses`` / the admin page's CSV / ``study-export``).

* Exclusion rule (decided before looking at preferences): a participant is excluded when more than
  ``max_catch_failure_rate`` of their answered catch trials chose the set from unrelated images, or,
  with ``require_complete``, when they did not answer every planned trial.
* Per method pair (reference vs. other), over the included participants' pair trials: share of
  trials preferring the reference, Wilson interval, exact two-sided binomial test against 1/2, Holm
  correction across pairs (family-wise ``alpha``), and a percentile bootstrap interval that resamples
  *participants* (trials of one person are not independent).
* Left-side bias: share of included pair trials answered "left" (Wilson, binomial test, bootstrap).
* Catch failure rate over every participant with catch answers (before exclusion).

Outputs (``<population>`` is ``participants`` or ``simulated``; simulated outputs say so in their
file names, a ``population`` column, and the figure title)::

    preference_<population>.csv     one row per measure (preference per pair, left_choice, catch_failure)
    participants_<population>.csv   per participant: answered, catch failures, excluded and why
    summary_<population>.json       the same numbers plus the exclusion rule, study id, counts
    preference_<population>.png     horizontal stacked bars in the style of the paper's user-study plot
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrievegan import io
from retrievegan.errors import ConfigError, InputError
from retrievegan.study.config import POPULATIONS, AnalysisConfig, UserStudyConfig, method_label
from retrievegan.study.pool import CATCH_FOIL, CATCH_REAL
from retrievegan.study.store import EXPORT_COLUMNS

AGGREGATE_COLUMNS = (
    "population",
    "measure",
    "study_id",
    "reference",
    "other",
    "label",
    "n_participants",
    "n",
    "k",
    "share",
    "wilson_low",
    "wilson_high",
    "bootstrap_low",
    "bootstrap_high",
    "p_value",
    "p_holm",
    "significant_holm",
    "median_response_ms",
    "true_share_simulated",
)
TRUTH_COLUMNS = ("participant_id", "other", "n_trials", "expected_prefer_reference")  # simulate.truth's table


def load_responses(path: str | Path) -> pd.DataFrame:
    """Read an exported responses CSV and check it (columns, one answer per trial, consistent choices)."""
    try:
        df = pd.read_csv(path, dtype={"participant_id": str, "trial_id": str, "study_id": str})
    except FileNotFoundError as exc:
        raise InputError(path, "responses file not found (export them: `retrievegan study-export`)") from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(path, "empty file") from exc
    check_responses(df, path)
    return df


def check_responses(df: pd.DataFrame, path: str | Path) -> None:
    missing = sorted(set(EXPORT_COLUMNS) - set(df.columns))
    if missing:
        raise InputError(path, f"missing columns {missing}")
    if df.empty:
        raise InputError(path, "no responses")
    dup = df.duplicated(["participant_id", "trial_id"], keep="first")
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(
            path,
            "second answer to the same trial",
            f"row {row + 2}, participant {df['participant_id'].iloc[row]!r}, trial {df['trial_id'].iloc[row]!r}",
        )
    expected = np.where(df["chosen_side"] == "left", df["method_left"], df["method_right"])
    bad = (~df["chosen_side"].isin(["left", "right"])) | (df["chosen_method"] != expected)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(path, "chosen_method does not match chosen_side", f"row {row + 2}")
    bad_kind = ~df["kind"].isin(["pair", "catch"])
    if bad_kind.any():
        raise InputError(
            path,
            f"unknown trial kind {df['kind'][bad_kind].iloc[0]!r}",
            f"row {int(np.flatnonzero(bad_kind.to_numpy())[0]) + 2}",
        )
    studies = sorted(df["study_id"].astype(str).unique())
    if len(studies) != 1:
        raise InputError(path, f"responses of {len(studies)} study bundles {studies}: analyse each bundle separately")


def wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def binomial_p(k: int, n: int) -> float:
    if n == 0:
        return float("nan")
    from scipy.stats import binomtest

    return float(binomtest(int(k), int(n), 0.5, alternative="two-sided").pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (NaNs stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, np.nan)
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def bootstrap_share(
    k: np.ndarray, n: np.ndarray, draws: int, confidence: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile interval of sum(k)/sum(n) resampling participants (rows) with replacement."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    if len(k) == 0 or n.sum() == 0:
        return float("nan"), float("nan")
    weights = rng.multinomial(len(k), np.full(len(k), 1.0 / len(k)), size=draws).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = (weights @ k) / (weights @ n)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.nanpercentile(shares, [tail, 100.0 - tail])
    return float(low), float(high)


def participant_table(df: pd.DataFrame, cfg: AnalysisConfig) -> pd.DataFrame:
    rows = []
    for pid, g in df.groupby("participant_id", sort=True):
        catch = g[g["kind"] == "catch"]
        failed = int((catch["chosen_method"] == CATCH_FOIL).sum())
        n_trials = int(g["n_trials"].max())
        answered = len(g)
        rate = failed / len(catch) if len(catch) else 0.0
        reasons = []
        if rate > cfg.max_catch_failure_rate:
            reasons.append("catch")
        if cfg.require_complete and answered < n_trials:
            reasons.append("incomplete")
        rows.append(
            {
                "participant_id": pid,
                "id_source": g["id_source"].iloc[0],
                "plan_seed": int(g["plan_seed"].iloc[0]),
                "n_trials": n_trials,
                "answered": answered,
                "complete": answered >= n_trials,
                "n_catch": len(catch),
                "catch_failed": failed,
                "catch_failure_rate": rate,
                "left_share": float((g["chosen_side"] == "left").mean()),
                "median_response_ms": float(g["response_time_ms"].median()),
                "excluded": bool(reasons),
                "exclusion_reason": "+".join(reasons),
            }
        )
    return pd.DataFrame(rows)


def _row(
    population: str,
    measure: str,
    study_id: str,
    reference: str,
    other: str,
    label: str,
    k_per: np.ndarray,
    n_per: np.ndarray,
    rt: float,
    cfg: AnalysisConfig,
    rng: np.random.Generator,
    test: bool = True,
) -> dict[str, Any]:
    k, n = int(k_per.sum()), int(n_per.sum())
    low, high = wilson(k, n, cfg.confidence)
    b_low, b_high = bootstrap_share(k_per, n_per, cfg.bootstrap, cfg.confidence, rng)
    return {
        "population": population,
        "measure": measure,
        "study_id": study_id,
        "reference": reference,
        "other": other,
        "label": label,
        "n_participants": int((n_per > 0).sum()),
        "n": n,
        "k": k,
        "share": k / n if n else float("nan"),
        "wilson_low": low,
        "wilson_high": high,
        "bootstrap_low": b_low,
        "bootstrap_high": b_high,
        "p_value": binomial_p(k, n) if test else float("nan"),
        "p_holm": float("nan"),
        "significant_holm": None,
        "median_response_ms": rt,
        "true_share_simulated": float("nan"),
    }


@dataclasses.dataclass(frozen=True)
class Report:
    aggregates: pd.DataFrame
    participants: pd.DataFrame
    summary: dict[str, Any]


def analyze(
    df: pd.DataFrame,
    reference: str,
    methods: tuple[str, ...],
    cfg: AnalysisConfig,
    population: str,
    truth: pd.DataFrame | None = None,
    source: str | Path = "responses",
) -> Report:
    """Aggregate checked responses (``check_responses``) of one study bundle."""
    if population not in POPULATIONS:
        raise ValueError(f"population must be one of {POPULATIONS}")
    if truth is not None and population != "simulated":
        raise ValueError("a simulated truth only goes with the simulated population")
    pairs = df[df["kind"] == "pair"]
    without_ref = pairs[(pairs["method_left"] != reference) & (pairs["method_right"] != reference)]
    if not without_ref.empty:
        raise InputError(
            source, f"a pair trial without the reference {reference!r}", f"trial {without_ref['trial_id'].iloc[0]!r}"
        )
    others = np.where(pairs["method_left"] == reference, pairs["method_right"], pairs["method_left"])
    found = sorted(set(others))
    order = [m for m in methods if m in found] + [m for m in found if m not in methods]
    study_id = str(df["study_id"].iloc[0])

    people = participant_table(df, cfg)
    people.insert(0, "population", population)
    included = people.loc[~people["excluded"], "participant_id"].tolist()
    rng = np.random.default_rng(cfg.seed)
    inc = df[df["participant_id"].isin(included)]
    inc_pairs = inc[inc["kind"] == "pair"].assign(
        other=lambda d: np.where(d["method_left"] == reference, d["method_right"], d["method_left"]),
        prefer_ref=lambda d: (d["chosen_method"] == reference).astype(int),
        left=lambda d: (d["chosen_side"] == "left").astype(int),
    )
    index = pd.Index(included, name="participant_id")

    rows = []
    for other in order:
        g = inc_pairs[inc_pairs["other"] == other].groupby("participant_id")
        k_per = g["prefer_ref"].sum().reindex(index, fill_value=0).to_numpy()
        n_per = g["prefer_ref"].size().reindex(index, fill_value=0).to_numpy()
        rt = (
            float(inc_pairs.loc[inc_pairs["other"] == other, "response_time_ms"].median())
            if n_per.sum()
            else float("nan")
        )
        rows.append(
            _row(
                population,
                "preference",
                study_id,
                reference,
                other,
                f"{method_label(reference)} vs {method_label(other)}",
                k_per,
                n_per,
                rt,
                cfg,
                rng,
            )
        )
    adjusted = holm([r["p_value"] for r in rows])
    for r, p in zip(rows, adjusted):
        r["p_holm"] = p
        r["significant_holm"] = bool(p < cfg.alpha) if not np.isnan(p) else None
    if truth is not None:
        from retrievegan.study.simulate import truth_shares

        lookup = truth_shares(truth, included)  # the expectation over the participants analysed
        for r in rows:
            r["true_share_simulated"] = float(lookup.get(r["other"], float("nan")))

    g = inc_pairs.groupby("participant_id")
    rows.append(
        _row(
            population,
            "left_choice",
            study_id,
            "",
            "",
            "left set chosen (pair trials)",
            g["left"].sum().reindex(index, fill_value=0).to_numpy(),
            g["left"].size().reindex(index, fill_value=0).to_numpy(),
            float(inc_pairs["response_time_ms"].median()) if len(inc_pairs) else float("nan"),
            cfg,
            rng,
        )
    )
    catch = df[df["kind"] == "catch"].assign(failed=lambda d: (d["chosen_method"] == CATCH_FOIL).astype(int))
    gc = catch.groupby("participant_id")
    everyone = pd.Index(people["participant_id"], name="participant_id")
    rows.append(
        _row(
            population,
            "catch_failure",
            study_id,
            CATCH_REAL,
            CATCH_FOIL,
            "catch trials failed (all participants)",
            gc["failed"].sum().reindex(everyone, fill_value=0).to_numpy(),
            gc["failed"].size().reindex(everyone, fill_value=0).to_numpy(),
            float(catch["response_time_ms"].median()) if len(catch) else float("nan"),
            cfg,
            rng,
            test=False,
        )
    )
    aggregates = pd.DataFrame(rows, columns=list(AGGREGATE_COLUMNS))

    reasons = people.loc[people["excluded"], "exclusion_reason"].value_counts().to_dict()
    summary = {
        "population": population,
        "simulated": population == "simulated",
        "study_id": study_id,
        "reference": reference,
        "exclusion_rule": (
            f"excluded if more than {cfg.max_catch_failure_rate:.0%} of answered catch trials "
            "chose the set from unrelated images"
            + ("; or if not every planned trial was answered" if cfg.require_complete else "")
        ),
        "participants_total": int(len(people)),
        "participants_included": int(len(included)),
        "participants_excluded": int(people["excluded"].sum()),
        "excluded_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "responses_total": int(len(df)),
        "responses_analysed": int(len(inc_pairs)),
        "config": dataclasses.asdict(cfg),
        "measures": aggregates.replace({np.nan: None}).to_dict(orient="records"),
    }
    return Report(aggregates, people, summary)


def plot(aggregates: pd.DataFrame, summary: dict[str, Any], path: str | Path) -> None:
    """Stacked horizontal bars, one per pair: share preferring the reference vs. the other method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    prefs = aggregates[aggregates["measure"] == "preference"].reset_index(drop=True)
    simulated = summary["population"] == "simulated"
    ref_label = method_label(summary["reference"])
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        palette = sns.color_palette("deep", 2)
        fig, ax = plt.subplots(figsize=(8.0, 1.9 + 0.62 * max(1, len(prefs))))
        try:
            y = np.arange(len(prefs))
            share = prefs["share"].to_numpy(dtype=float)
            ax.barh(y, share, color=palette[0], height=0.6, label=f"prefer {ref_label}")
            ax.barh(y, 1.0 - share, left=share, color=palette[1], height=0.6, label="prefer the other method")
            err = np.vstack([share - prefs["wilson_low"].to_numpy(float), prefs["wilson_high"].to_numpy(float) - share])
            ax.errorbar(
                share,
                y,
                xerr=err,
                fmt="none",
                ecolor="black",
                elinewidth=1.2,
                capsize=4,
                label=f"Wilson {summary['config']['confidence']:.0%} interval",
            )
            if simulated and prefs["true_share_simulated"].notna().any():
                ax.scatter(
                    prefs["true_share_simulated"],
                    y,
                    marker="D",
                    s=28,
                    color="white",
                    edgecolor="black",
                    zorder=5,
                    label="simulated truth",
                )
            for i, row in prefs.iterrows():
                ax.text(0.015, i, f"{row['share']:.1%}", va="center", ha="left", color="white", fontweight="bold")
                ax.text(
                    1.015,
                    i,
                    f"{1 - row['share']:.1%}",
                    va="center",
                    ha="left",
                    color=palette[1],
                    fontweight="bold",
                    transform=ax.get_yaxis_transform(),
                )
            ax.axvline(0.5, color="0.25", linestyle="--", linewidth=1)
            labels = [
                f"{ref_label} vs {method_label(o)}" + (" *" if s else "")
                for o, s in zip(prefs["other"], prefs["significant_holm"])
            ]
            ax.set_yticks(y, labels)
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
            ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
            ax.set_xlabel(
                f"share of trials (n = {summary['participants_included']} participants after exclusion; "
                f"* Holm-adjusted p < {summary['config']['alpha']})"
            )
            who = "SIMULATED participants, not people" if simulated else "participants"
            ax.set_title(
                f"Which set of patches is more mutually compatible?\n({who})",
                color="firebrick" if simulated else "black",
            )
            ax.grid(axis="y", visible=False)
            handles, names = ax.get_legend_handles_labels()
            fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False, fontsize="small")
            fig.tight_layout(rect=(0, 0.07 + 0.1 / max(1, len(prefs)), 0.95, 1))
            with io.atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=150, format="png")
        finally:
            plt.close(fig)


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    population = report.summary["population"]
    paths = {
        "aggregates": out_dir / f"preference_{population}.csv",
        "participants": out_dir / f"participants_{population}.csv",
        "summary": out_dir / f"summary_{population}.json",
        "figure": out_dir / f"preference_{population}.png",
    }
    io.write_text(paths["aggregates"], report.aggregates.to_csv(index=False, float_format="%.6g"))
    io.write_text(paths["participants"], report.participants.to_csv(index=False, float_format="%.6g"))
    io.write_json(paths["summary"], report.summary)
    plot(report.aggregates, report.summary, paths["figure"])
    return paths


def check_population(df: pd.DataFrame, population: str, path: str | Path) -> None:
    """InputError unless every response in ``path`` belongs to ``population`` (people or simulated)."""
    if "population" in df.columns and set(df["population"]) != {population}:
        raise InputError(path, f"population column says {sorted(set(df['population']))}, --population {population}")
    is_sim = df["id_source"].eq("simulated")
    if population == "participants" and is_sim.any():
        raise InputError(path, "simulated responses in a report on participants")
    if population == "simulated" and not is_sim.all():
        raise InputError(path, "responses of people in a report on simulated participants")


def load_truth(path: str | Path, population: str) -> pd.DataFrame:
    """The expected preferences of simulated participants (``simulate.truth``, as ``study-simulate`` writes it)."""
    if population != "simulated":
        raise ConfigError("--truth goes only with --population simulated")
    expected = pd.read_csv(path, dtype={"participant_id": str})
    missing = set(TRUTH_COLUMNS) - set(expected.columns)
    if missing:
        raise InputError(path, f"missing columns {sorted(missing)}")
    return expected


def report_responses(
    responses_csv: str | Path, population: str, truth_csv: str | Path | None, cfg: UserStudyConfig, out_dir: str | Path
) -> tuple[Report, dict[str, Path]]:
    """Check the exported responses of one population, analyse them (against the simulated truth, if given) and
    write the report files; returns the report and the written paths."""
    responses = load_responses(responses_csv)
    check_population(responses, population, responses_csv)
    expected = load_truth(truth_csv, population) if truth_csv else None
    report = analyze(responses, cfg.reference, cfg.methods, cfg.analysis, population, expected, source=responses_csv)
    return report, write_report(report, out_dir)
