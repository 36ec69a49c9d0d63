"""Composites of pasted patches and the whole-image critic (retrievegan.models.critic), RetrieveGAN's optional
composite discriminator D_comp (claims_c1's setting), and claim C1's mechanism check (retrievegan.eval.mechanism)."""

from __future__ import annotations

import json

import pytest
import torch

from retrievegan.models.critic import CompatCritic, paste_composite


def test_paste_composite_puts_each_crop_in_its_box_later_objects_on_top_and_is_differentiable():
    crops = torch.stack([torch.full((3, 4, 4), 1.0), torch.full((3, 4, 4), 2.0), torch.full((3, 4, 4), 3.0)])
    crops.requires_grad_(True)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 1.0, 1.0]])
    out = paste_composite(crops, boxes, torch.tensor([0, 0, 1]), 2, 8)
    assert out.shape == (2, 3, 8, 8)
    assert out[0, 0, 1, 1] == 1.0 and out[0, 0, 4, 4] == 2.0  # the second object covers the first
    assert out[0, 0, 7, 7] == 0.0 and out[1, 0, 6, 6] == 3.0 and out[1, 0, 1, 1] == 0.0
    masks = torch.zeros(3, 4, 4)
    masks[:, :2, :2] = 1.0  # only the top-left quarter of each box
    masked = paste_composite(crops, boxes, torch.tensor([0, 0, 1]), 2, 8, masks)
    assert masked[1, 0, 5, 5] == 3.0 and masked[1, 0, 7, 7] == 0.0
    out.sum().backward()
    assert bool((crops.grad[1:] > 0).all()) and bool((crops.grad[0, :, :2] > 0).all())
    assert bool((crops.grad[0, :, 2:, 2:] == 0).all())  # the part of the first crop the second one covers
    assert CompatCritic((4, 8), 8)(out.detach()).shape == (2,)
    with pytest.raises(ValueError, match="do not fit"):
        CompatCritic((4, 8, 8, 8), 8)


def test_the_composite_discriminator_is_off_by_default_and_trains_beside_the_others_when_on(tiny_dataset, tmp_path):
    from patchgan_support import build_inputs, retrievegan_params
    from train_support import train_config

    from retrievegan.train.loop import load_trained, train

    inputs = build_inputs(tiny_dataset.patches_dir, tmp_path / "inputs", themed=True)
    ckpts = {}
    for name, weight in (("off", 0.0), ("on", 1.0)):
        params = retrievegan_params("retrievegan_no_gt_no_occur", composite_adv_weight=weight, d_comp_channels=[4, 8])
        ckpts[name] = train(
            "retrievegan_no_gt_no_occur",
            params,
            train_config(steps=2, log_every=1, checkpoint_every=10),
            tiny_dataset.data_dir,
            tmp_path / name,
            patches_csv=inputs.patches_csv,
            inputs=inputs.retrievegan(),
            progress=False,
        ).checkpoint
    off, on = (load_trained(ckpts[k])[2]["networks"] for k in ("off", "on"))
    assert "d_comp" not in off and "d_comp" in on
    for net in off:  # D_comp is built last: every other network starts from the same weights
        first = torch.load(sorted((tmp_path / "on" / "snapshots").glob("step_*.pt"))[0], weights_only=False)
        if net in first["networks"]:
            ref = torch.load(sorted((tmp_path / "off" / "snapshots").glob("step_*.pt"))[0], weights_only=False)
            for key, value in first["networks"][net].items():
                assert torch.equal(value, ref["networks"][net][key]), f"{net}.{key}"
    logs = [json.loads(line) for line in (tmp_path / "on" / "losses.jsonl").read_text().splitlines()]
    assert all("adv_comp" in str(rec) and "comp_adv" in str(rec) for rec in logs)
    assert not any("adv_comp" in line for line in (tmp_path / "off" / "losses.jsonl").read_text().splitlines())
    assert logs[0]["meta"]["ep_grad/generation"] > 0


def test_the_mechanism_check_trains_a_critic_on_train_and_e_p_under_it_in_every_mode(tiny_dataset, tmp_path):
    from patchgan_support import build_inputs, retrievegan_params
    from train_support import train_config

    from retrievegan.eval.c1_controls import ControlsConfig
    from retrievegan.eval.mechanism import MechanismConfig, c1_mechanism, mechanism_line, read_mechanism
    from retrievegan.train.loop import train

    inputs = build_inputs(tiny_dataset.patches_dir, tmp_path / "inputs", themed=True)
    params = retrievegan_params("retrievegan_no_gt_no_occur", retrieval={"k": 8, "embed_dim": 8, "embed_hidden": 16})
    ckpt = train(
        "retrievegan_no_gt_no_occur",
        params,
        train_config(steps=2, checkpoint_every=10),
        tiny_dataset.data_dir,
        tmp_path / "run",
        patches_csv=inputs.patches_csv,
        inputs=inputs.retrievegan(),
        progress=False,
    ).checkpoint
    cfg = MechanismConfig(critic_steps=40, critic_channels=(8, 16), steps=6, eval_every=3, k=8, batch_size=8)
    controls = ControlsConfig(bootstrap_samples=200, batch_size=8)
    out = tmp_path / "mechanism.json"
    rec = c1_mechanism(
        ckpt,
        tmp_path / "run" / "snapshots",
        tiny_dataset.data_dir,
        inputs.patches_csv,
        inputs.candidates,
        None,
        out,
        cfg,
        controls,
        progress=False,
    )
    assert read_mechanism(out)["method"] == "retrievegan_no_gt_no_occur" and set(rec["modes"]) == set(cfg.modes)
    for mode, result in rec["modes"].items():
        assert [p["step"] for p in result["val_curve"]] == [0, 3, 6], mode
        t = result["test"]
        assert 0.0 <= t["compat_pairwise_same_theme_low"] <= t["compat_pairwise_same_theme"] <= 1.0
    starts = {r["val_curve"][0]["compat_pairwise_same_theme"] for r in rec["modes"].values()}
    assert len(starts) == 1  # every mode starts from the same E_p (its initialisation)
    assert rec["critic"]["probe"]["auc"] > 0.5  # on val, never seen in its training
    assert "critic AUC (val)" in mechanism_line(rec)
    again = c1_mechanism(
        ckpt,
        tmp_path / "run" / "snapshots",
        tiny_dataset.data_dir,
        inputs.patches_csv,
        inputs.candidates,
        None,
        None,
        cfg,
        controls,
        progress=False,
    )
    assert again["modes"] == rec["modes"]  # deterministic


def test_the_mechanism_configs_modes_are_the_retrievals():
    from retrievegan.eval.mechanism import RETRIEVAL_MODES, MechanismConfig
    from retrievegan.models.retrieval import MODES

    assert RETRIEVAL_MODES == MODES
    with pytest.raises(ValueError, match="non-empty subset"):
        MechanismConfig(modes=("sharp",))
