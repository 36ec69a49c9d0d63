# Shared names for every rule file. Rules call one `retrievegan <stage>` command each; the only
# code here turns config sections into the JSON those commands take.
import json
import os

DATASET = config["dataset"]
RES = f"{config['results']}/{DATASET}"
DATA = f"{RES}/data"
LOGS = f"{RES}/logs"
BENCH = f"{RES}/benchmarks"
SPLITS = ("train", "val", "test")
SOURCES = tuple(config["sources"])
MODEL_DATA = f"{DATA}/{config['model_source']}"

ENV = "../envs/retrievegan.yaml"  # conda env for --software-deployment-method conda

# Each rule file appends the final outputs it contributes to `rule all`.
ALL_TARGETS = []

# Variants (extra trained arms, declared in retrievegan.runs.VARIANTS): the config's top-level
# `variants` list; each is trained on run_config(<name>) and sampled / evaluated in report.ablation_setting.
from retrievegan import runs
from retrievegan.runs import RARITY_RUNS, VARIANTS as VARIANT_DECLARATIONS, variant_runs

VARIANTS = tuple(config.get("variants", []))
ABLATION_SETTING = config.get("report", {}).get("ablation_setting", "pred_bbox")
VARIANT_RUNS = variant_runs(VARIANTS, ABLATION_SETTING)


# Claims (workflow/rules/claims.smk, retrievegan.eval.claims): the runs of the arms of C1-C4 with the training seeds of
# `claims.seeds` (rule all) and `claims.full_seeds` (+ the C1 trace arms, target claims_full); seed s of an arm is the arm
# itself when its config trains with s, else the declared variant <arm>__s<s> (retrievegan.runs.claim_run).
from retrievegan.runs import (C1_COMPOSITE_ARMS, C1_LEARNED_ARMS, CLAIM_ARMS, FEATURE_ARMS, LONG_TRACE_ARM,
                              TRACE_ARMS, claim_run)

CLAIMS = config.get("claims", {})
C1_SEEDS = CLAIMS.get("c1_seeds", [0, 1, 2, 3, 4])


def claim_runs(seeds, arms=CLAIM_ARMS, trace_arms=(), c1_seeds=None):
    """{arm: [run per seed]} for the given arms of C1-C4 (+ each trace arm with its configured seed); C1's learned arms
    with ``c1_seeds`` when given."""
    runs = {arm: [claim_run(config, arm, seed) for seed in
                  (c1_seeds if c1_seeds is not None and arm in C1_LEARNED_ARMS.values() else seeds)] for arm in arms}
    runs.update({arm: [arm] for arm in trace_arms})
    return runs


# C1 trace arms of claims_full: generation losses only under soft retrieval (+ 4x the steps: long_training)
FULL_TRACE_ARMS = tuple(a for a in TRACE_ARMS if a != LONG_TRACE_ARM or CLAIMS.get("long_training", False))
# `claims` runs the arms of `claims.arms` (default: the runs the default target trains anyway); claims_full all of them
# (C1's learned arms, hard and relaxed, with `claims.c1_seeds`); claims_c1: C1's learned arms in the setting where the
# adversary can see compatibility (a composite discriminator), their runs in place of the arms' (C1 only).
CLAIM_RUNS = {"claims": claim_runs(CLAIMS.get("seeds", [0]), CLAIMS.get("arms", CLAIM_ARMS)),
              "claims_full": claim_runs(CLAIMS.get("full_seeds", [0, 1, 2]), CLAIM_ARMS, FULL_TRACE_ARMS + FEATURE_ARMS,
                                        C1_SEEDS),
              "claims_c1": {C1_LEARNED_ARMS[mode]: [claim_run(config, arm, seed) for seed in C1_SEEDS]
                            for mode, arm in C1_COMPOSITE_ARMS.items()}}
CLAIM_ONLY = {"claims_c1": ["C1", "C1-eq4"]}  # the claims a tag evaluates (default: all)
# the variant runs the claims train (the arms that are methods, with their configured seed, are the methods' runs)
CLAIM_VARIANT_RUNS = tuple(dict.fromkeys(run for runs in CLAIM_RUNS.values() for arm_runs in runs.values()
                                         for run in arm_runs if run in VARIANT_DECLARATIONS))
# Variants that get train / sample rules: the configured ones (trained by `rule all`), the claims' variant runs and
# the arms of the opt-in rarity experiment (workflow/rules/rarity.smk: `snakemake rarity_experiment`).
RULE_VARIANTS = tuple(dict.fromkeys(VARIANTS + CLAIM_VARIANT_RUNS + RARITY_RUNS))


def c1_learned_runs(tag):
    """The runs of C1's learned arms (hard and relaxed retrieval, and on last-stage features) in `tag`."""
    arms = list(C1_LEARNED_ARMS.values()) + ["retrievegan_no_gt_no_occur_pool_last"]
    return list(dict.fromkeys(r for arm in arms for r in CLAIM_RUNS[tag].get(arm, [])))


def probe_runs(tag):
    """The runs whose discriminators `tag` reports: the default run's patch methods (COMPAT_RUNS, metrics.smk) and
    C1's learned runs of the tag (claims_c1: those alone)."""
    return list(dict.fromkeys(([] if tag in CLAIM_ONLY else [m for m, _ in COMPAT_RUNS]) + c1_learned_runs(tag)))


def mechanism_runs(tag):
    """C1's mechanism check (opt-in: claims_full): one per run of C1's learned arm in hard mode (its E_p's init)."""
    return CLAIM_RUNS[tag].get(C1_LEARNED_ARMS["hard"], []) if tag == "claims_full" else []


def _claim_run_list(tag):
    return list(dict.fromkeys(run for runs in CLAIM_RUNS[tag].values() for run in runs))


def trace_runs(tag):
    """Runs whose snapshots get a compatibility trace: the first seed of the C1 arms and of the full model, and the
    trace arms."""
    arms = CLAIM_RUNS[tag]
    first = [arms[a][0] for a in ("retrievegan_no_gt_no_occur", "retrievegan_ep_frozen", "retrievegan",
                                  "retrievegan_no_gt_no_occur_relaxed") if a in arms]
    return list(dict.fromkeys(first + [r for a in TRACE_ARMS if a in arms for r in arms[a]]))


def run_config(name):
    """The config a run trains on: the workflow config with its overrides applied (retrievegan.runs.run_config)."""
    return runs.run_config(config, name)


def params_json(name):
    """`retrievegan train --params` of run `name` (retrievegan.runs.run_params), as canonical JSON."""
    return json.dumps(runs.run_params(config, name), sort_keys=True)


def train_json(name):
    """`retrievegan train --train-params` of run `name` (retrievegan.runs.train_params), as canonical JSON."""
    return json.dumps(runs.train_params(config, name), sort_keys=True)


def section_json(name, drop=(), cfg=None):
    """The config section `name` (of `cfg`, default the workflow config) as canonical JSON for a CLI
    `--params` option."""
    cfg = config if cfg is None else cfg
    return json.dumps({k: v for k, v in cfg[name].items() if k not in drop}, sort_keys=True)


# Rarity rebalancing (conditional IMLE supplement; config `rarity`, retrievegan.data.rarity): the scores file, and
# the extra input and options of a training job whose run config switches rarity.dataset or rarity.loss on
# (none otherwise, so the command of a default run is unchanged).
RARITY_SCORES = f"{DATA}/rarity/rarity.npz"


def rarity_on(name):
    """Whether the run config of method / variant `name` switches rarity rebalancing on."""
    section = run_config(name).get("rarity", {})
    return bool(section.get("dataset") or section.get("loss"))


def rarity_inputs(name):
    """{"rarity": rarity.npz} for a run with rarity rebalancing, else {} (a training rule's extra input)."""
    return {"rarity": RARITY_SCORES} if rarity_on(name) else {}


def rarity_options(name):
    """` --rarity-params JSON --rarity-scores rarity.npz` for a run with rarity rebalancing, else ""."""
    if not rarity_on(name):
        return ""
    import shlex

    params = section_json("rarity", drop=("in_report",), cfg=run_config(name))
    return f" --rarity-params {shlex.quote(params)} --rarity-scores {RARITY_SCORES}"


# Scheduling priorities (Snakemake `priority:`, highest first among the jobs that are ready and fit the free
# cores; no effect on any output). On 2 cores the run is paced by the chain train_sg2im -> gcn_features ->
# prefilter (+ the patch bank and its embeddings) -> the five patch methods' trainings: its jobs go first; the
# other baselines' single-thread trainings (layout2im, AttnGAN and its DAMSM) are long and independent and take a
# core that would otherwise idle; sampling, metrics and figures follow. (A two-thread job such as train_sg2im can
# still wait while single-thread trainings hold one core each: no core idles meanwhile.) Measured on a fresh
# clone: 128 -> 36 idle core-seconds, make reproduce 856 -> 780 s (README).
PRIORITY = {"critical": 100, "patch_training": 50, "filler_training": 10}


def cluster_resources(resource_class):
    """`resources: **cluster_resources("train")`: mem_mb, runtime, gpu (+ slurm_partition, slurm_account,
    gpu_model, slurm_extra) of one class of the `cluster` config section, as the SLURM executor plugin
    reads them (retrievegan.cluster). Classes: data, train, sample, metrics, report."""
    from retrievegan.cluster import slurm_resources

    return slurm_resources(config.get("cluster"), resource_class)


def gpu_launcher(resource_class):
    """Command prefix for a (multi-)GPU stage: `retrievegan` when the class has <= 1 GPU, else
    `torchrun --standalone --nnodes=1 --nproc_per_node=<gpus> -m retrievegan.cli`. Use it as a param
    (`params: launch=gpu_launcher("train")`, shell `"{params.launch} train ..."`): the GPU count is
    the DDP world size, which changes the effective batch, so changing it reruns training."""
    from retrievegan.cluster import launcher

    return launcher(config.get("cluster"), resource_class)


wildcard_constraints:
    source="coco_stuff|visual_genome",
    split="train|val|test",


def raw_inputs(wildcards):
    """The raw files a source's reader opens, as named in its config section."""
    section = config[wildcards.source]
    keys = {
        "coco_stuff": (
            "instances_train",
            "stuff_train",
            "image_dir_train",
            "instances_val",
            "stuff_val",
            "image_dir_val",
        ),
        "visual_genome": (
            "image_data",
            "objects",
            "relationships",
            "attributes",
            "splits",
            "object_aliases",
            "predicate_aliases",
            "image_dir",
        ),
    }[wildcards.source]
    return {key: section[key] for key in keys}
