"""The discriminator probe (retrievegan.eval.d_probe): same- and mixed-theme sets from the same candidates, the AUC
and its interval, ~1 for a critic that sees the theme and ~0.5 for one that sees nothing, and the `d-probe` stage
on a trained patch method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retrievegan.eval import d_probe as dp


def test_a_pair_draws_one_theme_for_every_object_and_other_themes_from_the_same_candidates():
    themes = np.array([0, 1, 2, 0, 1, 2, 3, 0, 3])  # theme of bank rows 0..8
    cand = np.array([[0, 1, 2, -1], [3, 4, 6, -1], [7, 8, 5, 2]])  # theme 0 is the only one every object has
    for seed in range(5):
        pair = dp.draw_pair(cand, themes, np.random.default_rng(seed))
        assert pair is not None
        same, mixed, theme = pair
        assert theme == 0 and set(themes[same]) == {0}
        assert all(s in row and m in row for s, m, row in zip(same, mixed, cand))  # the same candidates
        assert 0 not in set(themes[mixed]) and len(set(themes[mixed])) >= 2  # greedy: a fresh theme where it can
    assert dp.draw_pair(np.array([[0, 1], [2, 6]]), themes, np.random.default_rng(0)) is None  # no common theme
    assert dp.draw_pair(np.array([[0, 3], [0, 1]]), themes, np.random.default_rng(0)) is None  # only theme 0 in one
    assert dp.draw_pair(np.array([[0, 1, 2]]), themes, np.random.default_rng(0)) is None  # one object: no pair


def test_auc_counts_ties_as_one_half_and_the_interval_covers_it():
    assert dp.auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert dp.auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert dp.auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    rng = np.random.default_rng(0)
    same, mixed = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 300)
    rec = dp.auc_interval(same, mixed, 500, 0.95, np.random.default_rng(1))
    assert 0.5 < rec["auc_low"] <= rec["auc"] <= rec["auc_high"] and abs(rec["auc"] - 0.76) < 0.05
    assert 0.6 < rec["paired_win_rate"] < 0.9 and dp.sees_compatibility(rec)


@pytest.fixture(scope="module")
def themed_inputs(tiny_dataset, tmp_path_factory):
    from patchgan_support import build_inputs

    return build_inputs(tiny_dataset.patches_dir, tmp_path_factory.mktemp("probe_inputs"), themed=True)


def _probe(tiny_dataset, inputs, score):
    from retrievegan.data.dataset import SceneGraphDataset
    from retrievegan.data.patches import load_patch_table

    cfg = dp.ProbeConfig(split="train", k=8, bootstrap_samples=500, batch_size=16)
    table = load_patch_table(inputs.patches_csv)
    dataset = SceneGraphDataset(tiny_dataset.data_dir, cfg.split, inputs.patches_csv)
    scores, counts = dp.probe_scores(
        dataset, np.load(inputs.candidates), dp.bank_themes(table, inputs.patches_csv), score, cfg, progress=False
    )
    return dp.summarise("critic", scores, counts, cfg)


def test_the_probe_gives_auc_1_for_a_critic_that_sees_the_theme_and_0_5_for_one_that_sees_nothing(
    tiny_dataset, themed_inputs
):
    from retrievegan.data.patches import load_patch_table

    themes = torch.from_numpy(load_patch_table(themed_inputs.patches_csv)["theme"].to_numpy(dtype=np.int64))

    def sees_theme(batch, chosen):  # fewer distinct themes among the chosen patches -> higher score
        return {"critic": torch.tensor([-float(len(set(themes[row[row >= 0]].tolist()))) for row in chosen])}

    def sees_nothing(batch, chosen):
        return {"critic": torch.zeros(len(chosen))}

    def noise(batch, chosen):  # a critic that answers at random (seeded per batch: the same on every run)
        gen = torch.Generator().manual_seed(int(batch.image_ids[0]))
        return {"critic": torch.rand(len(chosen), generator=gen)}

    seeing = _probe(tiny_dataset, themed_inputs, sees_theme)
    assert seeing["with_a_pair"] >= 20, seeing  # enough train scene graphs have a same- and a mixed-theme set
    assert seeing["discriminators"]["critic"]["auc"] == 1.0 and seeing["sees_compatibility"]
    blind = _probe(tiny_dataset, themed_inputs, sees_nothing)["discriminators"]["critic"]
    assert blind["auc"] == 0.5 and not dp.sees_compatibility(blind)
    random = _probe(tiny_dataset, themed_inputs, noise)
    assert abs(random["discriminators"]["critic"]["auc"] - 0.5) < 0.2 and not random["sees_compatibility"]


def test_the_d_probe_stage_scores_a_trained_methods_discriminators(tiny_dataset, themed_inputs, tmp_path):
    from patchgan_support import retrievegan_params
    from train_support import train_config

    from retrievegan.cli import main as cli_main
    from retrievegan.train.loop import train

    result = train(
        "retrievegan",
        retrievegan_params(),
        train_config(steps=2, checkpoint_every=10),
        tiny_dataset.data_dir,
        tmp_path / "run",
        patches_csv=themed_inputs.patches_csv,
        inputs=themed_inputs.retrievegan(),
        progress=False,
    )
    out = tmp_path / "d_probe.json"
    params = json.dumps({"split": "train", "k": 8, "bootstrap_samples": 200, "batch_size": 16})
    code = cli_main(
        [
            "d-probe",
            "--no-progress",
            "--params",
            params,
            "--checkpoint",
            str(result.checkpoint),
            "--data-dir",
            str(tiny_dataset.data_dir),
            "--patches",
            str(themed_inputs.patches_csv),
            "--candidates",
            str(themed_inputs.candidates),
            "--out",
            str(out),
        ]
    )
    assert code in (0, None)
    rec = dp.read_probe(out)
    assert rec["method"] == "retrievegan" and rec["split"] == "train" and rec["with_a_pair"] >= 20
    for name in dp.DISCRIMINATORS:
        d = rec["discriminators"][name]
        assert 0.0 <= d["auc_low"] <= d["auc"] <= d["auc_high"] <= 1.0
        assert np.isfinite(d["mean_same"]) and np.isfinite(d["mean_mixed"])
    again = tmp_path / "again.json"
    cli_main(
        [
            "d-probe",
            "--no-progress",
            "--params",
            params,
            "--checkpoint",
            str(result.checkpoint),
            "--data-dir",
            str(tiny_dataset.data_dir),
            "--patches",
            str(themed_inputs.patches_csv),
            "--candidates",
            str(themed_inputs.candidates),
            "--out",
            str(again),
        ]
    )
    assert again.read_bytes() == out.read_bytes()  # deterministic
