"""The rarity-rebalancing experiment (``retrievegan rarity-experiment``): does the conditional IMLE supplement's
dataset + loss rebalancing raise the diversity of sg2im (a CRN decoder) and of RetrieveGAN on this benchmark?

The supplement (App. B) reports LPIPS diversity 0.12 -> 0.13 for CRN with both rebalancings, and 0.19 for its
own method. Here each arm of :data:`retrievegan.runs.RARITY_ARMS` (sg2im / RetrieveGAN, without / with
rebalancing) is trained with several seeds (variants ``<arm>__s<seed>``) and evaluated like every variant (in
``report.ablation_setting``): DS, FID and, for RetrieveGAN, the compatibility score. Per arm the table gives the
mean over the training seeds with a t-interval over seeds (the spread of whole training runs), and per method the
paired difference rebalanced - plain (same seed, same initialisation and noise streams apart from what
rebalancing changes) with its t-interval. The supplement's numbers stand beside ours; its values are LPIPS
(AlexNet) on its own data, ours ``ds_lpips_synthnet`` on the embedded benchmark, so only the **direction** of the
change is comparable, never the values.

Outputs (``<out_dir>/``): ``rarity_experiment.{csv,md,tex}`` (the table), ``rarity_runs.csv`` (one row per run:
arm, seed, every metric), ``rarity_experiment.png`` (the figure), ``rarity_section.md`` (what REPORT.md shows:
conclusions, the table; REPORT.md embeds the figure after it; docs/rarity/ keeps the reference run's copy, stored by `make reference-docs NAME=rarity`).
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrievegan import io
from retrievegan.errors import InputError
from retrievegan.eval.claims import t_interval
from retrievegan.eval.tables import Cell, Column, Table, na
from retrievegan.runs import METHODS, RARITY_ARMS, VARIANTS

# The supplement's LPIPS diversity (conditional IMLE supplement, App. B): (row, rebalancing, value)
SUPPLEMENT_LPIPS: tuple[tuple[str, str, float], ...] = (
    ("CRN", "none", 0.12),
    ("CRN", "dataset + loss", 0.13),
    ("conditional IMLE (their method)", "dataset + loss (part of their method, App. A)", 0.19),
)
# which of our methods sits beside which supplement row
SUPPLEMENT_COUNTERPART = {"sg2im": "CRN"}  # sg2im's image decoder is a cascaded refinement network
NOT_COMPARABLE_VALUE = "value: no (LPIPS-alex on the supplement's data vs ds_lpips_synthnet on the embedded benchmark)"
DIRECTION_ONLY = "direction only (the sign of the change; the values are not comparable)"


@dataclasses.dataclass(frozen=True)
class RunMetrics:
    """One trained run of the experiment: its arm, seed and metric values (None: not computed)."""

    name: str
    base: str
    arm: str
    rebalanced: bool
    seed: int
    setting: str
    ds: float
    fid: float | None
    compat: float | None
    ds_name: str
    fid_name: str | None


def _arm(name: str):
    if name not in VARIANTS or VARIANTS[name].experiment != "rarity":
        raise ValueError(f"{name!r} is not an arm of the rarity experiment (retrievegan.runs.RARITY_ARMS)")
    return VARIANTS[name]


def read_runs(
    metric_files: Sequence[str | os.PathLike[str]], compat_files: Sequence[str | os.PathLike[str]] = ()
) -> list[RunMetrics]:
    """The experiment's runs from their metric files (``metrics/<run>_<setting>.json``) and, for RetrieveGAN, their
    compatibility files."""
    from retrievegan.eval.metrics import read_metric_file
    from retrievegan.eval.samples import read_json_object

    compat: dict[tuple[str, str], float] = {}
    for path in compat_files:
        rec = read_json_object(path, "compatibility file")
        if "compat_single_theme" not in rec.get("metrics", {}):
            raise InputError(path, "not a compatibility file (no compat_single_theme)")
        compat[(rec["method"], rec["setting"])] = float(rec["metrics"]["compat_single_theme"])
    runs = []
    for path in metric_files:
        rec = read_metric_file(path)
        try:
            variant = _arm(rec["method"])
        except ValueError as exc:
            raise InputError(path, str(exc)) from None
        families = rec["families"]
        if "ds" not in families:
            raise InputError(path, "no DS in this metric file")
        fid = families.get("fid")
        key = (rec["method"], rec["setting"])
        runs.append(
            RunMetrics(
                name=rec["method"],
                base=variant.base,
                arm=variant.arm,
                rebalanced=bool(
                    dict(variant.overrides).get("rarity.dataset") or dict(variant.overrides).get("rarity.loss")
                ),
                seed=int(variant.training_seed),
                setting=rec["setting"],
                ds=float(rec["metrics"][families["ds"]["name"]]),
                fid=None if fid is None else float(rec["metrics"][fid["name"]]),
                compat=compat.get(key),
                ds_name=families["ds"]["name"],
                fid_name=None if fid is None else fid["name"],
            )
        )
    if len({(r.ds_name, r.setting) for r in runs}) > 1:
        raise InputError(metric_files[0], "the runs were evaluated with different DS networks or settings")
    return runs


@dataclasses.dataclass(frozen=True)
class Summary:
    mean: float
    low: float | None
    high: float | None
    n: int

    def cell(self, digits: int) -> Cell:
        interval = None if self.low is None else (self.low, self.high)
        return Cell(self.mean, digits=digits, interval=interval)


def t_summary(values: Sequence[float], confidence: float) -> Summary | None:
    """Mean and Student-t interval over the values (training seeds; ``claims.t_interval``); None for no value, no
    interval for one."""
    x = [v for v in values if v is not None]
    if not x:
        return None
    mean, low, high = t_interval(x, confidence)
    return Summary(mean, None, None, 1) if len(x) < 2 else Summary(mean, low, high, len(x))


def paired_differences(runs: Sequence[RunMetrics], base: str, metric: str) -> list[float]:
    """rebalanced - plain of ``metric`` per training seed present in both arms of ``base``."""
    plain = {r.seed: getattr(r, metric) for r in runs if r.base == base and not r.rebalanced}
    rebal = {r.seed: getattr(r, metric) for r in runs if r.base == base and r.rebalanced}
    return [
        rebal[s] - plain[s] for s in sorted(set(plain) & set(rebal)) if rebal[s] is not None and plain[s] is not None
    ]


def _cell(summary: Summary | None, digits: int, reason: str) -> Cell:
    return na(reason) if summary is None else summary.cell(digits)


def experiment_table(runs: Sequence[RunMetrics], confidence: float) -> Table:
    """The table: per arm and per method's paired difference, ours beside the supplement's LPIPS."""
    ds_name, fid_name, setting = runs[0].ds_name, runs[0].fid_name, runs[0].setting
    pct = f"{confidence:.0%}"
    columns = [
        Column("Method"),
        Column("Rebalancing"),
        Column("Seeds"),
        Column(f"DS ({ds_name}), mean [{pct} t-interval over seeds]", "cell", with_interval=True),
        Column(f"FID ({fid_name})", "cell", with_interval=True),
        Column("Compatibility (single theme)", "cell", with_interval=True),
        Column("Supplement LPIPS", "cell"),
        Column("Comparable to the supplement"),
    ]
    supplement = {(row, level): value for row, level, value in SUPPLEMENT_LPIPS}
    rows: list[list[Any]] = []
    for base in ("sg2im", "retrievegan"):
        label = METHODS[base].label
        theirs = SUPPLEMENT_COUNTERPART.get(base)
        compat_reason = "not a retrieval method" if not METHODS[base].retrieves_patches else "not computed"
        for rebalanced, level in ((False, "none"), (True, "dataset + loss")):
            arm = [r for r in runs if r.base == base and r.rebalanced == rebalanced]
            if not arm:
                continue
            sup = (
                Cell(supplement[(theirs, level)], digits=2)
                if theirs
                else na("the supplement has no counterpart of this method")
            )
            rows.append(
                [
                    label,
                    level,
                    ",".join(str(r.seed) for r in sorted(arm, key=lambda r: r.seed)),
                    _cell(t_summary([r.ds for r in arm], confidence), 3, "not computed"),
                    _cell(t_summary([r.fid for r in arm], confidence), 1, "not computed"),
                    _cell(t_summary([r.compat for r in arm], confidence), 3, compat_reason),
                    sup,
                    NOT_COMPARABLE_VALUE if theirs else "no counterpart",
                ]
            )
        diffs = {m: paired_differences(runs, base, m) for m in ("ds", "fid", "compat")}
        if diffs["ds"]:
            sup = (
                Cell(supplement[(theirs, "dataset + loss")] - supplement[(theirs, "none")], digits=2)
                if theirs
                else na("the supplement has no counterpart of this method")
            )
            rows.append(
                [
                    label,
                    "difference: rebalanced - none (paired by seed)",
                    str(len(diffs["ds"])),
                    _cell(t_summary(diffs["ds"], confidence), 3, "not computed"),
                    _cell(t_summary(diffs["fid"], confidence), 1, "not computed"),
                    _cell(t_summary(diffs["compat"], confidence), 3, compat_reason),
                    sup,
                    DIRECTION_ONLY if theirs else "no counterpart",
                ]
            )
    row, level, value = SUPPLEMENT_LPIPS[2]
    rows.append(
        [
            row,
            level,
            "-",
            na("not implemented in this harness"),
            na("not implemented in this harness"),
            na("not implemented in this harness"),
            Cell(value, digits=2),
            "no (not run here)",
        ]
    )
    notes = [
        f"Ours: the embedded benchmark, {setting}, mean over training seeds with a Student-t {pct} interval "
        "(a difference row: rebalanced minus plain per seed, then mean and t-interval). DS is LPIPS between the "
        "two samples of each test scene graph. The supplement's LPIPS is AlexNet LPIPS on its own data: values "
        "are not comparable, the direction of the change is."
    ]
    return Table(
        "rarity_experiment",
        "Rarity rebalancing (conditional IMLE supplement, App. B) on the embedded benchmark",
        columns,
        rows,
        notes,
    )


def direction(summary: Summary | None) -> str:
    """What a paired-difference interval says: raised / lowered / no measurable change."""
    if summary is None or summary.low is None:
        return "not measured" if summary is None else "one seed: no interval"
    return "raised" if summary.low > 0 else "lowered" if summary.high < 0 else "no measurable change"


def _signed(summary: Summary, digits: int) -> str:
    return (
        f"{summary.mean:+.{digits}f}"
        if summary.low is None
        else f"{summary.mean:+.{digits}f} [{summary.low:+.{digits}f}, {summary.high:+.{digits}f}]"
    )


def conclusions(runs: Sequence[RunMetrics], confidence: float) -> list[str]:
    """Sentences computed from the runs: the change of DS with rebalancing per method, beside the supplement's."""
    crn = {level: value for row, level, value in SUPPLEMENT_LPIPS if row == "CRN"}
    out = []
    for base in ("sg2im", "retrievegan"):
        diff = t_summary(paired_differences(runs, base, "ds"), confidence)
        if diff is None:
            continue
        verdict = direction(diff)
        ups = sum(d > 0 for d in paired_differences(runs, base, "ds"))
        line = (
            f"**{METHODS[base].label}**: DS with minus without rebalancing, paired over {diff.n} seeds: "
            f"{_signed(diff, 3)}, higher in {ups} of {diff.n} seeds: {verdict}"
            f"{' (the interval includes 0)' if verdict == 'no measurable change' else ''}"
        )
        if base in SUPPLEMENT_COUNTERPART:
            theirs = crn["dataset + loss"] - crn["none"]
            relation = {
                "raised": "the same direction as",
                "lowered": "the opposite of",
                "no measurable change": "no rise measurable at this precision; compare",
            }.get(verdict, "not comparable with")
            line += (
                f"; {relation} the supplement's CRN: {crn['none']:.2f} -> {crn['dataset + loss']:.2f} "
                f"({theirs:+.2f}, 'only slightly')"
            )
        fid = t_summary(paired_differences(runs, base, "fid"), confidence)
        if fid is not None:
            line += f"; FID {_signed(fid, 1)} (lower is better)"
        compat = t_summary(paired_differences(runs, base, "compat"), confidence)
        if compat is not None:
            line += f"; compatibility {_signed(compat, 3)}"
        out.append(line + ".")
    return out


def runs_csv(runs: Sequence[RunMetrics]) -> str:
    buffer = _io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["run", "method", "rebalancing", "seed", "setting", "ds_name", "ds", "fid_name", "fid", "compat_single_theme"]
    )
    for r in sorted(runs, key=lambda r: (r.base != "sg2im", r.rebalanced, r.seed)):
        writer.writerow(
            [
                r.name,
                r.base,
                "dataset + loss" if r.rebalanced else "none",
                r.seed,
                r.setting,
                r.ds_name,
                repr(r.ds),
                r.fid_name or "",
                "" if r.fid is None else repr(r.fid),
                "" if r.compat is None else repr(r.compat),
            ]
        )
    return buffer.getvalue()


def experiment_figure(runs: Sequence[RunMetrics], confidence: float, path: str | os.PathLike[str]) -> Path:
    """DS and FID per arm (one dot per seed, mean with its t-interval) beside the supplement's LPIPS bars."""
    from matplotlib.figure import Figure

    from retrievegan.eval.figures import save_figure

    fig = Figure(figsize=(13, 4.2))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    colours = {False: "#4c72b0", True: "#dd8452"}
    for ax, metric, title in (
        (axes[0], "ds", f"DS ours ({runs[0].ds_name})"),
        (axes[1], "fid", f"FID ours ({runs[0].fid_name})"),
    ):
        for i, base in enumerate(("sg2im", "retrievegan")):
            by_seed = {(r.seed, r.rebalanced): getattr(r, metric) for r in runs if r.base == base}
            for seed in sorted({seed for seed, _ in by_seed}):  # the paired design: one line per training seed
                pair = [by_seed.get((seed, False)), by_seed.get((seed, True))]
                if None not in pair:
                    ax.plot([i - 0.18, i + 0.18], pair, color="0.7", lw=0.8, zorder=2)
            for rebalanced in (False, True):
                values = [
                    getattr(r, metric)
                    for r in runs
                    if r.base == base and r.rebalanced == rebalanced and getattr(r, metric) is not None
                ]
                if not values:
                    continue
                x = i + (0.18 if rebalanced else -0.18)
                ax.scatter([x] * len(values), values, s=18, color=colours[rebalanced], alpha=0.6, zorder=3)
                s = t_summary(values, confidence)
                err = None if s.low is None else [[s.mean - s.low], [s.high - s.mean]]
                ax.errorbar(
                    [x],
                    [s.mean],
                    yerr=err,
                    fmt="D",
                    color=colours[rebalanced],
                    capsize=4,
                    zorder=4,
                    label=("dataset + loss rebalancing" if rebalanced else "no rebalancing") if i == 0 else None,
                )
        ax.set_xticks([0, 1], [METHODS["sg2im"].label, METHODS["retrievegan"].label])
        ax.set_title(f"{title}\nper seed (lines: same seed), mean and {confidence:.0%} t-interval", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    labels = ["CRN\nnone", "CRN\nrebalanced", "their method\n(cIMLE)"]
    axes[2].bar(
        range(len(SUPPLEMENT_LPIPS)), [v for _, _, v in SUPPLEMENT_LPIPS], color=["#4c72b0", "#dd8452", "#55a868"]
    )
    for k, (_, _, v) in enumerate(SUPPLEMENT_LPIPS):
        axes[2].text(k, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    axes[2].set_xticks(range(len(SUPPLEMENT_LPIPS)), labels, fontsize=7)
    axes[2].set_title(
        "Supplement (App. B): LPIPS-alex on their data\nnot comparable in value with the left panels", fontsize=9
    )
    fig.suptitle("Rarity rebalancing: diversity with and without (conditional IMLE supplement, App. A/B)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def section_markdown(table: Table, runs: Sequence[RunMetrics], confidence: float, figure_name: str) -> str:
    """``rarity_section.md``: what REPORT.md shows (conclusions, the table, what was run; the figure is embedded by
    the report beside it)."""
    seeds = sorted({r.seed for r in runs})
    lines = [
        "# Rarity rebalancing (conditional IMLE supplement, App. A/B)",
        "",
        "The supplement proposes dataset rebalancing (batch shares for the five largest categories, images drawn "
        "by appearance rarity) and loss rebalancing (reconstruction losses weighted by a per-pixel rarity mask), "
        "and reports that both together raise CRN's LPIPS diversity only from 0.12 to 0.13 (its own method: "
        "0.19). sg2im's image decoder is a CRN; the same test on sg2im and on RetrieveGAN, trained with seeds "
        f"{', '.join(map(str, seeds))} per arm (config `rarity`, arms `retrievegan.runs.RARITY_ARMS`; "
        "`snakemake rarity_experiment`):",
        "",
    ]
    lines += [f"- {c}" for c in conclusions(runs, confidence)]
    lines += [
        "",
        "**Comparable to the supplement**: the direction of the change only. Its numbers are LPIPS (AlexNet) "
        "on its data; ours are `" + runs[0].ds_name + "` on the embedded benchmark (another network, other "
        "data, a few hundred CPU steps).",
        "",
    ]
    lines += table.to_markdown().splitlines()
    lines += ["", f"Figure: `{figure_name}` (beside this file). Per-run values: `rarity_runs.csv`."]
    return "\n".join(lines) + "\n"


def write_experiment(
    metric_files: Sequence[str | os.PathLike[str]],
    compat_files: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    confidence: float = 0.95,
) -> list[Path]:
    """``retrievegan rarity-experiment``: every output of the module docstring; returns their paths."""
    runs = read_runs(metric_files, compat_files)
    if not runs:
        raise InputError(out_dir, "no metric files given")
    ran = {r.arm for r in runs}
    missing = [a.name for a in RARITY_ARMS if a.name not in ran]
    if missing:
        raise InputError(metric_files[0], f"no runs of the arm(s) {missing}")
    out_dir = Path(out_dir)
    table = experiment_table(runs, confidence)
    paths = table.write(out_dir)
    io.write_text(out_dir / "rarity_runs.csv", runs_csv(runs))
    figure = experiment_figure(runs, confidence, out_dir / "rarity_experiment.png")
    io.write_text(out_dir / "rarity_section.md", section_markdown(table, runs, confidence, figure.name))
    return paths + [out_dir / "rarity_runs.csv", figure, out_dir / "rarity_section.md"]
