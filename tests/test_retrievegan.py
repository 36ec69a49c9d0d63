"""RetrieveGAN (+ ablations) and PasteGAN: losses, ablation switches, end-to-end gradients, selection rules,
sampling (batch independence, retrievals), the perceptual-weights error, and the random-candidates baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from patchgan_support import ABLATIONS, build_inputs, pastegan_params, retrievegan_params
from PIL import Image
from train_support import train_config

from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
from retrievegan.errors import ConfigError, InputError
from retrievegan.eval.sampler import SampleConfig, sample
from retrievegan.models.patch_gan import PatchBank, slot_rows
from retrievegan.seeds import image_generators
from retrievegan.train.loop import Trainer, load_trained, train
from retrievegan.train.registry import create_method


@pytest.fixture(scope="module")
def inputs(tiny_dataset, tmp_path_factory):
    return build_inputs(tiny_dataset.patches_dir, tmp_path_factory.mktemp("patch_inputs"))


@pytest.fixture(scope="module")
def train_set(tiny_dataset, inputs):
    return SceneGraphDataset(tiny_dataset.data_dir, "train", inputs.patches_csv)


def make(name, ds, inputs, **overrides):
    if name == "pastegan":
        return create_method(name, pastegan_params(**overrides), ds.spec, inputs.pastegan())
    return create_method(name, retrievegan_params(name, **overrides), ds.spec, inputs.retrievegan())


def batch_of(ds, indices):
    return collate_scene_graphs([ds[i] for i in indices])


def gens(batch, seed=0):
    return image_generators((seed,), batch.image_ids.tolist())


@pytest.mark.parametrize("name", ["retrievegan", "pastegan"])
def test_one_step_lowers_the_generator_loss(name, train_set, inputs):
    batch = batch_of(train_set, range(4))
    method = make(name, train_set, inputs)
    trainer = Trainer(method, train_config(), torch.device("cpu"))
    ctx = trainer.context(batch, 0, 0)
    with torch.no_grad():
        before = method.generator_step(trainer.nets, batch, ctx)
    logs = trainer.train_step(batch, 0, 0)
    assert logs["skipped"] == 0
    expected = {"bbox", "recon_img", "adv_img", "adv_obj", "ac_obj", "total"}
    expected |= {"gt_sel", "occur_sel"} if name == "retrievegan" else {"crop_match", "adv_img_rec", "adv_obj_rec",
                                                                      "ac_obj_rec"}
    assert set(logs["G"]) == expected
    assert set(logs["D"]) >= {"img_adv", "obj_adv", "obj_ac_real", "total"}
    with torch.no_grad():
        after = method.generator_step(trainer.nets, batch, trainer.context(batch, 0, 0)).loss
    assert after < before.loss, (float(before.loss), float(after))


def test_ablation_switches_remove_their_terms_and_only_them(train_set, inputs):
    batch = batch_of(train_set, range(5))
    logs = {}
    for name in ABLATIONS:
        method = make(name, train_set, inputs)
        nets = method.build_networks(torch.Generator().manual_seed(0))
        method.train_modes(nets, 0)
        ctx = Trainer(method, train_config(), torch.device("cpu")).context(batch, 0, 0)
        out = method.generator_step(nets, batch, ctx)
        logs[name] = {k: float(v) for k, v in out.logs.items()}
        terms = {k: v for k, v in out.logs.items() if k != "total"}
        assert float(out.loss.detach()) == pytest.approx(float(sum(terms.values())), rel=1e-6)  # total = its terms
    full = set(logs["retrievegan"])
    removed = {"retrievegan": set(), "retrievegan_no_gt_no_occur": {"gt_sel", "occur_sel"},
               "retrievegan_gt_only": {"occur_sel"}, "retrievegan_occur_only": {"gt_sel"}}
    assert {"gt_sel", "occur_sel"} <= full
    for name, gone in removed.items():
        assert full - set(logs[name]) == gone, name
        for term in set(logs[name]) - {"total"}:  # every other term is unchanged (same networks, same draws)
            assert logs[name][term] == pytest.approx(logs["retrievegan"][term], rel=1e-6, abs=1e-7), (name, term)
    assert logs["retrievegan_no_gt_no_occur"]["total"] < logs["retrievegan"]["total"]
    # a registered ablation name refuses the wrong switches
    with pytest.raises(ConfigError, match="gt_selection"):
        create_method("retrievegan_gt_only", retrievegan_params("retrievegan"), train_set.spec, inputs.retrievegan())


def test_generator_losses_reach_the_patch_embedding(train_set, inputs):
    """Without L_gt and L_occur the only path from the loss to E_p is the straight-through retrieval into the
    generated image: E_p must still get a gradient (end-to-end differentiable)."""
    batch = batch_of(train_set, range(4))
    method = make("retrievegan_no_gt_no_occur", train_set, inputs, recon_img_weight=0.0, bbox_weight=0.0)
    nets = method.build_networks(torch.Generator().manual_seed(1))
    method.train_modes(nets, 0)
    out = method.generator_step(nets, batch, Trainer(method, train_config(), torch.device("cpu")).context(batch, 0, 0))
    assert set(out.logs) == {"adv_img", "adv_obj", "ac_obj", "total"}
    out.loss.backward()
    grads = [p.grad for p in nets["retriever"].parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # ... and it flows through the selection weights: with the weights detached E_p gets nothing
    nets["retriever"].zero_grad(set_to_none=True)
    bank_select = method.bank.select
    method.bank.select = lambda weights, ids: bank_select(weights.detach(), ids)
    out = method.generator_step(nets, batch, Trainer(method, train_config(), torch.device("cpu")).context(batch, 0, 0))
    out.loss.backward()
    assert all(p.grad is None for p in nets["retriever"].parameters())


@pytest.mark.parametrize("name, term", [("retrievegan_occur_only", "occur_sel"), ("retrievegan_gt_only", "gt_sel")])
def test_each_retrieval_loss_alone_trains_the_patch_embedding(name, term, train_set, inputs):
    batch = batch_of(train_set, range(4))
    off = {k: 0.0 for k in ("recon_img_weight", "bbox_weight", "adv_img_weight", "adv_obj_weight", "ac_obj_weight")}
    method = make(name, train_set, inputs, **off)
    nets = method.build_networks(torch.Generator().manual_seed(2))
    out = method.generator_step(nets, batch, Trainer(method, train_config(), torch.device("cpu")).context(batch, 0, 0))
    assert set(out.logs) == {term, "total"}
    out.loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in nets["retriever"].parameters()) > 0


def test_retrieval_draws_depend_only_on_each_images_generator(train_set, inputs):
    method = make("retrievegan", train_set, inputs)
    nets = {k: v.eval() for k, v in method.build_networks(torch.Generator().manual_seed(0)).items()}
    big = batch_of(train_set, range(6))
    small = batch_of(train_set, [4, 2])
    with torch.no_grad():
        a = method.sample(nets, big, "gt_bbox", gens(big))
        b = method.sample(nets, small, "gt_bbox", gens(small))
        c = method.sample(nets, big, "gt_bbox", gens(big, seed=1))
    assert b.patch_ids == [a.patch_ids[4], a.patch_ids[2]]
    assert torch.allclose(b.images, a.images[[4, 2]], atol=1e-5)
    assert a.patch_ids != c.patch_ids  # another seed, another retrieval


def test_pastegan_nearest_at_test_random_among_top_when_training(train_set, inputs):
    method = make("pastegan", train_set, inputs)
    cand = np.load(inputs.candidates)
    batch = batch_of(train_set, range(8))
    rows = slot_rows(batch)
    real = rows >= 0
    test_pick = method.select(rows, gens(batch), training=False)
    assert torch.equal(test_pick[real], torch.from_numpy(cand[rows[real].numpy(), 0]))
    assert (test_pick[~real] == -1).all()
    # training: uniform among [own patch, candidate 1, candidate 2] (PasteGAN's top 3), seeded per image
    pool = torch.stack([rows, *(torch.from_numpy(cand[rows.clamp(min=0).numpy(), j]) for j in range(2))], -1)
    seen = torch.zeros(pool.shape, dtype=torch.bool)
    picks = []
    for seed in range(40):
        pick = method.select(rows, gens(batch, seed), training=True)
        member = (pick[..., None] == pool)
        assert member[real].any(-1).all() and (pick[~real] == -1).all()
        seen |= member & real[..., None]
        picks.append(pick)
    assert seen[real].all()  # every pool entry of every object gets drawn
    assert torch.equal(picks[3], method.select(rows, gens(batch, 3), training=True))  # seeded
    sub = batch_of(train_set, [5, 1])
    assert torch.equal(method.select(slot_rows(sub), gens(sub, 7), training=True),
                       method.select(rows, gens(batch, 7), training=True)[[5, 1]][:, :slot_rows(sub).shape[1]])


@pytest.fixture(scope="module")
def trained(tiny_dataset, inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("patch_runs")
    runs = {}
    for name, params, extra in (("retrievegan", retrievegan_params(), inputs.retrievegan()),
                                ("pastegan", pastegan_params(), inputs.pastegan())):
        result = train(name, params, train_config(steps=2, checkpoint_every=1), tiny_dataset.data_dir,
                       root / name, patches_csv=inputs.patches_csv, inputs=extra, progress=False)
        runs[name] = result.checkpoint
    return runs


def _pngs(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


@pytest.mark.parametrize("name", ["retrievegan", "pastegan"])
def test_sampling_is_batch_size_independent_and_retrieves_valid_patches(name, trained, tiny_dataset, inputs,
                                                                         tmp_path):
    out = {}
    for bs in (1, 5):
        sample(trained[name], tiny_dataset.data_dir, "pred_bbox", tmp_path / f"b{bs}",
               SampleConfig(batch_size=bs, device="cpu"), patches_csv=inputs.patches_csv, progress=False)
        out[bs] = json.loads((tmp_path / f"b{bs}" / "retrievals.json").read_text())
    key = lambda r: (r["image_id"], r["sample"])  # noqa: E731
    assert sorted(out[1]["records"], key=key) == sorted(out[5]["records"], key=key)
    assert out[1]["method"] == name and out[1]["setting"] == "pred_bbox"
    for k in ("sample0", "sample1"):
        a, b = _pngs(tmp_path / "b1" / k), _pngs(tmp_path / "b5" / k)
        assert sorted(a) == sorted(b) and len(a) == 12
        for png in a:
            diff = np.abs(a[png].astype(int) - b[png].astype(int))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, png
    table = pd.read_csv(inputs.patches_csv)
    test = SceneGraphDataset(tiny_dataset.data_dir, "test")
    records = out[1]["records"]
    assert sorted((r["image_id"], r["sample"]) for r in records) == sorted(
        (int(i), s) for i in test.image_ids for s in (0, 1))
    for rec in records:
        objs, _ = test.object_arrays(list(test.image_ids).index(rec["image_id"]))
        assert len(rec["patch_ids"]) == len(objs) - 1
        rows = table.loc[rec["patch_ids"]]
        assert (rows["split"] == "train").all()  # training-bank patches ...
        assert (rows["category"].to_numpy() == objs[:-1]).all()  # ... of the object's category ...
        assert (rows["image_id"] != rec["image_id"]).all()  # ... never the test image's own
    by_sample = {s: {r["image_id"]: r["patch_ids"] for r in records if r["sample"] == s} for s in (0, 1)}
    if name == "retrievegan":  # two retrieval seeds -> different patch sets
        assert any(by_sample[0][i] != by_sample[1][i] for i in by_sample[0])
    else:  # PasteGAN's code: the nearest candidate at test time -> identical samples
        assert by_sample[0] == by_sample[1]
        cand = np.load(inputs.candidates)
        for rec in records:
            assert rec["patch_ids"] == cand[table[(table["split"] == "test") & (table["image_id"] == rec[
                "image_id"])].sort_values("object_index")["patch_id"].to_numpy(), 0].tolist()


def test_run_json_records_that_the_perceptual_loss_is_off(trained, monkeypatch, tmp_path):
    run = json.loads((trained["retrievegan"].parent / "run.json").read_text())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache
    method, _, _ = load_trained(trained["retrievegan"])
    assert method.notes()["perceptual"].startswith("disabled (no VGG weights offline)")
    assert run["method_notes"]["perceptual"].startswith("disabled")


def test_missing_vgg_weights_fail_with_file_place_and_url(train_set, inputs, monkeypatch, tmp_path):
    from retrievegan.eval.weights import MissingWeightsError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    method = make("retrievegan", train_set, inputs, p_img_weight=1.0, p_obj_weight=0.5)
    nets = method.build_networks(torch.Generator().manual_seed(0))
    batch = batch_of(train_set, range(2))
    with pytest.raises(MissingWeightsError) as info:
        method.generator_step(nets, batch, Trainer(method, train_config(), torch.device("cpu")).context(batch, 0, 0))
    text = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in text and str(tmp_path / "hub" / "checkpoints") in text
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in text
    assert "retrievegan.perceptual_weights" in text
    with pytest.raises(MissingWeightsError, match="configured path"):
        make("pastegan", train_set, inputs, perceptual_weights=str(tmp_path / "nope.pth")).perceptual("cpu")


def test_paper_configs_build_both_methods_with_the_paper_weights():
    from retrievegan.config import from_mapping, load_yaml, merge
    from retrievegan.models.baselines.pastegan import PasteGanConfig
    from retrievegan.models.retrievegan import RetrieveGanConfig

    repo = Path(__file__).resolve().parents[1]
    base = load_yaml(repo / "config/config.yaml")
    assert base["retrievegan"]["p_img_weight"] == base["retrievegan"]["p_obj_weight"] == 0.0  # embedded: off
    for paper in ("config/paper-coco.yaml", "config/paper-vg.yaml"):
        cfg = merge(base, load_yaml(repo / paper))
        section = {k: v for k, v in cfg["retrievegan"].items() if k != "train"}
        rg = from_mapping(RetrieveGanConfig, {**section, "retrieval": cfg["retrieval"]}, "retrievegan")
        assert (rg.gt_sel_weight, rg.occur_sel_weight, rg.adv_img_weight, rg.recon_img_weight, rg.p_img_weight,
                rg.adv_obj_weight, rg.ac_obj_weight, rg.p_obj_weight, rg.bbox_weight) == (
            0.1, 0.001, 0.01, 1.0, 1.0, 0.01, 0.1, 0.5, 10.0)
        assert rg.optim_generator.lr == 2.5e-4 and rg.optim_d_img.lr == 1e-3 and rg.optim_generator.betas == (0.0, 0.9)
        assert cfg["retrievegan"]["train"]["steps"] == cfg["train"]["steps"]  # 90 epochs
        pg = from_mapping(PasteGanConfig, {k: v for k, v in cfg["pastegan"].items() if k != "train"}, "pastegan")
        assert (pg.p_img_weight, pg.p_obj_weight, pg.p_sel_weight, pg.crop_match_weight) == (1.0, 0.5, 0.5, 10.0)
        assert pg.optim_generator.lr == 5e-4 and pg.test_pick == "nearest" and pg.train_top == 3


def test_patch_bank_select_matches_a_dense_weighted_sum(tiny_dataset):
    bank = PatchBank(tiny_dataset.patches_dir / "patches.npy")
    ids = torch.tensor([[[3, 7, -1], [0, 1, 2]]])
    weights = torch.tensor([[[0.2, 0.8, 0.0], [0.0, 0.0, 1.0]]], requires_grad=True)
    out = bank.select(weights, ids)
    dense = (weights[..., None, None, None] * bank.crops(ids)).sum(2)
    assert torch.allclose(out, dense, atol=1e-6)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * g).sum(), weights)
    (ref,) = torch.autograd.grad((dense * g).sum(), weights)
    assert torch.allclose(grad[ids >= 0], ref[ids >= 0], atol=1e-4) and grad[0, 0, 2] == 0


def test_random_candidates_baseline_is_seeded_and_draws_from_the_candidates(tmp_path, tiny_dataset, inputs):
    from eval_support import same_category_retrievals

    from retrievegan.eval import compatibility as compat

    csv = inputs.patches_csv
    graphs = tiny_dataset.data_dir / "test.json"
    retrievals = tmp_path / "r.json"
    records = same_category_retrievals(tiny_dataset.data_dir, csv, same_theme=True, seed=2)
    retrievals.write_text(json.dumps({"method": "retrievegan", "setting": "pred_bbox", "records": records}))
    cand = np.load(inputs.candidates)
    table = pd.read_csv(csv)
    base = compat.random_candidate_records(records, table, cand, 3, "test", 0, inputs.candidates)
    assert base == compat.random_candidate_records(records, table, cand, 3, "test", 0, inputs.candidates)
    assert base != compat.random_candidate_records(records, table, cand, 3, "test", 1, inputs.candidates)
    for rec in base:
        rows = table[(table["split"] == "test") & (table["image_id"] == rec["image_id"])].sort_values("object_index")
        for row, pick in zip(rows["patch_id"], rec["patch_ids"]):
            assert pick in cand[row, :3]
    result = compat.compatibility_score(retrievals, csv, "retrievegan", "pred_bbox", 200, 0.95, 0, graphs,
                                        out_json=tmp_path / "c.json", candidates=inputs.candidates, candidates_k=3)
    m = result["metrics"]
    from retrievegan.cli import main as cli_main

    assert cli_main(["compat-summary", "--compatibility", str(tmp_path / "c.json"), "--out",
                     str(tmp_path / "s.md")]) == 0
    summary = (tmp_path / "s.md").read_text()
    assert f"{m['compat_random_candidates_single_theme']:.3f}" in summary and "| retrievegan | pred_bbox |" in summary
    assert result["random_candidates"]["k"] == 3
    assert m["compat_single_theme_minus_random_candidates"] == pytest.approx(
        m["compat_single_theme"] - m["compat_random_candidates_single_theme"])
    assert m["compat_pairwise_same_theme_minus_random_candidates_low"] > 0  # same-theme picks beat blind ones
    with pytest.raises(InputError, match="candidates_k"):
        compat.compatibility_score(retrievals, csv, "retrievegan", "pred_bbox", 10, 0.95, 0, graphs,
                                   candidates=inputs.candidates, candidates_k=99)


def test_perceptual_loss_compares_feature_slices_and_keeps_the_target_fixed():
    from torch import nn

    from retrievegan.models.perceptual import VggPerceptualLoss

    layers = [nn.MaxPool2d(2) if i in (4, 9, 18, 27) else nn.Conv2d(3, 3, 1) for i in range(30)]
    gen = torch.Generator().manual_seed(0)
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, generator=gen)
    loss = VggPerceptualLoss(nn.Sequential(*layers)).train()
    assert not loss.training and not any(p.requires_grad for p in loss.parameters())
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    y = torch.randn(2, 3, 32, 32, requires_grad=True)
    assert float(loss(y.detach(), y.detach())) == 0.0
    value = loss(x, y)
    value.backward()
    assert float(value.detach()) > 0 and x.grad is not None and y.grad is None
    assert len(loss._features(torch.zeros(1, 3, 16, 16))) == 4  # 1 x 1 after four poolings: no fifth stage
