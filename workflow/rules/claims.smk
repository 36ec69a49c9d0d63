# The paper's claims C1-C6, each tested (src/retrievegan/eval/claims.py; docs/evaluation.md "Claims"):
# `claims` (in rule all: the arms of C1-C4 with the training seeds of `claims.seeds`, one by default) writes
# results/<ds>/claims.{csv,md} + claims_comparisons.csv, and REPORT.md opens with claims.md; `claims_full` (opt-in:
# `snakemake --cores 2 claims_full`) does the same with `claims.full_seeds` (>= 3) and the C1 trace arms ->
# claims_full.{csv,md} + claims_full_comparisons.csv. The arms' runs come from common.smk (CLAIM_RUNS); their
# train / sample rules from retrievegan.smk (CLAIM_VARIANT_RUNS), metrics and compatibility from metrics.smk.
# compat_trace: the compatibility of every generator snapshot's retrievals on `claims.trace_split` (val).
from retrievegan.eval.claims import TABLE1_ARMS
from retrievegan.eval.methods import method_info

TRACE_SPLIT = CLAIMS.get("trace_split", "val")
CLAIM_OUTPUTS = {tag: {"csv": f"{RES}/{tag}.csv", "md": f"{RES}/{tag}.md", "comparisons": f"{RES}/{tag}_comparisons.csv"}
                 for tag in CLAIM_RUNS}
CLAIMS_MD = CLAIM_OUTPUTS["claims"]["md"]
C5_FILES = [f"{METRICS}/{m}_{s}.json" for m, s in (("retrievegan", "pred_bbox"), ("sg2im", "pred_bbox"),
                                                    ("retrievegan", "gt_bbox"), ("layout2im", "gt_bbox"))]


TRACE_RUNS = list(dict.fromkeys(r for tag in CLAIM_RUNS for r in trace_runs(tag)))


rule compat_trace:
    conda:
        ENV
    input:
        checkpoint=f"{MODELS}/{{method}}/checkpoint.pt",
        snapshots=f"{MODELS}/{{method}}/snapshots",
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/{TRACE_SPLIT}.json",
        images=f"{MODEL_DATA}/{TRACE_SPLIT}_images.npy",
        table=f"{DATA}/patches/patches.csv",
        patches=f"{DATA}/patches/patches.npy",
        candidates=f"{FEATURES}/prefilter/candidates.npy",
        patch_features=lambda wildcards: patch_features_file(wildcards.method),
        cooccur_embeddings=f"{FEATURES}/cooccur_embeddings.npy",
    output:
        f"{METRICS}/compat_trace/{{method}}.json",
    wildcard_constraints:
        method="|".join(TRACE_RUNS),
    params:
        cfg=section_json("sample"),
        eval_cfg=section_json("evaluation"),
        split=TRACE_SPLIT,
        inputs=lambda wildcards, input: input_options(input),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
    threads: 1
    resources:
        **cluster_resources("metrics"),
    log:
        f"{LOGS}/compat_trace_{{method}}.log",
    benchmark:
        f"{BENCH}/compat_trace_{{method}}.tsv"
    shell:
        "retrievegan compat-trace --no-progress --params {params.cfg:q} --eval-params {params.eval_cfg:q}"
        " --checkpoint {input.checkpoint} --snapshots {input.snapshots} --data-dir {params.data_dir}"
        " --split {params.split} --patches {input.table} {params.inputs} --out {output} --threads {threads}"
        " > {log} 2>&1"


# rules: claims, claims_full
for _tag in CLAIM_RUNS:
    _runs = _claim_run_list(_tag)

    rule:
        name:
            _tag
        conda:
            ENV
        input:
            metrics=[f"{METRICS}/{r}_{ABLATION_SETTING}.json" for r in _runs]
            + [f for f in C5_FILES if f not in {f"{METRICS}/{r}_{ABLATION_SETTING}.json" for r in _runs}],
            compatibility=[f"{METRICS}/compatibility/{r}_{ABLATION_SETTING}.json" for r in _runs
                           if method_info(r).retrieves_patches],
            runs=[f"{MODELS}/{r}/run.json" for r in dict.fromkeys(_runs + ["retrievegan", "sg2im", "layout2im"])],
            losses=[f"{MODELS}/{r}/losses.jsonl" for r in _runs if method_info(r).section == "retrievegan"],
            traces=[f"{METRICS}/compat_trace/{r}.json" for r in trace_runs(_tag)],
            study=[STUDY_REPORT["simulated"]["aggregates"]] if STUDY_SIMULATE else [],
        output:
            **CLAIM_OUTPUTS[_tag],
        params:
            cfg=section_json("claims") if "claims" in config else "{}",
            seeds=" ".join(map(str, CLAIMS.get("seeds" if _tag == "claims" else "full_seeds",
                                               [0] if _tag == "claims" else [0, 1, 2]))),
            arms=json.dumps({**CLAIM_RUNS[_tag], **TABLE1_ARMS}, sort_keys=True),
            modes=json.dumps({a: run_config(a)["retrieval"]["mode"] for a in CLAIM_RUNS[_tag]
                              if method_info(a).section == "retrievegan"}, sort_keys=True),
            study=lambda wildcards, input: f"--study {input.study}" if input.study else "",
            title="Claims" if _tag == "claims" else "Claims, full version (>= 3 training seeds per arm)",
        resources:
            **cluster_resources("report"),
        log:
            f"{LOGS}/{_tag}.log",
        shell:
            "retrievegan claims --no-progress --params {params.cfg:q} --seeds {params.seeds} --arms {params.arms:q}"
            " --metrics {input.metrics} --compatibility {input.compatibility} --run-json {input.runs}"
            " --losses {input.losses} --compat-trace {input.traces} --trace-modes {params.modes:q} {params.study}"
            " --title {params.title:q} --out-csv {output.csv} --out-md {output.md}"
            " --out-comparisons {output.comparisons} > {log} 2>&1"


ALL_TARGETS += list(CLAIM_OUTPUTS["claims"].values())
