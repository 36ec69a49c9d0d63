# Report: the paper's tables (CSV + Markdown + LaTeX, paper values beside ours), figures (qualitative
# grids, compatibility bars, loss curves) and REPORT.md. Needs workflow/rules/metrics.smk first.
# EVAL_TARGETS lists the final outputs; `rule all` takes them once the methods produce samples.
from retrievegan.runs import config_value, factor_levels
from retrievegan.eval.report import REPORTED_CONFIG_KEYS
from retrievegan.eval.tables import ReportConfig

REPORT_CFG = from_mapping(ReportConfig, config.get("report"), "report")
# what the tables and REPORT.md state about the runs: Table 2 factor values per run, changed defaults
RUN_FACTORS = json.dumps(factor_levels(config, [m for m, _ in EVAL_RUNS]), sort_keys=True)
CONFIG_VALUES = json.dumps({key: config_value(config, key) for key in REPORTED_CONFIG_KEYS}, sort_keys=True)
VARIANT_ARGS = (f"--variants {' '.join(VARIANTS)} " if VARIANTS else "") + f"--variant-setting {ABLATION_SETTING}"
TABLES = f"{RES}/tables"
FIGURES = f"{RES}/figures"
TABLE_NAMES = ["table1", "table2", "dataset"] + (["compatibility"] if EVAL.compatibility else [])
TABLE_FILES = [f"{TABLES}/{name}.{ext}" for name in TABLE_NAMES for ext in ("csv", "md", "tex")]
QUALITATIVE_FIGURES = [f"{FIGURES}/qualitative/{m}_{s}.png" for m, s in PAPER_RUNS]
LOSS_FIGURES = [f"{FIGURES}/losses/{m}.png" for m in EVAL.methods]
COMPAT_FIGURES = [f"{FIGURES}/compatibility.png"] if COMPAT_FILES else []
FIGURE_FILES = QUALITATIVE_FIGURES + COMPAT_FIGURES + LOSS_FIGURES
REPORT_MD = f"{RES}/REPORT.md"
EVAL_TARGETS = [REPORT_MD]
# Further results shown in REPORT.md's "Other results" (title -> file).
REPORT_EXTRAS = {
    "sg2im training progress (step 0 to last)": f"{FIGURES}/sg2im_progress.png",
    "sg2im box L1 on val vs mean-box baselines": f"{METRICS}/sg2im_box_l1.json",
    "Co-occurrence embedding: same-image recall@k on val": f"{RES}/metrics/cooccur_recall.json",
}
if COMPAT_FILES:
    REPORT_EXTRAS["Compatibility vs random choice among the same candidates"] = f"{METRICS}/compatibility_summary.md"
if STUDY_SIMULATE:
    REPORT_EXTRAS["User study, SIMULATED participants (not people)"] = STUDY_REPORT["simulated"]["figure"]
    REPORT_EXTRAS["User study, SIMULATED participants: aggregates"] = STUDY_REPORT["simulated"]["summary"]
if RARITY.get("in_report"):  # opt-in (rarity.smk): the rarity experiment trains 12 more runs
    REPORT_EXTRAS["Rarity rebalancing (conditional IMLE supplement)"] = RARITY_EXPERIMENT["section"]
    REPORT_EXTRAS["Rarity rebalancing: figure"] = RARITY_EXPERIMENT["figure"]
if config.get("estimate", {}).get("in_report"):  # opt-in: the estimate takes ~10 min on 2 cores
    REPORT_EXTRAS["Paper-scale compute estimate (projection)"] = f"{RES}/estimate/paper_estimate.md"
DVC_METRICS = METRIC_FILES + [f"{METRICS}/real_data.json"] + COMPAT_FILES + GROUP_MASS_FILES + (
    [SYNTHNET_QUALITY] if USES_SYNTHNET else []
)


rule tables:
    conda:
        ENV
    input:
        metrics=METRIC_FILES,
        real=f"{METRICS}/real_data.json",
        compatibility=COMPAT_FILES,
        dataset_table=f"{DATA}/dataset_table.csv",
        paper_tables=REPORT_CFG.paper_tables,
        paper_dataset_stats=REPORT_CFG.paper_dataset_stats,
    output:
        TABLE_FILES,
    params:
        cfg=section_json("report"),
        eval_cfg=section_json("evaluation"),
        dataset=DATASET,
        variants=VARIANT_ARGS,
        factors=RUN_FACTORS,
        config_values=CONFIG_VALUES,
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/tables.log",
    shell:
        "retrievegan tables --no-progress --params {params.cfg:q} --eval-params {params.eval_cfg:q}"
        " --dataset {params.dataset} --metrics {input.metrics} --real {input.real}"
        " --compatibility {input.compatibility} {params.variants} --factors {params.factors:q}"
        " --config-values {params.config_values:q} --dataset-table {input.dataset_table}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule figure_qualitative:
    conda:
        ENV
    input:
        manifest=f"{SAMPLES}/{{method}}/{{setting}}/manifest.json",
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/{EVAL.split}.json",
        images=[f"{MODEL_DATA}/{split}_images.npy" for split in SPLITS],
        patches=[f"{DATA}/patches/patches.csv", f"{DATA}/patches/patches.npy"],
    output:
        f"{FIGURES}/qualitative/{{method}}_{{setting}}.png",
    wildcard_constraints:
        **RUN_CONSTRAINTS,
    params:
        cfg=section_json("report"),
        run_dir=lambda wildcards, input: os.path.dirname(input.manifest),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        patches_dir=lambda wildcards, input: os.path.dirname(input.patches[0]),
        split=EVAL.split,
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/figure_qualitative_{{method}}_{{setting}}.log",
    shell:
        "retrievegan figure-qualitative --no-progress --params {params.cfg:q} --run-dir {params.run_dir}"
        " --method {wildcards.method} --setting {wildcards.setting} --data-dir {params.data_dir}"
        " --split {params.split} --patches-dir {params.patches_dir} --out {output} > {log} 2>&1"


rule figure_compatibility:
    conda:
        ENV
    input:
        COMPAT_FILES,
    output:
        f"{FIGURES}/compatibility.png",
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/figure_compatibility.log",
    shell:
        "retrievegan figure-compatibility --no-progress --compatibility {input} --out {output} > {log} 2>&1"


rule figure_losses:
    conda:
        ENV
    input:
        f"{MODELS}/{{method}}/losses.jsonl",
    output:
        f"{FIGURES}/losses/{{method}}.png",
    wildcard_constraints:
        method=RUN_CONSTRAINTS["method"],
    params:
        cfg=section_json("report"),
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/figure_losses_{{method}}.log",
    shell:
        "retrievegan figure-losses --no-progress --params {params.cfg:q} --losses {input}"
        " --method {wildcards.method} --out {output} > {log} 2>&1"


rule report_md:
    conda:
        ENV
    input:
        tables=TABLE_FILES,
        figures=FIGURE_FILES,
        metrics=METRIC_FILES,
        real=f"{METRICS}/real_data.json",
        compatibility=COMPAT_FILES,
        group_mass=GROUP_MASS_FILES,
        quality=[SYNTHNET_QUALITY] if USES_SYNTHNET else [],
        extras=list(REPORT_EXTRAS.values()),
        claims=CLAIMS_MD,
    output:
        REPORT_MD,
    params:
        cfg=section_json("report"),
        eval_cfg=section_json("evaluation"),
        dataset=DATASET,
        variants=VARIANT_ARGS,
        factors=RUN_FACTORS,
        config_values=CONFIG_VALUES,
        quality=f"--synthnet-quality {SYNTHNET_QUALITY}" if USES_SYNTHNET else "",
        extras=[f"{title}={path}" for title, path in REPORT_EXTRAS.items()],
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/report.log",
    shell:
        "retrievegan report --no-progress --params {params.cfg:q} --eval-params {params.eval_cfg:q}"
        " --dataset {params.dataset} --metrics {input.metrics} --real {input.real}"
        " --compatibility {input.compatibility} {params.variants} --factors {params.factors:q}"
        " --config-values {params.config_values:q} --group-mass {input.group_mass}"
        " --tables {input.tables} --figures {input.figures}"
        " {params.quality} --extra {params.extras:q} --claims {input.claims} --out {output} > {log} 2>&1"


ALL_TARGETS += EVAL_TARGETS
