"""The Snakemake workflow: lint-clean, schema-validated, and the data stage runs then has nothing to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # processes, browsers or Snakemake runs: not in `make test-fast`

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(
        [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=workdir,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def tiny_workdir(tmp_path: Path, **extra) -> Path:
    """A working directory with the repo's config plus a tiny-benchmark override."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    raw = "results/tiny/raw"
    override = {
        "dataset": "tiny",
        "synth": {"num_train": 40, "num_val": 24},
        "coco_stuff": {
            "instances_train": f"{raw}/coco/annotations/instances_train2017.json",
            "stuff_train": f"{raw}/coco/annotations/stuff_train2017.json",
            "image_dir_train": f"{raw}/coco/images/train2017",
            "instances_val": f"{raw}/coco/annotations/instances_val2017.json",
            "stuff_val": f"{raw}/coco/annotations/stuff_val2017.json",
            "image_dir_val": f"{raw}/coco/images/val2017",
            "num_val": 6,
            "num_test": 10,
        },
        "visual_genome": {
            key: f"{raw}/vg/{name}"
            for key, name in (
                ("image_data", "image_data.json"),
                ("objects", "objects.json"),
                ("relationships", "relationships.json"),
                ("attributes", "attributes.json"),
                ("splits", "vg_splits.json"),
                ("object_aliases", "object_alias.txt"),
                ("predicate_aliases", "predicate_alias.txt"),
                ("image_dir", "images"),
            )
        }
        | {"min_object_instances": 5, "min_attribute_instances": 5, "min_relationship_instances": 3},
        "preprocess": {"image_size": 32},
        "patches": {"crop_size": 16},
    }
    for key, value in extra.items():
        override.setdefault(key, {}).update(value) if isinstance(value, dict) else override.update({key: value})
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(override))
    return tmp_path


def test_lint_is_clean():
    proc = subprocess.run(
        [SNAKEMAKE, "--lint"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_schema_rejects_unknown_keys(tmp_path):
    work = tiny_workdir(tmp_path)
    (work / "bad.yaml").write_text("patches: {crop_sise: 32}\n")
    proc = snakemake(work, "--configfile", "bad.yaml", "-n", "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "crop_sise" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_data_stage_runs_then_nothing_to_do(tmp_path):
    work = tiny_workdir(tmp_path)
    targets = ["results/tiny/data/dataset_table.csv", "results/tiny/data/patches/patches.npy"]
    snakemake(work, "--configfile", "tiny.yaml", "--cores", "2", *targets)
    table = (work / "results/tiny/data/dataset_table.csv").read_text().splitlines()
    assert table[0].startswith("dataset,source,train,val,test,categories")
    assert [line.split(",")[1] for line in table[1:]] == ["coco_stuff", "visual_genome"]
    for run_dir in ("data/coco_stuff", "data/visual_genome", "data/patches"):
        assert (work / "results/tiny" / run_dir / "run.json").is_file()
    again = snakemake(work, "--configfile", "tiny.yaml", "--cores", "2", "-n", *targets)
    assert "Nothing to be done" in again.stdout + again.stderr


def _dry_run_commands(work: Path, *args: str) -> dict[str, list[str]]:
    """rule -> the shell commands of its jobs in a forced dry run (`snakemake -n -p --forceall`)."""
    import re

    proc = snakemake(work, "-n", "-p", "--forceall", "--cores", "1", *args)
    found: dict[str, list[str]] = {}
    rule = None
    for line in (proc.stdout + proc.stderr).splitlines():
        header = re.match(r"^(?:local)?rule (\w+):$", line)
        if header:
            rule = header.group(1)
        elif rule and line.startswith("Shell command: "):
            found.setdefault(rule, []).append(line[len("Shell command: ") :])
            rule = None
    return found


def test_variants_train_their_base_method_with_their_overrides_and_nothing_else(tmp_path):
    """A variant (retrievegan.runs: Table 2's, configured by `variants`; the claims' arms of the default run,
    by the claims rules) is trained by its own rule with the base method's config plus exactly its overrides, under
    its own name and folder, and sampled / evaluated in report.ablation_setting only; a `features` override gets its
    own patch features."""
    import json
    import shlex

    from retrievegan.runs import CLAIM_VARIANTS, TABLE2_VARIANTS

    work = tiny_workdir(tmp_path, variants=list(TABLE2_VARIANTS))
    commands = _dry_run_commands(work, "--configfile", "tiny.yaml")
    assert not any(f"train_{n}" in commands for n in CLAIM_VARIANTS)  # default `claims.arms`: no extra training
    from retrievegan.runs import CLAIM_ARMS

    work = tiny_workdir(tmp_path / "all-arms", variants=list(TABLE2_VARIANTS), claims={"arms": list(CLAIM_ARMS)})
    commands = _dry_run_commands(work, "--configfile", "tiny.yaml")

    def option(command: str, name: str) -> str:
        words = shlex.split(command.split(" > ")[0])
        return words[words.index(name) + 1]

    default_claim_arms = {n: v for n, v in CLAIM_VARIANTS.items() if f"train_{n}" in commands}
    assert set(default_claim_arms) == {
        "retrievegan_ep_frozen",
        "retrievegan_non_iterative",
        "retrievegan_no_gt_no_occur_relaxed",
    }, sorted(default_claim_arms)
    for name, variant in {**TABLE2_VARIANTS, **default_claim_arms}.items():
        (command,) = commands[f"train_{name}"]
        assert option(command, "--method") == name and option(command, "--out-dir").endswith(f"/models/{name}")
        (base_command,) = commands[f"train_{variant.base}"]
        base_train = json.loads(option(base_command, "--train-params"))
        params = json.loads(option(command, "--params"))
        expected = json.loads(option(base_command, "--params"))
        for path, value in variant.overrides:
            section, key = path.split(".", 1)
            if section == "retrieval":
                expected["retrieval"][key] = value
            elif section == "retrievegan":
                expected[key] = value
        assert params == expected, name  # the base config plus exactly the overrides
        assert json.loads(option(command, "--train-params")) == base_train
        features = [w for w in shlex.split(command) if w.startswith("patch_features=")]
        if variant.overrides_section("features"):
            assert features == [f"patch_features=results/tiny/features/variants/{name}/patch_features.npy"]
        else:
            assert features == ["patch_features=results/tiny/features/patch_features.npy"]
        samples = commands[f"sample_{name}"]
        assert [option(c, "--setting") for c in samples] == ["pred_bbox"]  # report.ablation_setting only
    # Table 2's ablations too (Table 1 has no such rows); the full model and PasteGAN in both settings
    for name in ("retrievegan_gt_only", "retrievegan_occur_only", "retrievegan_no_gt_no_occur"):
        assert [option(c, "--setting") for c in commands[f"sample_{name}"]] == ["pred_bbox"], name
    for name in ("retrievegan", "pastegan"):
        assert sorted(option(c, "--setting") for c in commands[f"sample_{name}"]) == ["gt_bbox", "pred_bbox"], name
    (extract,) = commands["patch_features_variant"]
    assert json.loads(option(extract, "--params"))["pooling"] == "last"
    assert json.loads(option(commands["patch_features"][0], "--params"))["pooling"] == "multiscale"
    (group_mass,) = commands["group_mass"]  # the relaxed variant's group masses (eq. 4 as written)
    assert "models/retrievegan_relaxed/checkpoint.pt" in group_mass
    tables = commands["tables"][0]
    assert option(tables, "--variant-setting") == "pred_bbox" and "retrievegan_soft" in tables
    factors = json.loads(option(tables, "--factors"))
    assert factors["retrievegan_relaxed"]["Retrieval"] == "relaxed" and factors["retrievegan"]["Retrieval"] == "hard"
    assert factors["retrievegan_occur_mean"]["L_occur form"] == "mean"
    assert factors["retrievegan_pool_last"]["Patch features"] == "last"


def test_rarity_experiment_trains_its_arms_with_the_switches_and_default_runs_without_them(tmp_path):
    """`snakemake rarity_experiment`: the rarity scores once, every arm of retrievegan.runs.RARITY_ARMS per
    seed, rebalanced arms (only) with --rarity-params / --rarity-scores, evaluated in report.ablation_setting; the
    default runs' commands carry no rarity option; `rarity.in_report` puts the experiment into REPORT.md."""
    import json
    import shlex

    from retrievegan.runs import RARITY_RUNS, VARIANTS

    work = tiny_workdir(tmp_path)
    commands = _dry_run_commands(work, "rarity_experiment", "--configfile", "tiny.yaml")
    (scores,) = commands["rarity"]
    assert "--out-dir results/tiny/data/rarity" in scores and '"dataset"' not in scores
    trained = {
        shlex.split(c)[shlex.split(c).index("--method") + 1]: c
        for rule, cs in commands.items()
        if rule.startswith("train_")
        for c in cs
    }
    assert set(RARITY_RUNS) <= set(trained)
    for name in RARITY_RUNS:
        words = shlex.split(trained[name].split(" > ")[0])
        rebalanced = VARIANTS[name].arm.endswith("_rarity")
        assert ("--rarity-scores" in words) == rebalanced, name
        if rebalanced:
            assert words[words.index("--rarity-scores") + 1] == "results/tiny/data/rarity/rarity.npz"
            assert json.loads(words[words.index("--rarity-params") + 1])["dataset"] is True
        train = json.loads(words[words.index("--train-params") + 1])
        assert train["seed"] == VARIANTS[name].training_seed, name
    controls = [name for name in trained if name not in VARIANTS or not VARIANTS[name].arm.endswith("_rarity")]
    assert controls  # the arms without rebalancing train with no rarity input at all
    assert all("--rarity" not in trained[name] for name in controls), controls
    (experiment,) = commands["rarity_experiment"]
    assert all(f"metrics/{name}_pred_bbox.json" in experiment for name in RARITY_RUNS)
    samples = [c for rule, cs in commands.items() if rule.startswith("sample_") for c in cs]
    assert all("--setting pred_bbox" in c for c in samples)
    default = _dry_run_commands(work, "--configfile", "tiny.yaml")
    assert not any("rarity" in c for cs in default.values() for c in cs)
    (work / "opt.yaml").write_text("rarity: {in_report: true}\n")
    with_report = _dry_run_commands(work, "--configfile", "tiny.yaml", "opt.yaml")
    assert "rarity_experiment" in with_report
    assert "results/tiny/rarity/rarity_section.md" in with_report["report_md"][0]
