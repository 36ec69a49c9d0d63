"""The run catalogue (retrievegan.runs): methods, Table 2's ablations as overrides, variants (validation, per-seed names,
the config a run trains on, its resolved params), what evaluation and the training registry make of a run name."""

from __future__ import annotations

import copy

import pytest

from retrievegan import runs as m


def test_declared_variants_are_valid_and_change_one_factor_of_the_full_model():
    assert {n for n, v in m.VARIANTS.items() if v.experiment == "table2"} == set(m.TABLE2_VARIANTS)
    assert set(m.TABLE2_VARIANTS) | set(m.CLAIM_VARIANTS) | set(m.SEEDED_VARIANTS) | set(m.RARITY_RUNS) == set(
        m.VARIANTS
    )
    assert {m.VARIANTS[n].experiment for n in {**m.CLAIM_VARIANTS, **m.SEEDED_VARIANTS}} == {"claims"}
    for name, variant in m.TABLE2_VARIANTS.items():
        assert variant.name == name and variant.base == "retrievegan" and len(variant.overrides) == 1
        assert variant.factor in {column for column, _ in m.TABLE2_FACTORS}
        path = dict(m.TABLE2_FACTORS)[variant.factor]
        assert variant.overrides == ((path, variant.level),)  # the factor column shows exactly the override
    with pytest.raises(ValueError, match="unknown base"):
        m.Variant("x", "nope", "x", (), "Retrieval", "x", "x")
    with pytest.raises(ValueError, match="cannot override"):
        m.Variant("x", "retrievegan", "x", (("prefilter.k", 3),), "Retrieval", "x", "x")
    with pytest.raises(ValueError, match="own backbone"):
        m.Variant("x", "retrievegan", "x", (("features.channels", [8]),), "Patch features", "x", "x")


def test_run_config_applies_the_overrides_to_a_copy():
    config = {
        "retrieval": {"mode": "hard", "k": 32},
        "retrievegan": {"occur_form": "sum", "train": {"steps": 9}},
        "features": {"pooling": "multiscale"},
    }
    before = copy.deepcopy(config)
    soft = m.run_config(config, "retrievegan_soft")
    assert soft["retrieval"] == {"mode": "soft", "k": 32} and config == before
    assert m.run_config(config, "retrievegan") == config  # a method runs on the config itself
    levels = m.factor_levels(config, ["retrievegan", "retrievegan_occur_mean", "retrievegan_pool_last"])
    assert levels["retrievegan"] == {"Retrieval": "hard", "L_occur form": "sum", "Patch features": "multiscale"}
    assert levels["retrievegan_occur_mean"]["L_occur form"] == "mean"
    assert levels["retrievegan_pool_last"]["Patch features"] == "last"


def test_seeded_arms_get_their_own_names_and_training_seed(monkeypatch):
    arms = m.seeded(m.VARIANTS["retrievegan_soft"], (0, 3))
    assert [a.name for a in arms] == ["retrievegan_soft__s0", "retrievegan_soft__s3"]
    assert all(a.arm == "retrievegan_soft" for a in arms)
    assert arms[1].overrides == (("retrieval.mode", "soft"), ("retrievegan.train.seed", 3))
    monkeypatch.setitem(m.VARIANTS, arms[1].name, arms[1])  # registered as issue 12 will register them
    cfg = m.run_config({"retrieval": {"mode": "hard"}, "retrievegan": {}}, arms[1].name)
    assert cfg["retrievegan"]["train"]["seed"] == 3 and cfg["retrieval"]["mode"] == "soft"
    assert m.method_info(arms[1].name).section == "retrievegan"


def test_a_variant_is_evaluated_like_its_base_in_table_2s_setting_only():
    info = m.method_info("retrievegan_relaxed")
    assert (info.variant_of, info.retrieves_patches, info.ablation) == ("retrievegan", True, (True, True))
    assert info.label != m.METHODS["retrievegan"].label
    assert m.variant_runs(["retrievegan_relaxed"], "pred_bbox") == [("retrievegan_relaxed", "pred_bbox")]
    with pytest.raises(ValueError, match="unknown variant"):
        m.variant_runs(["retrievegan"], "pred_bbox")
    runs = m.evaluation_runs(m.METHOD_NAMES, m.SETTINGS, "pred_bbox")
    assert ("retrievegan_gt_only", "gt_bbox") not in runs and ("retrievegan_gt_only", "pred_bbox") in runs
    assert {("retrievegan", "gt_bbox"), ("pastegan", "gt_bbox"), ("sg2im", "gt_bbox")} <= set(runs)
    assert ("retrievegan_gt_only", "gt_bbox") in m.evaluation_runs(m.METHOD_NAMES, m.SETTINGS)  # no setting given


def test_rarity_arms_are_per_seed_variants_of_sg2im_and_retrievegan_with_both_switches_or_none():
    assert len(m.RARITY_RUNS) == 4 * len(m.RARITY_SEEDS) and len(m.RARITY_SEEDS) >= 3
    for name in m.RARITY_RUNS:
        variant = m.VARIANTS[name]
        cfg = m.run_config({"rarity": {"dataset": False, "loss": False}, "train": {"seed": 0}}, name)
        assert variant.experiment == "rarity" and variant.training_seed in m.RARITY_SEEDS
        assert name == f"{variant.arm}{m.SEED_SEPARATOR}{variant.training_seed}"
        assert cfg[m.METHODS[variant.base].section]["train"]["seed"] == variant.training_seed
        on = variant.arm.endswith("_rarity")
        assert cfg["rarity"] == {"dataset": on, "loss": on}
        assert m.method_info(name).variant_of == variant.base in ("sg2im", "retrievegan")
    with pytest.raises(ValueError, match="unknown experiment"):
        m.Variant("x", "sg2im", "x", (), "x", "x", "x", "nope")


def test_the_registry_builds_a_variants_base_class():
    from retrievegan.errors import ConfigError
    from retrievegan.models.retrievegan import RetrieveGan
    from retrievegan.train.registry import method_class

    assert method_class("retrievegan_soft") is RetrieveGan
    with pytest.raises(ConfigError, match="variants"):
        method_class("retrievegan_nope")


CONFIG = {
    "retrieval": {"mode": "hard", "k": 32},
    "train": {"seed": 0, "steps": 5, "batch_size": 4},
    "retrievegan": {"occur_form": "sum", "train": {"steps": 9}},
    "pastegan": {"crop_dim": 8},
    "sg2im": {"gconv_dim": 16, "train": {"batch_size": 2}},
}


@pytest.mark.parametrize(
    "name, switches",
    [
        ("retrievegan", (True, True)),
        ("retrievegan_no_gt_no_occur", (False, False)),
        ("retrievegan_gt_only", (True, False)),
        ("retrievegan_occur_only", (False, True)),
        ("retrievegan_soft", (True, True)),
        ("retrievegan_no_gt_no_occur_relaxed", (False, False)),
        ("retrievegan_gt_only__s1", (True, False)),
    ],
)
def test_ablations_are_overrides_of_the_full_model(name, switches):
    """Table 2's ablations are RetrieveGAN with the loss switches overridden; a variant of an ablation keeps them."""
    info = m.method_info(name)
    assert info.implementation == m.METHODS["retrievegan"].implementation and info.section == "retrievegan"
    assert info.ablation == switches
    params = m.run_params(CONFIG, name)
    assert (params["gt_selection"], params["cooccurrence"]) == switches
    assert params["occur_form"] == "sum" and "train" not in params
    assert params["retrieval"] == m.run_config(CONFIG, name)["retrieval"]
    assert m.train_params(CONFIG, name)["steps"] == 9 and m.train_params(CONFIG, name)["batch_size"] == 4
    assert "gt_selection" not in CONFIG["retrievegan"]  # the workflow config is never changed


def test_run_params_of_the_other_methods_are_their_section():
    assert m.run_params(CONFIG, "pastegan") == {"crop_dim": 8}
    assert m.run_params(CONFIG, "sg2im") == {"gconv_dim": 16}
    assert m.train_params(CONFIG, "sg2im") == {"seed": 0, "steps": 5, "batch_size": 2}
    assert m.run_params(CONFIG, "retrievegan_soft")["retrieval"]["mode"] == "soft"
    assert m.METHODS["pastegan"].ablation is None


def test_every_catalogued_method_names_a_method_class():
    from retrievegan.train.method import Method
    from retrievegan.train.registry import method_class

    for name, info in m.METHODS.items():
        assert issubclass(method_class(name), Method), info.implementation


def test_a_run_never_trains_under_an_ablations_name_with_other_switches():
    """create_method checks the params against the catalogue: the full model's params under an ablation's name fail."""
    from retrievegan.errors import ConfigError
    from retrievegan.train.registry import create_method

    params = m.run_params(CONFIG, "retrievegan")
    with pytest.raises(ConfigError, match="gt_selection=False, cooccurrence=False"):
        create_method("retrievegan_no_gt_no_occur", params, None)
