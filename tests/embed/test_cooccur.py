"""Co-occurrence embedding (retrievegan.embed.cooccur): triplet sampler, recall@k, the stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retrievegan import cli
from retrievegan.embed.cooccur import (
    TripletSampler,
    batch_all_triplet_loss,
    chance_recall_at_k,
    load_cooccur,
    recall_at_k,
)


def test_triplet_sampler_anchor_positive_same_image_negative_other_image():
    rng = np.random.default_rng(0)
    keys = np.repeat(np.arange(30), rng.integers(1, 6, 30))  # images with 1..5 patches
    rows = rng.permutation(1000)[: len(keys)]  # arbitrary bank rows
    key_of = dict(zip(rows.tolist(), keys.tolist()))
    sampler = TripletSampler(rows, keys)
    assert sampler.num_images == int((np.bincount(keys) >= 2).sum())
    seen = set()
    for _ in range(50):
        batch = sampler.sample(rng, 8)
        r = batch.rows
        a, p, n = r[batch.anchor], r[batch.positive], r[batch.negative]
        ka = np.array([key_of[x] for x in a])
        kp = np.array([key_of[x] for x in p])
        kn = np.array([key_of[x] for x in n])
        assert np.all(ka == kp) and np.all(a != p)
        assert np.all(ka != kn)
        assert len(np.unique([key_of[x] for x in r])) == len(r) // 2  # distinct images, two patches each
        assert len(batch.anchor) == len(r) * (len(r) - 2)  # batch-all: every other image's patches
        seen.update(r.tolist())
    single = {int(x) for x, k in zip(rows, keys) if np.sum(keys == k) == 1}
    assert not seen & single  # images with one patch cannot give a positive
    assert len(seen) > 0.8 * (len(rows) - len(single))


def test_triplet_loss_is_zero_when_images_are_separated():
    sampler = TripletSampler(np.arange(8), np.repeat(np.arange(4), 2))
    batch = sampler.sample(np.random.default_rng(0), 4)
    keys = batch.rows // 2
    emb = torch.nn.functional.one_hot(torch.as_tensor(keys), 4).float()  # same image: identical vectors
    loss, active = batch_all_triplet_loss(emb, batch, margin=0.2)
    assert float(loss) == 0.0 and active == 0.0
    loss, active = batch_all_triplet_loss(torch.ones(8, 4), batch, margin=0.2)  # collapsed: every triplet active
    assert float(loss) == pytest.approx(0.2) and active == 1.0


def test_recall_at_k_on_a_hand_built_case():
    # 1-D embeddings; image ids: a a b b c
    emb = torch.tensor([[0.0], [10.0], [1.0], [2.5], [9.0]])
    keys = np.array([0, 0, 1, 1, 2])
    # neighbours (self excluded):
    # 0 (img a): 1.0 b, 2.5 b, 9.0 c, 10 a  -> first same-image hit at rank 4
    # 1 (img a): 9.0 c, 2.5 b, 1.0 b, 0 a   -> rank 4
    # 2 (img b): 0 a, 2.5 b                 -> rank 2 (|1-0| = 1 < |1-2.5| = 1.5)
    # 3 (img b): 1.0 b                      -> rank 1
    # 4 (img c): no other patch of its image -> skipped
    r = recall_at_k(emb, keys, (1, 2, 3, 4))
    assert r == {"recall@1": 0.25, "recall@2": 0.5, "recall@3": 0.5, "recall@4": 1.0}


def test_chance_recall_matches_a_random_ranking():
    keys = np.repeat(np.arange(12), [2, 3, 4, 5, 2, 3, 4, 5, 2, 3, 4, 5])
    chance = chance_recall_at_k(keys, (1, 5))
    g = torch.Generator().manual_seed(0)
    sims = [recall_at_k(torch.randn(len(keys), 8, generator=g), keys, (1, 5)) for _ in range(100)]
    for k in ("recall@1", "recall@5"):
        assert np.mean([s[k] for s in sims]) == pytest.approx(chance[k], abs=0.02)
    # 1 other same-image patch among 2 others, k = 1: chance 1/2
    assert chance_recall_at_k(np.array([0, 0, 1]), (1,))["recall@1"] == pytest.approx(0.5)


def test_cooccur_stage_end_to_end(tmp_path, tiny_dataset, capsys):
    params = {
        "steps": 30,
        "images_per_batch": 8,
        "embed_dim": 16,
        "channels": [8, 16],
        "recall_k": [1, 3],
        "device": "cpu",
        "log_every": 10,
    }
    out = tmp_path / "cooccur"
    rc = cli.main(
        [
            "cooccur",
            "--no-progress",
            "--params",
            json.dumps(params),
            "--threads",
            "1",
            "--patches-dir",
            str(tiny_dataset.patches_dir),
            "--model-dir",
            str(out),
            "--embeddings",
            str(tmp_path / "emb.npy"),
            "--metrics",
            str(tmp_path / "m.json"),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "recall@1" in printed and "chance" in printed
    bank = np.load(tiny_dataset.patches_dir / "patches.npy", mmap_mode="r")
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape == (len(bank), 16) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["trained"]) >= {"recall@1", "recall@3"}
    assert metrics["chance"]["recall@1"] < 0.5
    run = json.loads((out / "run.json").read_text())
    assert run["history"][-1]["step"] == 30
    model = load_cooccur(out / "checkpoint.pt")
    with torch.no_grad():
        again = model(torch.from_numpy(np.array(bank[:4])).permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    assert np.allclose(again.numpy(), emb[:4], atol=1e-5)
