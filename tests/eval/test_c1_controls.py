"""C1's controls (retrievegan.eval.c1_controls): fixed embeddings at a scale chosen on val, scored once on test; the
search never reads test, and a fixed embedding at a matched scale beats chance on a themed benchmark."""

from __future__ import annotations

import json

import pytest

from retrievegan.errors import InputError
from retrievegan.eval import c1_controls as cc


def test_the_controls_config_refuses_to_search_on_test_and_always_searches_without_noise():
    with pytest.raises(ValueError, match="must not be test"):
        cc.ControlsConfig(search_split="test")
    with pytest.raises(ValueError, match="finite numbers > 0"):
        cc.ControlsConfig(scales=(0.0, 1.0))
    grid = cc.ControlsConfig(scales=(1.0, 10.0)).grid()
    assert grid == [(1.0, True), (10.0, True), (None, False)]
    assert [cc.grid_label(s, g) for s, g in grid] == ["x1", "x10", "no noise"]


@pytest.fixture(scope="module")
def learned_run(tiny_dataset, tmp_path_factory):
    """A tiny generation-losses-only RetrieveGAN (the C1 learned arm) on themed patch features, with its step-0
    snapshot (E_p's initial weights)."""
    from patchgan_support import build_inputs, retrievegan_params
    from train_support import train_config

    from retrievegan.train.loop import train

    root = tmp_path_factory.mktemp("c1_controls")
    inputs = build_inputs(tiny_dataset.patches_dir, root / "inputs", themed=True)
    params = retrievegan_params("retrievegan_no_gt_no_occur", retrieval={"k": 8, "embed_dim": 8, "embed_hidden": 16})
    result = train(
        "retrievegan_no_gt_no_occur",
        params,
        train_config(steps=2, checkpoint_every=10, snapshot_every=1),
        tiny_dataset.data_dir,
        root / "run",
        patches_csv=inputs.patches_csv,
        inputs=inputs.retrievegan(),
        progress=False,
    )
    return result.checkpoint, root / "run" / "snapshots", inputs


CFG = cc.ControlsConfig(scales=(0.1, 1.0, 10.0), bootstrap_samples=200, batch_size=8)


def test_a_fixed_embedding_at_a_matched_scale_beats_chance_and_test_never_steers_the_choice(
    tiny_dataset, learned_run, tmp_path, monkeypatch
):
    checkpoint, snapshots, inputs = learned_run
    searched = []
    real_search = cc.scale_search

    def spy(split, *args, **kwargs):
        searched.append(split.batches[0].image_ids.tolist())
        return real_search(split, *args, **kwargs)

    monkeypatch.setattr(cc, "scale_search", spy)
    rec = cc.c1_controls(
        checkpoint,
        snapshots,
        tiny_dataset.data_dir,
        inputs.patches_csv,
        tmp_path / "c.json",
        CFG,
        "test",
        progress=False,
    )
    from retrievegan.data.scene_graph import read_split

    val_ids = [g.image_id for g in read_split(tiny_dataset.data_dir / "val.json").graphs]
    test_ids = {g.image_id for g in read_split(tiny_dataset.data_dir / "test.json").graphs}
    assert searched and all(ids == val_ids[: len(ids)] for ids in searched)  # every search ran on val
    assert not any(set(ids) & test_ids for ids in searched)
    arms = rec["arms"]
    identity, random = arms["identity"]["test"], arms["random_candidates"]["test"]
    # the themed features carry the theme: at its chosen scale the identity embedding beats a blind draw clearly
    assert identity["compat_pairwise_same_theme"] > random["compat_pairwise_same_theme"] + 0.2
    assert identity["compat_pairwise_same_theme_low"] > random["compat_pairwise_same_theme_high"]
    assert arms["identity"]["chosen"]["label"] != "x0.1"  # the smallest scale drowns the distances in the noise
    assert rec["best_fixed"] in cc.FIXED_ARMS and len(arms["ep_init"]["search"]) == len(CFG.grid())
    d = rec["paired"]["best_fixed"]
    best = arms[rec["best_fixed"]]["test"]["compat_pairwise_same_theme"]
    assert d["difference"] == pytest.approx(arms["learned"]["test"]["compat_pairwise_same_theme"] - best)
    assert d["low"] <= d["difference"] <= d["high"] and d["se"] > 0
    # another test split changes no choice: the choices are made before test is read
    other = cc.c1_controls(
        checkpoint, snapshots, tiny_dataset.data_dir, inputs.patches_csv, None, CFG, "train", progress=False
    )
    assert {a: other["arms"][a]["chosen"] for a in arms if "chosen" in arms[a]} == {
        a: arms[a]["chosen"] for a in arms if "chosen" in arms[a]
    }
    with pytest.raises(InputError, match="must differ"):
        cc.c1_controls(
            checkpoint, snapshots, tiny_dataset.data_dir, inputs.patches_csv, None, CFG, "val", progress=False
        )
    assert json.loads((tmp_path / "c.json").read_text())["best_fixed"] == rec["best_fixed"]
    assert "learned - best fixed" in cc.controls_line(rec)


def test_the_learned_arm_scores_what_sampling_retrieves(tiny_dataset, learned_run, tmp_path):
    """The controls' learned arm retrieves exactly the patch sets `retrievegan sample` writes to retrievals.json."""
    from retrievegan.eval.sampler import SampleConfig, sample

    checkpoint, snapshots, inputs = learned_run
    rec = cc.c1_controls(
        checkpoint, snapshots, tiny_dataset.data_dir, inputs.patches_csv, None, CFG, "test", progress=False
    )
    sample(
        checkpoint,
        tiny_dataset.data_dir,
        "pred_bbox",
        tmp_path / "samples",
        SampleConfig(seeds=(0, 1), batch_size=5, device="cpu"),
        inputs.patches_csv,
        progress=False,
    )
    from retrievegan.data.patches import load_patch_table
    from retrievegan.eval.compatibility import load_retrievals, score_records

    records = load_retrievals(tmp_path / "samples" / "retrievals.json")
    table = score_records(records, load_patch_table(inputs.patches_csv), "retrievals.json")
    assert rec["arms"]["learned"]["test"]["compat_pairwise_same_theme"] == pytest.approx(
        float(table["pairwise_same_theme"].mean()), abs=1e-12
    )
    # another method's retrievals.json is paired per test set: the same sets under PasteGAN's name differ by 0
    data = json.loads((tmp_path / "samples" / "retrievals.json").read_text())
    (tmp_path / "pastegan.json").write_text(json.dumps({**data, "method": "pastegan"}))
    paired = cc.c1_controls(
        checkpoint,
        snapshots,
        tiny_dataset.data_dir,
        inputs.patches_csv,
        None,
        CFG,
        "test",
        pastegan_retrievals=tmp_path / "pastegan.json",
        progress=False,
    )
    d = paired["paired"]["pastegan"]
    assert d["difference"] == d["low"] == d["high"] == 0.0
    data["records"] = data["records"][:-1]
    (tmp_path / "short.json").write_text(json.dumps({**data, "method": "pastegan"}))
    with pytest.raises(InputError, match="do not line up"):
        cc.c1_controls(
            checkpoint,
            snapshots,
            tiny_dataset.data_dir,
            inputs.patches_csv,
            None,
            CFG,
            "test",
            pastegan_retrievals=tmp_path / "short.json",
            progress=False,
        )
