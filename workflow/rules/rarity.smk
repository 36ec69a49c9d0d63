# Rarity rebalancing (conditional IMLE supplement, App. A/B; src/retrievegan/data/rarity.py, train/rebalance.py):
# the appearance-rarity scores of the training images (rule `rarity`, read by every training rule whose run config
# switches rarity.dataset or rarity.loss on), and the opt-in experiment (rule `rarity_experiment`): sg2im and
# RetrieveGAN without / with dataset + loss rebalancing, each arm trained with the seeds of
# retrievegan.runs.RARITY_SEEDS (variants `<arm>__s<seed>`, RARITY_RUNS: train / sample rules in train.smk,
# sample.smk, retrievegan.smk; metrics in metrics.smk), evaluated in report.ablation_setting like every variant.
#
# NOT in `rule all` (12 extra trainings, measured ~22-28 CPU-minutes, 32-55 min wall on 2 shared cores; beyond the budget):
#   snakemake --cores 2 rarity_experiment
# With `rarity.in_report: true` rule all runs it too and REPORT.md gets its section. The stored run is in docs/rarity/
# (docs/rarity.md; stored by `make reference-docs NAME=rarity`, which stamps the commit it was made at).
from retrievegan.runs import RARITY_RUNS, method_info

RARITY = config.get("rarity", {})
RARITY_DIR = f"{RES}/rarity"
RARITY_METRICS = [f"{METRICS}/{run}_{ABLATION_SETTING}.json" for run in RARITY_RUNS]
RARITY_COMPAT = [f"{METRICS}/compatibility/{run}_{ABLATION_SETTING}.json" for run in RARITY_RUNS
                 if method_info(run).retrieves_patches and EVAL.compatibility]
RARITY_EXPERIMENT = {
    "section": f"{RARITY_DIR}/rarity_section.md",
    "figure": f"{RARITY_DIR}/rarity_experiment.png",
}


rule rarity:
    conda:
        ENV
    input:
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/train.json",
        images=f"{MODEL_DATA}/train_images.npy",
    output:
        scores=RARITY_SCORES,
        categories=f"{DATA}/rarity/categories.csv",
        run=f"{DATA}/rarity/run.json",
    params:
        cfg=section_json("rarity", drop=("dataset", "loss", "in_report")) if "rarity" in config else "{}",  # the switches: not the scores
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        out_dir=lambda wildcards, output: os.path.dirname(output.scores),
    threads: 2
    resources:
        **cluster_resources("data"),
    log:
        f"{LOGS}/rarity.log",
    benchmark:
        f"{BENCH}/rarity.tsv"
    shell:
        "retrievegan rarity --no-progress --params {params.cfg:q} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule rarity_experiment:
    conda:
        ENV
    input:
        metrics=RARITY_METRICS,
        compatibility=RARITY_COMPAT,
    output:
        table=[f"{RARITY_DIR}/rarity_experiment.{ext}" for ext in ("csv", "md", "tex")],
        runs=f"{RARITY_DIR}/rarity_runs.csv",
        figure=RARITY_EXPERIMENT["figure"],
        section=RARITY_EXPERIMENT["section"],
    params:
        confidence=EVAL.confidence,
        out_dir=lambda wildcards, output: os.path.dirname(output.runs),
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/rarity_experiment.log",
    shell:
        "retrievegan rarity-experiment --no-progress --metrics {input.metrics} --compatibility {input.compatibility}"
        " --confidence {params.confidence} --out-dir {params.out_dir} > {log} 2>&1"
