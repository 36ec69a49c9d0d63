"""`retrievegan verify` on a small DVC project: bit-for-bit verdicts, numeric differences of metrics and tables
(absolute, relative, tolerance), missing outputs, reference copies that drift from dvc.lock, code changes.

The project is real DVC (``dvc init``, ``dvcsync commit`` = ``dvc commit -f`` + reference-run/ copies); one
stage writes a binary file, a table folder and a metric file the way the workflow's stages do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from retrievegan import verify as verify_mod
from retrievegan.verify import NumberDiff, compare_values, csv_cells, flatten_json

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:dvc.*")

BIN = Path(sys.executable).parent
ENV = dict(
    os.environ,
    PATH=f"{BIN}:{os.environ['PATH']}",
    GIT_AUTHOR_NAME="t",
    GIT_AUTHOR_EMAIL="t@t",
    GIT_COMMITTER_NAME="t",
    GIT_COMMITTER_EMAIL="t@t",
    DVC_NO_ANALYTICS="1",
)

MAKE = """
import json, os, sys
os.makedirs("results/x/models", exist_ok=True)
os.makedirs("results/x/tables", exist_ok=True)
os.makedirs("results/x/metrics", exist_ok=True)
open("results/x/models/net.bin", "wb").write(bytes(range(256)) * 4)
open("results/x/tables/table1.csv", "w").write("method,setting,fid,is\\nsg2im,pred_bbox,818.25,1.5\\n"
                                               "retrievegan,pred_bbox,58.2,n/a\\n")
open("results/x/tables/table1.md", "w").write("| method | fid |\\n| sg2im | 818.25 |\\n")
json.dump({"method": "sg2im", "checkpoint_sha256": "ab" * 32, "metrics": {"fid": 818.25, "is": 1.5}},
          open("results/x/metrics/sg2im.json", "w"), indent=1, sort_keys=True)
"""
DVC_YAML = """stages:
  train:
    cmd: python make.py
    deps: [make.py]
    outs: [results/x/models, results/x/tables]
    metrics: [results/x/metrics/sg2im.json]
"""


def run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, env=ENV, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "make.py").write_text(MAKE)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / ".gitignore").write_text("/results/\n")
    run(root, "git", "init", "-q")
    run(root, str(BIN / "dvc"), "init", "-q")
    run(root, sys.executable, "make.py")
    committed = run(root, sys.executable, "-m", "retrievegan.dvcsync", "commit")
    assert "2 metric / table output(s) copied to reference-run/" in committed.stdout, committed.stdout
    assert (root / "reference-run/results/x/metrics/sg2im.json").is_file()
    assert (root / "reference-run/results/x/tables/table1.csv").is_file()
    return root


def verify_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run(root, str(BIN / "retrievegan"), "verify", "--root", str(root), *args, check=False)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_reproduced_run_is_bit_for_bit_and_exits_0(project):
    proc = verify_cli(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^train\s+4\s+reproduced bit for bit$", proc.stdout, re.M), proc.stdout
    assert "1 of 1 stages reproduced bit for bit." in proc.stdout, proc.stdout
    report = verify_mod.verify(project)
    assert report.ok and report.stages[0].files == 4 and report.stages[0].identical


def test_numeric_differences_with_and_without_tolerance(project):
    edit(project / "results/x/metrics/sg2im.json", "818.25", "818.26")
    edit(project / "results/x/tables/table1.csv", "58.2", "58.21")
    (project / "results/x/models/net.bin").write_bytes(bytes(range(255, -1, -1)) * 4)  # another CPU's weights
    exact = verify_cli(project)
    assert exact.returncode == 1, exact.stdout
    out = exact.stdout
    assert "DIFFERS: 3 of 4 output(s)" in out, out
    assert "results/x/metrics/sg2im.json: 1 number(s) and 0 text value(s) differ of 4" in out, out
    assert "metrics.fid  818.25 -> 818.26  abs 0.01  rel 1.22e-05" in out, out
    assert "retrievegan pred_bbox / fid  58.2 -> 58.21  abs 0.01  rel 0.000172" in out, out
    assert "results/x/models/net.bin: differs (not a metric or table: not compared value by value)" in out, out
    assert "NOT reproduced (exit status 1)" in out

    loose = verify_cli(project, "--rtol", "1e-3")
    assert loose.returncode == 0, loose.stdout
    assert "differs, within tolerance: 3 of 4 output(s)" in loose.stdout
    assert "0 of 1 stages reproduced bit for bit, 1 within tolerance." in loose.stdout, loose.stdout
    tight = verify_cli(project, "--rtol", "1e-4")
    assert tight.returncode == 1 and "OUTSIDE tolerance" in tight.stdout, tight.stdout
    assert "rel 0.000172  OUTSIDE tolerance" in tight.stdout and "rel 1.22e-05  within tolerance" in tight.stdout
    assert verify_cli(project, "--atol", "0.02").returncode == 0  # absolute tolerance alone


def test_text_differences_fail_except_upstream_hashes(project):
    metric = project / "results/x/metrics/sg2im.json"
    edit(metric, "ab" * 32, "cd" * 32)  # the checkpoint's bytes differ upstream: tolerated with a tolerance
    assert verify_cli(project).returncode == 1
    accepted = verify_cli(project, "--rtol", "1e-6")
    assert accepted.returncode == 0, accepted.stdout
    assert "(hash of an upstream file)" in accepted.stdout
    edit(metric, '"sg2im"', '"layout2im"')  # a different method is never "within tolerance"
    refused = verify_cli(project, "--rtol", "1")
    assert refused.returncode == 1 and "method: sg2im -> layout2im" in refused.stdout, refused.stdout


def test_missing_output_fails_even_with_tolerance(project):
    (project / "results/x/tables/table1.md").unlink()
    proc = verify_cli(project, "--rtol", "1")
    assert proc.returncode == 1, proc.stdout
    assert "results/x/tables/table1.md: missing (not produced)" in proc.stdout
    (project / "results/x/metrics/sg2im.json").unlink()
    assert "results/x/metrics/sg2im.json: missing" in verify_cli(project).stdout


def test_reference_copy_drifting_from_the_lock_is_reported(project):
    edit(project / "reference-run/results/x/metrics/sg2im.json", "818.25", "1.0")
    proc = verify_cli(project)
    assert proc.returncode == 1
    assert "reference-run/ does not match dvc.lock: reference-run/results/x/metrics/sg2im.json hashes to" in proc.stdout


def test_code_change_since_the_lock_is_named(project):
    (project / "make.py").write_text(MAKE + "\n# edited\n")
    proc = verify_cli(project)
    assert proc.returncode == 0, proc.stdout  # same bytes: still reproduced; the note says the code differs
    assert "code / config differ from dvc.lock (an expected difference?): make.py (modified)" in proc.stdout


def test_unknown_stage_is_an_error(project):
    proc = verify_cli(project, "nope")
    assert proc.returncode == 2 and "stage(s) ['nope'] not in dvc.yaml" in proc.stderr


# --- pure helpers ---------------------------------------------------------------------------------
def test_flatten_and_compare_json_values():
    ref = {"metrics": {"fid": 10.0, "is": 2.0, "n": 3}, "rows": [1, 2], "name": "a"}
    new = {"metrics": {"fid": 10.5, "is": 2.0, "n": 3}, "rows": [1, 2, 3], "name": "a"}
    assert dict(flatten_json(ref))["metrics.fid"] == 10.0 and dict(flatten_json(ref))["rows[1]"] == 2
    cmp = compare_values(flatten_json(ref), flatten_json(new))
    assert cmp.numbers == (NumberDiff("metrics.fid", 10.0, 10.5),)
    assert [t.key for t in cmp.texts] == ["rows[2]"] and cmp.texts[0].reference == "(absent)"
    diff = cmp.numbers[0]
    assert diff.abs == 0.5 and diff.rel == 0.05
    assert diff.within(0.05, 0.0) and not diff.within(0.04, 0.0) and diff.within(0.0, 0.5)
    assert NumberDiff("x", 0.0, 0.0).rel == 0.0 and NumberDiff("x", 0.0, 1.0).rel == float("inf")


def test_csv_cells_label_rows_by_their_text_cells():
    cells = dict(csv_cells("method,setting,fid\nsg2im,pred_bbox,1.5\nsg2im,pred_bbox,2\n,,3\n"))
    assert cells == {
        "sg2im pred_bbox / method": "sg2im",
        "sg2im pred_bbox / setting": "pred_bbox",
        "sg2im pred_bbox / fid": "1.5",
        "sg2im pred_bbox #2 / method": "sg2im",
        "sg2im pred_bbox #2 / setting": "pred_bbox",
        "sg2im pred_bbox #2 / fid": "2",
        "row 3 / method": "",
        "row 3 / setting": "",
        "row 3 / fid": "3",
    }


def test_json_and_nan_handling():
    cmp = compare_values([("a", float("nan")), ("b", True)], [("a", float("nan")), ("b", False)])
    assert cmp.numbers == () and [t.key for t in cmp.texts] == ["b"]  # bools are not numbers
