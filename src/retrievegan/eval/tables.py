"""The paper's tables, with the paper's value beside ours and the difference, as CSV + Markdown + LaTeX.

* Table 1: methods x {pred_bbox, gt_bbox} x {FID, IS, DS} (+ the real-data row);
* Table 2: ablation of L_gt_sel and L_occur_sel (the paper's four rows) and the configured variants
  (``retrievegan.runs.VARIANTS``: retrieval mode, L_occur form, patch-feature pooling, ...), in
  ``report.ablation_setting``, with the factors each row used and the compatibility score (95 % interval);
* the dataset table (Train / Val / Test / #Category / #Patches / image size);
* the compatibility score of every run that retrieves patches.

Every cell is a number or ``n/a`` with its reason: method not applicable to the setting, not
evaluated in this run, paper value illegible or absent, the difference not meaningful because the
data or the feature network differ from the paper's. In CSV the reason is written in the cell
(``n/a: <reason>``); in Markdown and LaTeX the cell shows ``n/a`` with a footnote letter and the
reasons are listed under the table. Our columns are split by feature network (``FID ours
(synthnet)`` vs ``FID ours (inception)``): numbers from different networks never share a column.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from retrievegan import io
from retrievegan.errors import InputError
from retrievegan.runs import (
    METHODS,
    SETTING_TAGS,
    SETTINGS,
    TABLE1_ROWS,
    TABLE2_FACTORS,
    TABLE2_ROWS,
    VARIANTS,
    method_info,
    table2_only,
)

FAMILIES = (("fid", "FID"), ("is", "IS"), ("ds", "DS"))
DIGITS = {"fid": 2, "is": 2, "ds": 3}
PAPER_DIGITS = {"fid": 1, "is": 1, "ds": 2}
PAPER_NETWORK = {"fid": "inception", "is": "inception", "ds": "lpips_alex"}
DATASET_LABELS = {"coco_stuff": "COCO-Stuff", "visual_genome": "Visual Genome"}
ILLEGIBLE = "value not legible in the paper text we have"


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """The ``report`` config section (tables, figures, REPORT.md)."""

    paper_tables: str = "config/reference/paper_tables.csv"
    paper_dataset_stats: str = "config/reference/dataset_stats.csv"
    paper_dataset: Literal["coco_stuff", "visual_genome"] = "coco_stuff"  # the paper's columns we sit beside
    same_data_as_paper: bool = False  # true only for the paper configs: only then is a difference computed
    ablation_setting: Literal["pred_bbox", "gt_bbox"] = "pred_bbox"  # paper Table 2: predicted boxes
    qualitative_images: int = 4  # scene graphs per qualitative figure
    qualitative_seed: int = 0  # which test scene graphs (drawn once, same for every method)
    loss_smoothing: int = 1  # rolling-mean window of the loss curves (1: raw)


@dataclasses.dataclass(frozen=True)
class Cell:
    value: float | None = None
    std: float | None = None
    reason: str | None = None
    digits: int = 2
    interval: tuple[float, float] | None = None  # e.g. a 95 % bootstrap interval (low, high)

    @property
    def is_na(self) -> bool:
        return self.value is None

    def text(self) -> str:
        if self.value is None:
            return "n/a"
        out = f"{self.value:.{self.digits}f}"
        if self.std is not None:
            out += f" ± {self.std:.{self.digits}f}"
        if self.interval is not None:
            out += f" [{self.interval[0]:.{self.digits}f}, {self.interval[1]:.{self.digits}f}]"
        return out

    def csv_value(self) -> str:
        return f"n/a: {self.reason}" if self.value is None else repr(float(self.value))

    def csv_std(self) -> str:
        if self.value is None:
            return "n/a"
        return "" if self.std is None else repr(float(self.std))

    def csv_interval(self) -> list[str]:
        if self.value is None:
            return ["n/a", "n/a"]
        return ["", ""] if self.interval is None else [repr(float(x)) for x in self.interval]


def na(reason: str) -> Cell:
    return Cell(reason=reason)


@dataclasses.dataclass(frozen=True)
class Column:
    header: str
    kind: Literal["text", "cell"] = "text"
    with_std: bool = False  # CSV gets a "<header> std" column
    with_interval: bool = False  # CSV gets "<header> low" and "<header> high" columns


@dataclasses.dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[list[Any]]
    notes: list[str] = dataclasses.field(default_factory=list)

    # --- rendering ----------------------------------------------------------------------------
    def footnotes(self) -> dict[str, str]:
        """reason -> footnote letter(s), in order of first appearance."""
        marks: dict[str, str] = {}
        for row in self.rows:
            for value in row:
                if isinstance(value, Cell) and value.is_na and value.reason not in marks:
                    n = len(marks)
                    marks[value.reason] = _letters(n)
        return marks

    def to_csv(self) -> str:
        buffer = _io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        header = []
        for col in self.columns:
            header.append(col.header)
            if col.with_std:
                header.append(f"{col.header} std")
            if col.with_interval:
                header += [f"{col.header} low", f"{col.header} high"]
        writer.writerow(header)
        for row in self.rows:
            out = []
            for col, value in zip(self.columns, row):
                if col.kind == "cell":
                    out.append(value.csv_value())
                    if col.with_std:
                        out.append(value.csv_std())
                    if col.with_interval:
                        out += value.csv_interval()
                else:
                    out.append(str(value))
            writer.writerow(out)
        return buffer.getvalue()

    def _cell_text(self, value: Any, marks: dict[str, str], latex: bool) -> str:
        if isinstance(value, Cell):
            if value.is_na:
                return f"n/a$^{{{marks[value.reason]}}}$" if latex else f"n/a [{marks[value.reason]}]"
            text = value.text()
            return _latex_escape(text).replace("±", "$\\pm$") if latex else text
        return _latex_escape(str(value)) if latex else str(value).replace("|", "\\|")

    def to_markdown(self) -> str:
        marks = self.footnotes()
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(c.header for c in self.columns) + " |",
            "|" + "|".join("---" if c.kind == "text" else "---:" for c in self.columns) + "|",
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(self._cell_text(v, marks, False) for v in row) + " |")
        if marks:
            lines.append("")
            lines += [f"- [{letter}] n/a: {reason}" for reason, letter in marks.items()]
        if self.notes:
            lines.append("")
            lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        marks = self.footnotes()
        spec = "".join("l" if c.kind == "text" else "r" for c in self.columns)
        lines = [
            f"% {self.title}",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\hline",
            " & ".join(_latex_escape(c.header) for c in self.columns) + " \\\\",
            "\\hline",
        ]
        for row in self.rows:
            lines.append(" & ".join(self._cell_text(v, marks, True) for v in row) + " \\\\")
        lines += ["\\hline", "\\end{tabular}"]
        if marks:
            lines.append("")
            lines.append("\\par\\footnotesize")
            lines += [f"$^{{{letter}}}$ n/a: {_latex_escape(reason)}\\\\" for reason, letter in marks.items()]
        for note in self.notes:
            lines.append(f"Note: {_latex_escape(note)}\\\\")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        out_dir = Path(out_dir)
        paths = []
        for ext, text in (("csv", self.to_csv()), ("md", self.to_markdown()), ("tex", self.to_latex())):
            path = out_dir / f"{self.name}.{ext}"
            io.write_text(path, text)
            paths.append(path)
        return paths


def _letters(n: int) -> str:
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(ord("a") + r) + out
    return out


def _latex_escape(text: str) -> str:
    repl = {
        "\\": "\\textbackslash{}",
        "&": "\\&",
        "%": "\\%",
        "$": "\\$",
        "#": "\\#",
        "_": "\\_",
        "{": "\\{",
        "}": "\\}",
        "~": "\\textasciitilde{}",
        "^": "\\textasciicircum{}",
    }
    return "".join(repl.get(ch, ch) for ch in text)


# --- inputs ------------------------------------------------------------------------------------


def load_paper_tables(path: str | os.PathLike[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(
            path, dtype={"setting": str, "note": str}, keep_default_na=False, na_values={"value": [""], "std": [""]}
        )
    except FileNotFoundError as exc:
        raise InputError(path, "the paper's reference table is missing") from exc
    need = {"table", "dataset", "method", "setting", "metric", "value", "std", "note"}
    if need - set(table.columns):
        raise InputError(path, f"missing columns {sorted(need - set(table.columns))}")
    return table


@dataclasses.dataclass(frozen=True)
class Results:
    """Everything the tables read: our metric records keyed by (method, setting), the real-data
    record, compatibility records, and what the run was configured to evaluate."""

    dataset: str
    runs: dict[tuple[str, str], dict[str, Any]]
    real: dict[str, Any] | None
    compatibility: dict[tuple[str, str], dict[str, Any]]
    methods: tuple[str, ...]
    settings: tuple[str, ...]
    compatibility_enabled: bool = False  # the dataset has themes (synthetic benchmark)
    variants: tuple[str, ...] = ()  # configured variants (evaluated in variant_setting only)
    variant_setting: str | None = None  # report.ablation_setting: the setting of the Table-2-only runs
    factors: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # run -> Table 2 factor -> value
    config_values: dict[str, Any] = dataclasses.field(default_factory=dict)  # report_config_values() of the run

    def evaluated(self, method: str, setting: str) -> bool:
        """Whether the run was configured to be evaluated: a method x setting (the Table-2-only ablations in
        ``variant_setting`` = report.ablation_setting only, when given), or a configured variant in that setting."""
        if method in VARIANTS:
            return method in self.variants and setting == self.variant_setting
        if method not in self.methods or setting not in self.settings:
            return False
        return not table2_only(method) or self.variant_setting is None or setting == self.variant_setting


def load_results(
    dataset: str,
    metric_files: Sequence[str | os.PathLike[str]],
    real_file: str | os.PathLike[str] | None,
    compat_files: Sequence[str | os.PathLike[str]],
    methods: Sequence[str],
    settings: Sequence[str],
    compatibility_enabled: bool = False,
    variants: Sequence[str] = (),
    variant_setting: str | None = None,
    factors: dict[str, dict[str, Any]] | None = None,
    config_values: dict[str, Any] | None = None,
) -> Results:
    from retrievegan.eval.metrics import read_metric_file
    from retrievegan.eval.samples import read_json_object

    runs = {}
    for path in metric_files:
        record = read_metric_file(path)
        key = (record["method"], record.get("setting"))
        if key in runs:
            raise InputError(path, f"a second metric file for {key}")
        runs[key] = record
    compat = {}
    for path in compat_files:
        record = read_json_object(path, "compatibility file")
        compat[(record["method"], record["setting"])] = record
    real = read_metric_file(real_file) if real_file is not None else None
    return Results(
        dataset,
        runs,
        real,
        compat,
        tuple(methods),
        tuple(settings),
        compatibility_enabled,
        tuple(variants),
        variant_setting,
        dict(factors or {}),
        dict(config_values or {}),
    )


# --- cells -------------------------------------------------------------------------------------


class PaperValues:
    def __init__(self, table: pd.DataFrame, dataset: str):
        self.table = table
        self.dataset = dataset

    def _rows(self, table: str, method: str, setting: str, metric: str) -> pd.DataFrame:
        t = self.table
        return t[
            (t["table"] == table)
            & (t["dataset"] == self.dataset)
            & (t["method"] == method)
            & (t["setting"] == setting)
            & (t["metric"] == metric)
        ]

    def cell(self, table: str, method: str, setting: str, family: str) -> Cell:
        metric = family.upper()
        if method in VARIANTS:
            return na("the paper has no such row (a variant of ours: retrievegan.runs.VARIANTS)")
        rows = self._rows(table, method, setting, metric)
        reason = None if method == "real_data" else method_info(method).not_applicable_reason(setting)
        if rows.empty and reason is not None:
            return na(f"not applicable: {reason}")
        if rows.empty and method == "real_data" and family == "ds":
            return na("DS is not defined for real data (one image per scene graph)")
        if rows.empty:
            if table == "table2":
                if not (self.table["table"].eq("table2") & self.table["dataset"].eq(self.dataset)).any():
                    return na(f"the paper's ablation (Table 2) has no {DATASET_LABELS[self.dataset]} values")
                return na(self._illegible_reason(method, setting, metric))
            return na(f"the paper has no {metric} value for this row")
        row = rows.iloc[0]
        if pd.isna(row["value"]):
            reason = row["note"] or ILLEGIBLE
            return na(reason if table != "table2" else self._illegible_reason(method, setting, metric, reason))
        std = None if pd.isna(row["std"]) else float(row["std"])
        return Cell(float(row["value"]), std, digits=PAPER_DIGITS[family])

    def _illegible_reason(self, method: str, setting: str, metric: str, base: str = ILLEGIBLE) -> str:
        t1 = self._rows("table1", method, setting, metric)
        if not t1.empty and not pd.isna(t1.iloc[0]["value"]):
            return f"{base} (Table 2); Table 1 reports {t1.iloc[0]['value']:g} for this configuration"
        return f"{base} (Table 2)"


def our_cell(results: Results, method: str, setting: str, family: str, network: str) -> Cell:
    if method == "real_data":
        record = results.real
        if record is None:
            return na("real-data metrics not computed in this run")
        if family == "ds":
            return na("DS is not defined for real data (one image per scene graph)")
    else:
        reason = method_info(method).not_applicable_reason(setting)
        if reason is not None:
            return na(f"not applicable: {reason}")
        if not results.evaluated(method, setting):
            return na(
                "not evaluated in this run (not in evaluation.methods / evaluation.settings / variants; "
                "Table 2's ablations and variants only in report.ablation_setting)"
            )
        record = results.runs.get((method, setting))
        if record is None:
            return na("no metric file for this run was given to the tables stage")
    fam = record["families"].get(family)
    if fam is None:
        return na(f"no {family.upper()} in the metric file")
    if fam["network"] != network:
        return na(f"computed with {fam['network']} (see that column)")
    value = record["metrics"][fam["name"]]
    std = record["metrics"].get(fam["name"] + "_std")
    return Cell(float(value), None if std is None else float(std), digits=DIGITS[family])


def diff_cell(paper: Cell, ours: Cell, family: str, network: str, cfg: ReportConfig, dataset: str) -> Cell:
    if paper.is_na or ours.is_na:
        missing = " and ".join(w for w, c in (("paper", paper), ("ours", ours)) if c.is_na)
        return na(f"{missing} value n/a")
    if not cfg.same_data_as_paper:
        return na(
            f"different data: ours is '{dataset}', the paper's is {DATASET_LABELS[cfg.paper_dataset]} "
            "(report.same_data_as_paper is false)"
        )
    if network != PAPER_NETWORK[family]:
        return na(f"feature network {network} is not the paper's ({PAPER_NETWORK[family]}): not comparable")
    return Cell(ours.value - paper.value, None, digits=DIGITS[family])


def _networks(results: Results, family: str) -> list[str]:
    found = []
    for record in list(results.runs.values()) + ([results.real] if results.real else []):
        fam = record["families"].get(family)
        if fam is not None and fam["network"] not in found:
            found.append(fam["network"])
    return found or [PAPER_NETWORK[family]]


def _metric_columns(results: Results) -> tuple[list[Column], list[tuple[str, str]]]:
    cols, spec = [], []
    for family, label in FAMILIES:
        cols.append(Column(f"{label} paper", "cell", with_std=family != "fid"))
        spec.append((family, "paper"))
        for network in _networks(results, family):
            cols.append(Column(f"{label} ours ({network})", "cell", with_std=family != "fid"))
            spec.append((family, f"ours:{network}"))
            cols.append(Column(f"{label} diff ({network})", "cell"))
            spec.append((family, f"diff:{network}"))
    return cols, spec


def _metric_row(
    results: Results,
    paper: PaperValues,
    cfg: ReportConfig,
    table: str,
    method: str,
    setting: str,
    spec: list[tuple[str, str]],
) -> list[Cell]:
    cells = []
    paper_cells = {}
    for family, what in spec:
        if what == "paper":
            paper_cells[family] = paper.cell(table, method, "" if method == "real_data" else setting, family)
            cells.append(paper_cells[family])
        elif what.startswith("ours:"):
            cells.append(our_cell(results, method, setting, family, what[5:]))
        else:
            network = what[5:]
            ours = our_cell(results, method, setting, family, network)
            cells.append(diff_cell(paper_cells[family], ours, family, network, cfg, results.dataset))
    return cells


def _notes(results: Results, cfg: ReportConfig) -> list[str]:
    notes = [
        f"Paper values: {DATASET_LABELS[cfg.paper_dataset]} columns of the RetrieveGAN paper "
        f"({cfg.paper_tables}); ours: dataset '{results.dataset}'. diff = ours - paper."
    ]
    records = list(results.runs.values()) + ([results.real] if results.real else [])
    names = sorted({fam["name"] for r in records for fam in r["families"].values()})
    if names:
        notes.append("Our metric names: " + ", ".join(names) + ".")
    return notes


def pastegan_note(results: Results) -> str:
    """What the PasteGAN rows are: its retrieval rule on the shared generation module."""
    pick = results.config_values.get("pastegan.test_pick")
    top = results.config_values.get("pastegan.test_top")
    if pick == "random":
        what, rule = (
            "random selection",
            (
                f"uniform among its first {top} pre-filtered candidates per object and "
                "sample seed, as the RetrieveGAN paper §4.2 describes PasteGAN"
            ),
        )
    elif pick == "nearest":
        what, rule = "nearest candidate", "its released code's test-time pick; both samples identical, DS 0"
    else:
        what, rule = "selection rule not recorded", "pastegan.test_pick was not passed to the tables stage"
    return (
        f"PasteGAN rows: PasteGAN retrieval ({what}) on the shared generation module ({rule}). The module: "
        "crop encoder, 2-D graph-convolution refiner, object-image fuser, up-sampling decoder with PasteGAN's "
        "layer counts and losses (docs/architecture.md); PasteGAN's own crop refiner (flow / mask networks) and "
        "its cascaded refinement decoder on a full-size canvas are not reproduced."
    )


def table1(results: Results, paper: PaperValues, cfg: ReportConfig) -> Table:
    cols, spec = _metric_columns(results)
    columns = [Column("Method"), Column("Setting")] + cols
    rows = []
    for setting in SETTINGS:
        for method in TABLE1_ROWS[setting]:
            label = METHODS[method].label + (" (GT)" if setting == "gt_bbox" else "")
            rows.append([label, setting] + _metric_row(results, paper, cfg, "table1", method, setting, spec))
    rows.append(["Real data", "-"] + _metric_row(results, paper, cfg, "table1", "real_data", "", spec))
    notes = _notes(results, cfg) + [pastegan_note(results)]
    return Table("table1", "Table 1: realism (FID, IS) and diversity (DS)", columns, rows, notes)


def compatibility_cell(results: Results, method: str, setting: str, metric: str = "compat_single_theme") -> Cell:
    """A compatibility score with its bootstrap interval, or n/a with the reason."""
    info = method_info(method)
    if not results.compatibility_enabled:
        return na(
            "compatibility score not computed (evaluation.compatibility is false: it needs the synthetic "
            "benchmark's hidden themes; the paper runs a user study)"
        )
    if not info.retrieves_patches:
        return na(f"{info.label} does not retrieve patches")
    record = results.compatibility.get((method, setting))
    if record is None:
        return na("no compatibility file for this run was given to the tables stage")
    m = record["metrics"]
    return Cell(m[metric], digits=3, interval=(m[metric + "_low"], m[metric + "_high"]))


def table2_rows(results: Results) -> list[str]:
    """The paper's four rows, then the configured variants (those that are variants of a Table 2 method)."""
    return list(TABLE2_ROWS) + [v for v in results.variants if VARIANTS[v].base in TABLE2_ROWS]


def table2(results: Results, paper: PaperValues, cfg: ReportConfig) -> Table:
    cols, spec = _metric_columns(results)
    factor_columns = [column for column, _ in TABLE2_FACTORS]
    confidence = {r["bootstrap"]["confidence"] for r in results.compatibility.values()}
    compat_header = "Compatibility (single theme" + (
        f", {', '.join(f'{c:.0%}' for c in sorted(confidence))} CI)" if confidence else ")"
    )
    columns = (
        [Column("Method"), Column("L_gt_sel"), Column("L_occur_sel")]
        + [Column(c) for c in factor_columns]
        + cols
        + [Column(compat_header, "cell", with_interval=True)]
    )
    rows = []
    setting = cfg.ablation_setting
    for method in table2_rows(results):
        gt, occur = method_info(method).ablation
        levels = results.factors.get(method, {})
        if not occur:  # the form of a loss the run does not have
            levels = {**levels, "L_occur form": "- (no L_occur_sel)"}
        rows.append(
            [method, "yes" if gt else "-", "yes" if occur else "-"]
            + [str(levels.get(c, "-")) for c in factor_columns]
            + _metric_row(results, paper, cfg, "table2", method, setting, spec)
            + [compatibility_cell(results, method, setting)]
        )
    rows.append(
        ["Real data", "-", "-"]
        + ["-"] * len(factor_columns)
        + _metric_row(results, paper, cfg, "table2", "real_data", "", spec)
        + [na("real images are not retrieved patch sets")]
    )
    notes = _notes(results, cfg) + [
        f"Setting: {setting} ({SETTING_TAGS[setting]}). The paper's Table 2 is only "
        "partly legible in the text we have; illegible values are n/a."
    ]
    extra = [v for v in table2_rows(results) if v in VARIANTS]
    if extra:
        notes.append(
            "Rows after the paper's four are ours (retrievegan.runs.VARIANTS): the full model "
            "trained with one config change each, same data, steps and seeds; the paper has no such rows. "
            + " ".join(f"{v}: {VARIANTS[v].factor} = {VARIANTS[v].level}, {VARIANTS[v].reason}." for v in extra)
        )
    notes.append(f"Factor columns: the value each run used ({', '.join(f'{c} = {p}' for c, p in TABLE2_FACTORS)}).")
    return Table(
        "table2",
        "Table 2: ablation of the retrieval losses, retrieval mode, L_occur form and patch features",
        columns,
        rows,
        notes,
    )


DATASET_COLUMNS = (
    ("train", "Train"),
    ("val", "Val"),
    ("test", "Test"),
    ("categories", "#Category"),
    ("patches", "#Patches"),
    ("image_size", "Image size"),
)


def dataset_table(
    ours_csv: str | os.PathLike[str], paper_csv: str | os.PathLike[str], dataset: str, cfg: ReportConfig
) -> Table:
    try:
        ours = pd.read_csv(ours_csv)
        paper = pd.read_csv(paper_csv)
    except FileNotFoundError as exc:
        raise InputError(exc.filename, "dataset table not found") from exc
    columns = [Column("Source")]
    for _, label in DATASET_COLUMNS:
        columns += [Column(f"{label} paper", "cell"), Column(f"{label} ours", "cell"), Column(f"{label} diff", "cell")]
    rows = []
    for _, row in ours.iterrows():
        source = row["source"]
        match = paper[paper["dataset"] == source]
        out: list[Any] = [f"{DATASET_LABELS.get(source, source)} format ({row['dataset']})"]
        for key, _ in DATASET_COLUMNS:
            pc = (
                na(f"the paper has no {source} dataset row")
                if match.empty
                else Cell(float(match.iloc[0][key]), digits=0)
            )
            oc = Cell(float(row[key]), digits=0)
            if pc.is_na:
                dc = na("paper value n/a")
            elif not cfg.same_data_as_paper:
                dc = na(f"different data: ours is '{row['dataset']}' (report.same_data_as_paper is false)")
            else:
                dc = Cell(oc.value - pc.value, digits=0)
            out += [pc, oc, dc]
        rows.append(out)
    notes = [
        "Paper: the paper's dataset table (supplement) and its 128x128 resolution; ours: "
        f"{ours_csv}. #Patches counts the retrieval bank (training crops)."
    ]
    return Table("dataset", "Dataset statistics", columns, rows, notes)


def compatibility_table(results: Results) -> Table:
    columns = [
        Column("Method"),
        Column("Setting"),
        Column("Single-theme share", "cell"),
        Column("Single-theme CI low", "cell"),
        Column("Single-theme CI high", "cell"),
        Column("Pairwise same-theme", "cell"),
        Column("Pairwise CI low", "cell"),
        Column("Pairwise CI high", "cell"),
        Column("Chance (random same-category)", "cell"),
        Column("Sets", "cell"),
    ]
    rows = []
    runs = [(m, s) for m in results.methods for s in results.settings]
    runs += [(v, results.variant_setting) for v in results.variants if (v, results.variant_setting) not in runs]
    for method, setting in (r for r in runs if results.evaluated(*r)):
        info = method_info(method)
        reason = info.not_applicable_reason(setting)
        if reason is not None:
            continue  # no such run at all
        if not info.retrieves_patches:
            cells = [na(f"{info.label} does not retrieve patches")] * 8
        elif (method, setting) not in results.compatibility:
            cells = [na("no compatibility file for this run was given to the tables stage")] * 8
        else:
            m = results.compatibility[(method, setting)]["metrics"]
            n = results.compatibility[(method, setting)]["num_sets"]
            cells = [
                Cell(m["compat_single_theme"], digits=3),
                Cell(m["compat_single_theme_low"], digits=3),
                Cell(m["compat_single_theme_high"], digits=3),
                Cell(m["compat_pairwise_same_theme"], digits=3),
                Cell(m["compat_pairwise_same_theme_low"], digits=3),
                Cell(m["compat_pairwise_same_theme_high"], digits=3),
                Cell(m["compat_chance_pairwise_same_theme"], digits=3),
                Cell(float(n), digits=0),
            ]
        rows.append([info.label, setting] + cells)
    conf = {r["bootstrap"]["confidence"] for r in results.compatibility.values()}
    notes = [
        "Share of retrieved patch sets from a single hidden theme, and mean share of same-theme patch "
        "pairs, over both samples of every test scene graph; percentile bootstrap over scene graphs"
        + (f" ({', '.join(f'{c:.0%}' for c in sorted(conf))} intervals)." if conf else ".")
        + " The paper measures compatibility with a user study instead; no paper values."
    ]
    return Table("compatibility", "Patch compatibility (synthetic benchmark)", columns, rows, notes)


def write_tables(
    results: Results, cfg: ReportConfig, dataset_csv: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> list[Path]:
    paper = PaperValues(load_paper_tables(cfg.paper_tables), cfg.paper_dataset)
    tables = [
        table1(results, paper, cfg),
        table2(results, paper, cfg),
        dataset_table(dataset_csv, cfg.paper_dataset_stats, results.dataset, cfg),
    ]
    if results.compatibility_enabled:
        tables.append(compatibility_table(results))
    paths = []
    for table in tables:
        paths += table.write(out_dir)
    return paths
