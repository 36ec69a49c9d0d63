"""The DVC stages of ``dvc.yaml``, declared once, and the generator that writes ``dvc.yaml`` from them.

``python -m retrievegan.dvcsync yaml`` (``make dvc-yaml``) writes ``dvc.yaml``; ``... yaml --check`` exits 1,
showing the difference, when the file is not what the generator writes (``tests/workflow/test_dvc_stages.py`` runs the
same check). Edit :data:`STAGES` here, never ``dvc.yaml``.

Each :class:`Stage` is one ``snakemake`` call on the stage's final targets. Its ``deps`` are computed: the
rule files, the CLI module of every ``retrievegan <command>`` its rules run (``retrievegan.cli.STAGES``), the
static import closure of its library entry modules (every ``retrievegan`` import, also inside functions, and
the packages above each module, read with :mod:`ast` from the code as it is now; without package
``__init__`` files and the infrastructure modules of :data:`INFRASTRUCTURE`), then the declared ``inputs``
(upstream stages' outputs, reference files). Renaming or moving a module needs no edit here unless it is an
entry module.

Pure Python and PyYAML: importing this module imports no torch and no DVC.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

COMMAND = "python -m retrievegan.dvcsync yaml"
MAKE_TARGET = "make dvc-yaml"
DVC_YAML = "dvc.yaml"
CONFIG = "config/config.yaml"  # the params file of every stage; also the source of the `vars:`
VARS = f"{CONFIG}:dataset,results,model_source"
SNAKEMAKE = "snakemake --profile workflow/profiles/default --cores 2"
PACKAGE = "retrievegan"
SOURCE = "src"  # folder holding the package, relative to the project root
# Modules that parse arguments and configs, define errors or write provenance: not stage dependencies
# (editing them does not re-run trained stages; docs/scale.md says what to do when such an edit matters).
# Their imports are still followed.
INFRASTRUCTURE = frozenset({"retrievegan.cli", "retrievegan.config", "retrievegan.errors", "retrievegan.runinfo"})
R = "${results}/${dataset}"  # the results folder of the configured dataset (dvc.yaml `vars:`)

HEADER = f"""\
# GENERATED: do not edit. Written by `{COMMAND}` (`{MAKE_TARGET}`) from the stage
# table in src/retrievegan/dvcstages.py and the code's imports; tests/workflow/test_dvc_stages.py fails while this
# file is not what that command writes.
# DVC stages call Snakemake targets; DVC caches their outputs for `dvc push` / `dvc pull` (docs/scale.md).
# Pattern for every stage (docs/architecture.md, "DVC stages"): cmd is ONE snakemake call on the
# stage's final targets (any --configfile before another option, it takes every following word);
# deps = the stage's rule file(s) + the CLI modules of the `retrievegan <command>`s its rules run + the
# static import closure of the library modules they call (minus the infrastructure modules cli.py,
# config.py, errors.py, runinfo.py) + upstream stages' outs; params = the config sections (or single
# keys) its rules read; outs = what its rules write (never logs/, benchmarks/, .snakemake/); metric
# JSONs under `metrics:`. Every Snakemake output lies in exactly one stage's outs (checked by the test).
# Metrics stay in the DVC cache (the default, not `cache: false`): results/ is git-ignored, so an
# uncached metric would be in neither git nor the remote and a pulled clone would recompute it.
# Paths follow config/config.yaml's results/dataset/model_source (embedded default: results/synth).
# After `dvc pull`, run `python -m retrievegan.dvcsync touch` (or pull with `make dvc-pull`).
"""


class StageTableError(Exception):
    """The stage table names a module, rule file or command that does not exist."""


@dataclasses.dataclass(frozen=True)
class Note:
    """A list entry of dvc.yaml with a comment after it."""

    value: str
    comment: str


Entry = str | Note


@dataclasses.dataclass(frozen=True)
class Stage:
    """One dvc.yaml stage; paths relative to the project root, results paths under :data:`R`."""

    name: str
    targets: tuple[str, ...]  # the Snakemake targets of its command
    rules: tuple[str, ...]  # the rule files of the rules that write its outs
    commands: tuple[str, ...]  # the `retrievegan <command>`s those rules run
    # library modules the commands call, also those imported by name at run time (the method module that
    # retrievegan.train.registry picks for `retrievegan train`); their import closure is a dependency
    entry: tuple[str, ...]
    params: tuple[Entry, ...]  # config sections or dotted keys of config/config.yaml
    outs: tuple[str, ...]
    inputs: tuple[str, ...] = ()  # data dependencies: upstream stages' outputs, reference files
    metrics: tuple[str, ...] = ()
    comment: tuple[str, ...] = ()  # comment lines written above the stage
    foreach: tuple[str, ...] = ()  # a `foreach` stage: the items (`${item}` in its fields)
    foreach_comment: tuple[str, ...] = ()  # comment lines written after the items


# --- the stage table ---------------------------------------------------------------------------------
TRAIN = ("retrievegan.train.loop", "retrievegan.train.registry")  # `retrievegan train`, any method
GPUS = "cluster.resources.train.gpus"
RARITY = Note("rarity", "rarity.dataset / rarity.loss switch rebalancing on (the training rules)")
BASELINES = ("sg2im", "attngan", "layout2im", "pastegan")
RETRIEVEGAN_RUNS = ("retrievegan", "retrievegan_no_gt_no_occur", "retrievegan_gt_only", "retrievegan_occur_only")
# (method, setting) pairs sampled and evaluated by default; the patch methods (from pastegan on) also get a
# compatibility score
SAMPLE_RUNS = (
    ("sg2im", "pred_bbox"),
    ("sg2im", "gt_bbox"),
    ("attngan", "pred_bbox"),
    ("layout2im", "gt_bbox"),
    ("pastegan", "pred_bbox"),
    ("pastegan", "gt_bbox"),
    ("retrievegan", "pred_bbox"),
    ("retrievegan", "gt_bbox"),
    ("retrievegan_no_gt_no_occur", "pred_bbox"),
    ("retrievegan_gt_only", "pred_bbox"),
    ("retrievegan_occur_only", "pred_bbox"),
)
PATCH_RUNS = SAMPLE_RUNS[4:]
CLAIM_RUNS = (
    ("sg2im", "pred_bbox"),
    ("layout2im", "gt_bbox"),
    ("pastegan", "pred_bbox"),
    ("retrievegan", "pred_bbox"),
    ("retrievegan", "gt_bbox"),
    ("retrievegan_no_gt_no_occur", "pred_bbox"),
    ("retrievegan_gt_only", "pred_bbox"),
    ("retrievegan_occur_only", "pred_bbox"),
)
CLAIM_COMPAT_RUNS = tuple(run for run in CLAIM_RUNS if run in PATCH_RUNS and run[1] == "pred_bbox")
DATA = f"{R}/data/${{model_source}}"
PATCHES = f"{R}/data/patches"
RETRIEVAL_INPUTS = (
    f"{R}/features/prefilter",
    f"{R}/features/patch_features.npy",
    f"{R}/features/cooccur_embeddings.npy",
)


def _metric(method: str, setting: str, folder: str = "metrics") -> str:
    return f"{R}/{folder}/{method}_{setting}.json"


STAGES: tuple[Stage, ...] = (
    Stage(
        "data",
        comment=("synthetic benchmark, preprocessing (both sources), dataset table, patch bank",),
        targets=(f"{R}/data/dataset_table.csv", f"{R}/data/patches/patches.npy"),
        rules=("workflow/rules/data.smk",),
        commands=("synth", "preprocess", "dataset-table", "patches"),
        entry=("retrievegan.data.synth", "retrievegan.data.preprocess", "retrievegan.data.patches"),
        params=("synth", "sources", "model_source", "coco_stuff", "visual_genome", "preprocess", "patches"),
        outs=(f"{R}/raw", f"{R}/data"),
    ),
    Stage(
        "features",
        comment=(
            "category CNN -> frozen patch features (E_p's input); co-occurrence embedding F_occur (+ recall@k).",
            "features/ and metrics/ are shared by several stages: files are listed, not the folders.",
        ),
        targets=(f"{R}/features/patch_features.npy", f"{R}/features/cooccur_embeddings.npy"),
        rules=("workflow/rules/embed.smk",),
        commands=("category-cnn", "patch-features", "cooccur"),
        entry=("retrievegan.embed.features", "retrievegan.embed.cooccur", "retrievegan.embed.bank"),
        inputs=(PATCHES,),
        params=("features", "cooccur"),
        outs=(
            f"{R}/models/category_cnn",
            f"{R}/models/cooccur",
            f"{R}/features/patch_features.npy",
            f"{R}/features/patch_features.run.json",
            f"{R}/features/cooccur_embeddings.npy",
        ),
        metrics=(f"{R}/metrics/cooccur_recall.json",),
    ),
    Stage(
        "sg2im",
        comment=(
            "sg2im baseline: training, GCN features for the pre-filter, box L1, progress figure.",
            "cluster.resources.train.gpus: the DDP world size (torchrun launcher), a param of the training rules.",
        ),
        targets=(
            f"{R}/models/sg2im/checkpoint.pt",
            f"{R}/features/gcn_features.npy",
            f"{R}/metrics/sg2im_box_l1.json",
            f"{R}/figures/sg2im_progress.png",
        ),
        rules=("workflow/rules/train.smk",),
        commands=("train", "gcn-features", "box-l1", "progress-figure"),
        entry=(
            *TRAIN,
            "retrievegan.models.baselines.sg2im",
            "retrievegan.train.features",
            "retrievegan.eval.box_l1",
            "retrievegan.eval.progress",
        ),
        inputs=(DATA, PATCHES),
        params=("sg2im", "train", GPUS, RARITY),
        outs=(
            f"{R}/models/sg2im",
            f"{R}/features/gcn_features.npy",
            f"{R}/features/gcn_features.run.json",
            f"{R}/figures/sg2im_progress.png",
        ),
        metrics=(f"{R}/metrics/sg2im_box_l1.json",),
    ),
    Stage(
        "prefilter",
        comment=("k nearest same-category train patches by sg2im GCN-feature distance",),
        targets=(f"{R}/features/prefilter/candidates.npy",),
        rules=("workflow/rules/embed.smk",),
        commands=("prefilter",),
        entry=("retrievegan.embed.prefilter",),
        inputs=(f"{R}/features/gcn_features.npy", PATCHES),
        params=("prefilter",),
        outs=(f"{R}/features/prefilter",),
    ),
    Stage(
        "retrievegan",
        comment=(
            "RetrieveGAN, its three Table 2 ablations and the configured variants (config `variants`; declared in",
            "retrievegan.runs.VARIANTS), one stage each: retrievegan@<run>. They share the `retrievegan` +",
            "`retrieval` sections; the switches and the variants' overrides come from retrievegan.runs.",
        ),
        foreach=RETRIEVEGAN_RUNS,
        foreach_comment=(
            "Table 2's variants (config `variants`, `make table2-variants`) and the claim arms retrievegan_ep_frozen /",
            "retrievegan_non_iterative (claims_full) are opt-in: not in the default run, so not in dvc.lock",
        ),
        targets=(f"{R}/models/${{item}}/checkpoint.pt",),
        rules=("workflow/rules/retrievegan.smk",),
        commands=("train",),
        entry=(*TRAIN, "retrievegan.models.retrievegan", "retrievegan.runs"),
        inputs=(DATA, PATCHES, *RETRIEVAL_INPUTS),
        params=("retrievegan", "retrieval", "train", "variants", "claims", GPUS, RARITY),
        outs=(f"{R}/models/${{item}}",),
    ),
    Stage(
        "pastegan",
        targets=(f"{R}/models/pastegan/checkpoint.pt",),
        rules=("workflow/rules/retrievegan.smk",),
        commands=("train",),
        entry=(*TRAIN, "retrievegan.models.baselines.pastegan"),
        inputs=(DATA, PATCHES, f"{R}/features/prefilter"),
        params=("pastegan", "train", GPUS, RARITY),
        outs=(f"{R}/models/pastegan",),
    ),
    Stage(
        "layout2im",
        targets=(f"{R}/models/layout2im/checkpoint.pt",),
        rules=("workflow/rules/baselines.smk",),
        commands=("train",),
        entry=(*TRAIN, "retrievegan.models.baselines.layout2im"),
        inputs=(DATA,),
        params=("layout2im", "train", GPUS),
        outs=(f"{R}/models/layout2im",),
    ),
    Stage(
        "attngan",
        comment=("AttnGAN with its DAMSM encoders pre-trained first (rule pretrain_damsm)",),
        targets=(f"{R}/models/attngan/checkpoint.pt",),
        rules=("workflow/rules/baselines.smk",),
        commands=("pretrain-damsm", "train"),
        entry=(*TRAIN, "retrievegan.models.baselines.attngan", "retrievegan.train.damsm"),
        inputs=(DATA,),
        params=("damsm", "attngan", "train", GPUS),
        outs=(f"{R}/models/damsm", f"{R}/models/attngan"),
    ),
    Stage(
        "synthnet",
        comment=("the embedded benchmark's FID / IS / DS network",),
        targets=(f"{R}/models/synthnet/synthnet.pt",),
        rules=("workflow/rules/metrics.smk",),
        commands=("synthnet",),
        entry=("retrievegan.eval.synthnet",),
        inputs=(DATA,),
        params=("synthnet",),
        outs=(f"{R}/models/synthnet",),
        metrics=(f"{R}/metrics/synthnet_quality.json",),
    ),
    Stage(
        "sample",
        comment=(
            "two samples per test scene graph for every (method, setting) of evaluation.methods x settings (Table 2's",
            "ablations and the configured variants in report.ablation_setting only; the targets: update them with config",
            "`evaluation` / `variants`); sampling rebuilds each method from its checkpoint,",
            "so the model code is covered by the training stages upstream",
        ),
        targets=tuple(f"{R}/samples/{method}/{setting}/manifest.json" for method, setting in SAMPLE_RUNS),
        rules=("workflow/rules/sample.smk", "workflow/rules/retrievegan.smk", "workflow/rules/baselines.smk"),
        commands=("sample",),
        entry=("retrievegan.eval.sampler",),
        inputs=(
            DATA,
            PATCHES,
            *RETRIEVAL_INPUTS,
            f"{R}/models/sg2im",
            f"{R}/models/attngan",
            f"{R}/models/damsm",
            f"{R}/models/layout2im",
            f"{R}/models/pastegan",
            *(f"{R}/models/{run}" for run in RETRIEVEGAN_RUNS),
        ),
        params=("sample", "variants", "report.ablation_setting"),
        outs=(f"{R}/samples",),
    ),
    Stage(
        "metrics",
        comment=("real-image statistics, FID / IS / DS per (method, setting), real-data row, compatibility scores",),
        targets=(
            *(_metric(*run) for run in SAMPLE_RUNS),
            f"{R}/metrics/real_data.json",
            f"{R}/metrics/compatibility_summary.md",
        ),
        rules=("workflow/rules/metrics.smk",),
        commands=("real-stats", "real-metrics", "metrics", "compatibility", "compat-summary"),
        entry=(
            "retrievegan.eval.fidelity",
            "retrievegan.eval.metrics",
            "retrievegan.eval.compatibility",
            "retrievegan.eval.group_mass",
        ),
        inputs=(f"{R}/samples", f"{R}/models/synthnet", DATA, PATCHES, *RETRIEVAL_INPUTS),
        params=("evaluation", "sample", "variants", "retrieval", "report.ablation_setting"),
        outs=(f"{R}/metrics/reference", f"{R}/metrics/details", f"{R}/metrics/compatibility_summary.md"),
        metrics=(
            *(_metric(*run) for run in SAMPLE_RUNS),
            f"{R}/metrics/real_data.json",
            *(_metric(*run, folder="metrics/compatibility") for run in PATCH_RUNS),
        ),
    ),
    Stage(
        "userstudy",
        comment=(
            "user-study bundle + SIMULATED participants and their report. People's answers live outside results/",
            "(userstudy/data/, .dvcignore'd) and are never an output or input of DVC.",
        ),
        targets=(
            f"{R}/userstudy/preference_simulated.csv",
            f"{R}/userstudy/participants_simulated.csv",
            f"{R}/userstudy/summary_simulated.json",
            f"{R}/userstudy/preference_simulated.png",
        ),
        rules=("workflow/rules/userstudy.smk",),
        commands=("study-trials", "study-simulate", "study-report"),
        entry=(
            "retrievegan.study.pool",
            "retrievegan.study.simulate",
            "retrievegan.study.analysis",
            "retrievegan.study.store",
        ),
        inputs=(f"{R}/samples", DATA, PATCHES),
        params=("userstudy",),
        outs=(
            f"{R}/userstudy/study",
            f"{R}/userstudy/responses_simulated.csv",
            f"{R}/userstudy/truth_simulated.csv",
            f"{R}/userstudy/preference_simulated.csv",
            f"{R}/userstudy/participants_simulated.csv",
            f"{R}/userstudy/summary_simulated.json",
            f"{R}/userstudy/preference_simulated.png",
        ),
    ),
    Stage(
        "claims",
        comment=(
            "the paper's claims C1-C6 (default run: one training seed per arm; claims_full is opt-in, not a DVC stage), with the",
            "discriminator probe of every trained patch method and C1's fixed-embedding controls (evaluation only)",
        ),
        targets=(f"{R}/claims.csv",),
        rules=("workflow/rules/claims.smk",),
        commands=("claims", "compat-trace", "d-probe", "c1-controls"),
        entry=(
            "retrievegan.eval.claims",
            "retrievegan.eval.compat_trace",
            "retrievegan.eval.d_probe",
            "retrievegan.eval.c1_controls",
        ),
        inputs=(
            *(_metric(*run) for run in CLAIM_RUNS),
            *(_metric(*run, folder="metrics/compatibility") for run in CLAIM_COMPAT_RUNS),
            f"{R}/models",
            DATA,
            PATCHES,
            *RETRIEVAL_INPUTS,
            f"{R}/userstudy/preference_simulated.csv",
        ),
        params=(
            "claims",
            "sample",
            "evaluation",
            Note("rarity", "rarity.dataset / rarity.loss switch rebalancing on (the claims' training runs)"),
        ),
        outs=(
            f"{R}/metrics/compat_trace",
            f"{R}/metrics/d_probe",
            f"{R}/metrics/c1_controls",
            f"{R}/claims.md",
            f"{R}/claims_comparisons.csv",
            f"{R}/claims.csv",
        ),
    ),
    Stage(
        "report",
        comment=(
            "tables (CSV / Markdown / LaTeX), figures, REPORT.md. `metrics` (the folder) covers the metric files",
            "of the features, sg2im, synthnet and metrics stages.",
        ),
        targets=(f"{R}/REPORT.md",),
        rules=("workflow/rules/report.smk",),
        commands=("tables", "figure-qualitative", "figure-compatibility", "figure-losses", "report"),
        entry=("retrievegan.eval.tables", "retrievegan.eval.figures", "retrievegan.eval.report"),
        inputs=(
            "config/reference/paper_tables.csv",
            "config/reference/dataset_stats.csv",
            f"{R}/metrics",
            f"{R}/samples",
            DATA,
            PATCHES,
            f"{R}/data/dataset_table.csv",
            f"{R}/figures/sg2im_progress.png",
            *(f"{R}/models/{run}/losses.jsonl" for run in (*BASELINES, *RETRIEVEGAN_RUNS)),
            f"{R}/userstudy/summary_simulated.json",
            f"{R}/userstudy/preference_simulated.png",
            f"{R}/claims.md",
        ),
        params=(
            "report",
            "evaluation",
            "variants",
            "retrieval.mode",
            "retrievegan.occur_form",
            "features.pooling",
            "features.backbone",
            "pastegan.test_pick",
            "pastegan.test_top",
            Note("rarity.in_report", "true: REPORT.md shows the rarity experiment (opt-in, not a DVC stage)"),
        ),
        outs=(
            f"{R}/tables",
            f"{R}/figures/qualitative",
            f"{R}/figures/losses",
            f"{R}/figures/compatibility.png",
            f"{R}/REPORT.md",
        ),
    ),
)


# --- the static import closure -----------------------------------------------------------------------
def module_file(src: Path, name: str) -> Path | None:
    """The source file of module ``name`` under ``src`` (a package: its ``__init__.py``); None if absent."""
    path = src.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The absolute module name of a ``from ... import`` (``package``: the importing module's package)."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _parents(name: str) -> list[str]:
    """The packages Python imports before module ``name`` (``a.b.c`` -> ``a``, ``a.b``)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported(src: Path, name: str) -> set[str]:
    """The package's modules that module ``name`` imports anywhere (also inside functions), with the packages
    above them (whose ``__init__`` Python runs first)."""
    file = module_file(src, name)
    if file is None:
        raise StageTableError(f"module {name} not found under {src}")
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
    found = {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}
    found |= {parent for m in found for parent in _parents(m)}
    return {m for m in found if module_file(src, m) is not None}


def import_closure(src: Path, names: Iterable[str]) -> set[str]:
    """Module names of the static import closure of ``names`` (themselves and their packages included)."""
    todo = [parent for name in names for parent in (*_parents(name), name)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported(src, name))
    return seen


def library_files(root: Path, entry: Iterable[str]) -> list[str]:
    """The source files (relative to ``root``, sorted) of the import closure of ``entry``, without package
    ``__init__`` files and :data:`INFRASTRUCTURE`."""
    src = root / SOURCE
    files = {module_file(src, m) for m in import_closure(src, entry) if m not in INFRASTRUCTURE}
    return sorted(f.relative_to(root).as_posix() for f in files if f is not None and f.name != "__init__.py")


def cli_modules() -> dict[str, str]:
    """``retrievegan <command>`` -> the module defining it (``retrievegan.cli.STAGES``)."""
    from retrievegan.cli import STAGES as CLI_STAGES

    return dict(CLI_STAGES)


def command_files(root: Path, commands: Iterable[str], modules: Mapping[str, str]) -> list[str]:
    """The CLI module files (relative to ``root``, sorted) of ``commands``."""
    files = set()
    for command in commands:
        if command not in modules:
            raise StageTableError(f"`retrievegan {command}` is not a command of retrievegan.cli.STAGES")
        path = module_file(root / SOURCE, modules[command])
        if path is None:
            raise StageTableError(f"module {modules[command]} of `retrievegan {command}` not found")
        files.add(path.relative_to(root).as_posix())
    return sorted(files)


def stage_deps(root: Path, stage: Stage, modules: Mapping[str, str]) -> list[str]:
    """A stage's deps: rule files, CLI modules, library closure (both sorted), then its declared inputs."""
    missing = [rule for rule in stage.rules if not (root / rule).is_file()]
    if missing:
        raise StageTableError(f"stage {stage.name}: rule file(s) {missing} not found")
    code = [*command_files(root, stage.commands, modules), *library_files(root, stage.entry)]
    return _unique([*stage.rules, *code, *stage.inputs])


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# --- rendering -----------------------------------------------------------------------------------------
def _value(item: Entry) -> str:
    return item.value if isinstance(item, Note) else item


def _comment_lines(lines: Sequence[str], indent: int) -> list[str]:
    return [f"{' ' * indent}# {line}".rstrip() for line in lines]


def _entry_line(item: Entry, indent: int) -> str:
    line = f"{' ' * indent}- {_value(item)}"
    return f"{line}  # {item.comment}" if isinstance(item, Note) else line


def _list_lines(key: str, items: Sequence[Entry], indent: int) -> list[str]:
    if not items:
        return []
    return [f"{' ' * indent}{key}:", *(_entry_line(item, indent + 2) for item in items)]


def stage_body(stage: Stage, deps: Sequence[str], indent: int) -> list[str]:
    """The lines of a stage's (or a foreach stage's `do:`) fields."""
    pad = " " * indent
    lines = [f"{pad}cmd: >-", f"{pad}  {SNAKEMAKE}", *(f"{pad}  {target}" for target in stage.targets)]
    lines += _list_lines("deps", deps, indent)
    if stage.params:
        lines += [f"{pad}params:", f"{pad}  - {CONFIG}:", *(_entry_line(p, indent + 6) for p in stage.params)]
    lines += _list_lines("outs", stage.outs, indent)
    lines += _list_lines("metrics", stage.metrics, indent)
    return lines


def stage_lines(stage: Stage, deps: Sequence[str]) -> list[str]:
    """The lines of one stage under ``stages:``, its comment first."""
    lines = [*_comment_lines(stage.comment, 2), f"  {stage.name}:"]
    if not stage.foreach:
        return lines + stage_body(stage, deps, 4)
    lines += ["    foreach:", *(f"      - {item}" for item in stage.foreach)]
    lines += _comment_lines(stage.foreach_comment, 6)
    return lines + ["    do:", *stage_body(stage, deps, 6)]


def stage_data(stage: Stage, deps: Sequence[str]) -> dict[str, Any]:
    """What YAML must read back for one stage (the check of :func:`render`)."""
    body: dict[str, Any] = {"cmd": " ".join([SNAKEMAKE, *stage.targets])}
    if deps:
        body["deps"] = list(deps)
    if stage.params:
        body["params"] = [{CONFIG: [_value(p) for p in stage.params]}]
    body["outs"] = list(stage.outs)
    if stage.metrics:
        body["metrics"] = list(stage.metrics)
    return {"foreach": list(stage.foreach), "do": body} if stage.foreach else body


def render(root: Path, stages: Sequence[Stage] | None = None, modules: Mapping[str, str] | None = None) -> str:
    """The text of dvc.yaml for ``stages`` (default :data:`STAGES`) with deps computed from the code under
    ``root``; ``modules``: command -> CLI module (default :func:`cli_modules`)."""
    stages = STAGES if stages is None else stages
    modules = cli_modules() if modules is None else modules
    names = [stage.name for stage in stages]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise StageTableError(f"stage(s) {duplicates} declared twice")
    lines = [HEADER.rstrip("\n"), "vars:", f"  - {VARS}", "stages:"]
    expected: dict[str, Any] = {"vars": [VARS], "stages": {}}
    for stage in stages:
        deps = stage_deps(root, stage, modules)
        lines += stage_lines(stage, deps)
        expected["stages"][stage.name] = stage_data(stage, deps)
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text) != expected:
        raise StageTableError("the rendered dvc.yaml does not read back as the stage table (a value needs quoting?)")
    return text


# --- writing and checking --------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and :func:`os.replace`."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write(root: Path, stages: Sequence[Stage] | None = None, modules: Mapping[str, str] | None = None) -> bool:
    """Write ``root``/dvc.yaml from the stage table (:func:`render`); True when its content changed."""
    path = root / DVC_YAML
    text = render(root, stages, modules)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_atomic(path, text)
    return True


def _stage_names_differing(current: str, generated: str) -> list[str]:
    """Stages whose YAML content differs (added, removed or changed); empty when ``current`` does not parse."""
    try:
        old = (yaml.safe_load(current) or {}).get("stages") or {}
    except yaml.YAMLError:
        return []
    new = yaml.safe_load(generated)["stages"]
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))


def check(
    root: Path, stages: Sequence[Stage] | None = None, modules: Mapping[str, str] | None = None, max_lines: int = 200
) -> str | None:
    """None when ``root``/dvc.yaml is what :func:`write` would write; else what differs (a unified diff)."""
    path = root / DVC_YAML
    generated = render(root, stages, modules)
    current = path.read_text(encoding="utf-8") if path.is_file() else ""
    if current == generated:
        return None
    diff = list(
        difflib.unified_diff(
            current.splitlines(),
            generated.splitlines(),
            f"{DVC_YAML} (current)",
            f"{DVC_YAML} (generated)",
            lineterm="",
        )
    )
    if len(diff) > max_lines:
        diff = diff[:max_lines] + [f"... ({len(diff) - max_lines} more diff lines)"]
    stages = _stage_names_differing(current, generated)
    what = f"stages {', '.join(stages)} differ" if stages else "comments or layout differ"
    return (
        f"{DVC_YAML} is not what `{COMMAND}` writes ({what}); run `{MAKE_TARGET}` and commit dvc.yaml:\n"
        + "\n".join(diff)
    )
