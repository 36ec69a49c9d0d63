# Training stage: one `retrievegan train` call per method (the shared loop, src/retrievegan/train/),
# plus what a trained sg2im provides: GCN features for RetrieveGAN's pre-filtering, its box L1 against
# mean-box baselines, and a progress figure from its generator snapshots.
#
# A method's rule: inputs = the canonical training data (+ patches.csv / extra files the method needs),
# params = its config section and the common `train` section as JSON; output = its run folder. The rule
# always passes --resume: a job killed mid-run continues from results/<ds>/models/<method>/state/<hash>/
# (kept outside the declared outputs, so Snakemake's clean-up of the failed job leaves it alone; the hash
# covers everything that changes the computation, so a changed config starts afresh).
# Rarity rebalancing (config `rarity`): a run whose config switches it on also reads the rarity scores
# (rarity.smk) and passes --rarity-params / --rarity-scores (rarity_options, common.smk); otherwise its command is
# unchanged. sg2im's variants (retrievegan.runs.VARIANTS: the rarity experiment's arms) reuse this rule.

MODELS = f"{RES}/models"
FEATURES = f"{RES}/features"
METRICS = f"{RES}/metrics"
FIGURES = f"{RES}/figures"


rule train_sg2im:
    conda:
        ENV
    input:
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/train.json",
        images=f"{MODEL_DATA}/train_images.npy",
        **rarity_inputs("sg2im"),
    output:
        checkpoint=f"{MODELS}/sg2im/checkpoint.pt",
        run=f"{MODELS}/sg2im/run.json",
        losses=f"{MODELS}/sg2im/losses.jsonl",
        snapshots=directory(f"{MODELS}/sg2im/snapshots"),
    params:
        launch=gpu_launcher("train"),
        method="sg2im",
        cfg=params_json("sg2im"),
        train=train_json("sg2im"),
        rarity=rarity_options("sg2im"),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
    priority: PRIORITY["critical"]
    threads: 2
    resources:
        **cluster_resources("train"),
    log:
        f"{LOGS}/train_sg2im.log",
    benchmark:
        f"{BENCH}/train_sg2im.tsv"
    shell:
        "{params.launch} train --method {params.method} --params {params.cfg:q} --train-params {params.train:q}"
        " --data-dir {params.data_dir}{params.rarity} --out-dir {params.out_dir} --resume --threads {threads}"
        " > {log} 2>&1"


SG2IM_VARIANTS = tuple(v for v in RULE_VARIANTS if VARIANT_DECLARATIONS[v].base == "sg2im")

if SG2IM_VARIANTS:

    use rule train_sg2im as train_sg2im_variant with:
        input:
            vocab=f"{MODEL_DATA}/vocab.json",
            graphs=f"{MODEL_DATA}/train.json",
            images=f"{MODEL_DATA}/train_images.npy",
            rarity=lambda wildcards: list(rarity_inputs(wildcards.variant).values()),
        output:
            checkpoint=f"{MODELS}/{{variant}}/checkpoint.pt",
            run=f"{MODELS}/{{variant}}/run.json",
            losses=f"{MODELS}/{{variant}}/losses.jsonl",
            snapshots=directory(f"{MODELS}/{{variant}}/snapshots"),
        wildcard_constraints:
            variant="|".join(SG2IM_VARIANTS),
        params:
            launch=gpu_launcher("train"),
            method=lambda wildcards: wildcards.variant,
            cfg=lambda wildcards: params_json(wildcards.variant),
            train=lambda wildcards: train_json(wildcards.variant),
            rarity=lambda wildcards: rarity_options(wildcards.variant),
            data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
            out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
        log:
            f"{LOGS}/train_{{variant}}.log",
        benchmark:
            f"{BENCH}/train_{{variant}}.tsv"


rule gcn_features:
    conda:
        ENV
    input:
        checkpoint=f"{MODELS}/sg2im/checkpoint.pt",
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=[f"{MODEL_DATA}/{split}.json" for split in SPLITS],
        table=f"{DATA}/patches/patches.csv",
    output:
        features=f"{FEATURES}/gcn_features.npy",
        run=f"{FEATURES}/gcn_features.run.json",
    params:
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
    priority: PRIORITY["critical"]
    threads: 2
    resources:
        **cluster_resources("sample"),
    log:
        f"{LOGS}/gcn_features.log",
    shell:
        "retrievegan gcn-features --no-progress --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --patches {input.table} --out {output.features} --threads {threads} > {log} 2>&1"


rule box_l1_sg2im:
    conda:
        ENV
    input:
        checkpoint=f"{MODELS}/sg2im/checkpoint.pt",
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=[f"{MODEL_DATA}/{split}.json" for split in ("train", "val")],
    output:
        f"{METRICS}/sg2im_box_l1.json",
    params:
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
    threads: 1  # a 4 s job, mostly imports: one thread, the same result
    resources:
        **cluster_resources("metrics"),
    log:
        f"{LOGS}/box_l1_sg2im.log",
    shell:
        "retrievegan box-l1 --checkpoint {input.checkpoint} --data-dir {params.data_dir} --split val"
        " --out {output} --threads {threads} > {log} 2>&1"


rule progress_figure_sg2im:
    conda:
        ENV
    input:
        checkpoint=f"{MODELS}/sg2im/checkpoint.pt",
        snapshots=f"{MODELS}/sg2im/snapshots",
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/val.json",
    output:
        f"{FIGURES}/sg2im_progress.png",
    params:
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
    threads: 2
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/progress_figure_sg2im.log",
    shell:
        "retrievegan progress-figure --checkpoint {input.checkpoint} --snapshots {input.snapshots}"
        " --data-dir {params.data_dir} --split val --out {output} --threads {threads} > {log} 2>&1"


ALL_TARGETS += [
    f"{MODELS}/sg2im/checkpoint.pt",
    f"{FEATURES}/gcn_features.npy",
    f"{METRICS}/sg2im_box_l1.json",
    f"{FIGURES}/sg2im_progress.png",
]
