# Paper-scale compute estimate (src/retrievegan/estimate/): for every training run of the paper's Tables 1
# and 2 under the paper configs (config `estimate.paper_configs`, each layered on config/config.yaml as
# --configfile does), the FLOPs of one training step at the paper batch, a few timed CPU steps, the schedules'
# step counts and the projected GPU-hours of a reference GPU -> <results>/<dataset>/estimate/.
#
# NOT in `rule all`: it runs the paper-size networks for real on the CPU (~10 minutes on 2 cores), far above the
# budget of the default `make reproduce`. Run it explicitly: `snakemake --cores 2 paper_estimate`. With
# `estimate.device: cuda` it times real training steps on a GPU per precision mode (fp32 / tf32 / bf16, ...).
# Two threads: the timed steps measure this machine (the stage records threads and load average).

ESTIMATE = config.get("estimate", {})
ESTIMATE_DIR = f"{RES}/estimate"


rule paper_estimate:
    conda:
        ENV
    input:
        base="config/config.yaml",
        paper_configs=ESTIMATE.get("paper_configs", ["config/paper-coco.yaml", "config/paper-vg.yaml"]),
        dataset_stats=REPORT_CFG.paper_dataset_stats,  # report.smk
    output:
        json=f"{ESTIMATE_DIR}/paper_estimate.json",
        md=f"{ESTIMATE_DIR}/paper_estimate.md",
        run=f"{ESTIMATE_DIR}/run.json",
    params:
        cfg=json.dumps({k: v for k, v in ESTIMATE.items() if k not in ("paper_configs", "in_report")}, sort_keys=True),
        papers=lambda wildcards, input: " ".join(f"--paper-config {p}" for p in input.paper_configs),
        out_dir=lambda wildcards, output: os.path.dirname(output.json),
    threads: 2
    resources:
        # estimate.device cpu: no GPU (it measures the CPU), ~8.5 GB peak (FLOP count of PasteGAN's step at batch
        # 16); cuda: the training class's GPU (it times real steps there)
        **(cluster_resources("train") if ESTIMATE.get("device") == "cuda" else
           {**cluster_resources("data"), "mem_mb": max(cluster_resources("data")["mem_mb"], 12000)}),
    log:
        f"{LOGS}/paper_estimate.log",
    benchmark:
        f"{BENCH}/paper_estimate.tsv"
    shell:
        "retrievegan paper-estimate --params {params.cfg:q} --base-config {input.base} {params.papers}"
        " --dataset-stats {input.dataset_stats} --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
