"""What a trained method produces: samples (batch-size independent), GCN features, box L1, progress figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from retrievegan import io
from retrievegan.cli import main as cli_main
from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
from retrievegan.errors import ConfigError, InputError
from retrievegan.eval.sampler import SampleConfig, sample
from retrievegan.train.loop import load_trained


def _pngs(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_samples_do_not_depend_on_batch_size(tiny_sg2im_run, tmp_path):
    one = sample(
        tiny_sg2im_run.checkpoint,
        tiny_sg2im_run.data_dir,
        "pred_bbox",
        tmp_path / "b1",
        SampleConfig(batch_size=1, device="cpu"),
        progress=False,
    )
    five = sample(
        tiny_sg2im_run.checkpoint,
        tiny_sg2im_run.data_dir,
        "pred_bbox",
        tmp_path / "b5",
        SampleConfig(batch_size=5, device="cpu"),
        progress=False,
    )
    graphs = SceneGraphDataset(tiny_sg2im_run.data_dir, "test")
    assert one["num_images"] == five["num_images"] == len(graphs) == 12
    for k in ("sample0", "sample1"):
        a, b = _pngs(tmp_path / "b1" / k), _pngs(tmp_path / "b5" / k)
        assert sorted(a) == [f"{i:012d}.png" for i in graphs.image_ids]
        for name in a:
            assert a[name].shape == (32, 32, 3)
            # identical up to float rounding in batched convolutions (at most one grey level, rarely)
            diff = np.abs(a[name].astype(int) - b[name].astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.001, name
    s0, s1 = _pngs(tmp_path / "b1" / "sample0"), _pngs(tmp_path / "b1" / "sample1")
    assert any(not np.array_equal(s0[n], s1[n]) for n in s0)  # the two seeds give different samples
    manifest = json.loads((tmp_path / "b1" / "manifest.json").read_text())
    assert manifest["checkpoint_sha256"] == io.sha256_file(tiny_sg2im_run.checkpoint)
    assert manifest["seeds"] == [0, 1] and manifest["method"] == "sg2im" and manifest["setting"] == "pred_bbox"
    assert not (tmp_path / "b1" / "retrievals.json").exists()


def test_settings_use_predicted_or_ground_truth_boxes(tiny_sg2im_run):
    method, nets, _ = load_trained(tiny_sg2im_run.checkpoint)
    batch = collate_scene_graphs([SceneGraphDataset(tiny_sg2im_run.data_dir, "test")[i] for i in range(3)])
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(3)]  # noqa: E731
    with torch.no_grad():
        pred = method.sample(nets, batch, "pred_bbox", gens()).images
        gt = method.sample(nets, batch, "gt_bbox", gens()).images
        out = nets["generator"](
            batch.objs, batch.triples, batch.obj_to_img, 3, method.noise(batch, gens()), batch.boxes, None
        )
    assert pred.shape == gt.shape == (3, 3, 32, 32)
    assert torch.allclose(gt, out.images) and not torch.allclose(pred, gt)
    with pytest.raises(ConfigError, match="setting"):
        sample(
            tiny_sg2im_run.checkpoint,
            tiny_sg2im_run.data_dir,
            "layout_only",
            "/nonexistent",
            SampleConfig(device="cpu"),
            progress=False,
        )


def test_gcn_features_follow_the_patch_table(tiny_sg2im_run, tmp_path):
    out = tmp_path / "features" / "gcn_features.npy"
    assert (
        cli_main(
            [
                "gcn-features",
                "--no-progress",
                "--checkpoint",
                str(tiny_sg2im_run.checkpoint),
                "--data-dir",
                str(tiny_sg2im_run.data_dir),
                "--patches",
                str(tiny_sg2im_run.patches_csv),
                "--out",
                str(out),
                "--batch-size",
                "5",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    features = np.load(out)
    table = pd.read_csv(tiny_sg2im_run.patches_csv)
    assert features.shape == (len(table), 16) and features.dtype == np.float32
    assert json.loads((tmp_path / "features" / "gcn_features.run.json").read_text())["shape"] == [len(table), 16]
    # row i is the encoder output of the object in row i, whatever the batch it was computed in
    method, nets, _ = load_trained(tiny_sg2im_run.checkpoint)
    for split, image_index in (("train", 5), ("test", 11)):
        item = SceneGraphDataset(tiny_sg2im_run.data_dir, split)[image_index]
        with torch.no_grad():
            vecs = method.object_features(nets, collate_scene_graphs([item]))
        rows = table[(table["split"] == split) & (table["image_index"] == image_index)].sort_values("object_index")
        assert np.allclose(features[rows["patch_id"].to_numpy()], vecs[:-1].numpy(), atol=1e-5)


def test_box_l1_against_mean_box_baselines(tiny_sg2im_run, tmp_path):
    out = tmp_path / "box_l1.json"
    assert (
        cli_main(
            [
                "box-l1",
                "--checkpoint",
                str(tiny_sg2im_run.checkpoint),
                "--data-dir",
                str(tiny_sg2im_run.data_dir),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    val = SceneGraphDataset(tiny_sg2im_run.data_dir, "val")
    train = SceneGraphDataset(tiny_sg2im_run.data_dir, "train")
    real_val = np.concatenate([val.object_arrays(i)[1][:-1] for i in range(len(val))])
    mean_box = np.concatenate([train.object_arrays(i)[1][:-1] for i in range(len(train))]).mean(0)
    assert result["num_objects"] == len(real_val)
    assert result["baselines"]["mean_box"]["l1"] == pytest.approx(np.abs(real_val - mean_box).mean(), rel=1e-6)
    assert result["better_than_mean_box"] == (result["box_l1"] < result["baselines"]["mean_box"]["l1"])


def test_progress_figure(tiny_sg2im_run, tmp_path):
    out = tmp_path / "progress.png"
    assert (
        cli_main(
            [
                "progress-figure",
                "--checkpoint",
                str(tiny_sg2im_run.checkpoint),
                "--snapshots",
                str(tiny_sg2im_run.out_dir / "snapshots"),
                "--data-dir",
                str(tiny_sg2im_run.data_dir),
                "--num-images",
                "4",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    image = Image.open(out)
    # rows: real + 3 snapshots (steps 0, 2, 4) + final with predicted boxes; 64 px cells after 2x scaling
    assert image.size == (150 + 4 * 64, 5 * 64)
    with pytest.raises(InputError, match="snapshots"):
        from retrievegan.eval.progress import progress_figure

        progress_figure(tiny_sg2im_run.checkpoint, tmp_path, tiny_sg2im_run.data_dir, out, device_name="cpu")
