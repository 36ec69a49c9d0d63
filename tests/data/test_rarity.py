"""Rarity rebalancing (conditional IMLE supplement, App. A): rarity scores (KDE of mean category colours, the
fallback), the rebalancing batch sampler (shares, frequencies, DDP shares, state), the per-pixel loss mask, the
weighted reconstruction losses, and training with both switches (resume, errors, nothing changed when off)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from scipy import stats
from train_support import TINY_SG2IM, assert_states_equal, train_config

from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
from retrievegan.data.rarity import (
    KDE_FALLBACK,
    KDE_FITTED,
    RarityConfig,
    RarityTable,
    category_kde,
    compute_rarity,
    label_maps,
    mean_colours,
    rarity_mask,
)
from retrievegan.errors import ConfigError, InputError
from retrievegan.train import checkpoint as ckpt
from retrievegan.train import loop
from retrievegan.train.loop import train
from retrievegan.train.method import StepContext
from retrievegan.train.rebalance import RarityBatchSampler, rebalancing
from retrievegan.train.registry import create_method

BOTH = RarityConfig(dataset=True, loss=True)


@pytest.fixture(scope="module")
def scores_path(tiny_dataset, tmp_path_factory):
    return compute_rarity(tiny_dataset.data_dir, tmp_path_factory.mktemp("rarity"), RarityConfig(), progress=False)


def copy_data(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset.data_dir, data)
    return data


def labels_of(ds, rows):
    batch = collate_scene_graphs([ds[i] for i in rows])
    return batch, label_maps(batch.objs, batch.boxes, batch.masks, batch.obj_to_img, batch.num_images, ds.image_size)


# --- rarity scores -------------------------------------------------------------------------------------------
def test_kde_rarity_of_a_planted_rare_colour_is_the_largest():
    rng = np.random.default_rng(0)
    common = np.clip(rng.normal([0.2, 0.5, 0.3], 0.04, size=(300, 3)), 0, 1)
    colours = np.vstack([common[:137], [[0.95, 0.05, 0.9]], common[137:]])
    fit = category_kde(colours, RarityConfig())
    rarity = np.exp(-fit.log_density)
    assert fit.method == KDE_FITTED and np.isfinite(rarity).all() and (rarity > 0).all()
    assert int(np.argmax(rarity)) == 137
    assert rarity[137] > 10 * np.median(rarity)
    # the KDE includes the point itself: an isolated colour's density is its own kernel's, (1/n) K(0), not 0
    kernel_peak = np.exp(-0.5 * np.linalg.slogdet(2 * np.pi * np.cov(colours.T) * fit.factor**2)[1])
    assert np.isclose(rarity[137], len(colours) / kernel_peak, rtol=1e-3)


def test_planted_rare_colour_in_the_training_images_gets_the_largest_score(tiny_dataset, tmp_path):
    """End to end: repaint one image's pixels of the most frequent category magenta -> that image has the largest
    rarity score of the category; its other categories are unaffected."""
    data = copy_data(tiny_dataset, tmp_path)
    ds = SceneGraphDataset(data, "train")
    _, labels = labels_of(ds, range(len(ds)))
    present = np.stack([np.bincount(lab[lab >= 0], minlength=ds.spec.num_objects) > 0 for lab in labels.numpy()])
    category = int(present.sum(0).argmax())
    image = int(np.flatnonzero(present[:, category])[3])
    pixels = np.load(data / "train_images.npy")
    before = compute_rarity(data, tmp_path / "before", RarityConfig(), progress=False)
    pixels[image][labels[image].numpy() == category] = (255, 0, 255)
    np.save(data / "train_images.npy", pixels)
    after = RarityTable(compute_rarity(data, tmp_path / "after", RarityConfig(), progress=False)).dense()
    column = after[:, category]
    assert int(np.argmax(column)) == image and column[image] > 2 * np.median(column[column > 0])
    assert (column > 0).sum() == present[:, category].sum()  # 0 exactly where the category is absent
    untouched = RarityTable(before).dense()
    others = [c for c in np.flatnonzero(present[image]) if c != category]
    assert np.allclose(after[image, others], untouched[image, others])


def test_mean_colours_are_per_image_and_category_and_absent_means_no_entry():
    labels = np.array([[[0, 0], [1, -1]], [[1, 1], [1, 1]]])
    pixels = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    pixels[0, 0, 0] = (255, 0, 0)
    pixels[0, 0, 1] = (0, 0, 255)
    pixels[0, 1, 0] = (0, 255, 0)
    pixels[1] = 51
    out = mean_colours(labels, pixels, num_categories=3, first_image=10)
    assert out.image.tolist() == [10, 10, 11] and out.category.tolist() == [0, 1, 1]
    assert out.pixels.tolist() == [2, 1, 4]
    assert np.allclose(out.colour, [[0.5, 0, 0.5], [0, 1, 0], [0.2, 0.2, 0.2]])


def test_one_image_category_gets_the_stated_fallback_never_a_crash_or_nan():
    cfg = RarityConfig(fallback_bandwidth=0.05)
    one = category_kde(np.array([[0.3, 0.4, 0.5]]), cfg)
    assert one.method == KDE_FALLBACK and "1 image" in one.reason
    assert np.isclose(np.exp(-one.log_density[0]), (2 * np.pi * 0.05**2) ** 1.5)  # 1 / N(0; 0, h^2 I)
    plane = np.random.default_rng(0).random((20, 3))
    plane[:, 2] = plane[:, 1]  # every colour on a plane: gaussian_kde's covariance is singular
    fit = category_kde(plane, cfg)
    assert fit.method == KDE_FALLBACK and "undefined" in fit.reason and np.isfinite(fit.log_density).all()


def test_a_category_found_in_one_training_image_is_reported_and_finite(tiny_dataset, tmp_path):
    data = copy_data(tiny_dataset, tmp_path)
    split = json.loads((data / "train.json").read_text())
    counts: dict[int, list[int]] = {}
    for g, graph in enumerate(split["images"]):
        for obj in graph["objects"][:-1]:
            counts.setdefault(obj["category"], []).append(g)
    rare, other = sorted(counts, key=lambda c: -len(set(counts[c])))[:2]
    keep = counts[rare][0]
    for g, graph in enumerate(split["images"]):  # the category stays only in one image
        for obj in graph["objects"][:-1]:
            if obj["category"] == rare and g != keep:
                obj["category"] = other
    (data / "train.json").write_text(json.dumps(split))
    table = RarityTable(compute_rarity(data, tmp_path / "rarity", RarityConfig(), progress=False))
    assert table.category_images[rare] == 1 and table.category_kde[rare] == KDE_FALLBACK
    assert np.isfinite(table.entry_rarity).all() and (table.entry_rarity > 0).all()
    rows = (tmp_path / "rarity" / "categories.csv").read_text().splitlines()
    row = next(r for r in rows[1:] if r.split(",")[1] == str(rare))
    assert ",fallback,," in row and "1 image < rarity.min_images 5" in row
    run = json.loads((tmp_path / "rarity" / "run.json").read_text())
    assert run["categories_fallback"] == [SceneGraphDataset(data, "train").spec.object_names[rare]]


def test_bad_rarity_files_are_input_errors_naming_the_file(tiny_dataset, scores_path, tmp_path):
    bad = tmp_path / "rarity.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="rarity.npz"):
        RarityTable(bad)
    with pytest.raises(InputError, match="not found"):
        RarityTable(tmp_path / "missing.npz")
    ds = SceneGraphDataset(tiny_dataset.vg_data_dir, "train")
    with pytest.raises(InputError, match="another train.json"):
        RarityTable(scores_path).check_dataset(ds.image_ids, ds.graphs_path, ds.spec.num_objects)
    with pytest.raises(InputError, match="only"):
        RarityTable(scores_path).top_categories(500)


# --- label maps and the mask ------------------------------------------------------------------------------------
def test_label_map_puts_the_smaller_object_on_top_and_ignores_the_image_node():
    objs = torch.tensor([1, 2, 0])
    boxes = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.25, 0.25, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
    labels = label_maps(objs, boxes, None, torch.zeros(3, dtype=torch.long), 1, 8)[0]
    assert (labels[:, 4:] == -1).all()  # the image node covers nothing; the right half has no object
    assert (labels[2:4, 2:4] == 2).all() and (labels[:, :4][labels[:, :4] != 2] == 1).all()
    mask = torch.zeros(2, 4, 4)
    mask[0, :2] = 1  # top half of object 0's box
    with_masks = label_maps(objs[:2], boxes[:2], mask, torch.zeros(2, dtype=torch.long), 1, 8)[0]
    assert (with_masks[4:, :2] == -1).all() and (with_masks[:2, :2] == 1).all()


@pytest.mark.parametrize("source", ["coco_stuff", "visual_genome"])
def test_mask_is_in_0_1_and_zero_nowhere_a_category_is_present(source, tiny_dataset, tmp_path):
    data = tiny_dataset.data_dir if source == "coco_stuff" else tiny_dataset.vg_data_dir
    table = RarityTable(compute_rarity(data, tmp_path, RarityConfig(), progress=False))
    ds = SceneGraphDataset(data, "train")
    rows = list(range(8))
    batch, labels = labels_of(ds, rows)
    scores = torch.from_numpy(table.dense()[rows])
    mask = rarity_mask(labels, scores)
    assert mask.shape == (8, 1, ds.image_size, ds.image_size) and mask.dtype == torch.float32
    assert (mask > 0).all() and (mask <= 1).all()
    assert torch.allclose(mask.flatten(1).max(1).values, torch.ones(8))
    for n in range(8):
        lab = labels[n]
        present = lab >= 0
        assert bool(present.any())
        expected = scores[n][lab[present]] / scores[n][lab[present]].max()
        assert torch.allclose(mask[n, 0][present], expected.float())
        assert torch.allclose(mask[n, 0][~present], expected.min().float())  # unlabelled: the image's smallest
    with pytest.raises(ValueError, match="do not belong"):
        rarity_mask(labels, torch.zeros_like(scores))


# --- the sampler ---------------------------------------------------------------------------------------------------
def _scores(seed=1, n=40, c=8):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 3.0, (n, c)) * (rng.random((n, c)) < 0.5)


def test_sampler_long_run_category_shares_and_within_category_frequencies_match_the_specification():
    scores = _scores()
    categories = np.array([3, 0, 5, 6, 2])
    sampler = RarityBatchSampler(scores, categories, batch_size=7, seed=0)
    num_batches = 3000
    slot_cats = np.concatenate([sampler.slot_categories(b) for b in range(num_batches)])
    rows = np.concatenate([sampler.global_batch(b) for b in range(num_batches)])
    # category shares: equal portions of the batch for the top categories (7 slots over 5 categories: rotated)
    shares = np.array([(slot_cats == c).sum() for c in categories])
    assert shares.sum() == num_batches * 7 and stats.chisquare(shares).pvalue > 0.99
    assert (shares == num_batches * 7 // 5).all()
    # within a category: frequencies proportional to the rarity score, never an image without the category
    for c in categories:
        drawn = np.bincount(rows[slot_cats == c], minlength=len(scores))
        p = scores[:, c] / scores[:, c].sum()
        assert drawn[p == 0].sum() == 0
        expected = p[p > 0] * drawn.sum()
        assert expected.min() >= 5  # chi-square's validity
        assert stats.chisquare(drawn[p > 0], expected).pvalue > 1e-3, c
        # the test has power: uniform draws among the category's images are rejected
        assert stats.chisquare(drawn[p > 0], np.full(int((p > 0).sum()), drawn.sum() / (p > 0).sum())).pvalue < 1e-6


def test_sampler_is_deterministic_and_ranks_take_disjoint_shares_of_one_stream():
    scores, categories = _scores(), np.array([3, 0, 5, 6, 2])
    one = RarityBatchSampler(scores, categories, batch_size=8, seed=3)
    again = RarityBatchSampler(scores, categories, batch_size=8, seed=3)
    ranks = [RarityBatchSampler(scores, categories, batch_size=8, seed=3, rank=r, world_size=4) for r in range(4)]
    for b in range(25):
        assert one.local_batch(b) == again.local_batch(b)
        shares = [r.local_batch(b) for r in ranks]
        assert all(len(s) == 2 for s in shares) and sum(shares, []) == one.local_batch(b)
    other_seed = RarityBatchSampler(scores, categories, batch_size=8, seed=4)
    assert [one.local_batch(b) for b in range(10)] != [other_seed.local_batch(b) for b in range(10)]
    with pytest.raises(ValueError, match="divisible"):
        RarityBatchSampler(scores, categories, batch_size=6, seed=0, world_size=4)
    with pytest.raises(ValueError, match="one image"):
        RarityBatchSampler(np.zeros_like(scores), categories, batch_size=8, seed=0)


def test_sampler_state_restores_the_stream_bit_identically(tmp_path):
    scores, categories = _scores(), np.array([3, 0, 5, 6, 2])
    uninterrupted = RarityBatchSampler(scores, categories, batch_size=5, seed=7)
    stream = list(uninterrupted.batches(0, 30))
    path = tmp_path / "state.pt"
    ckpt.save(path, {"format": ckpt.FORMAT, "version": ckpt.VERSION, "batch_sampler": uninterrupted.state_dict(12)})
    state = ckpt.load(path)["batch_sampler"]  # through torch.save / weights_only load, as in a checkpoint
    restored = RarityBatchSampler(scores, categories, batch_size=5, seed=7)
    start = restored.load_state_dict(state)
    assert start == 12 and list(restored.batches(start, 18)) == stream[12:]
    for other in (
        RarityBatchSampler(scores, categories, batch_size=5, seed=8),
        RarityBatchSampler(scores * np.linspace(1, 2, len(scores))[:, None], categories, 5, 7),
        RarityBatchSampler(scores, categories[:4], batch_size=5, seed=7),
    ):
        with pytest.raises(ValueError, match="stored batch sampler"):
            other.load_state_dict(state)


# --- weighted losses ----------------------------------------------------------------------------------------------
def test_weighted_pixel_and_perceptual_losses():
    from torch import nn

    from retrievegan.models.perceptual import VggPerceptualLoss
    from retrievegan.train.losses import pixel_l1

    gen = torch.Generator().manual_seed(0)
    fake, real = torch.randn(2, 3, 16, 16, generator=gen), torch.randn(2, 3, 16, 16, generator=gen)
    weights = torch.rand(2, 1, 16, 16, generator=gen).clamp(min=0.01)
    assert torch.equal(pixel_l1(fake, real, torch.ones(2, 1, 16, 16)), pixel_l1(fake, real))
    assert torch.allclose(pixel_l1(fake, real, weights), (weights * (fake - real).abs()).mean())
    layers = [nn.MaxPool2d(2) if i in (4, 9, 18, 27) else nn.Conv2d(3, 3, 1) for i in range(30)]
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, generator=gen)
    vgg = VggPerceptualLoss(nn.Sequential(*layers))
    assert torch.allclose(vgg(fake, real, torch.ones(2, 1, 16, 16)), vgg(fake, real))
    assert torch.allclose(vgg(fake, real, torch.full((2, 1, 16, 16), 0.25)), 0.25 * vgg(fake, real))
    left = torch.zeros(2, 1, 16, 16)
    left[..., :8] = 1  # only the left half counts: the right half of the input no longer matters
    changed = fake.clone()
    changed[..., 12:] += 5
    assert torch.allclose(vgg(fake, real, left), vgg(changed, real, left))


def _ctx(batch, weights):
    from retrievegan.seeds import image_generators

    return StepContext(
        step=0,
        epoch=0,
        device=torch.device("cpu"),
        generators=image_generators((0,), batch.image_ids.tolist()),
        pixel_weights=weights,
    )


def test_sg2im_and_retrievegan_weight_only_their_reconstruction_losses(tiny_dataset, tmp_path):
    from patchgan_support import build_inputs, retrievegan_params

    inputs = build_inputs(tiny_dataset.patches_dir, tmp_path)
    ds = SceneGraphDataset(tiny_dataset.data_dir, "train", inputs.patches_csv)
    batch = collate_scene_graphs([ds[i] for i in range(4)])
    half = torch.full((4, 1, ds.image_size, ds.image_size), 0.5)
    for name, params, extra, term in (
        ("sg2im", TINY_SG2IM, {}, "l1_pixel"),
        ("retrievegan", retrievegan_params(), inputs.retrievegan(), "recon_img"),
    ):
        method = create_method(name, params, ds.spec, extra)
        nets = method.build_networks(torch.Generator().manual_seed(0))
        with torch.no_grad():
            plain = method.generator_step(nets, batch, _ctx(batch, None)).logs
            weighted = method.generator_step(nets, batch, _ctx(batch, half)).logs
        assert torch.allclose(weighted[term], 0.5 * plain[term]), name
        for key in set(plain) - {term, "total"}:
            assert torch.equal(weighted[key], plain[key]), (name, key)


def test_retrievegan_weights_its_perceptual_losses_per_pixel(tiny_dataset, tmp_path):
    """rarity.loss through the method's perceptual path (VGG-19 with random weights: the weighting, not the
    features, is under test): a constant 1/2 halves p_img and p_obj (the object crops get the mask cropped at
    their boxes), a mask that is not constant gives neither the plain nor the halved value."""
    from patchgan_support import build_inputs, retrievegan_params

    from retrievegan.estimate.paper import install_random_perceptual

    inputs = build_inputs(tiny_dataset.patches_dir, tmp_path)
    ds = SceneGraphDataset(tiny_dataset.data_dir, "train", inputs.patches_csv)
    batch = collate_scene_graphs([ds[i] for i in range(3)])
    method = create_method(
        "retrievegan", retrievegan_params(p_img_weight=1.0, p_obj_weight=0.5), ds.spec, inputs.retrievegan()
    )
    assert install_random_perceptual(method, torch.Generator().manual_seed(3)) is not None
    nets = method.build_networks(torch.Generator().manual_seed(0))
    shape = (3, 1, ds.image_size, ds.image_size)
    left = torch.zeros(shape)
    left[..., : ds.image_size // 2] = 1.0
    with torch.no_grad():
        plain, half, masked = (
            method.generator_step(nets, batch, _ctx(batch, w)).logs for w in (None, torch.full(shape, 0.5), left)
        )
    for term in ("p_img", "p_obj", "recon_img"):
        assert plain[term] > 0, term
        assert torch.allclose(half[term], 0.5 * plain[term], rtol=1e-5), term
        assert not torch.allclose(masked[term], plain[term]) and not torch.allclose(masked[term], half[term]), term


# --- training --------------------------------------------------------------------------------------------------
def test_repeated_images_under_the_rarity_sampler_get_their_own_noise(tiny_dataset, scores_path):
    """The epoch permutation shows an image once per epoch: its noise derives from (seed, epoch, image id). The
    rarity sampler draws with replacement: every slot of global batch ``step`` gets its own noise, and a process
    of a DDP run derives the slots of its share of the global batch (the same keys as one process)."""
    ds = SceneGraphDataset(tiny_dataset.data_dir, "train")
    batch = collate_scene_graphs([ds[0], ds[1], ds[0], ds[0]])
    method = create_method("sg2im", TINY_SG2IM, ds.spec, {})
    cfg = train_config(batch_size=4)
    plain = loop.Trainer(method, cfg, torch.device("cpu"))
    prefix, keys = plain.noise_keys(batch, step=5, epoch=1)
    assert keys[0] == keys[2] == keys[3] != keys[1]  # image ids: one noise per image per epoch
    rebalance = rebalancing(RarityConfig(dataset=True), scores_path, ds, 4, cfg.seed)
    rarity = loop.Trainer(method, cfg, torch.device("cpu"), rebalance=rebalance)
    slot_prefix, slots = rarity.noise_keys(batch, step=5, epoch=1)
    assert slots == [0, 1, 2, 3] and slot_prefix != prefix and slot_prefix[-1] == 5
    assert rarity.noise_keys(batch, step=6, epoch=1)[0] != slot_prefix  # the next global batch: new noise
    ctx = rarity.context(batch, 5, 1)
    draws = [torch.randn(8, generator=g) for g in ctx.generators]
    assert not torch.equal(draws[0], draws[2]) and not torch.equal(draws[2], draws[3])
    half = collate_scene_graphs([ds[0], ds[0]])  # the second of 2 processes: its share of the global batch of 4
    second = loop.Trainer(
        method,
        cfg,
        torch.device("cpu"),
        rebalance=rebalancing(RarityConfig(dataset=True), scores_path, ds, 4, cfg.seed, rank=1, world_size=2),
    )
    assert second.noise_keys(half, step=5, epoch=1) == (slot_prefix, [2, 3])
    assert second.rebalance.sampler.local_batch(5) == rebalance.sampler.global_batch(5)[2:].tolist()


def test_training_with_rebalancing_resumes_bit_identically(tiny_dataset, scores_path, tmp_path, monkeypatch):
    """Killed mid-run (an exception after step 7; the state at step 6 is on disk) and resumed == uninterrupted:
    networks, optimisers and the batch sampler's state; the steps cross an epoch boundary (11 steps per epoch)."""
    cfg = dict(steps=14, checkpoint_every=3, snapshot_every=0)
    straight = train(
        "sg2im",
        TINY_SG2IM,
        train_config(**cfg),
        tiny_dataset.data_dir,
        tmp_path / "straight",
        progress=False,
        rarity=BOTH,
        rarity_scores=scores_path,
    )
    original = loop.Trainer.train_step

    def dying(self, batch, step, epoch):
        if step == 7:
            raise KeyboardInterrupt("killed")
        return original(self, batch, step, epoch)

    monkeypatch.setattr(loop.Trainer, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(
            "sg2im",
            TINY_SG2IM,
            train_config(**cfg),
            tiny_dataset.data_dir,
            tmp_path / "killed",
            progress=False,
            rarity=BOTH,
            rarity_scores=scores_path,
        )
    (state,) = (tmp_path / "killed").glob("state/*/last.pt")
    assert ckpt.load(state)["batch_sampler"]["next_batch"] == 6
    monkeypatch.setattr(loop.Trainer, "train_step", original)
    resumed = train(
        "sg2im",
        TINY_SG2IM,
        train_config(**cfg),
        tiny_dataset.data_dir,
        tmp_path / "killed",
        resume=True,
        progress=False,
        rarity=BOTH,
        rarity_scores=scores_path,
    )
    assert resumed.resumed_from == 6
    a, b = ckpt.load(straight.checkpoint), ckpt.load(resumed.checkpoint)
    for key in ("networks", "optimizers", "batch_sampler", "step", "config_hash"):
        assert_states_equal(a[key], b[key], key)
    assert a["batch_sampler"]["next_batch"] == 14 and a["batch_sampler"]["categories"] == list(
        RarityTable(scores_path).top_categories(5)
    )
    run = json.loads((tmp_path / "straight" / "run.json").read_text())
    assert run["config"]["rarity"]["config"] == {**vars(BOTH)} and run["config"]["rarity"]["top_categories"]
    # a resumed run with other rarity settings never uses that state
    other = train(
        "sg2im",
        TINY_SG2IM,
        train_config(steps=1),
        tiny_dataset.data_dir,
        tmp_path / "killed",
        resume=True,
        progress=False,
        rarity=RarityConfig(dataset=True),
        rarity_scores=scores_path,
    )
    assert other.resumed_from is None


def test_switches_off_change_nothing_and_each_switch_changes_the_run(tiny_dataset, scores_path, tmp_path):
    runs = {}
    for name, cfg in (
        ("default", None),
        ("off", RarityConfig()),
        ("dataset", RarityConfig(dataset=True)),
        ("loss", RarityConfig(loss=True)),
    ):
        result = train(
            "sg2im",
            TINY_SG2IM,
            train_config(steps=3),
            tiny_dataset.data_dir,
            tmp_path / name,
            progress=False,
            rarity=cfg,
            rarity_scores=scores_path,
        )
        runs[name] = ckpt.load(result.checkpoint)
    assert "batch_sampler" not in runs["off"] and "batch_sampler" not in runs["loss"]
    assert runs["off"]["config_hash"] == runs["default"]["config_hash"]
    off_run, default_run = ((tmp_path / name / "run.json").read_text() for name in ("off", "default"))
    assert off_run == default_run and '"rarity"' not in off_run  # off: run.json as without the option
    for name in ("dataset", "loss"):
        recorded = json.loads((tmp_path / name / "run.json").read_text())["config"]["rarity"]["config"]
        assert (recorded["dataset"], recorded["loss"]) == (name == "dataset", name == "loss")
    assert_states_equal(runs["off"]["networks"], runs["default"]["networks"])
    for name in ("dataset", "loss"):
        assert runs[name]["config_hash"] != runs["default"]["config_hash"]
        gen, ref = runs[name]["networks"]["generator"], runs["default"]["networks"]["generator"]
        assert any(not torch.equal(gen[k], ref[k]) for k in ref), name


def test_rebalancing_errors_are_clear(tiny_dataset, scores_path, tmp_path):
    with pytest.raises(ConfigError, match="rarity scores"):
        train(
            "sg2im",
            TINY_SG2IM,
            train_config(steps=1),
            tiny_dataset.data_dir,
            tmp_path / "a",
            progress=False,
            rarity=RarityConfig(loss=True),
        )
    with pytest.raises(ConfigError, match="layout2im has no reconstruction loss"):
        train(
            "layout2im",
            {},
            train_config(steps=1),
            tiny_dataset.data_dir,
            tmp_path / "b",
            progress=False,
            rarity=RarityConfig(loss=True),
            rarity_scores=scores_path,
        )
    ds = SceneGraphDataset(tiny_dataset.vg_data_dir, "train")
    with pytest.raises(InputError, match="another train.json"):
        rebalancing(BOTH, scores_path, ds, 4, 0)
    with pytest.raises(InputError, match="top_categories"):
        rebalancing(
            RarityConfig(dataset=True, top_categories=99),
            scores_path,
            SceneGraphDataset(tiny_dataset.data_dir, "train"),
            4,
            0,
        )
