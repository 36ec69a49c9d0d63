# RetrieveGAN (+ its three Table 2 ablations), the PasteGAN baseline and the configured variants of them:
# `train_<run>` and `sample_<run>` rules, one per run (src/retrievegan/models/{retrievegan,patch_method}.py,
# models/baselines/pastegan.py; docs/architecture.md "RetrieveGAN and PasteGAN", "Variants").
#
# Inputs: the canonical training data, the patch bank (patches.csv for each object's patch id,
# patches.npy for the pixels), the pre-filter's candidates and, for RetrieveGAN, the frozen patch
# features (E_p's input) and the co-occurrence embeddings (L_occur), all passed as --input NAME=PATH.
# The four RetrieveGAN runs share the `retrievegan` section (+ the top-level `retrieval` section); the ablations'
# loss switches are overrides in the run catalogue (retrievegan.runs.run_params builds every run's --params).
# A variant (config `variants`, declared in retrievegan.runs.VARIANTS) runs its base method on
# run_config(<variant>) (the config with its overrides); a `features` override gives it its own patch
# features (embed.smk, rule patch_features_variant). Variants are sampled in report.ablation_setting only.
# One thread per job: with --cores 2 two of these run side by side (see embed.smk on OpenMP threads).
from snakemake.exceptions import WorkflowError

from retrievegan.runs import METHODS, method_info

# the patch methods of the catalogue: RetrieveGAN and its Table 2 ablations (the runs reading `retrievegan`), PasteGAN
RETRIEVEGAN_RUNS = tuple(name for name, info in METHODS.items() if info.section == "retrievegan")
PATCH_BASES = RETRIEVEGAN_RUNS + ("pastegan",)
# configured variants (Table 2) + the claims' variant runs + the rarity experiment's arms (common.smk RULE_VARIANTS)
PATCH_VARIANTS = tuple(v for v in RULE_VARIANTS if VARIANT_DECLARATIONS[v].base in PATCH_BASES)
PATCH_METHODS = PATCH_BASES + PATCH_VARIANTS
_UNSUPPORTED = [v for v in VARIANTS if v not in PATCH_VARIANTS + SG2IM_VARIANTS]
if _UNSUPPORTED:  # only the patch methods' rules (below) and sg2im's (train.smk) train variants so far
    raise WorkflowError(f"config variants {_UNSUPPORTED}: their base methods have no variant rules (supported: "
                        f"variants of sg2im, {', '.join(PATCH_BASES)}; add them to the base's rule file)")


def patch_method_section(method):
    """The config section a patch method reads (the ablations and RetrieveGAN variants read `retrievegan`)."""
    return method_info(method).section


def patch_features_file(method):
    """E_p's input: the shared patch features, or a variant's own when it overrides `features`."""
    if method in VARIANT_DECLARATIONS and VARIANT_DECLARATIONS[method].overrides_section("features"):
        return f"{FEATURES}/variants/{method}/patch_features.npy"
    return f"{FEATURES}/patch_features.npy"


def patch_method_inputs(method):
    """The files a patch method reads besides the canonical data (name -> path); the names are the
    method's `--input` names (plus `table`, passed as --patches)."""
    files = {
        "table": f"{DATA}/patches/patches.csv",
        "patches": f"{DATA}/patches/patches.npy",
        "candidates": f"{FEATURES}/prefilter/candidates.npy",
    }
    if patch_method_section(method) == "retrievegan":
        files["patch_features"] = patch_features_file(method)
        files["cooccur_embeddings"] = f"{FEATURES}/cooccur_embeddings.npy"
    return files


def input_options(input):
    """`--input NAME=PATH` for every named input except the canonical data, the patch table and the rarity
    scores (`--rarity-scores`)."""
    skip = {"vocab", "graphs", "images", "table", "checkpoint", "rarity"}
    return " ".join(f"--input {name}={path}" for name, path in input.items() if name not in skip)


for _method in PATCH_METHODS:

    rule:
        name:
            f"train_{_method}"
        conda:
            ENV
        input:
            vocab=f"{MODEL_DATA}/vocab.json",
            graphs=f"{MODEL_DATA}/train.json",
            images=f"{MODEL_DATA}/train_images.npy",
            **patch_method_inputs(_method),
            **rarity_inputs(_method),
        output:
            checkpoint=f"{RES}/models/{_method}/checkpoint.pt",
            run=f"{RES}/models/{_method}/run.json",
            losses=f"{RES}/models/{_method}/losses.jsonl",
            snapshots=directory(f"{RES}/models/{_method}/snapshots"),
        params:
            launch=gpu_launcher("train"),
            method=_method,
            cfg=params_json(_method),
            train=train_json(_method),
            rarity=rarity_options(_method),
            inputs=lambda wildcards, input: input_options(input),
            data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
            out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
        priority: PRIORITY["patch_training"]
        threads: 1
        resources:
            **cluster_resources("train"),
        log:
            f"{LOGS}/train_{_method}.log",
        benchmark:
            f"{BENCH}/train_{_method}.tsv"
        shell:
            "{params.launch} train --no-progress --method {params.method} --params {params.cfg:q}"
            " --train-params {params.train:q} --data-dir {params.data_dir} --patches {input.table} {params.inputs}"
            "{params.rarity} --out-dir {params.out_dir} --resume --threads {threads} > {log} 2>&1"

    rule:
        name:
            f"sample_{_method}"
        conda:
            ENV
        input:
            checkpoint=f"{RES}/models/{_method}/checkpoint.pt",
            vocab=f"{MODEL_DATA}/vocab.json",
            graphs=f"{MODEL_DATA}/{config['sample']['split']}.json",
            images=f"{MODEL_DATA}/{config['sample']['split']}_images.npy",
            **patch_method_inputs(_method),
        output:
            manifest=f"{SAMPLES}/{_method}/{{setting}}/manifest.json",
        wildcard_constraints:
            setting=ABLATION_SETTING if _method in VARIANT_DECLARATIONS else "pred_bbox|gt_bbox",
        params:
            cfg=section_json("sample"),
            inputs=lambda wildcards, input: input_options(input),
            data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
            out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
        threads: 1
        resources:
            **cluster_resources("sample"),
        log:
            f"{LOGS}/sample_{_method}_{{setting}}.log",
        benchmark:
            f"{BENCH}/sample_{_method}_{{setting}}.tsv"
        shell:
            "retrievegan sample --no-progress --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
            " --patches {input.table} {params.inputs} --setting {wildcards.setting} --params {params.cfg:q}"
            " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
