# Evaluation: the embedded extractor (synthnet) -> real-image statistics (declared .npz files) ->
# FID / IS / DS of every sample folder, the real-data row, the compatibility score of retrieved patches.
# Which (method, setting) runs exist comes from config `evaluation` and retrievegan.runs
# (layout2im has no pred_bbox, AttnGAN no gt_bbox; the Table 2 ablations are evaluated in report.ablation_setting
# only), plus the configured `variants` in report.ablation_setting
# (VARIANT_RUNS, common.smk). Sample folders are read through their manifest.json, which `retrievegan sample`
# writes last. Runs trained with retrieval mode `relaxed` (eq. 4 as written) also get
# metrics/group_mass/<run>.json: how often the relaxation puts more than one unit of mass on a group.
from retrievegan.config import from_mapping
from retrievegan.runs import RUN_NAMES, evaluation_runs, method_info
from retrievegan.eval.metrics import EvaluationConfig

EVAL = from_mapping(EvaluationConfig, config.get("evaluation"), "evaluation")
METRICS = f"{RES}/metrics"
SAMPLES = f"{RES}/samples"
MODELS = f"{RES}/models"
# Table 1 / Table 2 methods x settings; the Table 2 ablations in report.ablation_setting only (Table 2's setting)
PAPER_RUNS = evaluation_runs(EVAL.methods, EVAL.settings, ABLATION_SETTING)
EVAL_RUNS = PAPER_RUNS + [r for r in VARIANT_RUNS if r not in PAPER_RUNS]
COMPAT_RUNS = [(m, s) for m, s in EVAL_RUNS if method_info(m).retrieves_patches] if EVAL.compatibility else []
USES_SYNTHNET = "synthnet" in (EVAL.feature_extractor, EVAL.ds_backbone)
SYNTHNET = f"{MODELS}/synthnet/synthnet.pt"
SYNTHNET_QUALITY = f"{METRICS}/synthnet_quality.json"
RUN_CONSTRAINTS = {"method": "|".join(RUN_NAMES), "setting": "pred_bbox|gt_bbox"}
# runs trained with eq. 4 as written (retrieval.mode: relaxed): their group masses
RELAXED_RUNS = [m for m in dict.fromkeys(m for m, _ in EVAL_RUNS)
                if method_info(m).section == "retrievegan" and run_config(m)["retrieval"]["mode"] == "relaxed"]
GROUP_MASS_FILES = [f"{METRICS}/group_mass/{m}.json" for m in RELAXED_RUNS]


# Declared real-image statistics of a split, named by the extractor that made them.
REFERENCE = f"{METRICS}/reference/{{split}}_{EVAL.feature_extractor}.npz"
SYNTHNET_INPUT = [SYNTHNET] if USES_SYNTHNET else []
SYNTHNET_ARG = f"--synthnet {SYNTHNET}" if USES_SYNTHNET else ""
METRIC_FILES = [f"{METRICS}/{m}_{s}.json" for m, s in EVAL_RUNS]
COMPAT_FILES = [f"{METRICS}/compatibility/{m}_{s}.json" for m, s in COMPAT_RUNS]


if USES_SYNTHNET:

    rule synthnet:
        conda:
            ENV
        input:
            vocab=f"{MODEL_DATA}/vocab.json",
            graphs=[f"{MODEL_DATA}/{split}.json" for split in ("train", "val")],
            images=[f"{MODEL_DATA}/{split}_images.npy" for split in ("train", "val")],
        output:
            model=SYNTHNET,
            quality=SYNTHNET_QUALITY,
            record=f"{MODELS}/synthnet/training.json",
            run=f"{MODELS}/synthnet/run.json",
        params:
            cfg=section_json("synthnet"),
            data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        threads: 2
        resources:
            **cluster_resources("metrics"),
        log:
            f"{LOGS}/synthnet.log",
        benchmark:
            f"{BENCH}/synthnet.tsv"
        shell:
            "retrievegan synthnet --no-progress --params {params.cfg:q} --data-dir {params.data_dir}"
            " --out {output.model} --quality {output.quality} --record {output.record} --threads {threads}"
            " > {log} 2>&1"


rule real_stats:
    conda:
        ENV
    input:
        synthnet=SYNTHNET_INPUT,
        images=f"{MODEL_DATA}/{{split}}_images.npy",
    output:
        REFERENCE,
    params:
        cfg=section_json("evaluation"),
        synthnet=SYNTHNET_ARG,
    # One thread: on the 2-core machine a second thread saved nothing measurable (4.0 s either way: mostly imports
    # and reading the images), and the free core runs the next job; the statistics are bit-identical.
    threads: 1
    resources:
        **cluster_resources("metrics"),
    log:
        f"{LOGS}/real_stats_{{split}}.log",
    benchmark:
        f"{BENCH}/real_stats_{{split}}.tsv"
    shell:
        "retrievegan real-stats --no-progress --params {params.cfg:q} --images {input.images}"
        " --split {wildcards.split} {params.synthnet} --out {output} --threads {threads} > {log} 2>&1"


rule real_metrics:
    conda:
        ENV
    input:
        synthnet=SYNTHNET_INPUT,
        test=REFERENCE.format(split=EVAL.split),
        other=REFERENCE.format(split=EVAL.real_reference_split),
    output:
        f"{METRICS}/real_data.json",
    params:
        cfg=section_json("evaluation"),
        synthnet=SYNTHNET_ARG,
    resources:
        **cluster_resources("metrics"),
    log:
        f"{LOGS}/real_metrics.log",
    shell:
        "retrievegan real-metrics --no-progress --params {params.cfg:q} --test-stats {input.test}"
        " --reference-stats {input.other} {params.synthnet} --out {output} > {log} 2>&1"


rule eval_metrics:
    conda:
        ENV
    input:
        synthnet=SYNTHNET_INPUT,
        manifest=f"{SAMPLES}/{{method}}/{{setting}}/manifest.json",
        graphs=f"{MODEL_DATA}/{EVAL.split}.json",
        reference=REFERENCE.format(split=EVAL.split),
    output:
        metrics=f"{METRICS}/{{method}}_{{setting}}.json",
        details=f"{METRICS}/details/{{method}}_{{setting}}.json",
    wildcard_constraints:
        **RUN_CONSTRAINTS,
    params:
        cfg=section_json("evaluation"),
        synthnet=SYNTHNET_ARG,
        run_dir=lambda wildcards, input: os.path.dirname(input.manifest),
    # One thread: on the 2-core machine a second thread saved 0.6 s of 6.0 (most of a job is imports and reading
    # the samples), and the free core runs the next job; the metrics are bit-identical.
    threads: 1
    resources:
        **cluster_resources("metrics"),
    log:
        f"{LOGS}/metrics_{{method}}_{{setting}}.log",
    benchmark:
        f"{BENCH}/metrics_{{method}}_{{setting}}.tsv"
    shell:
        "retrievegan metrics --no-progress --params {params.cfg:q} --run-dir {params.run_dir}"
        " --method {wildcards.method} --setting {wildcards.setting} --split-json {input.graphs}"
        " --reference-stats {input.reference} {params.synthnet} --out {output.metrics}"
        " --details {output.details} --threads {threads} > {log} 2>&1"


rule compatibility:
    conda:
        ENV
    input:
        manifest=f"{SAMPLES}/{{method}}/{{setting}}/manifest.json",  # written last: retrievals.json is there
        patches=f"{DATA}/patches/patches.csv",
        graphs=f"{MODEL_DATA}/{EVAL.split}.json",
        candidates=f"{FEATURES}/prefilter/candidates.npy",  # random-among-the-same-candidates baseline
    output:
        f"{METRICS}/compatibility/{{method}}_{{setting}}.json",
    wildcard_constraints:
        **RUN_CONSTRAINTS,
    params:
        cfg=section_json("evaluation"),
        retrievals=lambda wildcards, input: os.path.join(os.path.dirname(input.manifest), "retrievals.json"),
        k=config["retrieval"]["k"],  # the candidates RetrieveGAN retrieves among
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/compatibility_{{method}}_{{setting}}.log",
    shell:
        "retrievegan compatibility --no-progress --params {params.cfg:q} --retrievals {params.retrievals}"
        " --patches-csv {input.patches} --split-json {input.graphs} --method {wildcards.method}"
        " --setting {wildcards.setting} --candidates {input.candidates} --candidates-k {params.k}"
        " --out {output} > {log} 2>&1"


if COMPAT_FILES:

    rule compatibility_summary:
        conda:
            ENV
        input:
            COMPAT_FILES,
        output:
            f"{METRICS}/compatibility_summary.md",
        resources:
            **cluster_resources("report"),
        log:
            f"{LOGS}/compatibility_summary.log",
        shell:
            "retrievegan compat-summary --compatibility {input} --out {output} > {log} 2>&1"


if RELAXED_RUNS:

    rule group_mass:
        conda:
            ENV
        input:
            checkpoint=f"{MODELS}/{{method}}/checkpoint.pt",
            vocab=f"{MODEL_DATA}/vocab.json",
            graphs=f"{MODEL_DATA}/{config['sample']['split']}.json",
            table=f"{DATA}/patches/patches.csv",
            patches=f"{DATA}/patches/patches.npy",
            candidates=f"{FEATURES}/prefilter/candidates.npy",
            patch_features=lambda wildcards: patch_features_file(wildcards.method),
            cooccur_embeddings=f"{FEATURES}/cooccur_embeddings.npy",
        output:
            f"{METRICS}/group_mass/{{method}}.json",
        wildcard_constraints:
            method="|".join(RELAXED_RUNS),
        params:
            cfg=section_json("sample"),
            inputs=lambda wildcards, input: input_options(input),
            data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        threads: 1
        resources:
            **cluster_resources("metrics"),
        log:
            f"{LOGS}/group_mass_{{method}}.log",
        benchmark:
            f"{BENCH}/group_mass_{{method}}.tsv"
        shell:
            "retrievegan group-mass --no-progress --params {params.cfg:q} --checkpoint {input.checkpoint}"
            " --data-dir {params.data_dir} --patches {input.table} {params.inputs} --out {output}"
            " --threads {threads} > {log} 2>&1"


ALL_TARGETS += [f"{METRICS}/compatibility_summary.md"] if COMPAT_FILES else []
ALL_TARGETS += GROUP_MASS_FILES
