"""GCN pre-filtering (retrievegan.embed.prefilter): exact blocked k-NN, exclusions, padding, helpers, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from retrievegan import cli
from retrievegan.embed.prefilter import (
    PrefilterConfig,
    add_ground_truth,
    brute_force_candidates,
    gather_candidates,
    load_candidates,
    prefilter_candidates,
)
from retrievegan.errors import ConfigError


def _table(num: int, seed: int, num_images: int = 40, num_cats: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    split = rng.choice(["train", "train", "train", "val", "test"], num)
    image_index = rng.integers(0, num_images, num)
    # one split per image: objects of one image share its split
    split = np.array(["train", "train", "train", "val", "test"])[image_index % 5]
    table = pd.DataFrame(
        {
            "patch_id": np.arange(num),
            "split": split,
            "image_index": image_index,
            "image_id": image_index + 1000 * (split != "train"),
            "object_index": 0,
            "category": rng.integers(0, num_cats, num),
            "x0": 0.0,
            "y0": 0.0,
            "x1": 1.0,
            "y1": 1.0,
            "theme": rng.integers(0, 3, num),
        }
    )
    table["category_name"] = "c" + table["category"].astype(str)
    return table


@pytest.mark.parametrize("query_block,candidate_block,k", [(1024, 8192, 5), (7, 3, 5), (16, 5, 12), (3, 50, 40)])
def test_blocked_prefilter_equals_brute_force(query_block, candidate_block, k):
    table = _table(400, 0)
    feats = np.random.default_rng(1).normal(size=(400, 6)).astype(np.float32)
    cfg = PrefilterConfig(k=k, query_block=query_block, candidate_block=candidate_block, device="cpu")
    ids, dist = prefilter_candidates(feats, table, cfg)
    ref_ids, ref_dist = brute_force_candidates(feats, table, k)
    assert ids.shape == (400, k) and ids.dtype == np.int64 and dist.dtype == np.float32
    assert np.array_equal(ids, ref_ids)
    assert np.allclose(dist, ref_dist, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(np.where(np.isinf(dist), 1e30, dist), axis=1) >= 0)  # sorted by distance


def test_ties_are_broken_by_patch_id_across_blocks():
    table = _table(300, 2, num_cats=1)
    rng = np.random.default_rng(3)
    protos = rng.normal(size=(5, 4)).astype(np.float32)
    feats = protos[rng.integers(0, 5, 300)]  # many exact duplicates -> many exact ties
    for cb in (4, 7, 1000):
        ids, _ = prefilter_candidates(
            feats, table, PrefilterConfig(k=20, query_block=13, candidate_block=cb, device="cpu")
        )
        ref, _ = brute_force_candidates(feats, table, 20)
        assert np.array_equal(ids, ref)


def test_candidates_are_training_patches_of_the_same_category_from_other_images():
    table = _table(500, 4)
    feats = np.random.default_rng(5).normal(size=(500, 3)).astype(np.float32)
    ids, _ = prefilter_candidates(feats, table, PrefilterConfig(k=8, device="cpu"))
    rows, cols = np.nonzero(ids >= 0)
    cand = ids[rows, cols]
    assert np.all(table["split"].to_numpy()[cand] == "train")
    assert np.all(table["category"].to_numpy()[cand] == table["category"].to_numpy()[rows])
    same_image = (table["split"].to_numpy()[cand] == table["split"].to_numpy()[rows]) & (
        table["image_index"].to_numpy()[cand] == table["image_index"].to_numpy()[rows]
    )
    assert not same_image.any()
    assert not np.any(cand == rows)
    # every row lists distinct patches
    for r in range(len(ids)):
        v = ids[r][ids[r] >= 0]
        assert len(np.unique(v)) == len(v)


def test_without_exclusion_a_training_object_finds_itself_first():
    table = _table(200, 6)
    feats = np.random.default_rng(7).normal(size=(200, 5)).astype(np.float32)
    ids, dist = prefilter_candidates(feats, table, PrefilterConfig(k=3, exclude_same_image=False, device="cpu"))
    train = np.flatnonzero(table["split"].to_numpy() == "train")
    assert np.array_equal(ids[train, 0], train)
    assert np.all(dist[train, 0] == 0)  # direct distances: exactly 0


def test_short_categories_are_padded_with_minus_one():
    table = _table(120, 8, num_cats=2)
    table.loc[table["category"] == 1, "split"] = "val"
    rare = np.flatnonzero(table["category"].to_numpy() == 1)[:2]
    table.loc[rare, "split"] = "train"  # category 1 has 2 training patches
    table.loc[rare, "image_index"] = [900, 901]
    table.loc[table["category"] == 1, "category"] = np.where(np.arange((table["category"] == 1).sum()) < 5, 1, 2)
    feats = np.random.default_rng(9).normal(size=(120, 4)).astype(np.float32)
    ids, dist = prefilter_candidates(feats, table, PrefilterConfig(k=5, device="cpu"))
    cat = table["category"].to_numpy()
    for r in np.flatnonzero(cat == 1):
        valid = ids[r] >= 0
        assert valid.sum() == (1 if r in rare else 2)  # own image excluded for the rare train patches
        assert np.all(ids[r, valid.sum() :] == -1) and np.all(np.isinf(dist[r, valid.sum() :]))
    assert np.all(ids[cat == 2] == -1)  # category 2 has no training patch at all
    ref, _ = brute_force_candidates(feats, table, 5)
    assert np.array_equal(ids, ref)


def test_add_ground_truth_and_gather_candidates():
    cand = torch.tensor([[5, 7, -1], [1, 2, 3], [4, 9, 8]])
    ids, mask = gather_candidates(cand, torch.tensor([[0, 2, -1], [1, 1, 0]]))
    assert ids.shape == (2, 3, 3)
    assert torch.equal(ids[0, 2], torch.tensor([-1, -1, -1])) and torch.equal(ids[1, 0], cand[1])
    assert torch.equal(mask, ids >= 0)
    gt = torch.tensor([[11, 9, -1], [2, 6, 5]])
    with_gt, pos = add_ground_truth(ids, gt)
    assert with_gt.shape == (2, 3, 4)
    assert torch.equal(with_gt[0, 0], torch.tensor([5, 7, -1, 11])) and pos[0, 0] == 3
    assert torch.equal(with_gt[0, 1], torch.tensor([4, 9, 8, -1])) and pos[0, 1] == 1  # already a candidate
    assert pos[0, 2] == -1 and with_gt[0, 2, 3] == -1
    assert torch.equal(with_gt[1, 0], torch.tensor([1, 2, 3, -1])) and pos[1, 0] == 1
    assert torch.all(with_gt.gather(2, pos.clamp(min=0)[..., None]).squeeze(2)[gt >= 0] == gt[gt >= 0])


def test_load_candidates_checks_k(tmp_path):
    np.save(tmp_path / "c.npy", np.arange(12, dtype=np.int64).reshape(3, 4))
    assert load_candidates(tmp_path / "c.npy", k=2).shape == (3, 2)
    with pytest.raises(ConfigError, match="prefilter.k"):
        load_candidates(tmp_path / "c.npy", k=5)


def test_prefilter_cli(tmp_path, tiny_dataset, capsys):
    table = pd.read_csv(tiny_dataset.patches_dir / "patches.csv")
    feats = np.random.default_rng(0).normal(size=(len(table), 16)).astype(np.float32)
    np.save(tmp_path / "gcn_features.npy", feats)
    out = tmp_path / "prefilter"
    rc = cli.main(
        [
            "prefilter",
            "--no-progress",
            "--params",
            json.dumps({"k": 4, "device": "cpu"}),
            "--threads",
            "1",
            "--features",
            str(tmp_path / "gcn_features.npy"),
            "--patches-csv",
            str(tiny_dataset.patches_dir / "patches.csv"),
            "--out-dir",
            str(out),
        ]
    )
    assert rc == 0
    ids = np.load(out / "candidates.npy")
    assert ids.shape == (len(table), 4) and np.load(out / "distances.npy").shape == (len(table), 4)
    run = json.loads((out / "run.json").read_text())
    assert run["rows"] == len(table) and "theme_coverage" in run
    ref, _ = brute_force_candidates(feats, table.assign(theme=table["theme"].astype("Int64")), 4)
    assert np.array_equal(ids, ref)
    # bad input: wrong row count, non-finite values -> exit code 2 naming the file
    np.save(tmp_path / "short.npy", feats[:-1])
    rc = cli.main(
        [
            "prefilter",
            "--features",
            str(tmp_path / "short.npy"),
            "--patches-csv",
            str(tiny_dataset.patches_dir / "patches.csv"),
            "--out-dir",
            str(out),
        ]
    )
    assert rc == 2 and "short.npy" in capsys.readouterr().err
    bad = feats.copy()
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    rc = cli.main(
        [
            "prefilter",
            "--features",
            str(tmp_path / "nan.npy"),
            "--patches-csv",
            str(tiny_dataset.patches_dir / "patches.csv"),
            "--out-dir",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "nan.npy" in err and "row 3" in err
