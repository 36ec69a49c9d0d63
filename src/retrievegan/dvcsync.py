"""DVC <-> Snakemake hand-over: push and pull cached artifacts so that Snakemake re-runs nothing it pulled.

``python -m retrievegan.dvcsync pull [STAGE ...]`` (``make dvc-pull``)
    ``dvc pull`` (with the stages' upstream stages), then, for each stage of ``dvc.lock`` in DAG order:
    hash every pulled output against ``dvc.lock`` and run the stage's own ``snakemake`` command with
    ``--touch``. DVC does not keep modification times, so after a pull the outputs of a fresh clone carry
    checkout times in no particular order and Snakemake would re-run whatever looks older than its
    inputs. ``--touch --forcerun <the stage's rules>`` touches every job of the stage in dependency order
    (after its upstream stages, so every output ends up newer than its inputs) and records Snakemake's
    metadata (params, code, input), so later changes keep triggering re-runs. The stage's rules are those
    whose outputs lie in its ``dvc.lock`` outs (``snakemake --summary``); upstream jobs are not
    re-touched, so stages beside it (pulled earlier or produced locally) stay up to date; a stage that
    Snakemake already has up to date (nothing pending, metadata present) is verified but not touched.
``python -m retrievegan.dvcsync touch [STAGE ...]``
    the same without the ``dvc pull`` (after a ``dvc checkout`` or a manual ``dvc pull``).
``python -m retrievegan.dvcsync verify [--cache] [STAGE ...]``
    hash the workspace outputs (or, with ``--cache``, the cache objects) against ``dvc.lock``.
``python -m retrievegan.dvcsync push [STAGE ...]`` (``make dvc-push``)
    verify the cache objects, ``dvc push``, then check with ``dvc status -c`` that the remote has them.
``python -m retrievegan.dvcsync commit [STAGE ...]`` (``make dvc-commit``)
    record outputs Snakemake already produced in ``dvc.lock`` and the cache without running anything:
    ``dvc commit -f``, keeping the outputs' modification times (DVC 3 resets those of single-file outputs,
    in no particular order, after which Snakemake would re-run whatever now looks older than its inputs),
    and copy the metric files and tables to ``reference-run/`` (git-tracked, for ``retrievegan verify``).
``python -m retrievegan.dvcsync yaml [--check]`` (``make dvc-yaml``)
    write ``dvc.yaml`` from the stage table of ``retrievegan.dvcstages`` and the code's imports; with
    ``--check``, write nothing and exit 1 (showing the difference) when ``dvc.yaml`` is not current.

Why touching is safe: a stage is touched only when (1) every output file hashes to the md5 ``dvc.lock``
records, so no corrupted or foreign byte is ever marked up to date (DVC itself trusts its cache and its
state database: a corrupted cache object is checked out and pushed silently), (2) ``dvc status``
reports no changed command, dependency file or output, and (3) its upstream stages were touched. A stage
whose only change is a config value is touched *with the values recorded in dvc.lock* (an extra
``--configfile``), so Snakemake's metadata describes what was pulled and its ``params`` trigger re-runs
exactly the rules that the changed values feed. A stage with changed code or rule files is left alone
and reported (``dvc repro <stage>`` re-runs it).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import graphlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from retrievegan.config import merge

DEFAULT_CONFIGFILE = "config/config.yaml"  # the Snakefile's `configfile:`, loaded before any --configfile
CHUNK = 1 << 20
REFERENCE_DIR = "reference-run"  # git-tracked copies of the reference run's metrics and tables
REFERENCE_FOLDERS = ("tables",)  # directory outputs copied whole (besides every DVC metric file)
REFERENCE_FILES = ("claims.csv", "preference_simulated.csv")  # result CSVs that are not DVC metrics (the README
# headline reads them from reference-run/ too)


class SyncError(Exception):
    """A failed DVC command, a missing dvc.lock, or outputs that do not match dvc.lock."""


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str  # "missing" (not pulled), "corrupt" (bytes differ from dvc.lock), "extra", "legacy"
    text: str

    def __str__(self) -> str:
        return self.text


@dataclasses.dataclass(frozen=True)
class LockedOut:
    path: str
    md5: str  # "<hex>" for a file, "<hex>.dir" for a directory (the manifest object's name)
    hash_name: str | None  # "md5" for DVC 3 hashes; None for DVC 2 (md5-dos2unix) entries

    @property
    def is_dir(self) -> bool:
        return self.md5.endswith(".dir")


@dataclasses.dataclass(frozen=True)
class LockedStage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    params: Mapping[str, Mapping[str, Any]]  # params file -> {key: locked value}
    outs: tuple[LockedOut, ...]


# --- dvc.lock, DAG, dvc CLI ------------------------------------------------------------------------
def load_lock(root: Path) -> dict[str, LockedStage]:
    path = root / "dvc.lock"
    if not path.is_file():
        raise SyncError(f"{path}: missing; run `dvc repro` (and commit dvc.lock) before push/pull")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    stages = {}
    for name, entry in (data.get("stages") or {}).items():
        cmd = entry.get("cmd", "")
        cmd = " && ".join(cmd) if isinstance(cmd, list) else str(cmd)
        outs = tuple(LockedOut(o["path"], o.get("md5", ""), o.get("hash")) for o in entry.get("outs", []))
        stages[name] = LockedStage(
            name, cmd, tuple(d["path"] for d in entry.get("deps", [])), entry.get("params") or {}, outs
        )
    return stages


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.normpath(path), os.path.normpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def upstream(stages: Mapping[str, LockedStage]) -> dict[str, set[str]]:
    """stage -> the stages whose outputs it depends on (directly).

    As in DVC's own graph, a dependency inside an output (``data/patches`` of ``data``) and a dependency
    holding outputs (the ``metrics`` folder that several stages write into) both make an edge.
    """
    return {
        name: {
            other.name
            for other in stages.values()
            if other.name != name
            for out in other.outs
            for dep in stage.deps
            if _inside(dep, out.path) or _inside(out.path, dep)
        }
        for name, stage in stages.items()
    }


def with_ancestors(names: Iterable[str], parents: Mapping[str, set[str]]) -> set[str]:
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(parents.get(name, ()))
    return seen


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([exe, *args], cwd=root, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SyncError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}".rstrip())
    return proc


def _open_repo(root: Path):
    from dvc.repo import Repo  # in-process: one DVC start-up instead of one per `dvc` command

    return Repo(str(root))


def cache_dir(root: Path) -> Path:
    """The local cache folder (`dvc cache dir`); objects live under files/md5/ in it."""
    with _open_repo(root) as repo:
        return Path(repo.cache.local.path).parent.parent


def status_and_cache(root: Path) -> tuple[dict[str, list], Path]:
    """What `dvc status --json` prints (stage -> changes; absent when up to date) and the cache folder."""
    with _open_repo(root) as repo:
        return repo.status(), Path(repo.cache.local.path).parent.parent


# --- hashing -------------------------------------------------------------------------------------
def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_object(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def _manifest(cache: Path, out: LockedOut, problems: list[Problem]) -> list[dict] | None:
    obj = cache_object(cache, out.md5)
    if not obj.is_file():
        problems.append(Problem("missing", f"{out.path}: directory manifest {out.md5} is not in the cache ({obj})"))
        return None
    found = md5_file(obj)
    if found + ".dir" != out.md5:
        problems.append(Problem("corrupt", f"{out.path}: directory manifest {obj} is corrupted (md5 {found}.dir)"))
        return None
    return json.loads(obj.read_text(encoding="utf-8"))


def verify(
    root: Path, stages: Iterable[LockedStage], cache: Path, where: str = "workspace", jobs: int = 4
) -> dict[str, list[Problem]]:
    """Hash the outputs of ``stages`` against dvc.lock; stage -> problems (empty list: all match).

    ``where="workspace"`` hashes the files Snakemake will read (and reports missing or unexpected
    files); ``where="cache"`` hashes the cache objects that ``dvc push`` would upload.
    """
    checks: list[tuple[str, Path, str, str]] = []  # (stage, file, expected md5, label)
    problems: dict[str, list[Problem]] = {}
    for stage in stages:
        found = problems.setdefault(stage.name, [])
        for out in stage.outs:
            if out.hash_name != "md5":
                found.append(
                    Problem(
                        "legacy", f"{out.path}: dvc.lock has no DVC 3 md5 (hash: {out.hash_name}); run `dvc commit`"
                    )
                )
                continue
            if not out.is_dir:
                target = root / out.path if where == "workspace" else cache_object(cache, out.md5)
                checks.append((stage.name, target, out.md5, out.path))
                continue
            entries = _manifest(cache, out, found)
            if entries is None:
                continue
            for entry in entries:
                target = (
                    root / out.path / entry["relpath"] if where == "workspace" else cache_object(cache, entry["md5"])
                )
                checks.append((stage.name, target, entry["md5"], f"{out.path}/{entry['relpath']}"))
            if where == "workspace" and (root / out.path).is_dir():
                listed = {entry["relpath"] for entry in entries}
                for path in sorted((root / out.path).rglob("*")):
                    rel = path.relative_to(root / out.path).as_posix()
                    if path.is_file() and rel not in listed:
                        found.append(
                            Problem(
                                "extra", f"{out.path}/{rel}: not in dvc.lock (a file the pulled stage did not write)"
                            )
                        )

    def check(item: tuple[str, Path, str, str]) -> tuple[str, Problem | None]:
        stage, target, expected, label = item
        if not target.is_file():
            return stage, Problem("missing", f"{label}: missing ({target})")
        actual = md5_file(target)
        if actual == expected:
            return stage, None
        return stage, Problem("corrupt", f"{label}: md5 {actual} != {expected} in dvc.lock ({target})")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for stage, problem in pool.map(check, checks):
            if problem:
                problems[stage].append(problem)
    return problems


# --- touching ------------------------------------------------------------------------------------
def _params_only(changes: list) -> bool:
    """True when every change dvc status reports for a stage is a changed config value."""
    for change in changes:
        if not isinstance(change, dict) or set(change) != {"changed deps"}:
            return False
        if not all(isinstance(value, dict) for value in change["changed deps"].values()):
            return False
    return True


def snakemake_argv(cmd: str) -> tuple[list[str], list[str]]:
    """The stage command as argv and its --configfile list.

    As Snakemake's parser does, ``--configfile``/``--configfiles`` take every following word up to the
    next option (the dvc.yaml convention: an option follows them); the last occurrence wins.
    """
    argv = shlex.split(cmd)
    if not argv or Path(argv[0]).name != "snakemake" or any(tok in ("&&", "||", ";", "|") for tok in argv):
        raise SyncError(f"stage command is not a single snakemake call: {cmd!r}")
    configfiles: list[str] = []
    i = 1
    while i < len(argv):
        option, _, inline = argv[i].partition("=")
        if option in ("--configfile", "--configfiles"):
            configfiles = [inline] if inline else []
            i += 1
            while not inline and i < len(argv) and not argv[i].startswith("-"):  # --configfile=x: one
                configfiles.append(argv[i])
                i += 1
            continue
        i += 1
    return argv, configfiles


def _is_snakemake_call(cmd: str) -> bool:
    try:
        snakemake_argv(cmd)
    except SyncError:
        return False
    return True


def _nested(values: Mapping[str, Any]) -> dict[str, Any]:
    """dvc.lock's params with dotted keys (``cluster.resources.train.gpus: 1``, a single value DVC tracks)
    turned into the nested mapping a config file holds."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, last = str(key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = merge(node[last], value) if isinstance(node.get(last), dict) and isinstance(value, dict) else value
    return out


def locked_config(stage: LockedStage, configfiles: Sequence[str]) -> dict[str, Any]:
    """The config values dvc.lock recorded, layered as Snakemake layers its config files."""
    overlay: dict[str, Any] = {}
    for name in [DEFAULT_CONFIGFILE, *configfiles]:
        for params_file, values in stage.params.items():
            if os.path.normpath(params_file) == os.path.normpath(name):
                overlay = merge(overlay, _nested(values))
    return overlay


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """One output file of ``snakemake --summary``."""

    rule: str
    metadata: bool  # Snakemake holds metadata for it (its log column is "-" without)
    pending: bool  # plan "update pending": Snakemake would (re)create it


def parse_summary(text: str) -> dict[str, SummaryRow]:
    """output file -> (rule, metadata?, pending?), from ``snakemake --summary`` (tab-separated:
    output_file, date, rule, log-file(s), status, plan, after its header line)."""
    files: dict[str, SummaryRow] = {}
    header = False
    for line in text.splitlines():
        fields = line.split("\t")
        if fields[:3] == ["output_file", "date", "rule"]:
            header = True
        elif header and len(fields) >= 6:
            files[os.path.normpath(fields[0])] = SummaryRow(fields[2], fields[3] != "-", fields[5] != "no update")
    return files


def stage_rows(stage: LockedStage, summary: Mapping[str, SummaryRow]) -> dict[str, SummaryRow]:
    """The summary rows of the files that lie in the stage's dvc.lock outs (its own jobs, not upstream ones)."""
    return {path: item for path, item in summary.items() if any(_inside(path, out.path) for out in stage.outs)}


def stage_rules(stage: LockedStage, summary: Mapping[str, SummaryRow]) -> list[str]:
    """The Snakemake rules whose outputs lie in the stage's dvc.lock outs."""
    return sorted({item.rule for item in stage_rows(stage, summary).values()})


def _snakemake_exe(argv: Sequence[str]) -> str:
    return shutil.which(argv[0]) or str(Path(sys.executable).with_name("snakemake"))


def _summary(root: Path, argv: Sequence[str], extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """``snakemake --summary`` of a stage command (``argv``: :func:`snakemake_argv`), ``extra`` words last."""
    return subprocess.run(
        [_snakemake_exe(argv), *argv[1:], "--summary", *extra], cwd=root, capture_output=True, text=True
    )


def touch_stage(
    root: Path, stage: LockedStage, ancestors: Sequence[LockedStage] = ()
) -> subprocess.CompletedProcess | None:
    """``<stage cmd> --touch --forcerun <its rules> --configfile ... <locked values>``; None when Snakemake
    already has the stage up to date (nothing pending, metadata for every output): nothing is touched.

    ``--forcerun`` on the rules whose outputs the stage holds (``snakemake --summary`` of the stage's
    targets): every job of the stage is touched in dependency order and gets metadata, also when the
    checkout happened to leave consistent mtimes (plain ``--touch`` skips jobs that look up to date and
    records nothing for them, so later config changes would go unnoticed). Upstream jobs are not touched
    here: they were handed over before (DAG order), and touching them again would make every other stage
    that reads them (pulled before, or produced locally) look out of date. For the same reason a stage
    that is already up to date for Snakemake (a re-pull of unchanged outputs, whose files DVC leaves alone)
    is left as it is. The locked values of ``ancestors`` are layered under the stage's own so that
    Snakemake sees the upstream jobs with the params they were touched with.
    """
    argv, configfiles = snakemake_argv(stage.cmd)
    exe = _snakemake_exe(argv)
    values: dict[str, Any] = {}
    for item in [*ancestors, stage]:
        values = merge(values, locked_config(item, configfiles))
    with tempfile.TemporaryDirectory(prefix="dvcsync-") as tmp:
        overlay = Path(tmp) / "locked-params.yaml"
        overlay.write_text(yaml.safe_dump(values, sort_keys=True), encoding="utf-8")
        # --configfile goes last (it takes every following word); repeating the stage's own files keeps them.
        config_args = ["--configfile", *configfiles, str(overlay)]
        summary = _summary(root, argv, config_args)
        rows = stage_rows(stage, parse_summary(summary.stdout)) if summary.returncode == 0 else {}
        if not rows:
            detail = (
                (summary.stdout + summary.stderr)[-3000:]
                if summary.returncode
                else "no Snakemake output lies in the stage's outs"
            )
            return subprocess.CompletedProcess(
                summary.args, summary.returncode or 1, summary.stdout, f"snakemake --summary: {detail}"
            )
        if all(item.metadata and not item.pending for item in rows.values()):
            return None
        rules = sorted({item.rule for item in rows.values()})
        return subprocess.run(
            [exe, *argv[1:], "--touch", "--forcerun", *rules, *config_args], cwd=root, capture_output=True, text=True
        )


@dataclasses.dataclass
class Report:
    touched: list[str] = dataclasses.field(default_factory=list)
    current: list[str] = dataclasses.field(default_factory=list)  # verified, already up to date for Snakemake
    rerun: dict[str, str] = dataclasses.field(default_factory=dict)  # touched, but config changed since
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # not touched: why
    corrupted: dict[str, list[Problem]] = dataclasses.field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"touched (up to date for Snakemake): {name}" for name in self.touched]
        out += [f"verified, already up to date for Snakemake (not touched): {name}" for name in self.current]
        out += [
            f"config changed since the push: {name}: {why} (Snakemake re-runs what it feeds)"
            for name, why in self.rerun.items()
        ]
        out += [f"not touched: {name}: {why}" for name, why in self.skipped.items()]
        for name, problems in self.corrupted.items():
            out.append(
                f"outputs of stage {name} do NOT match dvc.lock (not touched; `dvc checkout --force {name}` "
                "after fixing the cache/remote):"
            )
            out += [f"  {problem}" for problem in problems[:20]]
            if len(problems) > 20:
                out.append(f"  ... and {len(problems) - 20} more")
        return out


def touch(root: Path, names: Sequence[str] = (), jobs: int = 4) -> Report:
    stages = load_lock(root)
    unknown = sorted(set(names) - set(stages))
    if unknown:
        raise SyncError(f"stage(s) {unknown} not in dvc.lock (known: {sorted(stages)})")
    parents = upstream(stages)
    wanted = with_ancestors(names or stages, parents)
    order = [n for n in graphlib.TopologicalSorter(parents).static_order() if n in wanted]
    status, cache = status_and_cache(root)
    problems = verify(root, [stages[n] for n in order], cache, "workspace", jobs)
    report = Report()
    for name in order:
        changes = status.get(name, [])
        blocked = sorted(p for p in parents[name] if p not in report.touched + report.current)
        kinds = {p.kind for p in problems[name]}
        if kinds & {"corrupt", "legacy"}:
            report.corrupted[name] = [p for p in problems[name] if p.kind in ("corrupt", "legacy")]
        elif kinds:
            example = problems[name][0]
            report.skipped[name] = (
                f"{len(problems[name])} output file(s) missing or not in dvc.lock "
                f"(not pulled? modified?), e.g. {example}"
            )
        elif blocked:
            report.skipped[name] = f"upstream stage(s) {blocked} not touched"
        elif changes and not _params_only(changes):
            report.skipped[name] = f"dvc status: {json.dumps(changes)}; `dvc repro {name}` re-runs it"
        elif not _is_snakemake_call(stages[name].cmd):
            report.skipped[name] = f"its command is not a single snakemake call: {stages[name].cmd!r}"
        else:
            ancestors = [stages[n] for n in order if n != name and n in with_ancestors([name], parents)]
            proc = touch_stage(root, stages[name], ancestors)
            if proc is None:
                report.current.append(name)
                if changes:
                    report.rerun[name] = json.dumps(changes)
                continue
            if proc.returncode != 0:
                raise SyncError(
                    f"snakemake --touch for stage {name} failed ({proc.returncode}):\n"
                    f"{(proc.stdout + proc.stderr)[-4000:]}"
                )
            report.touched.append(name)
            if changes:
                report.rerun[name] = json.dumps(changes)
    return report


# --- commands ------------------------------------------------------------------------------------
NO_REMOTE_HINT = (
    "the committed dvc.lock's artifacts live on the team's DVC remote (docs/scale.md); without "
    "access to it, produce them with `make reproduce` and check them with `make verify`"
)


def missing_local_remote(root: Path, remote: str | None = None) -> str | None:
    """The folder of a local-directory remote (the default one, or ``remote``) when it does not exist here."""
    with _open_repo(root) as repo:
        config = repo.config
        name = remote or config["core"].get("remote")
        url = (config["remote"].get(name) or {}).get("url", "") if name else ""
    if not url or "://" in url:
        return None
    folder = Path(url) if os.path.isabs(url) else (root / ".dvc" / url)
    return None if folder.is_dir() else f"{name}: {os.path.normpath(folder)}"


def pull(root: Path, names: Sequence[str] = (), remote: str | None = None, jobs: int = 4) -> Report:
    absent = missing_local_remote(root, remote)
    if absent:
        raise SyncError(f"the DVC remote folder does not exist on this machine ({absent}); {NO_REMOTE_HINT}")
    args = ["pull"] + (["-r", remote] if remote else []) + (["--with-deps", *names] if names else [])
    proc = dvc(root, *args, check=False)
    if proc.returncode != 0:
        raise SyncError(
            f"dvc {' '.join(args)} failed ({proc.returncode}); nothing was touched. A remote with "
            f"`verify = true` fails here when a downloaded object does not match its md5:\n"
            f"{(proc.stdout + proc.stderr).strip()}"
        )
    return touch(root, names, jobs)


def push(root: Path, names: Sequence[str] = (), remote: str | None = None, jobs: int = 4) -> None:
    stages = load_lock(root)
    selected = [stages[n] for n in (names or stages) if n in stages]
    if len(selected) != len(names or stages):
        raise SyncError(f"stage(s) {sorted(set(names) - set(stages))} not in dvc.lock")
    problems = {k: v for k, v in verify(root, selected, cache_dir(root), "cache", jobs).items() if v}
    if problems:
        raise SyncError(
            "refusing to push: cache objects do not match dvc.lock:\n"
            + "\n".join(f"  {s}: {p}" for s, ps in problems.items() for p in ps[:20])
        )
    remote_args = ["-r", remote] if remote else []
    dvc(root, "push", *remote_args, *names)
    status = dvc(root, "status", "-c", "--json", *remote_args, *names).stdout.strip()
    if status and json.loads(status):
        raise SyncError(f"after dvc push the remote still lacks objects (dvc status -c): {status}")


@dataclasses.dataclass(frozen=True)
class YamlStage:
    """A dvc.yaml stage: its command and output paths (relative to the project root); no hashes."""

    name: str
    cmd: str
    outs: tuple[str, ...]


def yaml_stages(root: Path, names: Sequence[str]) -> list[YamlStage]:
    """The dvc.yaml stages ``names`` (all when empty; a foreach group name selects its members), also those
    not in dvc.lock yet; an unknown name is an error."""
    with _open_repo(root) as repo:
        stages = select_stages(repo, names)
    return [YamlStage(s.addressing, str(s.cmd), tuple(str(out.def_path) for out in s.outs)) for s in stages]


def select_stages(repo: Any, names: Sequence[str]) -> list[Any]:
    """The ``dvc.stage.Stage``s of an open DVC repo named ``names`` (all when empty; a foreach group name
    selects its members); an unknown name is an error."""
    stages = list(repo.index.stages)
    known = {s.addressing for s in stages} | {s.addressing.split("@")[0] for s in stages}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SyncError(f"stage(s) {unknown} not in dvc.yaml")
    return [s for s in stages if not names or s.addressing in names or s.addressing.split("@")[0] in names]


def mtimes(paths: Iterable[Path]) -> dict[str, tuple[int, int]]:
    """path -> (atime_ns, mtime_ns) of every file and folder under ``paths``."""
    found: dict[str, tuple[int, int]] = {}

    def record(path: str) -> None:
        st = os.stat(path, follow_symlinks=False)
        found[path] = (st.st_atime_ns, st.st_mtime_ns)

    for top in paths:
        if not top.exists():
            continue
        record(str(top))
        if top.is_dir():
            for folder, dirs, files in os.walk(top):
                for name in dirs + files:
                    record(os.path.join(folder, name))
    return found


def restore_mtimes(recorded: Mapping[str, tuple[int, int]]) -> int:
    """Put the recorded modification times back (deepest paths first, so folders keep theirs); returns the
    number of paths that had changed."""
    changed = 0
    for path in sorted(recorded, key=lambda p: p.count(os.sep), reverse=True):
        atime, mtime = recorded[path]
        try:
            if os.stat(path, follow_symlinks=False).st_mtime_ns != mtime:
                os.utime(path, ns=(atime, mtime), follow_symlinks=False)
                changed += 1
        except FileNotFoundError:
            pass
    return changed


def snakemake_outputs(root: Path) -> set[str]:
    """Every output file Snakemake has made in this working directory, for any target (its metadata records,
    ``.snakemake/metadata/<urlsafe base64 of the path>``, long names split into ``@``-prefixed folders)."""
    top = root / ".snakemake" / "metadata"
    found: set[str] = set()
    if not top.is_dir():
        return found
    for folder, _, files in os.walk(top):
        parts = [p.removeprefix("@") for p in Path(folder).relative_to(top).parts]
        for name in files:
            encoded = "".join(parts) + name
            try:
                found.add(os.path.normpath(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()))
            except (ValueError, UnicodeDecodeError):
                continue
    return found


def stray_files(root: Path, outs: Iterable[str], produced: Iterable[str], declared: Iterable[str]) -> list[str]:
    """Files inside a stage's folder outputs ``outs`` that other targets left there, as paths relative to ``root``.

    ``produced``: the stage's own Snakemake outputs (``snakemake --summary`` of its command: files, or
    ``directory()`` outputs); ``declared``: every output Snakemake has made here (:func:`snakemake_outputs`).
    A file is the stage's when it is (inside) a produced output. It is a stray when it is (inside) an output of
    another job, or when it is a job's undeclared side file (images beside a manifest, a ``run.json``) and the
    nearest folder above it that holds a declared output holds only other jobs' outputs. Strays come from the
    opt-in runs (``claims_full``, ``table2-variants``, ``rarity_experiment``) writing into the same folders:
    ``dvc commit`` would hash them into the folder's entry, and no plain ``make reproduce`` could match it.
    """
    own = {os.path.normpath(p) for p in produced}
    other = {os.path.normpath(p) for p in declared} - own
    by_folder: dict[str, set[str]] = {}  # folder -> "own" / "other": whose declared outputs lie directly in it
    for path in own:
        by_folder.setdefault(os.path.dirname(path), set()).add("own")
    for path in other:
        by_folder.setdefault(os.path.dirname(path), set()).add("other")

    def covered(rel: str, paths: set[str]) -> bool:
        parts = Path(rel).parts
        return any(os.path.join(*parts[:i]) in paths for i in range(1, len(parts) + 1))

    strays = []
    for out in outs:
        top = root / out
        if not top.is_dir():
            continue
        for folder, _, files in os.walk(top):
            for name in files:
                rel = os.path.relpath(os.path.join(folder, name), root)
                if covered(rel, own):
                    continue
                if covered(rel, other):
                    strays.append(rel)
                    continue
                parent = os.path.dirname(rel)
                while parent and parent not in by_folder and _inside(parent, out) and parent != out:
                    parent = os.path.dirname(parent)
                if by_folder.get(parent) == {"other"}:
                    strays.append(rel)
    return sorted(strays)


def check_no_strays(root: Path, stages: Sequence[YamlStage]) -> None:
    """Raise SyncError when a folder output of the stages holds files their own Snakemake jobs do not produce
    (:func:`stray_files`); only Snakemake stages with a folder output are asked (``snakemake --summary``)."""
    problems = []
    declared = snakemake_outputs(root)
    for stage in stages:
        if not any((root / out).is_dir() for out in stage.outs):
            continue
        try:
            argv, _ = snakemake_argv(stage.cmd)
        except SyncError:  # not a Snakemake stage: no declared outputs to compare with
            continue
        summary = _summary(root, argv)  # argv holds the stage's own --configfile words
        if summary.returncode != 0:
            detail = (summary.stdout + summary.stderr)[-3000:]
            raise SyncError(f"stage {stage.name}: snakemake --summary failed:\n{detail}")
        strays = stray_files(root, stage.outs, parse_summary(summary.stdout), declared)
        if strays:
            problems.append(f"  {stage.name}: {len(strays)} file(s), e.g. " + ", ".join(strays[:5]))
    if problems:
        raise SyncError(
            "refusing to commit: these stage output folders hold files that the stages' own jobs do "
            "not produce (left by opt-in targets such as claims_full, table2-variants or "
            "rarity_experiment); dvc.lock would record them and no plain `make reproduce` could match "
            "it. Record the reference run in a clone that ran only `make reproduce`, or move the files "
            "away first:\n" + "\n".join(problems)
        )


def commit(root: Path, names: Sequence[str] = ()) -> tuple[int, list[str]]:
    """``dvc commit -f [names]`` keeping the outputs' modification times, then the reference copies of the
    metrics and tables under reference-run/ (``retrievegan.verify``: what ``make verify`` compares numbers
    with when the remote is out of reach). Refuses when a folder output holds files its stage's jobs do not
    produce (:func:`check_no_strays`). Returns (paths whose mtime was restored, copied paths)."""
    stages = yaml_stages(root, names)
    check_no_strays(root, stages)
    recorded = mtimes(root / out for stage in stages for out in stage.outs)
    try:
        dvc(root, "commit", "-f", *names)
    finally:
        restored = restore_mtimes(recorded)
    return restored, write_reference(root, names)


# --- reference-run/ ------------------------------------------------------------------------------
def is_reference_out(out: Any) -> bool:
    """Metric files, the table folders and the result CSVs (``out``: a ``dvc.output.Output``): their reference
    copies live in git under reference-run/."""
    return bool(out.metric) or Path(out.def_path).name in REFERENCE_FOLDERS + REFERENCE_FILES


def write_reference(root: Path, names: Sequence[str] = ()) -> list[str]:
    """Copy the metric files and table folders of ``names`` (all stages when empty) from the workspace to
    reference-run/ (what ``make dvc-commit`` does after recording dvc.lock); returns the copied paths."""
    root = root.resolve()
    copied = []
    with _open_repo(root) as repo:
        for stage in select_stages(repo, names):
            for out in stage.outs:
                if not is_reference_out(out):
                    continue
                src, dst = root / out.def_path, root / REFERENCE_DIR / out.def_path
                if not src.exists():
                    raise SyncError(f"{out.def_path}: missing, cannot record it as the reference")
                if dst.is_dir():
                    shutil.rmtree(dst)
                dst.parent.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
                copied.append(out.def_path)
    return copied


# --- dvc.yaml ------------------------------------------------------------------------------------
def write_dvc_yaml(root: Path, check_only: bool) -> int:
    """``dvcsync yaml [--check]``: write dvc.yaml from the stage table, or report that it is not current."""
    from retrievegan import dvcstages

    try:
        if check_only:
            problem = dvcstages.check(root)
            print(problem or f"{dvcstages.DVC_YAML} is current", file=sys.stderr if problem else sys.stdout)
            return 1 if problem else 0
        changed = dvcstages.write(root)
    except dvcstages.StageTableError as exc:
        raise SyncError(f"stage table (src/retrievegan/dvcstages.py): {exc}") from exc
    print(f"{dvcstages.DVC_YAML} {'written' if changed else 'already current'} ({len(dvcstages.STAGES)} stages)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrievegan.dvcsync", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root (holds dvc.yaml)")
    parser.add_argument("-j", "--jobs", type=int, default=4, help="hashing threads")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("pull", "dvc pull, verify against dvc.lock, snakemake --touch in DAG order"),
        ("touch", "verify against dvc.lock and snakemake --touch (no dvc pull)"),
        ("verify", "hash outputs (or cache objects) against dvc.lock"),
        ("push", "verify the cache, dvc push, check the remote with dvc status -c"),
        ("commit", "dvc commit -f (outputs Snakemake produced), keeping their modification times"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("stages", nargs="*", help="dvc.yaml stage names (default: all in dvc.lock)")
        if name in ("pull", "push"):
            cmd.add_argument("-r", "--remote", help="DVC remote name (default: the core.remote)")
        if name == "verify":
            cmd.add_argument("--cache", action="store_true", help="hash the cache objects, not the workspace")
    text = "write dvc.yaml from the stage table (retrievegan.dvcstages) and the code's imports"
    cmd = sub.add_parser("yaml", help=text, description=text)
    cmd.add_argument("--check", action="store_true", help="write nothing; exit 1 when dvc.yaml is not current")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.command == "yaml":
            return write_dvc_yaml(root, args.check)
        if args.command == "push":
            push(root, args.stages, args.remote, args.jobs)
            print("pushed; the remote holds every object of dvc.lock's outputs")
            return 0
        if args.command == "commit":
            restored, copied = commit(root, args.stages)
            print(
                f"committed {', '.join(args.stages) or 'every stage'} to dvc.lock and the cache; "
                f"modification times kept ({restored} path(s) DVC had changed were put back); "
                f"{len(copied)} metric / table output(s) copied to reference-run/. Commit dvc.lock and "
                f"reference-run/ together (`git add dvc.lock reference-run`)."
            )
            return 0
        if args.command == "verify":
            stages = load_lock(root)
            selected = [stages[n] for n in (args.stages or stages)]
            where = "cache" if args.cache else "workspace"
            problems = {k: v for k, v in verify(root, selected, cache_dir(root), where, args.jobs).items() if v}
            for stage, found in problems.items():
                print(f"stage {stage}: {len(found)} problem(s)", *(f"  {p}" for p in found), sep="\n")
            if not problems:
                print(f"{where}: every output of {', '.join(s.name for s in selected)} matches dvc.lock")
            return 1 if problems else 0
        report = (
            pull(root, args.stages, args.remote, args.jobs)
            if args.command == "pull"
            else touch(root, args.stages, args.jobs)
        )
        print("\n".join(report.lines()))
        return 1 if report.corrupted else 0
    except SyncError as exc:
        print(f"dvcsync {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
