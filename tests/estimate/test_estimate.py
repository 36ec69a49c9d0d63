"""Paper-scale compute estimate (retrievegan.estimate, `retrievegan paper-estimate`): FLOP counting, schedule
arithmetic, the GPU-hour formula, the config mirroring of the rules, and the stage end to end on tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from baselines_support import TINY_ATTNGAN, TINY_DAMSM, TINY_LAYOUT2IM
from patchgan_support import TINY_PATCH_GAN, TINY_RETRIEVAL
from train_support import TINY_SG2IM

from retrievegan import estimate as est
from retrievegan import runs
from retrievegan.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "config/config.yaml"


# --- FLOP counting ----------------------------------------------------------------------------------------
def test_linear_flops_forward_and_backward():
    """nn.Linear(in, out) on (B, in): forward 2 B in out; backward 2x that (grad input + grad weight), or 1x
    when the input needs no gradient (grad weight only); the bias add is not a FLOP of the count."""
    b, n_in, n_out = 5, 8, 16
    lin = torch.nn.Linear(n_in, n_out)
    forward = 2 * b * n_in * n_out
    x = torch.randn(b, n_in)
    with torch.no_grad():
        assert est.count_flops(lambda: lin(x))[0] == forward
    total, by_op = est.count_flops(lambda: lin(x).sum().backward())
    assert total == 2 * forward  # forward + grad weight
    assert by_op["addmm"] == forward and by_op["mm"] == forward
    x.requires_grad_(True)
    assert est.count_flops(lambda: lin(x).sum().backward())[0] == 3 * forward


def test_conv_flops_match_hand_count():
    conv = torch.nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        total, _ = est.count_flops(lambda: conv(x))
    assert total == 2 * (2 * 8 * 8) * (4 * 3 * 3 * 3)  # 2 x outputs x multiply-adds per output


# --- schedules and the GPU-hour formula ---------------------------------------------------------------------
def test_steps_from_epochs():
    assert est.steps_from_epochs(90, 74121, 16) == 90 * 4632 == 416880
    assert est.steps_from_epochs(120, 74121, 14) == 120 * 5294
    assert est.steps_from_epochs(600, 74121, 48) == 600 * 1544
    assert est.steps_from_epochs(1, 10, 3) == 3  # the last partial batch is dropped
    with pytest.raises(ConfigError):
        est.steps_from_epochs(1, 2, 3)


@pytest.mark.parametrize("paper, images", [("paper-coco.yaml", 74121), ("paper-vg.yaml", 62565)])
def test_paper_config_schedules_are_the_papers(paper, images):
    """The paper configs' step counts are the documented epochs at the documented batch (90 epochs x 16 for
    RetrieveGAN / PasteGAN, 120 x 14 for AttnGAN), and the rules' merge gives each method its own batch."""
    config = est.load_paper_config(BASE, ROOT / "config" / paper)
    for method in ("retrievegan", "retrievegan_gt_only", "pastegan"):
        train = runs.train_params(config, method)
        assert train["batch_size"] == 16
        assert train["steps"] == est.steps_from_epochs(90, images, 16)
    attngan = runs.train_params(config, "attngan")
    assert (attngan["batch_size"], attngan["steps"]) == (14, est.steps_from_epochs(120, images, 14))
    assert runs.train_params(config, "sg2im")["batch_size"] == 32
    assert runs.train_params(config, "layout2im")["steps"] == 300000


def test_gpu_hours_formula():
    one_hour = 19.5e12 * 3600
    assert est.gpu_hours(one_hour, 19.5, 1.0) == pytest.approx(1.0)
    assert est.gpu_hours(one_hour, 19.5, 0.25) == pytest.approx(4.0)
    assert est.gpu_hours(2 * one_hour, 39.0, 0.5) == pytest.approx(2.0)
    low, high = est.gpu_hour_range(one_hour, 19.5, (0.2, 0.5))
    assert (low, high) == (pytest.approx(2.0), pytest.approx(5.0))
    with pytest.raises(ValueError):
        est.gpu_hours(1.0, 19.5, 0.0)


def test_run_params_at_paper_config():
    config = est.load_paper_config(BASE, ROOT / "config/paper-coco.yaml")
    params = runs.run_params(config, "retrievegan_occur_only")
    assert (params["gt_selection"], params["cooccurrence"]) == (False, True)
    assert params["retrieval"] == config["retrieval"] and "train" not in params
    assert params["crop_dim"] == 128 and params["p_img_weight"] == 1.0  # the paper config over the embedded one
    assert "retrieval" not in runs.run_params(config, "pastegan")


def test_config_section_is_valid():
    """The `estimate` section of config/config.yaml builds the dataclass (minus the workflow-only keys the rule
    drops: paper_configs, its inputs, and in_report, which only the report rule reads)."""
    section = dict(yaml.safe_load(BASE.read_text())["estimate"])
    assert all((ROOT / p).is_file() for p in section.pop("paper_configs"))
    assert isinstance(section.pop("in_report"), bool)
    cfg = est.estimate_config(section)
    assert cfg.utilization[0] <= cfg.utilization[1]
    with pytest.raises(ConfigError):
        est.estimate_config({"utilisation": [0.1, 0.2]})
    with pytest.raises(ConfigError):
        est.estimate_config({"utilization": [0.5, 0.2]})


def test_synthetic_items_follow_the_dataset():
    scale = est.DatasetScale(
        source="visual_genome",
        train_images=10,
        val_images=2,
        test_images=2,
        categories=5,
        patches=100,
        image_size=16,
        mask_size=None,
        crop_size=8,
        objects_per_image=(3, 9),
        num_predicates=4,
    )
    spec = est.synthetic_spec(scale)
    assert (spec.num_objects, spec.num_predicates, spec.mask_size) == (6, 4, None)
    items = est.synthetic_items(scale, spec, 40, np.random.default_rng(0))
    counts = [len(item.objs) - 1 for item in items]
    assert min(counts) == 3 and max(counts) == 9
    next_id = 0
    for item in items:
        n = len(item.objs) - 1
        assert int(item.objs[-1]) == 0 and bool((item.objs[:-1] > 0).all())
        assert item.patch_ids.tolist() == list(range(next_id, next_id + n)) + [-1]
        next_id += n
        assert int(item.triples[:, [0, 2]].max()) <= n and int(item.triples[:, 1].max()) < 4
        assert bool((item.boxes[:, 2] > item.boxes[:, 0]).all()) and float(item.boxes.max()) <= 1.0
        areas = (item.boxes[:, 2] - item.boxes[:, 0]) * (item.boxes[:, 3] - item.boxes[:, 1])
        assert float(areas.min()) > 0.02


# --- the stage end to end on tiny configs ------------------------------------------------------------------------
def _tiny_paper_config(path: Path, source: str) -> Path:
    """A tiny "paper config" over config/config.yaml: 32 px, a few-thousand-parameter networks."""
    tiny = {
        "dataset": f"tiny_{source}",
        "sources": [source],
        "model_source": source,
        "preprocess": {"image_size": 32},
        "patches": {"crop_size": 16},
        "coco_stuff": {"mask_size": 16},
        "features": {"channels": [4, 8]},
        "cooccur": {"embed_dim": 8},
        "prefilter": {"k": 8},
        "retrieval": TINY_RETRIEVAL,
        "train": {"batch_size": 3, "steps": 50},
        "sg2im": {**TINY_SG2IM, "mask_size": 16, "train": {"batch_size": 4, "steps": 100}},
        "layout2im": {**TINY_LAYOUT2IM, "train": {"batch_size": 2, "steps": 30}},
        "damsm": {k: v for k, v in TINY_DAMSM.items() if k != "device"},
        "attngan": {**TINY_ATTNGAN, "train": {"batch_size": 3, "steps": 40}},
        # the perceptual loss on: the estimate builds its VGG-19 with random weights
        "retrievegan": {**TINY_PATCH_GAN, "p_img_weight": 1.0, "train": {"steps": 60}},
        "pastegan": {**TINY_PATCH_GAN, "decoder_res_blocks": 1, "test_top": 5, "train": {"steps": 70}},
    }
    path.write_text(yaml.safe_dump(tiny))
    return path


@pytest.mark.slow
def test_paper_estimate_stage_end_to_end(tmp_path):
    from retrievegan.cli import main

    stats = tmp_path / "stats.csv"
    stats.write_text(
        "dataset,train,val,test,categories,patches,image_size\n"
        "coco_stuff,100,10,20,10,400,32\nvisual_genome,90,9,18,12,500,32\n"
    )
    coco = _tiny_paper_config(tmp_path / "paper-coco.yaml", "coco_stuff")
    vg = _tiny_paper_config(tmp_path / "paper-vg.yaml", "visual_genome")
    params = {"warmup_steps": 1, "timed_steps": 1, "timing_batch_size": 2}
    out = tmp_path / "estimate"
    assert (
        main(
            [
                "paper-estimate",
                "--no-progress",
                "--params",
                json.dumps(params),
                "--base-config",
                str(BASE),
                "--paper-config",
                str(coco),
                "--paper-config",
                str(vg),
                "--dataset-stats",
                str(stats),
                "--out-dir",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    result = json.loads((out / "paper_estimate.json").read_text())
    assert (out / "run.json").is_file()
    train = {(r["method"], r["dataset"]): r for r in result["rows"] if r["kind"] in ("train", "damsm")}
    table2 = ("retrievegan_no_gt_no_occur", "retrievegan_gt_only", "retrievegan_occur_only")
    table1 = ("sg2im", "attngan", "layout2im", "pastegan", "retrievegan", "damsm")
    assert set(train) == {(m, "coco_stuff") for m in table1 + table2} | {(m, "visual_genome") for m in table1}
    assert train[("sg2im", "coco_stuff")]["steps"] == 100 and train[("sg2im", "coco_stuff")]["batch_size"] == 4
    assert (
        train[("retrievegan", "coco_stuff")]["steps"] == 60 and train[("retrievegan", "coco_stuff")]["batch_size"] == 3
    )
    assert train[("damsm", "visual_genome")]["steps"] == est.steps_from_epochs(8, 90, 8)
    assert train[("layout2im", "coco_stuff")]["timing_batch"] == 2
    for row in result["rows"]:
        assert row["flops_per_step"] > 0 and row["total_flops"] == pytest.approx(row["flops_per_step"] * row["steps"])
        low, high = row["gpu_hours_fp32"]
        assert low == pytest.approx(est.gpu_hours(row["total_flops"], 19.5, 0.4))
        assert high == pytest.approx(est.gpu_hours(row["total_flops"], 19.5, 0.15))
    # a timed batch smaller than the paper batch is scaled by the FLOP ratio
    r = train[("sg2im", "coco_stuff")]
    assert r["cpu_seconds_per_step"] == pytest.approx(min(r["timed_seconds"]) * r["flops_per_step"] / r["timing_flops"])
    assert r["timing_flops"] < r["flops_per_step"]
    # the ablations differ from RetrieveGAN only in cheap retrieval losses
    assert train[("retrievegan_gt_only", "coco_stuff")]["flops_per_step"] == pytest.approx(
        train[("retrievegan", "coco_stuff")]["flops_per_step"], rel=0.05
    )
    settings = {(r["method"], r["dataset"], r["setting"]) for r in result["rows"] if r["kind"] == "sample"}
    assert ("layout2im", "coco_stuff", "gt_bbox") in settings and (
        "layout2im",
        "coco_stuff",
        "pred_bbox",
    ) not in settings
    assert ("retrievegan_gt_only", "coco_stuff", "pred_bbox") in settings
    assert ("retrievegan_gt_only", "coco_stuff", "gt_bbox") not in settings
    totals = result["totals"]
    assert totals["table1"]["training_runs"] == 12 and totals["table2"]["training_runs"] == 4
    assert totals["both"]["training_runs"] == 15
    assert totals["both"]["total_flops"] < totals["table1"]["total_flops"] + totals["table2"]["total_flops"]
    notes = " ".join(result["random_weights"])
    assert "VGG-19 with random weights" in notes and "DAMSM" in notes
    md = (out / "paper_estimate.md").read_text()
    assert "| retrievegan_occur_only | coco_stuff |" in md and "Tables 1 + 2" in md and "random weights" in md


@pytest.mark.slow
def test_rule_paper_estimate_is_an_explicit_target(tmp_path):
    """`snakemake paper_estimate` runs `retrievegan paper-estimate` on the configured paper configs; the default
    target (`rule all`) does not include it (it takes minutes)."""
    import os
    import shutil
    import subprocess
    import sys

    shutil.copytree(ROOT / "config", tmp_path / "config")
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    def dry_run(*targets: str) -> str:
        proc = subprocess.run(
            [
                snakemake,
                "--snakefile",
                str(ROOT / "Snakefile"),
                "--directory",
                str(tmp_path),
                "-n",
                "-p",
                "--cores",
                "2",
                *targets,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    text = dry_run("paper_estimate")
    assert "retrievegan paper-estimate" in text
    assert "--paper-config config/paper-coco.yaml --paper-config config/paper-vg.yaml" in text
    assert "results/synth/estimate/paper_estimate.md" in text and '"paper_configs"' not in text
    assert "rule paper_estimate:" in text and "rule paper_estimate:" not in dry_run()


def test_measured_steps_per_precision_mode(tmp_path):
    """`measured: true` (on a GPU: `device: cuda`) times real steps at the paper batch in each mode: median s/step,
    GPU-hours = median x steps, per-mode errors kept; the Markdown gets the measured table."""
    stats = tmp_path / "stats.csv"
    stats.write_text("dataset,train,val,test,categories,patches,image_size\ncoco_stuff,100,10,20,10,400,32\n")
    coco = _tiny_paper_config(tmp_path / "paper-coco.yaml", "coco_stuff")
    cfg = est.estimate_config(
        {
            "methods": ["sg2im", "attngan"],
            "measured": True,
            "modes": ["fp32", "bf16"],
            "measure_warmup_steps": 0,
            "measure_timed_steps": 2,
            "sampling": False,
            "evaluation": False,
        }
    )
    printed: list[str] = []
    result = est.run_estimate(cfg, BASE, [coco], stats, tmp_path / "out", progress=printed.append)
    rows = {r["method"]: r for r in result["rows"] if r["kind"] in ("train", "damsm")}
    assert set(rows) == {"sg2im", "attngan", "damsm"}
    # each method's measured modes are printed as soon as they are timed (a run cut short keeps them in its log)
    for name, label in (("sg2im", "sg2im"), ("attngan", "attngan"), ("damsm", "damsm pre-training")):
        modes = rows[name]["measured"]
        assert (
            f"coco_stuff: {label}: "
            + "; ".join(
                f"{m} {modes[m]['median_seconds']:.4f} s/step = {modes[m]['gpu_hours']:.1f} GPU-h"
                for m in ("fp32", "bf16")
            )
            in printed
        )
    for row in rows.values():
        assert set(row["measured"]) == {"fp32", "bf16"}
        for mode in row["measured"].values():
            assert mode["error"] is None and len(mode["seconds"]) == 2
            assert mode["gpu_hours"] == pytest.approx(mode["median_seconds"] * row["steps"] / 3600)
        best = min(row["measured"], key=lambda m: row["measured"][m]["median_seconds"])
        assert row["measured_mode"] == best
        assert row["measured_gpu_hours"] == pytest.approx(row["measured"][best]["gpu_hours"])
    assert result["totals"]["table1"]["measured_gpu_hours_training"] == pytest.approx(
        sum(r["measured_gpu_hours"] for r in rows.values())
    )
    md = (tmp_path / "out/paper_estimate.md").read_text()
    assert "## Measured on the CPU" in md and "| sg2im | coco_stuff | 4 |" in md and "Tables 1 + 2, training" in md


def test_measured_summary_names_each_mode_and_its_error():
    from retrievegan.estimate.measure import StepTiming
    from retrievegan.estimate.run import measured_summary

    timings = [StepTiming("fp32", (0.2, 0.1, 0.3)), StepTiming("bf16", error="RuntimeError: index_add_(): dtype")]
    assert measured_summary(timings, 36_000) == (
        "fp32 0.2000 s/step = 2.0 GPU-h; bf16 failed (RuntimeError: index_add_(): dtype)"
    )
