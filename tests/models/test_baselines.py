"""layout2im and AttnGAN (+ its DAMSM pre-training): losses fall, settings, sampling, building blocks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from baselines_support import TINY_ATTNGAN, TINY_DAMSM, TINY_LAYOUT2IM
from PIL import Image
from train_support import train_config

from retrievegan.config import from_mapping
from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
from retrievegan.errors import ConfigError, InputError
from retrievegan.eval.sampler import SampleConfig, sample
from retrievegan.runs import method_info
from retrievegan.train.damsm import DamsmConfig, load_damsm, new_damsm, pretrain_damsm
from retrievegan.train.loop import Trainer, load_trained, train
from retrievegan.train.registry import create_method, method_class


@pytest.fixture(scope="module")
def damsm_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("damsm")
    cfg = from_mapping(DamsmConfig, TINY_DAMSM, "damsm")
    evaluation = pretrain_damsm(cfg, tiny_dataset.data_dir, out, progress=False, eval_split="train")
    return out / "checkpoint.pt", evaluation


@pytest.fixture(scope="module")
def layout2im_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("layout2im") / "layout2im"
    return train("layout2im", TINY_LAYOUT2IM, train_config(), tiny_dataset.data_dir, out, progress=False).checkpoint


@pytest.fixture(scope="module")
def attngan_run(tiny_dataset, damsm_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("attngan") / "attngan"
    return train(
        "attngan",
        TINY_ATTNGAN,
        train_config(),
        tiny_dataset.data_dir,
        out,
        inputs={"damsm": damsm_run[0]},
        progress=False,
    ).checkpoint


def _batch(data_dir, split, count, start=0):
    ds = SceneGraphDataset(data_dir, split)
    return ds, collate_scene_graphs([ds[i] for i in range(start, start + count)])


# --- DAMSM ------------------------------------------------------------------------------------------
def test_damsm_pretraining_lowers_the_matching_loss(damsm_run, tiny_dataset):
    path, evaluation = damsm_run
    before, after = evaluation["before"], evaluation["after"]
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert after["w_loss"] < before["w_loss"] and after["s_loss"] < before["s_loss"]
    assert after["r1_sentence"] > evaluation["chance_r1"]
    folder = path.parent
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "evaluation.json", "losses.jsonl", "run.json"]
    lines = [json.loads(line) for line in (folder / "losses.jsonl").read_text().splitlines()]
    steps = 8 * (len(SceneGraphDataset(tiny_dataset.data_dir, "train")) // 8)  # 8 epochs, last partial batch dropped
    assert lines[-1]["loss"] < lines[0]["loss"] and lines[-1]["step"] == evaluation["steps"] == steps
    run = json.loads((folder / "run.json").read_text())
    assert "substitutes AttnGAN's ImageNet Inception-v3" in run["image_encoder"]
    # the stored encoders reproduce the evaluation
    from retrievegan.train.damsm import evaluate

    model = load_damsm(path, SceneGraphDataset(tiny_dataset.data_dir, "train").spec)
    again = evaluate(model, SceneGraphDataset(tiny_dataset.data_dir, "train"), 8, 2, torch.device("cpu"))
    assert again["loss"] == pytest.approx(after["loss"], rel=1e-5)


def test_damsm_checkpoint_is_checked_against_the_data(damsm_run, tiny_dataset, tmp_path):
    import dataclasses

    path, _ = damsm_run
    spec = SceneGraphDataset(tiny_dataset.data_dir, "train").spec
    other = dataclasses.replace(spec, object_names=spec.object_names[:-1] + ("zebra",))
    with pytest.raises(InputError, match="object names"):
        load_damsm(path, other)
    junk = tmp_path / "junk.pt"
    torch.save({"format": "something else"}, junk)
    with pytest.raises(InputError, match="not a retrievegan-damsm"):
        load_damsm(junk)
    with pytest.raises(InputError, match="not found"):
        load_damsm(tmp_path / "missing.pt")


def test_inception_weights_are_never_downloaded(tiny_dataset, tmp_path):
    from retrievegan.weights import MissingWeightsError

    spec = SceneGraphDataset(tiny_dataset.data_dir, "train").spec
    cfg = DamsmConfig(image_encoder="inception", inception_weights=str(tmp_path / "inception.pth"))
    with pytest.raises(MissingWeightsError, match="Nothing is downloaded"):
        new_damsm(cfg, spec, torch.Generator().manual_seed(0))


def test_word_scores_and_attention_ignore_padding():
    from retrievegan.models.baselines.attngan import WordAttention
    from retrievegan.models.damsm import word_relevance
    from retrievegan.models.init import build

    g = torch.Generator().manual_seed(0)
    regions, words = torch.randn(3, 6, 4, 4, generator=g), torch.randn(3, 6, 5, generator=g)
    lengths = torch.tensor([5, 2, 3])
    for n, length in enumerate(lengths.tolist()):
        words[n, :, length:] = 0
    padded = torch.cat([words, torch.randn(3, 6, 4, generator=g)], dim=2)  # garbage beyond the lengths
    garbage = padded.clone()
    for n, length in enumerate(lengths.tolist()):
        garbage[n, :, length:] = torch.randn(6, garbage.shape[2] - length, generator=g)
    assert torch.allclose(
        word_relevance(regions, words, lengths, 4.0, 5.0),
        word_relevance(regions, garbage, lengths, 4.0, 5.0),
        atol=1e-5,
    )
    attention = build(lambda: WordAttention(6, 6), g)
    mask = torch.arange(5).view(1, -1) >= lengths.view(-1, 1)
    mask_long = torch.arange(9).view(1, -1) >= lengths.view(-1, 1)
    a, attn = attention(regions, words, mask)
    b, _ = attention(regions, garbage, mask_long)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(attn.sum(1), torch.ones(3, 4, 4)) and (attn[1, 2:] == 0).all()


# --- both methods -----------------------------------------------------------------------------------
def test_methods_declare_the_papers_settings_and_the_sampler_refuses_others(
    layout2im_run, attngan_run, tiny_dataset, tmp_path
):
    assert method_class("layout2im").settings == ("gt_bbox",)
    assert method_class("attngan").settings == ("pred_bbox",)
    for name in ("layout2im", "attngan"):  # evaluation's table knows the same
        info = method_info(name)
        assert [s for s in ("pred_bbox", "gt_bbox") if info.applies_to(s)] == list(method_class(name).settings)
    for checkpoint, refused in ((layout2im_run, "pred_bbox"), (attngan_run, "gt_bbox")):
        out = tmp_path / refused
        with pytest.raises(ConfigError, match="does not support setting"):
            sample(checkpoint, tiny_dataset.data_dir, refused, out, SampleConfig(device="cpu"), progress=False)
        assert not out.exists()


@pytest.mark.parametrize("name", ["layout2im", "attngan"])
def test_one_step_lowers_generator_and_discriminator_losses(name, tiny_dataset, damsm_run):
    params = TINY_LAYOUT2IM if name == "layout2im" else TINY_ATTNGAN
    inputs = {"damsm": damsm_run[0]} if name == "attngan" else None
    ds, batch = _batch(tiny_dataset.data_dir, "train", 4)
    method = create_method(name, params, ds.spec, inputs)
    trainer = Trainer(method, train_config(), torch.device("cpu"))
    ctx = trainer.context(batch, 0, 0)
    method.train_modes(trainer.nets, 0)
    with torch.no_grad():
        g_before = method.generator_step(trainer.nets, batch, ctx)
        d_before = method.discriminator_step(trainer.nets, batch, g_before.cache, ctx).loss
    generator_before = {k: v.clone() for k, v in trainer.nets["generator"].state_dict().items()}
    logs = trainer.train_step(batch, 0, 0)
    assert logs["skipped"] == 0
    with torch.no_grad():
        g_after = method.generator_step(trainer.nets, batch, trainer.context(batch, 0, 0)).loss
        d_after = method.discriminator_step(trainer.nets, batch, g_before.cache, ctx).loss
    assert g_after < g_before.loss, (float(g_before.loss), float(g_after))
    assert d_after < d_before, (float(d_before), float(d_after))
    changed = {
        k.split(".")[0]
        for k, v in trainer.nets["generator"].state_dict().items()
        if not torch.equal(v, generator_before[k])
    }
    if name == "layout2im":
        assert set(logs["G"]) == {"img_rec", "z_rec", "kl", "img_adv", "obj_adv", "obj_cls", "total"}
        assert changed == {"crop_encoder", "layout_encoder", "decoder"}
    else:
        assert set(logs["G"]) >= {"adv1_cond", "adv2_uncond", "damsm_words", "damsm_sentence", "kl", "total"}
        assert changed == {"ca", "initial", "next_stages", "heads"}
        for encoder in ("text_encoder", "image_encoder"):  # frozen: AttnGAN never updates the DAMSM
            damsm = load_damsm(damsm_run[0])
            frozen = getattr(damsm, encoder).state_dict()
            assert all(torch.equal(v, frozen[k]) for k, v in trainer.nets[encoder].state_dict().items())


@pytest.mark.parametrize("name", ["layout2im", "attngan"])
def test_samples_do_not_depend_on_the_batch(name, layout2im_run, attngan_run, tiny_dataset, tmp_path):
    checkpoint = layout2im_run if name == "layout2im" else attngan_run
    method, nets, _ = load_trained(checkpoint)
    setting = method.settings[0]
    _, batch = _batch(tiny_dataset.data_dir, "test", 5)
    gens = lambda ids: [torch.Generator().manual_seed(1000 + i) for i in ids]  # noqa: E731
    with torch.no_grad():
        together = method.sample(nets, batch, setting, gens(range(5))).images
        for i in range(5):
            _, single = _batch(tiny_dataset.data_dir, "test", 1, start=i)
            alone = method.sample(nets, single, setting, gens([i])).images
            assert torch.allclose(alone[0], together[i], atol=1e-4), i
    assert together.shape == (5, 3, 32, 32) and torch.isfinite(together).all()
    manifest = sample(
        checkpoint, tiny_dataset.data_dir, setting, tmp_path / setting, SampleConfig(device="cpu"), progress=False
    )
    assert manifest["method"] == name and manifest["setting"] == setting and manifest["num_images"] == 12
    first = f"{manifest['image_ids'][0]:012d}.png"
    s0 = np.asarray(Image.open(tmp_path / setting / "sample0" / first))
    s1 = np.asarray(Image.open(tmp_path / setting / "sample1" / first))
    assert s0.shape == (32, 32, 3) and not np.array_equal(s0, s1)  # two seeds, two samples


# --- layout2im building blocks --------------------------------------------------------------------
def test_box_masks_follow_layout2ims_rasterisation():
    from retrievegan.models.baselines.layout2im import box_masks

    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.25], [0.3, 0.6, 0.3, 0.6], [0.0, 0.0, 1.0, 1.0]])
    masks = box_masks(boxes, 8)[:, 0]
    expected = torch.zeros(3, 8, 8)
    expected[0, 0:2, 0:4] = 1  # rows round(0)..round(2), columns round(0)..round(4)
    expected[1, 5:6, 2:3] = 1  # an empty box keeps one pixel: round(2.4) = 2, round(4.8) = 5
    expected[2] = 1
    assert torch.equal(masks, expected)


def test_layout2im_object_order_comes_from_each_images_generator(tiny_dataset):
    ds, batch = _batch(tiny_dataset.data_dir, "train", 4)
    method = create_method("layout2im", TINY_LAYOUT2IM, ds.spec)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(4)]  # noqa: E731
    a, b = method.objects(batch, gens(), True), method.objects(batch, gens(), True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    real = batch.real_objects
    assert len(a["categories"]) == int(real.sum()) and a["eps"].shape == a["z_rand"].shape == (len(a["categories"]), 4)
    for n in range(4):  # a permutation of each image's objects
        slots = a["positions"][a["obj_to_img"] == n]
        assert sorted(slots.tolist()) == list(range(len(slots)))
    ordered = create_method("layout2im", {**TINY_LAYOUT2IM, "shuffle_objects": False}, ds.spec).objects(
        batch, gens(), False
    )
    assert ordered["eps"] is None
    assert any(
        not torch.equal(a["positions"][a["obj_to_img"] == n], ordered["positions"][ordered["obj_to_img"] == n])
        for n in range(4)
    )


def test_spectral_norm_divides_by_the_largest_singular_value():
    from retrievegan.models.baselines.layout2im import SNConv2d
    from retrievegan.models.init import build

    conv = build(lambda: SNConv2d(4, 6, 3, padding=1), torch.Generator().manual_seed(0))
    again = build(lambda: SNConv2d(4, 6, 3, padding=1), torch.Generator().manual_seed(0))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in conv.state_dict().items())  # from the generator
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    for _ in range(30):  # power iterations, one per training forward
        conv(x)
    sigma = torch.linalg.matrix_norm(conv.normalized_weight().detach().reshape(6, -1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.02)
    conv.eval()
    u = conv.sn_u.clone()
    conv(x)
    assert torch.equal(u, conv.sn_u)  # evaluation does not iterate


def test_spectral_norm_matches_torch_and_its_backward_never_sees_the_next_update():
    """Two training forwards before the first backward (as a D called on real, then fake images): the first
    call's gradient is the one of torch's own spectral norm at the same u, v, although the second call updated
    the buffers in place."""
    from torch.nn.utils import spectral_norm  # the hook version: v from u, then u from v (as layout2im's)

    from retrievegan.models.baselines.layout2im import SNConv2d
    from retrievegan.models.init import build

    ours = build(lambda: SNConv2d(4, 6, 3, padding=1), torch.Generator().manual_seed(0))
    theirs = torch.nn.Conv2d(4, 6, 3, padding=1)
    theirs.load_state_dict({"weight": ours.weight.detach(), "bias": ours.bias.detach()})
    theirs = spectral_norm(theirs, eps=1e-12)
    with torch.no_grad():
        theirs.weight_u.copy_(ours.sn_u)
        theirs.weight_v.copy_(ours.sn_v)
    gen = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(2, 4, 5, 5, generator=gen), torch.randn(2, 4, 5, 5, generator=gen)
    grads = []
    for conv in (ours, theirs):
        first, second = conv(x1), conv(x2)
        first.square().sum().backward()
        grads.append((conv.weight if conv is ours else conv.weight_orig).grad.clone())
        assert torch.isfinite(second).all()
    assert torch.allclose(ours.sn_u, theirs.weight_u, atol=1e-6)
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_batched_spectral_weights_equal_each_layers_own_bit_for_bit():
    """``spectral_weights`` (the discriminators' batched power iterations: foreach ops, sigma from the iteration's
    ``W v``) gives every layer's ``normalized_weight()``, the same buffer updates and the same weight gradients,
    bit for bit, for two calls in a row (as a D on real, then fake images); a layer without spectral
    normalisation passes its weight through."""
    from retrievegan.models.baselines.layout2im import ObjectDiscriminator, SNConv2d, SNLinear, spectral_weights
    from retrievegan.models.init import build

    def layers():
        gen = torch.Generator().manual_seed(3)
        return [
            build(lambda: SNConv2d(4, 6, 3, padding=1), gen),
            build(lambda: SNLinear(5, 7), gen),
            build(lambda: SNConv2d(6, 2, 1, spectral=False), gen),
            build(lambda: SNConv2d(6, 6, 1), gen),
        ]

    batched, own = layers(), layers()
    for _ in range(2):
        found, expected = spectral_weights(batched), [layer.normalized_weight() for layer in own]
        assert all(torch.equal(a, b) for a, b in zip(found, expected))
        sum((w * (i + 1)).square().sum() for i, w in enumerate(found)).backward()
        sum((w * (i + 1)).square().sum() for i, w in enumerate(expected)).backward()
    for a, b in zip(batched, own):
        assert torch.equal(a.weight.grad, b.weight.grad)
        if a.spectral:
            assert torch.equal(a.sn_u, b.sn_u) and torch.equal(a.sn_v, b.sn_v)
    assert found[2] is batched[2].weight

    # a whole discriminator: the batched forward against each layer's own (weights from the layers themselves)
    net = build(lambda: ObjectDiscriminator((8, 16), 5, True), torch.Generator().manual_seed(4))
    crops = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    real, cls = net(crops)
    net.load_state_dict(state)
    h = torch.relu(net.trunk(crops)).sum(dim=(2, 3))  # each SN layer computes its own weight
    assert torch.equal(real, net.real_head(h).view(-1)) and torch.equal(cls, net.class_head(h))


def test_conv_lstm_ends_each_image_at_its_own_last_object_bit_for_bit():
    """The layout encoder runs its conv-LSTM over every step for all images and reads each image's state after
    its own number of objects: the same features and gradients, bit for bit, as holding the state of an image
    whose sequence has ended (a mask per step, layout2im's semantics), here written out as the reference. Images
    with 3, 1, 0 (the initial zero state) and 2 objects."""
    from retrievegan.models.baselines.layout2im import Layout2ImConfig, LayoutEncoder
    from retrievegan.models.init import build

    cfg = Layout2ImConfig(
        embedding_dim=4,
        z_dim=3,
        layout_encoder_dims=(6, 8),
        clstm_dims=(5, 4),
        clstm_kernel=3,
        res_blocks=1,
        decoder_dims=(4, 4),
    )
    obj_to_img = torch.tensor([0, 0, 0, 1, 3, 3])
    positions = torch.tensor([2, 0, 1, 0, 1, 0])
    gen = torch.Generator().manual_seed(7)
    categories = torch.randint(0, 5, (6,), generator=gen)
    xy = torch.rand(6, 2, generator=gen) * 0.5
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(6, 2, generator=gen) * 0.4], dim=1)
    z = torch.randn(6, 3, generator=gen)

    def masked_reference(encoder, num_images, steps):  # LayoutEncoder.forward with per-step masks
        from retrievegan.models.baselines.layout2im import box_masks

        x = torch.nn.functional.linear(
            torch.cat([encoder.embedding(categories), z], dim=1), encoder.convs[0].weight.flatten(1)
        )[:, :, None, None] * box_masks(boxes, 16)
        for k, (conv, norm) in enumerate(zip(encoder.convs, encoder.norms)):
            x = norm(x if k == 0 else conv(x), categories)
            x = torch.relu(x) if k < len(encoder.convs) - 1 else x
        counts = torch.bincount(obj_to_img, minlength=num_images)
        sequence = x.new_zeros(num_images, steps, *x.shape[1:])
        sequence[obj_to_img, positions] = x
        states = [(x.new_zeros(num_images, c.hidden, *x.shape[2:]),) * 2 for c in encoder.cells]
        for t in range(steps):
            valid, inp = (counts > t).view(-1, 1, 1, 1), sequence[:, t]
            for layer, cell in enumerate(encoder.cells):
                h, c = cell(inp, states[layer])
                states[layer] = (torch.where(valid, h, states[layer][0]), torch.where(valid, c, states[layer][1]))
                inp = states[layer][0]
        return encoder.residual(states[-1][0])

    encoders = [build(lambda: LayoutEncoder(cfg, 5, 16), torch.Generator().manual_seed(8)) for _ in range(2)]
    found = encoders[0](categories, boxes, z, obj_to_img, positions, 4, steps=3)
    expected = masked_reference(encoders[1], 4, 3)
    assert torch.equal(found, expected) and not torch.equal(found[2], found[1])
    weights = torch.randn(found.shape, generator=gen)
    (found * weights).sum().backward()
    (expected * weights).sum().backward()
    for (name, a), b in zip(encoders[0].named_parameters(), encoders[1].parameters()):
        assert torch.equal(a.grad, b.grad), name


def test_attngan_needs_a_damsm_and_a_matching_image_size(tiny_dataset, damsm_run):
    spec = SceneGraphDataset(tiny_dataset.data_dir, "train").spec
    with pytest.raises(ConfigError, match="damsm"):
        create_method("attngan", TINY_ATTNGAN, spec)
    with pytest.raises(ConfigError, match="stages"):
        create_method("attngan", {**TINY_ATTNGAN, "stages": 5}, spec, {"damsm": damsm_run[0]})  # 32 / 16 = 2 px


def test_paper_configs_build_the_baselines_at_128_px():
    from retrievegan.config import load_yaml, merge
    from retrievegan.data.dataset import DataSpec
    from retrievegan.models.baselines.attngan import AttnGanConfig, AttnGanGenerator, StageDiscriminator
    from retrievegan.models.baselines.layout2im import Layout2ImConfig, Layout2ImMethod

    base = load_yaml("config/config.yaml")
    assert base["damsm"]["image_encoder"] == "cnn"  # embedded: the visible substitution of ImageNet Inception-v3
    spec = DataSpec(num_objects=180, num_predicates=7, image_size=128, mask_size=None)
    for paper in ("config/paper-coco.yaml", "config/paper-vg.yaml"):
        cfg = merge(base, load_yaml(paper))
        l2i = from_mapping(Layout2ImConfig, {k: v for k, v in cfg["layout2im"].items() if k != "train"}, "layout2im")
        assert (
            l2i.lambda_img_rec,
            l2i.lambda_z_rec,
            l2i.lambda_img_adv,
            l2i.lambda_obj_adv,
            l2i.lambda_obj_cls,
            l2i.kl_weight,
            l2i.z_dim,
            l2i.embedding_dim,
            l2i.clstm_dims,
            l2i.res_blocks,
        ) == (1.0, 10.0, 1.0, 1.0, 1.0, 0.08, 64, 64, (128, 64, 64), 6)
        assert l2i.optim_generator == l2i.optim_d_img == l2i.optim_d_obj  # layout2im: lr 1e-4, betas (0.5, 0.999)
        assert l2i.optim_generator.lr == 1e-4 and cfg["layout2im"]["train"] == {"batch_size": 8, "steps": 300000}
        Layout2ImMethod(l2i, spec)  # 128 px with one more downsampling
        damsm = from_mapping(DamsmConfig, cfg["damsm"], "damsm")
        assert (damsm.image_encoder, damsm.embed_dim, damsm.word_dim, damsm.batch_size, damsm.epochs) == (
            "inception",
            256,
            300,
            48,
            600,
        )
        att = from_mapping(AttnGanConfig, {k: v for k, v in cfg["attngan"].items() if k != "train"}, "attngan")
        assert (att.stages, att.gf_dim, att.df_dim, att.z_dim, att.r_num, att.lambda_damsm) == (3, 48, 96, 100, 3, 50.0)
        with torch.device("meta"):
            generator = AttnGanGenerator(att, damsm.embed_dim, 128)
            out = generator(
                torch.zeros(2, att.z_dim),
                torch.zeros(2, 256),
                torch.zeros(2, 256, 7),
                torch.zeros(2, 7, dtype=torch.bool),
                torch.zeros(2, att.condition_dim),
            )
            assert [tuple(image.shape) for image in out.images] == [(2, 3, 32, 32), (2, 3, 64, 64), (2, 3, 128, 128)]
            for image in out.images:
                _, cond, wrong = StageDiscriminator(image.shape[-1], att.df_dim, 256, True)(
                    image, torch.zeros(2, 256), wrong=True
                )
                assert cond.shape == (2,) and wrong.shape == (1,)
