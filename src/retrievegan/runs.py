"""
The run catalogue: every trainable run (methods, Table 2's ablations, variants, claim and rarity arms) as data,
and what evaluation knows about them (settings, which (method, setting) pairs exist, which runs retrieve patches,
how metrics are named). Ground floor: pure Python (no torch), imported by the Snakemake rule files, the models,
the training registry, evaluation, the estimate and the benchmarks.

A **method** (:class:`MethodInfo`, :data:`METHODS`) is an implementation (``module:Class``, imported only by
``retrievegan.train.registry``) with the config section it reads and, for Table 2's ablations, ``overrides`` of
that section: the ablations are the full model with the loss switches ``retrievegan.gt_selection`` /
``retrievegan.cooccurrence`` turned off, not classes of their own. :func:`run_params` resolves the ``--params``
a run trains with (its section, plus for RetrieveGAN the top-level ``retrieval`` section and the switches), and
:func:`train_params` its ``--train-params``; the rules, the estimate and the benchmarks call them.

A **variant** (:class:`Variant`, declared in :data:`VARIANTS`) is a method trained on the workflow config with a
few config keys changed (dotted paths such as ``retrieval.mode`` or ``features.pooling``). It is a run of its own
under its own name everywhere: the training registry builds its base method's class, and ``models/<name>/``,
``samples/<name>/<setting>/``, ``metrics/<name>_<setting>.json``, ``metrics/compatibility/<name>_<setting>.json``
and its Table 2 row carry the name. The workflow trains the variants listed in the config's top-level
``variants`` and samples / evaluates them in ``report.ablation_setting`` only (Table 2's setting). Training-seed
arms are variants named ``<arm>__s<seed>`` (:func:`seeded`), so results per seed never share a folder. A variant
belongs to one ``experiment``: ``table2`` (the configurable Table 2 rows), ``claims`` (the arms of the paper's
claims, workflow/rules/claims.smk) or ``rarity`` (the opt-in rarity-rebalancing experiment, :data:`RARITY_ARMS`).

Metric names encode the metric, the network that produced the features, the split and the setting::

    fid_<extractor>_<split>_<pred|gt|real>      e.g. fid_synthnet_test_pred, fid_inception_test_gt
    is_<extractor>_<split>_<pred|gt|real>       (+ ``_std``: std over the IS splits)
    ds_lpips_<backbone>_<split>_<pred|gt>       (+ ``_std``: std over the test scene graphs)

so numbers from different extractors never share a name (nor a table column).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

SETTINGS: tuple[str, ...] = ("pred_bbox", "gt_bbox")
SETTING_TAGS: dict[str, str] = {"pred_bbox": "pred", "gt_bbox": "gt"}
SETTING_LABELS: dict[str, str] = {"pred_bbox": "predicted boxes", "gt_bbox": "ground-truth boxes (GT)"}
REAL_TAG = "real"
PAPER_NETWORKS = frozenset({"inception", "lpips_alex"})  # the networks of the paper's FID / IS and DS


# RetrieveGAN's loss switches (Table 2's ablations) and their value in the full model: keys of the method's
# --params that the config never holds (the schema has no such key); an ablation overrides them.
LOSS_SWITCHES: dict[str, bool] = {"gt_selection": True, "cooccurrence": True}


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    name: str
    label: str  # as printed in the paper's tables
    retrieves_patches: bool
    implementation: str  # "module:Class" of its retrievegan.train.method.Method subclass
    not_applicable: tuple[tuple[str, str], ...] = ()  # (setting, reason)
    config_section: str | None = None  # the config section the method reads (None: its name)
    overrides: tuple[tuple[str, Any], ...] = ()  # (dotted config path, value): Table 2's ablations
    variant_of: str | None = None  # variants: the registered base method

    @property
    def section(self) -> str:
        return self.config_section or self.name

    @property
    def ablation(self) -> tuple[bool, bool] | None:
        """(L_gt_sel, L_occur_sel) of a run reading the ``retrievegan`` section (Table 2's columns), else None."""
        if self.section != "retrievegan":
            return None
        switches = dict(LOSS_SWITCHES)
        for path, value in self.overrides:
            section, _, key = path.partition(".")
            if section == "retrievegan" and key in LOSS_SWITCHES:
                switches[key] = value
        return switches["gt_selection"], switches["cooccurrence"]

    def applies_to(self, setting: str) -> bool:
        return all(s != setting for s, _ in self.not_applicable)

    def not_applicable_reason(self, setting: str) -> str | None:
        for s, reason in self.not_applicable:
            if s == setting:
                return reason
        return None


RETRIEVEGAN = "retrievegan.models.retrievegan:RetrieveGan"


def _ablation(name: str, label: str, gt_selection: bool, cooccurrence: bool) -> MethodInfo:
    """A Table 2 ablation: RetrieveGAN on its own section with the two loss switches set."""
    return MethodInfo(
        name,
        label,
        True,
        RETRIEVEGAN,
        config_section="retrievegan",
        overrides=(("retrievegan.gt_selection", gt_selection), ("retrievegan.cooccurrence", cooccurrence)),
    )


METHODS: dict[str, MethodInfo] = {
    m.name: m
    for m in (
        MethodInfo("sg2im", "sg2im", False, "retrievegan.models.baselines.sg2im:Sg2ImMethod"),
        MethodInfo(
            "attngan",
            "AttnGAN",
            False,
            "retrievegan.models.baselines.attngan:AttnGanMethod",
            (
                (
                    "gt_bbox",
                    "AttnGAN generates from text (scene graph turned into sentences) and takes no boxes; "
                    "the paper has no AttnGAN (GT) row",
                ),
            ),
        ),
        MethodInfo(
            "layout2im",
            "layout2im",
            False,
            "retrievegan.models.baselines.layout2im:Layout2ImMethod",
            (
                (
                    "pred_bbox",
                    "layout2im takes ground-truth boxes as input and has no box predictor; "
                    "the paper lists it only with GT boxes",
                ),
            ),
        ),
        MethodInfo("pastegan", "PasteGAN", True, "retrievegan.models.baselines.pastegan:PasteGan"),
        MethodInfo("retrievegan", "RetrieveGAN", True, RETRIEVEGAN),
        _ablation("retrievegan_no_gt_no_occur", "RetrieveGAN (no L_gt_sel, no L_occur_sel)", False, False),
        _ablation("retrievegan_gt_only", "RetrieveGAN (L_gt_sel only)", True, False),
        _ablation("retrievegan_occur_only", "RetrieveGAN (L_occur_sel only)", False, True),
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

# Paper layout: Table 1 rows per setting (methods the paper has a row for, plus the non-applicable
# ones so the table shows why they are empty); Table 2 rows (ablation of the two retrieval losses).
TABLE1_ROWS: dict[str, tuple[str, ...]] = {
    "pred_bbox": ("sg2im", "attngan", "layout2im", "pastegan", "retrievegan"),
    "gt_bbox": ("sg2im", "attngan", "layout2im", "pastegan", "retrievegan"),
}
TABLE2_ROWS: tuple[str, ...] = (
    "retrievegan_no_gt_no_occur",
    "retrievegan_gt_only",
    "retrievegan_occur_only",
    "retrievegan",
)


# --- variants ------------------------------------------------------------------------------------------
# Config sections a variant may change: the base method's own section (and its `train` block), the sections
# its training rule reads (`retrieval`, `train`) and, for methods reading patch features, `features` (the
# variant then gets its own features/variants/<name>/patch_features.npy, extracted with the shared backbone).
VARIANT_SECTIONS = frozenset({"retrievegan", "pastegan", "sg2im", "retrieval", "train", "features", "rarity"})
VARIANT_FEATURE_KEYS = frozenset({"pooling", "standardize"})  # extraction-only keys (same backbone)


@dataclasses.dataclass(frozen=True)
class Variant:
    """An extra trained arm: ``base`` (a registered method) trained with ``overrides`` of the workflow config.

    ``overrides``: ((dotted config path, value), ...), e.g. ``(("retrieval.mode", "soft"),)``; applied to a copy
    of the whole config by :func:`variant_config` before the rules build the method's, train and features JSON.
    ``factor`` / ``level``: what the variant changes, as Table 2 shows it (``level`` = the value in this arm);
    ``reason``: why the arm exists (cited in the table note and REPORT.md). ``experiment``: ``table2`` (a Table 2
    row when configured in ``variants``), ``claims`` (an arm of the claims, retrievegan.eval.claims) or ``rarity`` (an arm of the rarity experiment, never a Table 2 row).
    """

    name: str
    base: str
    label: str
    overrides: tuple[tuple[str, Any], ...]
    factor: str
    level: str
    reason: str
    experiment: str = "table2"

    def __post_init__(self) -> None:
        if self.base not in METHODS:
            raise ValueError(f"variant {self.name}: unknown base method {self.base!r}")
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"variant {self.name}: unknown experiment {self.experiment!r} (known: {EXPERIMENTS})")
        for path, _ in self.overrides:
            section, _, key = path.partition(".")
            if section not in VARIANT_SECTIONS or not key:
                raise ValueError(
                    f"variant {self.name}: cannot override {path!r} (sections: {sorted(VARIANT_SECTIONS)})"
                )
            if section == "features" and key not in VARIANT_FEATURE_KEYS:
                raise ValueError(
                    f"variant {self.name}: features.{key} would need its own backbone; only "
                    f"{sorted(VARIANT_FEATURE_KEYS)} can change"
                )

    @property
    def arm(self) -> str:
        """The name without a training-seed suffix (``retrievegan_soft__s1`` -> ``retrievegan_soft``)."""
        return self.name.split(SEED_SEPARATOR)[0]

    @property
    def training_seed(self) -> int | None:
        """The training seed this variant overrides (`<section>.train.seed`, set by :func:`seeded` for the per-seed
        runs ``<arm>__s<seed>``), else None (the run trains with the configured seed: :func:`training_seed`)."""
        seed = dict(self.overrides).get(f"{METHODS[self.base].section}.train.seed")
        return None if seed is None else int(seed)

    def overrides_section(self, section: str) -> bool:
        return any(path.split(".")[0] == section for path, _ in self.overrides)


SEED_SEPARATOR = "__s"
EXPERIMENTS = ("table2", "claims", "rarity")

# Table 2 factors beyond the two losses: (column, config path of the value a run used).
TABLE2_FACTORS: tuple[tuple[str, str], ...] = (
    ("Retrieval", "retrieval.mode"),
    ("L_occur form", "retrievegan.occur_form"),
    ("Patch features", "features.pooling"),
)

TABLE2_VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "retrievegan_soft",
            "retrievegan",
            "RetrieveGAN (soft retrieval)",
            (("retrieval.mode", "soft"),),
            "Retrieval",
            "soft",
            "group-capped soft selection (the relaxed n-hot vector kept within [0, 1] per group, §3.3)",
        ),
        Variant(
            "retrievegan_relaxed",
            "retrievegan",
            "RetrieveGAN (relaxed retrieval, eq. 4 as written)",
            (("retrieval.mode", "relaxed"),),
            "Retrieval",
            "relaxed",
            "the iterative relaxation of eq. 4 literally: penalty log(1 - max_group s) carried across "
            "iterations, relaxed n-hot output, no straight-through (§3.3)",
        ),
        Variant(
            "retrievegan_occur_mean",
            "retrievegan",
            "RetrieveGAN (L_occur_sel as a mean over pairs)",
            (("retrievegan.occur_form", "mean"),),
            "L_occur form",
            "mean",
            "eq. 3's sum over pairs divided by the number of pairs (up to 56 at 8 objects), which divides "
            "its effective weight at lambda_occur = 0.001",
        ),
        Variant(
            "retrievegan_pool_last",
            "retrievegan",
            "RetrieveGAN (last-stage patch features)",
            (("features.pooling", "last"),),
            "Patch features",
            "last",
            "E_p's input as in the supplement (global-pooled last-stage feature) instead of our multi-scale "
            "mean/std statistics, which see the colour statistics that define the benchmark's hidden themes",
        ),
    )
}


# The rarity-rebalancing experiment (conditional IMLE supplement, App. B: CRN 0.12 -> 0.13 LPIPS with dataset + loss
# rebalancing): sg2im (a CRN decoder) and RetrieveGAN, each without and with both rebalancings, per training seed.
RARITY_SEEDS: tuple[int, ...] = (0, 1, 2)
RARITY_ON = (("rarity.dataset", True), ("rarity.loss", True))
RARITY_ARMS: tuple[Variant, ...] = tuple(
    Variant(
        f"{base}_{level}",
        base,
        f"{METHODS[base].label} ({what})",
        overrides,
        "Rarity rebalancing",
        what,
        f"the supplement's {why} (App. A/B), on the embedded benchmark",
        "rarity",
    )
    for base in ("sg2im", "retrievegan")
    for level, overrides, what, why in (
        ("plain", (), "no rebalancing", "baseline arm without rebalancing"),
        ("rarity", RARITY_ON, "dataset + loss rebalancing", "dataset and loss rebalancing by appearance rarity"),
    )
)


def seeded(variant: Variant, seeds: Sequence[int]) -> tuple[Variant, ...]:
    """One variant per training seed, named ``<variant>__s<seed>`` (its `<section>.train.seed` overridden)."""
    section = METHODS[variant.base].section
    return tuple(
        dataclasses.replace(
            variant,
            name=f"{variant.name}{SEED_SEPARATOR}{seed}",
            label=f"{variant.label} (training seed {seed})",
            overrides=variant.overrides + ((f"{section}.train.seed", int(seed)),),
        )
        for seed in seeds
    )


# --- arms of the paper's claims (retrievegan.eval.claims; config `claims`) ---------------------------------------
# claims_c1's composite discriminator weight (ours): as large as the reconstruction loss, so that D_comp's loss leads the
# gradient reaching E_p (the image / object adversaries' weights are 0.01); declared here with the arms that use it.
COMPOSITE_ADV_WEIGHT = 1.0
# Trained by the claims rules (workflow/rules/claims.smk), never Table 2 rows. Each arm of C1-C4 runs with the
# training seeds of `claims.seeds` (default run) or `claims.full_seeds` (`snakemake claims_full`); seed s of an arm
# is the arm itself when s is the seed its config already trains with, else the variant `<arm>__s<s>`.
CLAIM_VARIANTS: dict[str, Variant] = {
    v.name: dataclasses.replace(v, experiment="claims")
    for v in (
        Variant(
            "retrievegan_ep_frozen",
            "retrievegan_no_gt_no_occur",
            "RetrieveGAN, E_p frozen at initialisation (no L_gt_sel, no L_occur_sel)",
            (("retrievegan.freeze_retriever", True),),
            "E_p",
            "frozen at initialisation",
            "claim C1's control: the generation-losses-only arm with E_p never updated (same initial E_p, "
            "candidates, generator and budget), so any compatibility gain of the trained arm is E_p's learning",
        ),
        Variant(
            "retrievegan_non_iterative",
            "retrievegan",
            "RetrieveGAN (non-iterative retrieval: fixed query)",
            (("retrieval.greedy", False),),
            "Query update",
            "none (the initial query is kept)",
            "claim C4: the query is never updated by the selected patches (retrieval.greedy false), every "
            "other part of training and retrieval is the full model's",
        ),
        Variant(
            "retrievegan_no_gt_no_occur_soft",
            "retrievegan_no_gt_no_occur",
            "RetrieveGAN, generation losses only, soft retrieval",
            (("retrieval.mode", "soft"),),
            "Retrieval",
            "soft",
            "claim C1 trace (opt-in, claims_full): the generation-only arm with the group-capped soft "
            "relaxation instead of straight-through selection",
        ),
        Variant(
            "retrievegan_no_gt_no_occur_relaxed",
            "retrievegan_no_gt_no_occur",
            "RetrieveGAN, generation losses only, relaxed retrieval (eq. 4)",
            (("retrieval.mode", "relaxed"),),
            "Retrieval",
            "relaxed",
            "claim C1 in the paper's relaxed retrieval (eq. 4 as written: relaxed n-hot "
            "vector, no straight-through): the learned arm of C1's second deciding mode (claims_full)",
        ),
        Variant(
            "retrievegan_no_gt_no_occur_pool_last",
            "retrievegan_no_gt_no_occur",
            "RetrieveGAN, generation losses only, last-stage patch features",
            (("features.pooling", "last"),),
            "Patch features",
            "last",
            "claim C1 context (claims_full): the learned arm and its fixed-embedding "
            "controls on global-pooled last-stage features, which do not see the themes' colour statistics",
        ),
        Variant(
            "retrievegan_no_gt_no_occur_comp",
            "retrievegan_no_gt_no_occur",
            "RetrieveGAN, generation losses only, with a composite discriminator",
            (("retrievegan.composite_adv_weight", COMPOSITE_ADV_WEIGHT),),
            "Adversary",
            "+ composite discriminator",
            "claim C1 where the adversary can see compatibility (claims_c1): D_comp "
            "judges the retrieved patches pasted at their boxes with a whole-image receptive field",
        ),
        Variant(
            "retrievegan_no_gt_no_occur_comp_relaxed",
            "retrievegan_no_gt_no_occur",
            "RetrieveGAN, generation losses only, with a composite discriminator, relaxed retrieval (eq. 4)",
            (("retrievegan.composite_adv_weight", COMPOSITE_ADV_WEIGHT), ("retrieval.mode", "relaxed")),
            "Adversary",
            "+ composite discriminator, relaxed retrieval",
            "claim C1 where the adversary can see compatibility (claims_c1), in eq. 4's relaxed retrieval",
        ),
        Variant(
            "retrievegan_no_gt_no_occur_long",
            "retrievegan_no_gt_no_occur",
            "RetrieveGAN, generation losses only, 4x the training steps",
            (("retrievegan.train.steps", 960),),
            "Steps",
            "960",
            "claim C1 trace (opt-in, claims_full): does E_p learn compatibility from the "
            "generation losses given 4x the embedded budget (960 instead of 240 steps)?",
        ),
    )
}
CLAIM_ARMS: tuple[str, ...] = (
    "retrievegan_no_gt_no_occur",
    "retrievegan_ep_frozen",
    "pastegan",
    "retrievegan",
    "retrievegan_occur_only",
    "retrievegan_gt_only",
    "retrievegan_non_iterative",
    "retrievegan_no_gt_no_occur_relaxed",
)
# C1's learned arm per deciding retrieval mode (claims_full: the paper's setting), and the same in the setting where
# the adversary can see compatibility (claims_c1: a composite discriminator; retrievegan.eval.claims maps these runs onto
# C1's arms). They train with `claims.c1_seeds` in claims_full / claims_c1.
C1_LEARNED_ARMS: dict[str, str] = {
    "hard": "retrievegan_no_gt_no_occur",
    "relaxed": "retrievegan_no_gt_no_occur_relaxed",
}
C1_COMPOSITE_ARMS: dict[str, str] = {
    "hard": "retrievegan_no_gt_no_occur_comp",
    "relaxed": "retrievegan_no_gt_no_occur_comp_relaxed",
}
TRACE_ARMS: tuple[str, ...] = ("retrievegan_no_gt_no_occur_soft", "retrievegan_no_gt_no_occur_long")
# claims_full context, configured seed: how much of the compatibility comes from features that already see the themes'
# colour statistics (the full model and C1's learned arm with the supplement's last-stage features)
FEATURE_ARMS: tuple[str, ...] = ("retrievegan_pool_last", "retrievegan_no_gt_no_occur_pool_last")
LONG_TRACE_ARM = "retrievegan_no_gt_no_occur_long"  # opt-in within claims_full (`claims.long_training`)
CLAIM_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)  # the training seeds a claim arm can run with (schema enum)


def _arm_template(name: str) -> Variant:
    """A claim arm as a Variant to seed: a declared claim variant, or a method without overrides."""
    if name in CLAIM_VARIANTS:
        return CLAIM_VARIANTS[name]
    return Variant(name, name, METHODS[name].label, (), "Training seed", "", "the method itself", "claims")


SEEDED_VARIANTS: dict[str, Variant] = {
    v.name: v for arm in CLAIM_ARMS + tuple(C1_COMPOSITE_ARMS.values()) for v in seeded(_arm_template(arm), CLAIM_SEEDS)
}
RARITY_VARIANTS: dict[str, Variant] = {run.name: run for arm in RARITY_ARMS for run in seeded(arm, RARITY_SEEDS)}
VARIANTS: dict[str, Variant] = {**TABLE2_VARIANTS, **CLAIM_VARIANTS, **SEEDED_VARIANTS, **RARITY_VARIANTS}


def training_seed(config: Mapping[str, Any], name: str) -> int:
    """The training seed a method or variant runs with: its section's `train.seed`, else the common `train.seed`."""
    cfg = run_config(config, name)
    own = (cfg.get(method_info(name).section) or {}).get("train", {}).get("seed")
    return int(own if own is not None else cfg["train"]["seed"])


def claim_run(config: Mapping[str, Any], arm: str, seed: int) -> str:
    """The run of claim arm ``arm`` with training seed ``seed``: the arm itself when its config trains with that
    seed already (the default run reuses it), else the declared ``<arm>__s<seed>``."""
    known = CLAIM_ARMS + TRACE_ARMS + tuple(C1_COMPOSITE_ARMS.values())
    if arm not in known:
        raise ValueError(f"unknown claim arm {arm!r}; known: {list(known)}")
    if training_seed(config, arm) == int(seed):
        return arm
    name = f"{arm}{SEED_SEPARATOR}{int(seed)}"
    if name not in VARIANTS:
        raise ValueError(
            f"claim arm {arm} has no declared run for training seed {seed} (declared seeds: "
            f"{list(CLAIM_SEEDS)}; trace arms run with the configured seed only)"
        )
    return name


def run_config(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A deep copy of the workflow ``config`` with a run's overrides applied: an ablation's (its method's), then a
    variant's (after its base method's). Overriding a missing intermediate key creates it (e.g.
    ``retrievegan.train.seed``)."""
    out = copy.deepcopy(dict(config))
    for path, value in method_info(name).overrides:
        *parents, key = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = copy.deepcopy(value)
    return out


def run_params(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The ``--params`` run ``name`` trains with: its method's config section without ``train`` in the run's config
    (:func:`run_config`); RetrieveGAN's section also gets the top-level ``retrieval`` section and the loss switches
    (:data:`LOSS_SWITCHES`, as the run sets them)."""
    cfg = run_config(config, name)
    section = method_info(name).section
    params = {k: v for k, v in cfg[section].items() if k != "train"}
    if section == "retrievegan":
        params = {**LOSS_SWITCHES, **params, "retrieval": cfg["retrieval"]}
    return params


def train_params(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The ``--train-params`` of run ``name``: the common ``train`` section with its method section's ``train``
    overrides, in the run's config."""
    cfg = run_config(config, name)
    return {**cfg["train"], **cfg[method_info(name).section].get("train", {})}


def config_value(config: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of a config mapping (None if absent)."""
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def factor_levels(config: Mapping[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{run: {Table 2 factor column: the value the run used}} for methods and variants, from the config."""
    return {
        name: {column: config_value(run_config(config, name), path) for column, path in TABLE2_FACTORS}
        for name in names
    }


def base_method(name: str) -> str:
    """The registered method a run trains (a variant's base; a method itself)."""
    return VARIANTS[name].base if name in VARIANTS else name


VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)
RARITY_RUNS: tuple[str, ...] = tuple(n for n, v in VARIANTS.items() if v.experiment == "rarity")
RUN_NAMES: tuple[str, ...] = METHOD_NAMES + VARIANT_NAMES


def method_info(name: str) -> MethodInfo:
    """The catalogue entry of a method or a variant (a variant inherits its base's, with its own label and the base's
    overrides followed by its own)."""
    if name in METHODS:
        return METHODS[name]
    if name in VARIANTS:
        v = VARIANTS[name]
        base = METHODS[v.base]
        return dataclasses.replace(
            base,
            name=v.name,
            label=v.label,
            config_section=base.section,
            overrides=base.overrides + v.overrides,
            variant_of=v.base,
        )
    raise ValueError(f"unknown method {name!r}; known: {list(RUN_NAMES)}")


def table2_only(name: str) -> bool:
    """Runs that exist for Table 2 alone (the ablations of the full model and the variants): the workflow
    samples and evaluates them in ``report.ablation_setting`` only (Table 2's setting; Table 1 has no such row)."""
    return name in VARIANTS or (name in TABLE2_ROWS and name != "retrievegan")


def evaluation_runs(methods, settings, table2_setting: str | None = None) -> list[tuple[str, str]]:
    """The (method, setting) pairs that exist: ``methods`` x ``settings`` minus the non-applicable ones; with
    ``table2_setting`` (``report.ablation_setting``) the Table-2-only runs (:func:`table2_only`) in that setting
    only."""
    for setting in settings:
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}; known: {list(SETTINGS)}")
    return [
        (m, s)
        for m in methods
        for s in settings
        if method_info(m).applies_to(s) and (table2_setting is None or not table2_only(m) or s == table2_setting)
    ]


def retrieval_runs(methods, settings) -> list[tuple[str, str]]:
    """The evaluation runs whose sample folder has a ``retrievals.json``."""
    return [(m, s) for m, s in evaluation_runs(methods, settings) if method_info(m).retrieves_patches]


def variant_runs(variants: Sequence[str], setting: str) -> list[tuple[str, str]]:
    """The evaluation runs of the configured variants: each in ``setting`` (``report.ablation_setting``)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    return [(v, setting) for v in variants if method_info(v).applies_to(setting)]


def metric_name(family: str, network: str, split: str, setting: str) -> str:
    """``family`` in {fid, is, ds}; ``network``: the extractor (``synthnet``, ``inception``) or for DS
    ``lpips_<backbone>``; ``setting``: ``pred_bbox`` / ``gt_bbox`` / ``real``."""
    if family not in ("fid", "is", "ds"):
        raise ValueError(f"unknown metric family {family!r}")
    tag = REAL_TAG if setting == REAL_TAG else SETTING_TAGS[setting]
    return f"{family}_{network}_{split}_{tag}"
