"""Did this run reproduce the reference run? (``retrievegan verify``, ``make verify``)

The committed ``dvc.lock`` records the md5 of every output of the reference run (a directory output: the
md5 of its DVC manifest). After ``make reproduce``, ``verify`` hashes every output with DVC's own hashing
(``dvc_data``: the same function ``dvc commit`` / ``dvc status`` use, with DVC's state database) and compares
it with ``dvc.lock``, stage by stage: a stage is *reproduced bit for bit* when every output hashes to the
recorded value.

For a differing output it says what differs:

* **metrics and tables** (every DVC ``metrics:`` file and the ``tables/`` folder): the reference run's
  copies are committed to git under ``reference-run/`` (mirroring the output paths; written by ``make
  dvc-commit`` together with dvc.lock and checked against it), so a user without access to the team's
  DVC remote still gets the numeric differences, absolute and relative, value by value (JSON leaves, CSV
  cells);
* files inside a differing folder: listed when the reference manifest is in the local DVC cache (after
  ``dvc fetch`` / ``make dvc-pull``) or when the folder has reference copies, else only the folder's hash
  is known to differ;
* everything else (checkpoints, arrays, images): "differs", not compared numerically.

Exit status 0 only when every stage reproduced bit for bit. ``--rtol`` / ``--atol`` accept numeric
differences within ``|ours - reference| <= atol + rtol * |reference|`` (another CPU type rounds
differently, so every trained network and image differs in its last bits): a stage then passes when each
of its metric and table values is within tolerance and nothing is missing; binary outputs are reported as
differing but judged by the numbers computed from them. Text differences in metric files fail, except
hashes of upstream files (``*sha256``, ``*md5`` keys), which differ whenever an upstream binary does.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from retrievegan import dvcsync
from retrievegan.dvcsync import REFERENCE_DIR, is_reference_out

HASH_KEYS = ("sha256", "md5")  # text values that are hashes of other files
NUMERIC_SUFFIXES = (".json", ".csv")
MAX_LISTED = 20


class VerifyError(Exception):
    """No dvc.lock, an unknown stage, or a reference-run/ copy that does not match dvc.lock."""


# --- comparison of metric / table files -----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NumberDiff:
    key: str
    reference: float
    ours: float

    @property
    def abs(self) -> float:
        return abs(self.ours - self.reference)

    @property
    def rel(self) -> float:
        if self.reference == 0:
            return 0.0 if self.ours == 0 else math.inf
        return self.abs / abs(self.reference)

    def within(self, rtol: float, atol: float) -> bool:
        if math.isnan(self.reference) or math.isnan(self.ours):
            return math.isnan(self.reference) and math.isnan(self.ours)
        return self.abs <= atol + rtol * abs(self.reference)


@dataclasses.dataclass(frozen=True)
class TextDiff:
    key: str
    reference: str
    ours: str

    @property
    def is_hash(self) -> bool:
        return self.key.rsplit(".", 1)[-1].endswith(HASH_KEYS)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Value-by-value differences of one file against its reference copy."""

    compared: int  # values compared
    numbers: tuple[NumberDiff, ...]
    texts: tuple[TextDiff, ...]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def flatten_json(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of a JSON document as (``a.b[2].c``, value)."""
    if isinstance(value, dict):
        for key in sorted(value):
            yield from flatten_json(value[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from flatten_json(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def csv_cells(text: str) -> Iterator[tuple[str, str]]:
    """Cells of a CSV table as (``<row label> / <column>``, text); the row label is the row's first
    non-numeric cells (method, setting, ...), made unique by its position when it repeats."""
    rows = list(csv.reader(_io.StringIO(text)))
    if not rows:
        return
    header, seen = rows[0], {}
    for index, row in enumerate(rows[1:], start=1):
        label = " ".join(cell for cell in row[:3] if cell and _number(cell) is None) or f"row {index}"
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label} #{seen[label]}"
        for column, cell in enumerate(row):
            name = header[column] if column < len(header) else f"column {column + 1}"
            yield f"{label} / {name}", cell


def compare_values(reference: Iterable[tuple[str, Any]], ours: Iterable[tuple[str, Any]]) -> Comparison:
    ref, new = dict(reference), dict(ours)
    numbers, texts = [], []
    for key in sorted(set(ref) | set(new)):
        if key not in ref or key not in new:
            texts.append(
                TextDiff(
                    key,
                    "(absent)" if key not in ref else repr(ref[key]),
                    "(absent)" if key not in new else repr(new[key]),
                )
            )
            continue
        a, b = ref[key], new[key]
        na, nb = _number(a), _number(b)
        if na is not None and nb is not None:
            if na != nb and not (math.isnan(na) and math.isnan(nb)):
                numbers.append(NumberDiff(key, na, nb))
        elif a != b:
            texts.append(TextDiff(key, str(a), str(b)))
    return Comparison(len(set(ref) | set(new)), tuple(numbers), tuple(texts))


def compare_file(reference: Path, ours: Path) -> Comparison | None:
    """Numeric comparison of a JSON or CSV file with its reference copy; None for other files."""
    suffix = ours.suffix.lower()
    if suffix not in NUMERIC_SUFFIXES:
        return None
    ref_text, our_text = reference.read_text(encoding="utf-8"), ours.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            return compare_values(flatten_json(json.loads(ref_text)), flatten_json(json.loads(our_text)))
        except json.JSONDecodeError:
            return None
    return compare_values(csv_cells(ref_text), csv_cells(our_text))


# --- hashing with DVC -----------------------------------------------------------------------------
def hash_output(out: Any) -> tuple[str | None, dict[str, str]]:
    """DVC's hash of a workspace output (``<md5>`` or ``<md5>.dir``) and, for a folder, relpath -> md5 of
    its files; (None, {}) when it does not exist. ``out``: a ``dvc.output.Output``."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.tree import Tree

    if not out.exists:
        return None, {}
    _, _, obj = build(out.cache, out.fs_path, out.fs, out.hash_name, ignore=out.dvcignore, dry_run=True)
    files = {}
    if isinstance(obj, Tree):
        files = {"/".join(key): hash_info.value for key, _, hash_info in obj}
    return obj.hash_info.value, files


def locked_manifest(out: Any) -> dict[str, str] | None:
    """relpath -> md5 of a locked folder output, from its manifest in the local DVC cache (None if absent)."""
    from dvc_data.hashfile.tree import Tree

    try:
        obj = out.cache.get(out.hash_info.value)
        tree = Tree.load(out.cache, obj.hash_info)
    except Exception:  # noqa: BLE001 -- FileNotFoundError, ObjectFormatError, corrupted JSON: not available
        return None
    return {"/".join(key): hash_info.value for key, _, hash_info in tree}


# --- results --------------------------------------------------------------------------------------
@dataclasses.dataclass
class FileResult:
    path: str  # workspace path, relative to the project root
    status: str  # "differs" | "missing" (not produced) | "extra" (not in the reference run)
    comparison: Comparison | None = None  # None: not compared value by value
    note: str = ""

    def accepted(self, rtol: float | None, atol: float | None) -> bool:
        """Within the stated tolerance (binary files: judged by the numbers computed from them)."""
        if rtol is None and atol is None or self.status != "differs":
            return False
        if self.comparison is None:
            return True
        return all(d.within(rtol or 0.0, atol or 0.0) for d in self.comparison.numbers) and all(
            t.is_hash for t in self.comparison.texts
        )


@dataclasses.dataclass
class StageResult:
    name: str
    files: int = 0
    locked: bool = True
    differing: list[FileResult] = dataclasses.field(default_factory=list)
    unknown: list[str] = dataclasses.field(default_factory=list)  # folders known to differ, files unknown
    changed_deps: list[str] = dataclasses.field(default_factory=list)  # code / config since dvc.lock

    @property
    def identical(self) -> bool:
        return self.locked and not self.differing and not self.unknown

    def accepted(self, rtol: float | None, atol: float | None) -> bool:
        if self.identical:
            return True
        if not self.locked or (rtol is None and atol is None):
            return False
        return all(f.accepted(rtol, atol) for f in self.differing) and bool(self.unknown or self.differing)

    def verdict(self, rtol: float | None, atol: float | None) -> str:
        if not self.locked:
            return "NOT IN dvc.lock (no reference)"
        if self.identical:
            return "reproduced bit for bit"
        missing = sum(f.status == "missing" for f in self.differing)
        count = len(self.differing) + len(self.unknown)
        what = f"{missing} missing, " if missing else ""
        text = f"DIFFERS: {what}{count} of {self.files} output(s)"
        if self.accepted(rtol, atol):
            text = f"differs, within tolerance: {count} of {self.files} output(s)"
        return text


@dataclasses.dataclass
class Report:
    stages: list[StageResult]
    rtol: float | None
    atol: float | None
    reference_problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.reference_problems and all(s.accepted(self.rtol, self.atol) for s in self.stages)

    def lines(self) -> list[str]:
        tolerance = (
            "exact (bit for bit)"
            if self.rtol is None and self.atol is None
            else f"numbers within |ours - reference| <= {self.atol or 0:g} + {self.rtol or 0:g} x |reference|"
        )
        width = max([len(s.name) for s in self.stages] + [5])
        out = [
            f"Outputs against dvc.lock ({len(self.stages)} stages; accepted: {tolerance})",
            "",
            f"{'stage':<{width}}  {'files':>6}  result",
            f"{'-' * width}  {'-' * 6}  {'-' * 40}",
        ]
        for stage in self.stages:
            out.append(f"{stage.name:<{width}}  {stage.files:>6}  {stage.verdict(self.rtol, self.atol)}")
            out += [f"    {line}" for line in _details(stage, self.rtol, self.atol)]
        same = sum(s.identical for s in self.stages)
        accepted = sum(s.accepted(self.rtol, self.atol) and not s.identical for s in self.stages)
        out.append("")
        out += [f"reference-run/ does not match dvc.lock: {p}" for p in self.reference_problems]
        summary = f"{same} of {len(self.stages)} stages reproduced bit for bit"
        if accepted:
            summary += f", {accepted} within tolerance"
        failed = len(self.stages) - same - accepted
        if failed:
            summary += f", {failed} not reproduced"
        out.append(summary + ("." if self.ok else " -- NOT reproduced (exit status 1)."))
        return out


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _details(stage: StageResult, rtol: float | None, atol: float | None) -> list[str]:
    lines = []
    if stage.changed_deps:
        lines.append(
            "code / config differ from dvc.lock (an expected difference?): "
            + ", ".join(stage.changed_deps[:MAX_LISTED])
            + (" ..." if len(stage.changed_deps) > MAX_LISTED else "")
        )
    for folder in stage.unknown:
        lines.append(
            f"{folder}/: folder hash differs; which files needs the reference manifest "
            "(`dvc fetch` from the team's remote)"
        )
    listed = sorted(stage.differing, key=lambda f: (f.comparison is None, f.path))
    for item in listed[:MAX_LISTED]:
        if item.status != "differs":
            lines.append(f"{item.path}: {item.status}{' (' + item.note + ')' if item.note else ''}")
            continue
        if item.comparison is None:
            lines.append(f"{item.path}: differs ({item.note or 'not compared value by value'})")
            continue
        cmp = item.comparison
        lines.append(
            f"{item.path}: {len(cmp.numbers)} number(s) and {len(cmp.texts)} text value(s) differ of {cmp.compared}"
        )
        width = max([len(d.key) for d in cmp.numbers] + [0])
        for diff in sorted(cmp.numbers, key=lambda d: -d.rel)[:MAX_LISTED]:
            flag = ""
            if rtol is not None or atol is not None:
                flag = "  within tolerance" if diff.within(rtol or 0.0, atol or 0.0) else "  OUTSIDE tolerance"
            lines.append(
                f"    {diff.key:<{width}}  {_fmt(diff.reference)} -> {_fmt(diff.ours)}  "
                f"abs {diff.abs:.3g}  rel {diff.rel:.3g}{flag}"
            )
        for diff in cmp.texts[:MAX_LISTED]:
            kind = " (hash of an upstream file)" if diff.is_hash else ""
            lines.append(f"    {diff.key}: {diff.reference[:60]!s} -> {diff.ours[:60]!s}{kind}")
    if len(listed) > MAX_LISTED:
        lines.append(f"... and {len(listed) - MAX_LISTED} more file(s)")
    return lines


# --- the check ------------------------------------------------------------------------------------
def _stages(repo: Any, names: Sequence[str]) -> list[Any]:
    stages = list(repo.index.stages)
    known = {s.addressing for s in stages} | {s.addressing.split("@")[0] for s in stages}
    unknown = sorted(set(names) - known)
    if unknown:
        raise VerifyError(f"stage(s) {unknown} not in dvc.yaml (known: {sorted(known)})")
    return [s for s in stages if not names or s.addressing in names or s.addressing.split("@")[0] in names]


def _changed_deps(stage: Any, out_paths: Sequence[str]) -> list[str]:
    """Code and config dependencies whose workspace value differs from dvc.lock (not upstream outputs)."""
    changed = []
    for dep in stage.deps:
        if any(dvcsync._inside(dep.def_path, o) or dvcsync._inside(o, dep.def_path) for o in out_paths):
            continue
        for path, status in dep.workspace_status().items():
            if isinstance(status, dict):
                changed += [f"{path}:{key} ({value})" for key, value in status.items()]
            else:
                changed.append(f"{path} ({status})")
    return changed


def _compare_out(root: Path, out: Any, result: StageResult) -> None:
    path = out.def_path
    ours, files = hash_output(out)
    result.files += len(files) if files else int(ours is not None)
    expected = out.hash_info.value if out.hash_info else None
    if ours == expected:
        return
    if ours is None:
        result.differing.append(FileResult(path, "missing", note="not produced"))
        return
    reference = root / REFERENCE_DIR / path
    if not out.hash_info.isdir:
        comparison, note = None, "not a metric or table: not compared value by value"
        if reference.is_file():
            comparison = compare_file(reference, root / path)
            note = "" if comparison else "no numeric format"
        elif is_reference_out(out):
            note = f"its reference copy {REFERENCE_DIR}/{path} is missing"
        result.differing.append(FileResult(path, "differs", comparison, note))
        return
    manifest = locked_manifest(out)
    if manifest is None and reference.is_dir():
        manifest = {
            p.relative_to(reference).as_posix(): dvcsync.md5_file(p)
            for p in sorted(reference.rglob("*"))
            if p.is_file()
        }
    if manifest is None:
        result.unknown.append(path)
        return
    for rel in sorted(set(manifest) | set(files)):
        if manifest.get(rel) == files.get(rel):
            continue
        full = f"{path}/{rel}"
        if rel not in files:
            result.differing.append(FileResult(full, "missing", note="not produced"))
        elif rel not in manifest:
            result.differing.append(FileResult(full, "extra", note="not in the reference run"))
        else:
            ref_file = reference / rel
            comparison = compare_file(ref_file, root / full) if ref_file.is_file() else None
            note = (
                ""
                if comparison
                else (
                    "no numeric format" if ref_file.is_file() else "not a metric or table: not compared value by value"
                )
            )
            result.differing.append(FileResult(full, "differs", comparison, note))


def reference_problems(repo: Any, root: Path) -> list[str]:
    """reference-run/ copies that do not match dvc.lock (or are missing for a locked metric / table)."""
    from dvc_data.hashfile.build import build

    problems = []
    for stage in repo.index.stages:
        for out in stage.outs:
            if not is_reference_out(out) or not out.hash_info:
                continue
            copy = root / REFERENCE_DIR / out.def_path
            if not copy.exists():
                problems.append(f"{REFERENCE_DIR}/{out.def_path} is missing")
                continue
            _, _, obj = build(out.cache, str(copy), out.fs, out.hash_name, dry_run=True)
            if obj.hash_info.value != out.hash_info.value:
                problems.append(
                    f"{REFERENCE_DIR}/{out.def_path} hashes to {obj.hash_info.value}, dvc.lock "
                    f"records {out.hash_info.value}"
                )
    return problems


def verify(root: Path, names: Sequence[str] = (), rtol: float | None = None, atol: float | None = None) -> Report:
    root = root.resolve()
    if not (root / "dvc.lock").is_file():
        raise VerifyError(f"{root / 'dvc.lock'}: missing (nothing to compare with)")
    from dvc.exceptions import DvcException

    try:
        repo_context = dvcsync._open_repo(root)
    except DvcException as exc:
        raise VerifyError(f"{root}: not a DVC project ({exc})") from exc
    with repo_context as repo:
        stages = _stages(repo, names)
        all_outs = [o.def_path for s in repo.index.stages for o in s.outs]
        results = []
        for stage in stages:
            result = StageResult(stage.addressing)
            if not all(o.hash_info for o in stage.outs):
                result.locked = False
            else:
                for out in stage.outs:
                    _compare_out(root, out, result)
                result.changed_deps = _changed_deps(stage, all_outs)
            results.append(result)
        problems = reference_problems(repo, root)
    return Report(results, rtol, atol, problems)
