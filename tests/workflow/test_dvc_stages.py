"""dvc.yaml against its generator and the workflow (fast, no results needed).

dvc.yaml is written by `python -m retrievegan.dvcsync yaml` (`make dvc-yaml`) from the stage table in
src/retrievegan/dvcstages.py and the code's imports: it must be what that command writes. The table itself
is checked against Snakemake: every Snakemake output belongs to exactly one DVC stage, the stages' targets
cover `rule all`, each stage declares the rule files and `retrievegan <command>`s of the rules writing its
outputs, every metric JSON is a DVC metric, and retrievegan.dvcsync orders the stages as DVC does. The DVC
round trip itself: tests/workflow/test_dvc_roundtrip.py (tiny data stage) and docs/scale.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from retrievegan import dvcstages, dvcsync

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:dvc.*")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TABLE = {stage.name: stage for stage in dvcstages.STAGES}
LOOP_RULES = ("claims", "claims_full", "claims_c1")  # declared with `name: _tag` and a `# rules: ...` comment


@pytest.fixture(scope="module")
def stages() -> dict[str, dict]:
    """dvc.yaml resolved by DVC itself (vars, foreach): name -> cmd, deps, params, outs, metrics."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        out = {}
        for stage in repo.index.stages:
            params = {}
            for dep in stage.deps:
                if hasattr(dep, "params"):
                    params[dep.def_path] = list(dep.params)
            out[stage.addressing] = {
                "cmd": stage.cmd,
                "deps": [d.def_path for d in stage.deps if not hasattr(d, "params")],
                "params": params,
                "outs": [o.def_path for o in stage.outs],
                "metrics": [o.def_path for o in stage.outs if o.metric],
                "cached": all(o.use_cache for o in stage.outs),
            }
        edges = {(a.addressing, b.addressing) for a, b in repo.index.graph.edges}
    out["__edges__"] = edges
    return out


@pytest.fixture(scope="module")
def workflow(tmp_path_factory) -> Path:
    """The workflow files in a scratch folder (Snakemake writes .snakemake/ where it runs)."""
    root = tmp_path_factory.mktemp("dvc-stages")
    for name in ("Snakefile", "workflow", "config"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / name)
    return root


def summary(root: Path, *targets: str) -> list[dict[str, str]]:
    """`snakemake --detailed-summary` rows (output_file, rule, shellcmd, ...) for ``targets`` (default: all)."""
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--cores", "1", "--detailed-summary", *targets],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file\t"))
    header = lines[start].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[start + 1 :] if line.count("\t") >= 2]


@pytest.fixture(scope="module")
def dag(workflow) -> list[dict[str, str]]:
    return summary(workflow)


@pytest.fixture(scope="module")
def commands(workflow) -> dict[str, set[str]]:
    """rule -> the `retrievegan <command>`s its jobs run (from `snakemake -n -p --forceall`; the summary
    only knows the shell commands of jobs that already ran)."""
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    proc = subprocess.run(
        [str(BIN / "snakemake"), "--cores", "1", "-n", "-p", "--forceall"],
        cwd=workflow,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found: dict[str, set[str]] = {}
    rule = None
    for line in (proc.stdout + proc.stderr).splitlines():
        header = re.match(r"^(?:local)?rule (\w+):$", line)
        if header:
            rule = header.group(1)
        elif rule and line.startswith("Shell command: ") and line != "Shell command: None":  # rule all
            cli = re.match(r"Shell command: (?:retrievegan|torchrun .* -m retrievegan\.cli) ([a-z0-9-]+)", line)
            assert cli, f"rule {rule}: shell command is not a `retrievegan <command>` call: {line[:200]}"
            found.setdefault(rule, set()).add(cli.group(1))
            rule = None
    return found


def pipeline(stages: dict) -> dict[str, dict]:
    return {k: v for k, v in stages.items() if not k.startswith("__")}


def owner(path: str, stages: dict) -> list[str]:
    return [name for name, st in pipeline(stages).items() if any(dvcsync._inside(path, o) for o in st["outs"])]


def test_every_stage_is_one_snakemake_call(stages):
    for name, stage in pipeline(stages).items():
        argv, _ = dvcsync.snakemake_argv(stage["cmd"])
        assert argv[1:5] == ["--profile", "workflow/profiles/default", "--cores", "2"], (name, stage["cmd"])
        assert stage["cached"], f"{name}: every output (metrics too) must be in the DVC cache (results/ is git-ignored)"
        for out in stage["outs"]:
            assert not re.search(r"/(logs|benchmarks|\.snakemake)(/|$)", out), (name, out)


def test_every_output_in_exactly_one_stage_and_rules_do_not_straddle(stages, dag):
    rule_stages: dict[str, set[str]] = {}
    for row in dag:
        path = row["output_file"]
        found = owner(path, stages)
        assert len(found) == 1, f"{path} (rule {row['rule']}) is in the outs of {found or 'no stage'}"
        rule_stages.setdefault(row["rule"], set()).update(found)
    straddling = {rule: sorted(names) for rule, names in rule_stages.items() if len(names) > 1}
    # dvcsync touches a stage's jobs with --forcerun <its rules>: a rule must belong to one stage only
    # (the foreach stages retrievegan@<method> each own their method's rules).
    assert not straddling, straddling


def test_stage_targets_cover_rule_all(stages, dag, workflow):
    targets = [t for st in pipeline(stages).values() for t in dvcsync.snakemake_argv(st["cmd"])[0][5:]]
    assert all(not t.startswith("-") for t in targets), targets
    from_stages = {row["output_file"] for row in summary(workflow, *targets)}
    assert from_stages == {row["output_file"] for row in dag}


def test_dvc_yaml_is_what_the_generator_writes():
    problem = dvcstages.check(REPO)
    assert problem is None, (
        f"{problem}\n\nRun `make dvc-yaml` (python -m retrievegan.dvcsync yaml) and commit dvc.yaml."
    )


def rule_files(rule: str, smk: dict[str, str]) -> set[str]:
    """The rule files (relative paths) that may declare ``rule``: the one with `rule <name>:`, else those
    declaring rules in a loop whose name pattern matches; ``smk``: path -> text of workflow/rules/*.smk."""
    exact = {path for path, text in smk.items() if re.search(rf"^\s*rule {re.escape(rule)}:", text, re.M)}
    if exact:
        return exact
    found = {
        path
        for path, text in smk.items()  # rule: / name: f"train_{_method}"
        if any(rule.startswith(prefix + "_") for prefix in re.findall(r'^\s*f"(\w+)_\{', text, re.M))
    }
    found |= {
        path
        for path, text in smk.items()  # rules named by a loop variable (claims.smk: for _tag in ...)
        if rule in LOOP_RULES and re.search(rf"#\s*rules: .*\b{re.escape(rule)}\b", text)
    }
    assert found, f"rule {rule} not found in workflow/rules/*.smk"
    return found


def test_stage_table_declares_the_rule_files_and_commands_of_its_rules(stages, dag, commands):
    """Each table stage names the rule files and exactly the `retrievegan <command>`s of the rules writing its
    outs (the generator turns the commands into CLI modules and the entry modules into their import closure)."""
    smk = {
        path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted((REPO / "workflow/rules").glob("*.smk"))
    }
    assert {rule for rule, cli in commands.items() if cli} >= {row["rule"] for row in dag}  # every job runs the CLI
    candidates: dict[str, list[set[str]]] = {}  # stage -> per rule, the files that may declare it
    run: dict[str, set[str]] = {}
    for row in dag:
        (name,) = owner(row["output_file"], stages)
        family = name.split("@")[0]
        candidates.setdefault(family, []).append(rule_files(row["rule"], smk))
        run.setdefault(family, set()).update(commands.get(row["rule"], ()))
    assert set(TABLE) == set(candidates), "stages without Snakemake outputs, or outputs of undeclared stages"
    for name, stage in TABLE.items():
        missing = [sorted(files) for files in candidates[name] if not files & set(stage.rules)]
        assert not missing, f"stage {name}: declare the rule file of its rules in {missing}"
        stray = sorted(set(stage.rules) - set().union(*candidates[name]))
        assert not stray, f"stage {name}: no rule of its outputs is declared in {stray}"
        assert set(stage.commands) == run[name], f"stage {name}: its rules run `retrievegan` {sorted(run[name])}"
    modules = dvcstages.cli_modules()
    for name, stage in pipeline(stages).items():
        code = [d for d in stage["deps"] if d.startswith(("src/", "workflow/", "config/"))]
        assert all((REPO / d).exists() for d in code), (name, [d for d in code if not (REPO / d).exists()])
        family = TABLE[name.split("@")[0]]
        assert set(code) >= set(dvcstages.command_files(REPO, family.commands, modules)), name


def test_metric_jsons_are_dvc_metrics(stages, dag):
    metrics = {m for st in pipeline(stages).values() for m in st["metrics"]}
    wanted = {
        row["output_file"]
        for row in dag
        if re.search(r"/metrics/([^/]+|compatibility/[^/]+|group_mass/[^/]+)\.json$", row["output_file"])
    }
    assert wanted == metrics


def test_dvcsync_orders_stages_as_dvc_does(stages):
    locked = {
        name: dvcsync.LockedStage(
            name, st["cmd"], tuple(st["deps"]), {}, tuple(dvcsync.LockedOut(o, "x", "md5") for o in st["outs"])
        )
        for name, st in pipeline(stages).items()
    }
    parents = dvcsync.upstream(locked)
    assert {(child, parent) for child, ps in parents.items() for parent in ps} == stages["__edges__"]
    assert dvcsync.with_ancestors(["report"], parents) == set(locked)  # the report reads everything


# --- dvcsync helpers for these stages (no DVC, no Snakemake) ----------------------------------------------
def test_upstream_both_directions():
    out = lambda *paths: tuple(dvcsync.LockedOut(p, "x", "md5") for p in paths)  # noqa: E731
    stages = {
        "data": dvcsync.LockedStage("data", "snakemake a", (), {}, out("r/data")),
        "feat": dvcsync.LockedStage("feat", "snakemake b", ("r/data/patches",), {}, out("r/metrics/recall.json")),
        "eval": dvcsync.LockedStage("eval", "snakemake c", (), {}, out("r/metrics/fid.json")),
        "report": dvcsync.LockedStage("report", "snakemake d", ("r/metrics",), {}, out("r/REPORT.md")),
    }
    parents = dvcsync.upstream(stages)
    assert parents == {"data": set(), "feat": {"data"}, "eval": set(), "report": {"feat", "eval"}}


def test_locked_config_expands_dotted_keys():
    stage = dvcsync.LockedStage(
        "t",
        "snakemake x",
        (),
        {"config/config.yaml": {"train": {"steps": 3}, "cluster.resources.train.gpus": 2, "retrieval.k": 8}},
        (),
    )
    assert dvcsync.locked_config(stage, []) == {
        "train": {"steps": 3},
        "retrieval": {"k": 8},
        "cluster": {"resources": {"train": {"gpus": 2}}},
    }


def test_stage_rules_from_summary():
    text = (
        "Building DAG of jobs...\noutput_file\tdate\trule\tlog-file(s)\tstatus\tplan\n"
        "r/models/a/checkpoint.pt\tSun Nov 22 03:28:25 2026\ttrain_a\tr/logs/a.log\tok\tno update\n"
        "r/models/a/snapshots\tSun Nov 22 03:28:25 2026\ttrain_a\t-\tok\tno update\n"
        "r/data/patches/patches.npy\t-\tpatches\tr/logs/p.log\tmissing\tupdate pending\n"
    )
    summary_map = dvcsync.parse_summary(text)
    assert summary_map["r/models/a/snapshots"] == dvcsync.SummaryRow("train_a", metadata=False, pending=False)
    assert summary_map["r/data/patches/patches.npy"] == dvcsync.SummaryRow("patches", metadata=True, pending=True)
    stage = dvcsync.LockedStage("a", "snakemake x", (), {}, (dvcsync.LockedOut("r/models/a", "x.dir", "md5"),))
    assert dvcsync.stage_rules(stage, summary_map) == ["train_a"]
    assert set(dvcsync.stage_rows(stage, summary_map)) == {"r/models/a/checkpoint.pt", "r/models/a/snapshots"}


def test_commit_keeps_modification_times(tmp_path):
    """`dvcsync commit` records mtimes before `dvc commit` and puts back what DVC changed."""
    (tmp_path / "out/sub").mkdir(parents=True)
    files = [tmp_path / "out/sub/a.npy", tmp_path / "out/b.json", tmp_path / "single.png"]
    for i, path in enumerate(files):
        path.write_text(str(i))
        os.utime(path, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i))
    recorded = dvcsync.mtimes([tmp_path / "out", tmp_path / "single.png", tmp_path / "absent"])
    assert set(recorded) == {str(tmp_path / "out"), str(tmp_path / "out/sub"), *map(str, files)}
    os.utime(files[2])  # what DVC 3 does to a single-file output on commit
    os.utime(files[0])
    assert dvcsync.restore_mtimes(recorded) == 2
    assert [p.stat().st_mtime_ns for p in files] == [1_600_000_000_000_000_000 + i for i in range(3)]


def test_stray_files_are_other_targets_outputs_in_a_stage_folder(tmp_path):
    """`dvcsync commit` refuses a folder output that holds other targets' files (an opt-in run's samples,
    metrics or trace in the same folder): dvc.lock would record them and no plain `make reproduce` match it.
    A stage job's undeclared side files (images beside its manifest, a run.json) are the stage's."""
    import base64

    files = {
        "r/samples/a/pred/manifest.json": "own",
        "r/samples/a/pred/sample0/1.png": "side",
        "r/samples/extra/pred/manifest.json": "other",
        "r/samples/extra/pred/sample0/1.png": "side",
        "r/details/a_pred.json": "own",
        "r/details/extra_pred.json": "other",
        "r/details/run.json": "side",
        "r/models/a/snapshots/step_0.pt": "side",
    }
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    produced = [p for p, kind in files.items() if kind == "own"] + ["r/models/a/snapshots"]  # + a directory()
    metadata = tmp_path / ".snakemake/metadata"
    metadata.mkdir(parents=True)
    long_name = "r/" + "x" * 300 + ".json"  # a name over 255 characters: split into "@"-prefixed folders
    for path in produced + [p for p, kind in files.items() if kind == "other"] + [long_name]:
        encoded = base64.urlsafe_b64encode(path.encode()).decode()
        chunks = [encoded[i : i + 254] for i in range(0, len(encoded), 254)]
        record = metadata.joinpath(*["@" + c for c in chunks[:-1]], chunks[-1])
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("{}")
    declared = dvcsync.snakemake_outputs(tmp_path)
    assert long_name in declared and "r/samples/extra/pred/manifest.json" in declared
    outs = ("r/samples", "r/details", "r/models/a")
    assert dvcsync.stray_files(tmp_path, outs, produced, declared) == [
        "r/details/extra_pred.json",
        "r/samples/extra/pred/manifest.json",
        "r/samples/extra/pred/sample0/1.png",
    ]
    assert (
        dvcsync.stray_files(
            tmp_path, outs, produced + ["r/samples/extra/pred/manifest.json", "r/details/extra_pred.json"], declared
        )
        == []
    )


# --- the dvc.yaml generator on a tiny package (no DVC, no Snakemake) -----------------------------------------
def write_package(root: Path, files: dict[str, str]) -> None:
    """``files``: path under src/retrievegan/ -> source."""
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / "src/retrievegan" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


TINY = {
    "io.py": "import json\n",
    "config.py": "from retrievegan import io\n",  # infrastructure: not a dep, its imports are followed
    "eval/__init__.py": "",
    "eval/score.py": "from . import helper\nfrom ..config import load\n\n"
    "def run():\n    from retrievegan.models.net import Net  # inside a function\n",
    "eval/helper.py": "import numpy\n",
    "models/__init__.py": "from retrievegan.models import layers\n",  # a package's __init__ runs first
    "models/net.py": "",
    "models/layers.py": "",
    "models/unused.py": "",
    "commands/__init__.py": "",
    "commands/evaluate.py": "",
}


def tiny_stage(**changes) -> dvcstages.Stage:
    fields = dict(
        name="score",
        targets=(f"{dvcstages.R}/score.json",),
        rules=("workflow/rules/eval.smk",),
        commands=("score",),
        entry=("retrievegan.eval.score",),
        params=("evaluation",),
        outs=(f"{dvcstages.R}/score.json",),
        inputs=(f"{dvcstages.R}/samples",),
        comment=("scores",),
    )
    fields.update(changes)
    return dvcstages.Stage(**fields)


@pytest.fixture
def tiny(tmp_path) -> Path:
    write_package(tmp_path, TINY)
    (tmp_path / "workflow/rules").mkdir(parents=True)
    (tmp_path / "workflow/rules/eval.smk").write_text("")
    return tmp_path


MODULES = {"score": "retrievegan.commands.evaluate"}


def test_import_closure_follows_relative_nested_and_package_imports(tiny):
    assert dvcstages.library_files(tiny, ["retrievegan.eval.score"]) == [
        "src/retrievegan/eval/helper.py",
        "src/retrievegan/eval/score.py",
        "src/retrievegan/io.py",
        "src/retrievegan/models/layers.py",
        "src/retrievegan/models/net.py",
    ]
    with pytest.raises(dvcstages.StageTableError, match="retrievegan.eval.gone not found"):
        dvcstages.library_files(tiny, ["retrievegan.eval.gone"])


def test_generated_yaml_reads_back_as_the_table(tiny):
    text = dvcstages.render(tiny, [tiny_stage()], MODULES)
    assert text.startswith("# GENERATED") and f"`{dvcstages.COMMAND}`" in text.splitlines()[0]
    stage = yaml.safe_load(text)["stages"]["score"]
    assert stage["cmd"] == f"{dvcstages.SNAKEMAKE} {dvcstages.R}/score.json"
    assert stage["deps"] == [
        "workflow/rules/eval.smk",
        "src/retrievegan/commands/evaluate.py",
        "src/retrievegan/eval/helper.py",
        "src/retrievegan/eval/score.py",
        "src/retrievegan/io.py",
        "src/retrievegan/models/layers.py",
        "src/retrievegan/models/net.py",
        f"{dvcstages.R}/samples",
    ]
    assert stage["params"] == [{"config/config.yaml": ["evaluation"]}]
    foreach = yaml.safe_load(dvcstages.render(tiny, [tiny_stage(foreach=("a", "b"))], MODULES))["stages"]["score"]
    assert foreach["foreach"] == ["a", "b"] and foreach["do"]["outs"] == [f"{dvcstages.R}/score.json"]
    with pytest.raises(dvcstages.StageTableError, match="not a command"):
        dvcstages.render(tiny, [tiny_stage(commands=("nope",))], MODULES)
    with pytest.raises(dvcstages.StageTableError, match="rule file"):
        dvcstages.render(tiny, [tiny_stage(rules=("workflow/rules/gone.smk",))], MODULES)


def test_write_is_atomic_and_check_names_what_differs(tiny, monkeypatch):
    stages = [tiny_stage()]
    assert dvcstages.check(tiny, stages, MODULES).startswith("dvc.yaml is not what")  # no dvc.yaml yet
    assert dvcstages.write(tiny, stages, MODULES) is True
    assert dvcstages.write(tiny, stages, MODULES) is False  # already current: not rewritten
    assert dvcstages.check(tiny, stages, MODULES) is None
    assert [p.name for p in tiny.iterdir() if p.name.startswith(".dvc.yaml")] == []  # no temporary file left
    (tiny / "src/retrievegan/eval/helper.py").write_text("from retrievegan.models import unused\n")  # a new import
    problem = dvcstages.check(tiny, stages, MODULES)
    assert "stages score differ" in problem and "make dvc-yaml" in problem
    assert "+      - src/retrievegan/models/unused.py" in problem

    monkeypatch.setattr(dvcstages, "STAGES", tuple(stages))
    monkeypatch.setattr(dvcstages, "cli_modules", lambda: MODULES)
    assert dvcsync.main(["--root", str(tiny), "yaml", "--check"]) == 1
    assert dvcsync.main(["--root", str(tiny), "yaml"]) == 0
    assert dvcsync.main(["--root", str(tiny), "yaml", "--check"]) == 0


def test_dvcsync_and_verify_import_one_way():
    """verify builds on dvcsync (hashing, reference-run/ layout); dvcsync never imports verify."""
    src = REPO / "src"
    assert "retrievegan.dvcsync" in dvcstages.imported(src, "retrievegan.verify")
    assert "retrievegan.verify" not in dvcstages.import_closure(src, ["retrievegan.dvcsync"])
