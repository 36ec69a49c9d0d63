"""The evaluation stages end to end through the CLI on the tiny benchmark: synthnet -> real statistics ->
per-run metrics -> compatibility -> tables -> figures -> REPORT.md; plus synthnet training and the
sample-folder / loss-log checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from eval_support import add_noise, same_category_retrievals, write_sample_folder

from retrievegan.cli import main
from retrievegan.data.scene_graph import read_split
from retrievegan.errors import InputError

EVAL = {
    "feature_extractor": "synthnet",
    "ds_backbone": "synthnet",
    "is_splits": 3,
    "batch_size": 5,
    "device": "cpu",
    "compatibility": True,
    "bootstrap_samples": 200,
    "seed": 0,
}


def cli(stage, *args):
    return main([stage, "--no-progress", *args])


@pytest.fixture(scope="module")
def evaluated(tiny_dataset, tmp_path_factory):
    """Runs every evaluation stage once; returns the results folder."""
    res = tmp_path_factory.mktemp("res")
    data = tiny_dataset.data_dir
    params = json.dumps(EVAL)
    assert (
        cli(
            "synthnet",
            "--params",
            json.dumps({"width": 4, "epochs": 1, "batch_size": 16}),
            "--data-dir",
            str(data),
            "--out",
            str(res / "models/synthnet/synthnet.pt"),
            "--quality",
            str(res / "metrics/synthnet_quality.json"),
        )
        == 0
    )
    synthnet = str(res / "models/synthnet/synthnet.pt")
    for split in ("test", "val"):
        assert (
            cli(
                "real-stats",
                "--params",
                params,
                "--images",
                str(data / f"{split}_images.npy"),
                "--split",
                split,
                "--synthnet",
                synthnet,
                "--out",
                str(res / f"metrics/reference/{split}_synthnet.npz"),
            )
            == 0
        )
    assert (
        cli(
            "real-metrics",
            "--params",
            params,
            "--test-stats",
            str(res / "metrics/reference/test_synthnet.npz"),
            "--reference-stats",
            str(res / "metrics/reference/val_synthnet.npz"),
            "--synthnet",
            synthnet,
            "--out",
            str(res / "metrics/real_data.json"),
        )
        == 0
    )
    ids = [g.image_id for g in read_split(data / "test.json").graphs]
    real = np.load(data / "test_images.npy")
    noisy = add_noise(real, 50, seed=1)
    retrievals = same_category_retrievals(data, tiny_dataset.patches_dir / "patches.csv")
    runs = {("retrievegan", "pred_bbox"): (real, noisy, retrievals), ("sg2im", "gt_bbox"): (noisy, noisy, None)}
    for (method, setting), (s0, s1, rec) in runs.items():
        run_dir = write_sample_folder(
            res / f"samples/{method}/{setting}",
            method,
            setting,
            ids,
            s0,
            s1,
            checkpoint_sha256=f"{method}-sha",
            retrievals=rec,
        )
        assert (
            cli(
                "metrics",
                "--params",
                params,
                "--run-dir",
                str(run_dir),
                "--method",
                method,
                "--setting",
                setting,
                "--split-json",
                str(data / "test.json"),
                "--reference-stats",
                str(res / "metrics/reference/test_synthnet.npz"),
                "--synthnet",
                synthnet,
                "--out",
                str(res / f"metrics/{method}_{setting}.json"),
                "--details",
                str(res / f"metrics/details/{method}_{setting}.json"),
            )
            == 0
        )
    assert (
        cli(
            "compatibility",
            "--params",
            params,
            "--retrievals",
            str(res / "samples/retrievegan/pred_bbox/retrievals.json"),
            "--patches-csv",
            str(tiny_dataset.patches_dir / "patches.csv"),
            "--split-json",
            str(data / "test.json"),
            "--method",
            "retrievegan",
            "--setting",
            "pred_bbox",
            "--out",
            str(res / "metrics/compatibility/retrievegan_pred_bbox.json"),
        )
        == 0
    )
    return res


def test_metric_files_record_names_hashes_counts_and_seed(evaluated):
    exact = json.loads((evaluated / "metrics/retrievegan_pred_bbox.json").read_text())
    assert exact["checkpoint_sha256"] == "retrievegan-sha" and exact["num_images"] == 12 and exact["seed"] == 0
    assert set(exact["metrics"]) == {
        "fid_synthnet_test_pred",
        "is_synthnet_test_pred",
        "is_synthnet_test_pred_std",
        "ds_lpips_synthnet_test_pred",
        "ds_lpips_synthnet_test_pred_std",
    }
    assert abs(exact["metrics"]["fid_synthnet_test_pred"]) < 1e-5  # sample0 is the real test split itself
    assert exact["metrics"]["ds_lpips_synthnet_test_pred"] > 0.01
    assert exact["extractor"] == "synthnet" and exact["ds_network"] == "lpips_synthnet"
    details = json.loads((evaluated / "metrics/details/retrievegan_pred_bbox.json").read_text())
    assert details["metrics"] == exact["metrics"] and "image_ids" not in details["manifest"]
    assert details["extractor_details"]["torch_fidelity_name"] == "synthnet"
    assert not details["extractor_details"]["comparable_to_paper"]
    assert details["reference"]["num_images"] == 12 and details["manifest"]["checkpoint_sha256"] == "retrievegan-sha"
    same = json.loads((evaluated / "metrics/sg2im_gt_bbox.json").read_text())
    assert same["metrics"]["ds_lpips_synthnet_test_gt"] == 0.0  # sample1 is sample0
    assert same["metrics"]["fid_synthnet_test_gt"] > 1e-3
    real = json.loads((evaluated / "metrics/real_data.json").read_text())
    assert set(real["metrics"]) == {"fid_synthnet_test_real", "is_synthnet_test_real", "is_synthnet_test_real_std"}
    quality = json.loads((evaluated / "metrics/synthnet_quality.json").read_text())
    assert 0.0 <= quality["val_quality"]["theme_accuracy"] <= 1.0
    compat = json.loads((evaluated / "metrics/compatibility/retrievegan_pred_bbox.json").read_text())
    assert compat["num_sets"] == 24 and compat["category_match"] == 1.0


def test_tables_figures_and_report(evaluated, tiny_dataset, tmp_path):
    res = evaluated
    dataset_csv = tmp_path / "dataset_table.csv"
    dataset_csv.write_text(
        "dataset,source,train,val,test,categories,predicates,patches,image_size\ntiny,coco_stuff,40,8,12,11,6,200,32\n"
    )
    metrics = [str(res / "metrics/retrievegan_pred_bbox.json"), str(res / "metrics/sg2im_gt_bbox.json")]
    compat = [str(res / "metrics/compatibility/retrievegan_pred_bbox.json")]
    params = json.dumps(EVAL | {"methods": ["sg2im", "retrievegan"]})
    assert (
        cli(
            "tables",
            "--eval-params",
            params,
            "--dataset",
            "tiny",
            "--metrics",
            *metrics,
            "--real",
            str(res / "metrics/real_data.json"),
            "--compatibility",
            *compat,
            "--dataset-table",
            str(dataset_csv),
            "--out-dir",
            str(res / "tables"),
        )
        == 0
    )
    names = sorted(p.name for p in (res / "tables").iterdir())
    assert names == sorted(
        f"{t}.{e}" for t in ("table1", "table2", "dataset", "compatibility") for e in ("csv", "md", "tex")
    )
    table1 = (res / "tables/table1.csv").read_text()
    assert "not evaluated in this run" in table1  # PasteGAN etc.
    figures = [
        res / "figures/qualitative/retrievegan_pred_bbox.png",
        res / "figures/qualitative/sg2im_gt_bbox.png",
        res / "figures/compatibility.png",
        res / "figures/losses/retrievegan.png",
    ]
    for method, setting in (("retrievegan", "pred_bbox"), ("sg2im", "gt_bbox")):
        assert (
            cli(
                "figure-qualitative",
                "--params",
                json.dumps({"qualitative_images": 3}),
                "--run-dir",
                str(res / f"samples/{method}/{setting}"),
                "--method",
                method,
                "--setting",
                setting,
                "--data-dir",
                str(tiny_dataset.data_dir),
                "--patches-dir",
                str(tiny_dataset.patches_dir),
                "--out",
                str(res / f"figures/qualitative/{method}_{setting}.png"),
            )
            == 0
        )
    assert cli("figure-compatibility", "--compatibility", *compat, "--out", str(figures[2])) == 0
    losses = tmp_path / "losses.jsonl"
    losses.write_text(
        "\n".join(
            json.dumps(r)
            for r in (
                {"step": 0, "total": 3.0, "l_gt_sel": 1.0, "lr": 1e-3},
                {"step": 10, "total": 2.0, "l_gt_sel": 0.8, "d_img": 0.5},  # a key that appears later
                {"step": 20, "total": 1.5, "note": "text is ignored"},
            )
        )
        + "\n"
    )
    assert (
        cli(
            "figure-losses",
            "--params",
            json.dumps({"loss_smoothing": 2}),
            "--losses",
            str(losses),
            "--method",
            "retrievegan",
            "--out",
            str(figures[3]),
        )
        == 0
    )
    for fig in figures:
        assert fig.stat().st_size > 5000 and fig.read_bytes()[:4] == b"\x89PNG"
    tables = [str(p) for p in sorted((res / "tables").iterdir())]
    assert (
        cli(
            "report",
            "--eval-params",
            params,
            "--dataset",
            "tiny",
            "--metrics",
            *metrics,
            "--real",
            str(res / "metrics/real_data.json"),
            "--compatibility",
            *compat,
            "--tables",
            *tables,
            "--figures",
            *map(str, figures),
            "--synthnet-quality",
            str(res / "metrics/synthnet_quality.json"),
            "--out",
            str(res / "REPORT.md"),
        )
        == 0
    )
    report = (res / "REPORT.md").read_text()
    assert "(tables/table1.md)" in report and "(figures/qualitative/retrievegan_pred_bbox.png)" in report
    assert "not comparable" in report and "32x32" in report and "theme accuracy" in report


def test_incomplete_sample_folder_is_refused(evaluated, tiny_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(evaluated / "samples/sg2im/gt_bbox", run_dir)
    victim = sorted((run_dir / "sample1").iterdir())[4]
    victim.unlink()
    code = cli(
        "metrics",
        "--params",
        json.dumps(EVAL),
        "--run-dir",
        str(run_dir),
        "--method",
        "sg2im",
        "--setting",
        "gt_bbox",
        "--split-json",
        str(tiny_dataset.data_dir / "test.json"),
        "--reference-stats",
        str(evaluated / "metrics/reference/test_synthnet.npz"),
        "--synthnet",
        str(evaluated / "models/synthnet/synthnet.pt"),
        "--out",
        str(tmp_path / "m.json"),
    )
    err = capsys.readouterr().err
    assert code == 2 and "sample0 and sample1 hold different image ids" in err
    assert f"image id {int(victim.stem)}" in err and not (tmp_path / "m.json").exists()


def test_inception_run_without_weights_fails_before_any_work(evaluated, tiny_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    code = cli(
        "metrics",
        "--params",
        json.dumps(EVAL | {"feature_extractor": "inception"}),
        "--run-dir",
        str(evaluated / "samples/sg2im/gt_bbox"),
        "--method",
        "sg2im",
        "--setting",
        "gt_bbox",
        "--split-json",
        str(tiny_dataset.data_dir / "test.json"),
        "--reference-stats",
        str(evaluated / "metrics/reference/test_synthnet.npz"),
        "--out",
        str(tmp_path / "m.json"),
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "weights-inception-2015-12-05-6726825d.pth" in err and "https://github.com/toshas/torch-fidelity" in err
    assert not (tmp_path / "m.json").exists()


def test_wrong_resolution_is_refused(tiny_dataset, tmp_path):
    from retrievegan.eval.image_datasets import PngDataset
    from retrievegan.eval.samples import open_run

    ids = [g.image_id for g in read_split(tiny_dataset.data_dir / "test.json").graphs]
    small = np.zeros((len(ids), 16, 16, 3), np.uint8)
    run = open_run(
        write_sample_folder(tmp_path / "run", "sg2im", "pred_bbox", ids, small, small), "sg2im", "pred_bbox", ids
    )
    with pytest.raises(InputError, match="16x16 px, the real images are 32x32"):
        PngDataset(run.paths(0), (32, 32))[0]


def test_synthnet_training_is_seeded_and_leaves_the_global_rng_alone(tiny_dataset, tmp_path):
    from retrievegan.eval.synthnet import SynthNetConfig, load_synthnet, train_synthnet

    cfg = SynthNetConfig(width=4, epochs=1, batch_size=16, seed=5)
    before = torch.random.get_rng_state()
    record = train_synthnet(tiny_dataset.data_dir, cfg, tmp_path / "a.pt", verbose=False)
    assert torch.equal(before, torch.random.get_rng_state())
    train_synthnet(tiny_dataset.data_dir, cfg, tmp_path / "b.pt", verbose=False)
    a, b = load_synthnet(tmp_path / "a.pt").state_dict(), load_synthnet(tmp_path / "b.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert record["arch"]["num_categories"] == 11 and record["arch"]["image_size"] == 32
    assert set(record["val_quality"]) >= {"theme_accuracy", "category_macro_f1", "theme_majority_baseline"}


def test_loss_log_reader_is_tolerant_of_keys_but_not_of_broken_lines(tmp_path):
    from retrievegan.eval.figures import read_losses

    path = tmp_path / "losses.jsonl"
    path.write_text('{"step": 2, "a": 1.0}\n\n{"step": 1, "b": 2, "flag": true}\n')
    frame = read_losses(path)
    assert list(frame["step"]) == [1, 2] and set(frame.columns) == {"step", "a", "b"}
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": \n')
    with pytest.raises(InputError, match="line 2"):
        read_losses(path)
    path.write_text('{"a": 1.0}\n')
    with pytest.raises(InputError, match="'step' key"):
        read_losses(path)
