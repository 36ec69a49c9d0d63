# Embedding stage: frozen patch features (E_p's input), the co-occurrence embedding F_occur, and the
# GCN pre-filtering of candidate patches (retrievegan.embed; docs/architecture.md "Retrieval").
# One thread each: these networks are tiny, and on a shared 2-core machine two OpenMP threads are
# up to 10x slower than one (spin-waiting); with --cores 2 independent jobs run side by side instead.
# At paper scale they run on the GPU (device: auto).

FEATURES = f"{RES}/features"
PATCH_BANK = f"{DATA}/patches"


# The bank, plus the backbone's weights: the workflow's category CNN or a configured ResNet file
# (resnet_weights: null -> the torch hub cache, outside the workflow).
PATCH_FEATURE_INPUTS = {"bank": f"{PATCH_BANK}/patches.npy", "table": f"{PATCH_BANK}/patches.csv"}
if config["features"]["backbone"] == "category_cnn":
    PATCH_FEATURE_INPUTS["category_cnn"] = f"{RES}/models/category_cnn/checkpoint.pt"
elif config["features"].get("resnet_weights"):
    PATCH_FEATURE_INPUTS["resnet_weights"] = config["features"]["resnet_weights"]


rule category_cnn:
    conda:
        ENV
    input:
        bank=f"{PATCH_BANK}/patches.npy",
        table=f"{PATCH_BANK}/patches.csv",
    output:
        checkpoint=f"{RES}/models/category_cnn/checkpoint.pt",
        run=f"{RES}/models/category_cnn/run.json",
    params:
        cfg=section_json("features"),
        patches_dir=lambda wildcards, input: os.path.dirname(input.bank),
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
    priority: PRIORITY["critical"]
    threads: 1
    resources:
        **cluster_resources("train"),
    log:
        f"{LOGS}/category_cnn.log",
    benchmark:
        f"{BENCH}/category_cnn.tsv"
    shell:
        "retrievegan category-cnn --no-progress --params {params.cfg:q} --threads {threads}"
        " --patches-dir {params.patches_dir} --out-dir {params.out_dir} > {log} 2>&1"


rule patch_features:
    conda:
        ENV
    input:
        **PATCH_FEATURE_INPUTS,
    output:
        features=f"{FEATURES}/patch_features.npy",
        run=f"{FEATURES}/patch_features.run.json",
    params:
        cfg=section_json("features"),
        patches_dir=lambda wildcards, input: os.path.dirname(input.bank),
        out_dir=lambda wildcards, output: os.path.dirname(output.features),
        backbone=lambda wildcards, input: (
            f"--category-cnn {input.category_cnn}" if "category_cnn" in input.keys() else ""
        ),
    priority: PRIORITY["critical"]
    threads: 1
    resources:
        **cluster_resources("train"),
    log:
        f"{LOGS}/patch_features.log",
    benchmark:
        f"{BENCH}/patch_features.tsv"
    shell:
        "retrievegan patch-features --no-progress --params {params.cfg:q} --threads {threads}"
        " --patches-dir {params.patches_dir} --out-dir {params.out_dir} {params.backbone} > {log} 2>&1"


# A variant with rules (configured, or a claims arm) that overrides extraction keys of `features` (e.g.
# features.pooling; retrievegan.runs VARIANT_FEATURE_KEYS) gets its own patch features from the same backbone
# (rule patch_features_variant).
FEATURE_VARIANTS = [v for v in RULE_VARIANTS if VARIANT_DECLARATIONS[v].overrides_section("features")]

if FEATURE_VARIANTS:

    rule patch_features_variant:
        conda:
            ENV
        input:
            **PATCH_FEATURE_INPUTS,
        output:
            features=f"{FEATURES}/variants/{{variant}}/patch_features.npy",
            run=f"{FEATURES}/variants/{{variant}}/patch_features.run.json",
        wildcard_constraints:
            variant="|".join(FEATURE_VARIANTS),
        params:
            cfg=lambda wildcards: section_json("features", cfg=run_config(wildcards.variant)),
            patches_dir=lambda wildcards, input: os.path.dirname(input.bank),
            out_dir=lambda wildcards, output: os.path.dirname(output.features),
            backbone=lambda wildcards, input: (
                f"--category-cnn {input.category_cnn}" if "category_cnn" in input.keys() else ""
            ),
        threads: 1
        resources:
            **cluster_resources("train"),
        log:
            f"{LOGS}/patch_features_{{variant}}.log",
        benchmark:
            f"{BENCH}/patch_features_{{variant}}.tsv"
        shell:
            "retrievegan patch-features --no-progress --params {params.cfg:q} --threads {threads}"
            " --patches-dir {params.patches_dir} --out-dir {params.out_dir} {params.backbone} > {log} 2>&1"


rule cooccur:
    conda:
        ENV
    input:
        bank=f"{PATCH_BANK}/patches.npy",
        table=f"{PATCH_BANK}/patches.csv",
    output:
        checkpoint=f"{RES}/models/cooccur/checkpoint.pt",
        run=f"{RES}/models/cooccur/run.json",
        embeddings=f"{FEATURES}/cooccur_embeddings.npy",
        metrics=f"{RES}/metrics/cooccur_recall.json",
    params:
        cfg=section_json("cooccur"),
        patches_dir=lambda wildcards, input: os.path.dirname(input.bank),
        model_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
    priority: PRIORITY["critical"]
    threads: 1
    resources:
        **cluster_resources("train"),
    log:
        f"{LOGS}/cooccur.log",
    benchmark:
        f"{BENCH}/cooccur.tsv"
    shell:
        "retrievegan cooccur --no-progress --params {params.cfg:q} --threads {threads}"
        " --patches-dir {params.patches_dir} --model-dir {params.model_dir}"
        " --embeddings {output.embeddings} --metrics {output.metrics} > {log} 2>&1"


rule prefilter:
    conda:
        ENV
    input:
        features=f"{FEATURES}/gcn_features.npy",  # `retrievegan gcn-features` of the trained sg2im
        table=f"{PATCH_BANK}/patches.csv",
    output:
        candidates=f"{FEATURES}/prefilter/candidates.npy",
        distances=f"{FEATURES}/prefilter/distances.npy",
        run=f"{FEATURES}/prefilter/run.json",
    params:
        cfg=section_json("prefilter"),
        out_dir=lambda wildcards, output: os.path.dirname(output.candidates),
    priority: PRIORITY["critical"]
    threads: 1
    resources:
        **cluster_resources("train"),
    log:
        f"{LOGS}/prefilter.log",
    benchmark:
        f"{BENCH}/prefilter.tsv"
    shell:
        "retrievegan prefilter --no-progress --params {params.cfg:q} --threads {threads}"
        " --features {input.features} --patches-csv {input.table} --out-dir {params.out_dir} > {log} 2>&1"


ALL_TARGETS += [
    f"{FEATURES}/patch_features.npy",
    f"{FEATURES}/cooccur_embeddings.npy",
    f"{RES}/metrics/cooccur_recall.json",
    f"{FEATURES}/prefilter/candidates.npy",
]
