"""Frozen patch features (retrievegan.embed.features): category CNN, multi-scale layout, ResNet weights."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from retrievegan import cli
from retrievegan.embed.features import FeaturesConfig, extract_patch_features, resolve_resnet_weights
from retrievegan.errors import InputError

TINY = {
    "channels": [8, 16],
    "epochs": 1,
    "train_batch_size": 32,
    "batch_size": 64,
    "device": "cpu",
    "probe_max_queries": 50,
}


@pytest.fixture(scope="module")
def category_cnn(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("category_cnn")
    rc = cli.main(
        [
            "category-cnn",
            "--no-progress",
            "--params",
            json.dumps(TINY),
            "--threads",
            "1",
            "--patches-dir",
            str(tiny_dataset.patches_dir),
            "--out-dir",
            str(out),
        ]
    )
    assert rc == 0
    return out


def test_category_cnn_trains_on_categories_only(category_cnn, tiny_dataset):
    run = json.loads((category_cnn / "run.json").read_text())
    table = pd.read_csv(tiny_dataset.patches_dir / "patches.csv")
    assert run["classes"] == sorted(table.loc[table["split"] == "train", "category"].unique().tolist())
    assert run["train_patches"] == int((table["split"] == "train").sum())
    assert len(run["history"]) == 1 and np.isfinite(run["history"][0]["train_loss"])
    assert (category_cnn / "checkpoint.pt").is_file()


@pytest.mark.parametrize("pooling", ["multiscale", "last"])
def test_patch_features_stage(category_cnn, tiny_dataset, tmp_path, pooling):
    params = {**TINY, "pooling": pooling}
    rc = cli.main(
        [
            "patch-features",
            "--no-progress",
            "--params",
            json.dumps(params),
            "--threads",
            "1",
            "--patches-dir",
            str(tiny_dataset.patches_dir),
            "--out-dir",
            str(tmp_path),
            "--category-cnn",
            str(category_cnn / "checkpoint.pt"),
        ]
    )
    assert rc == 0
    feats = np.load(tmp_path / "patch_features.npy")
    table = pd.read_csv(tiny_dataset.patches_dir / "patches.csv")
    run = json.loads((tmp_path / "patch_features.run.json").read_text())
    # multiscale: mean + std of the input (3) and of both stages (8, 16); last: mean of the last stage
    expected = 2 * (3 + 8 + 16) if pooling == "multiscale" else 16
    assert feats.shape == (len(table), expected) and feats.dtype == np.float32
    assert sum(item["width"] for item in run["layout"]) == expected
    train = (table["split"] == "train").to_numpy()
    assert np.allclose(feats[train].mean(0), 0.0, atol=1e-4)  # standardised with train statistics
    assert np.all(np.isfinite(feats))
    assert set(run["probe"]) >= {"category_1nn_accuracy", "theme_10nn_precision", "theme_chance"}
    # row alignment: a patch's features depend on that patch only (recompute a few rows alone)
    from retrievegan.embed.features import build_extractor

    extractor = build_extractor(FeaturesConfig(**params), category_cnn / "checkpoint.pt")
    bank = np.load(tiny_dataset.patches_dir / "patches.npy")
    raw = extractor(torch.from_numpy(bank[[5, 0, 17]])).numpy()
    raw_all = extractor(torch.from_numpy(bank[train])).numpy()
    mean, std = raw_all.mean(0), raw_all.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    assert np.allclose((raw - mean) / std, feats[[5, 0, 17]], atol=1e-3)


def test_missing_resnet_weights_is_a_clear_error(tmp_path, monkeypatch, tiny_dataset, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(InputError) as err:
        resolve_resnet_weights("resnet18", None)
    text = str(err.value)
    assert "resnet18-f37072fd.pth" in text and "https://download.pytorch.org/models/resnet18-f37072fd.pth" in text
    assert str(tmp_path / "torch_home") in text and "Nothing is downloaded" in text
    missing = tmp_path / "nowhere" / "r.pth"
    with pytest.raises(InputError, match="features.resnet_weights"):
        resolve_resnet_weights("resnet18", str(missing))
    rc = cli.main(
        [
            "patch-features",
            "--params",
            json.dumps({"backbone": "resnet", "device": "cpu"}),
            "--patches-dir",
            str(tiny_dataset.patches_dir),
            "--out-dir",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 2 and "resnet18-f37072fd.pth" in capsys.readouterr().err
    assert not (tmp_path / "out" / "patch_features.npy").exists()


def test_resnet_backbone_with_a_given_weights_file(tmp_path, tiny_dataset):
    """Any file with the ResNet-18 state dict works (here a seeded random one, named explicitly)."""
    from torchvision.models import resnet18

    from retrievegan.models.init import build

    weights = tmp_path / "resnet18-test.pth"
    torch.save(build(lambda: resnet18(weights=None), torch.Generator().manual_seed(0)).state_dict(), weights)
    cfg = FeaturesConfig(
        backbone="resnet", resnet_weights=str(weights), resnet_input_size=32, batch_size=64, device="cpu"
    )
    extra = extract_patch_features(tiny_dataset.patches_dir, cfg, tmp_path / "out", progress=False)
    feats = np.load(tmp_path / "out" / "patch_features.npy")
    assert feats.shape[1] == 2 * (3 + 64 + 64 + 128 + 256 + 512) == extra["shape"][1]
    assert [item["stage"] for item in extra["layout"]][::2] == ["input", "stem", "layer1", "layer2", "layer3", "layer4"]
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match="bad.pth"):
        extract_patch_features(
            tiny_dataset.patches_dir,
            FeaturesConfig(backbone="resnet", resnet_weights=str(tmp_path / "bad.pth"), device="cpu"),
            tmp_path / "o2",
            progress=False,
        )
