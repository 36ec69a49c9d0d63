# The paper's claims C1-C6, each tested (src/retrievegan/eval/claims.py; docs/evaluation.md "Claims"):
# `claims` (in rule all: the arms of C1-C4 with the training seeds of `claims.seeds`, one by default) writes
# results/<ds>/claims.{csv,md} + claims_comparisons.csv, and REPORT.md opens with claims.md; `claims_full` (opt-in:
# `snakemake --cores 2 claims_full`) does the same with `claims.full_seeds` (>= 3) and the C1 trace arms ->
# claims_full.{csv,md} + claims_full_comparisons.csv. The arms' runs come from common.smk (CLAIM_RUNS); their
# train / sample rules from retrievegan.smk (CLAIM_VARIANT_RUNS), metrics and compatibility from metrics.smk.
# compat_trace: the compatibility of every generator snapshot's retrievals on `claims.trace_split` (val).
# d_probe_<run>: does a trained patch method's discriminator see compatibility (AUC on `claims.probe.split`, val)?
# Every patch method the default run trains, and the C1 learned arm's runs. c1_controls_<run>: C1's fixed embeddings at
# a scale tuned on `claims.controls.search_split` (val), scored on the sample split (test), for the learned arm's runs.
# Both are cheap (no training): they run in the default target.
from retrievegan.eval.claims import TABLE1_ARMS
from retrievegan.runs import method_info

TRACE_SPLIT = CLAIMS.get("trace_split", "val")
PROBE_CFG = CLAIMS.get("probe", {})
CONTROLS_CFG = CLAIMS.get("controls", {})
PROBE_SPLIT = PROBE_CFG.get("split", "val")
CONTROLS_SEARCH_SPLIT = CONTROLS_CFG.get("search_split", "val")
TEST_SPLIT = config["sample"]["split"]
MECHANISM_CFG = CLAIMS.get("mechanism", {})


C1_LEARNED_RUNS = list(dict.fromkeys(r for tag in CLAIM_RUNS for r in c1_learned_runs(tag)))
PROBE_RUNS = list(dict.fromkeys(r for tag in CLAIM_RUNS for r in probe_runs(tag)))
MECHANISM_RUNS = list(dict.fromkeys(r for tag in CLAIM_RUNS for r in mechanism_runs(tag)))
PASTEGAN_RETRIEVALS = f"{SAMPLES}/pastegan/{ABLATION_SETTING}/manifest.json"  # its retrievals.json, written before


for _run in PROBE_RUNS:

    rule:
        name:
            f"d_probe_{_run}"
        conda:
            ENV
        input:
            checkpoint=f"{MODELS}/{_run}/checkpoint.pt",
            vocab=f"{MODEL_DATA}/vocab.json",
            graphs=f"{MODEL_DATA}/{PROBE_SPLIT}.json",
            images=f"{MODEL_DATA}/{PROBE_SPLIT}_images.npy",
            **patch_method_inputs(_run),
        output:
            f"{METRICS}/d_probe/{_run}.json",
        params:
            cfg=json.dumps(PROBE_CFG, sort_keys=True),
            device=EVAL.device,
            inputs=lambda wildcards, input: input_options(input),
            data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        threads: 1
        resources:
            **cluster_resources("metrics"),
        log:
            f"{LOGS}/d_probe_{_run}.log",
        benchmark:
            f"{BENCH}/d_probe_{_run}.tsv"
        shell:
            "retrievegan d-probe --no-progress --params {params.cfg:q} --checkpoint {input.checkpoint}"
            " --data-dir {params.data_dir} --patches {input.table} --candidates {input.candidates} {params.inputs}"
            " --device {params.device} --out {output} --threads {threads} > {log} 2>&1"


for _run in C1_LEARNED_RUNS:

    rule:
        name:
            f"c1_controls_{_run}"
        conda:
            ENV
        input:
            checkpoint=f"{MODELS}/{_run}/checkpoint.pt",
            snapshots=f"{MODELS}/{_run}/snapshots",
            vocab=f"{MODEL_DATA}/vocab.json",
            graphs=[f"{MODEL_DATA}/{split}.json" for split in (CONTROLS_SEARCH_SPLIT, TEST_SPLIT)],
            images=[f"{MODEL_DATA}/{split}_images.npy" for split in (CONTROLS_SEARCH_SPLIT, TEST_SPLIT)],
            pastegan=PASTEGAN_RETRIEVALS,
            **patch_method_inputs(_run),
        output:
            f"{METRICS}/c1_controls/{_run}.json",
        params:
            cfg=json.dumps(CONTROLS_CFG, sort_keys=True),
            device=EVAL.device,
            test_split=TEST_SPLIT,
            inputs=lambda wildcards, input: input_options({k: v for k, v in input.items() if k != "pastegan"}),
            pastegan=lambda wildcards, input: os.path.join(os.path.dirname(input.pastegan), "retrievals.json"),
            data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        threads: 1
        resources:
            **cluster_resources("metrics"),
        log:
            f"{LOGS}/c1_controls_{_run}.log",
        benchmark:
            f"{BENCH}/c1_controls_{_run}.tsv"
        shell:
            "retrievegan c1-controls --no-progress --params {params.cfg:q} --checkpoint {input.checkpoint}"
            " --snapshots {input.snapshots} --data-dir {params.data_dir} --test-split {params.test_split}"
            " --patches {input.table} {params.inputs} --pastegan-retrievals {params.pastegan} --device {params.device}"
            " --out {output} --threads {threads} > {log} 2>&1"


for _run in MECHANISM_RUNS:

    rule:
        name:
            f"c1_mechanism_{_run}"
        conda:
            ENV
        input:
            checkpoint=f"{MODELS}/{_run}/checkpoint.pt",
            snapshots=f"{MODELS}/{_run}/snapshots",
            controls=f"{METRICS}/c1_controls/{_run}.json",
            vocab=f"{MODEL_DATA}/vocab.json",
            graphs=[f"{MODEL_DATA}/{split}.json" for split in ("train", CONTROLS_SEARCH_SPLIT, TEST_SPLIT)],
            images=[f"{MODEL_DATA}/{split}_images.npy" for split in ("train", CONTROLS_SEARCH_SPLIT, TEST_SPLIT)],
            **patch_method_inputs(_run),
        output:
            f"{METRICS}/c1_mechanism/{_run}.json",
        params:
            cfg=json.dumps(MECHANISM_CFG, sort_keys=True),
            controls_cfg=json.dumps(CONTROLS_CFG, sort_keys=True),
            test_split=TEST_SPLIT,
            inputs=lambda wildcards, input: input_options({k: v for k, v in input.items() if k != "controls"}),
            data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        threads: 1
        resources:
            **cluster_resources("train"),
        log:
            f"{LOGS}/c1_mechanism_{_run}.log",
        benchmark:
            f"{BENCH}/c1_mechanism_{_run}.tsv"
        shell:
            "retrievegan c1-mechanism --no-progress --params {params.cfg:q} --controls-params {params.controls_cfg:q}"
            " --checkpoint {input.checkpoint} --snapshots {input.snapshots} --controls {input.controls}"
            " --data-dir {params.data_dir} --test-split {params.test_split} --patches {input.table}"
            " --candidates {input.candidates} {params.inputs} --out {output} --threads {threads} > {log} 2>&1"
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


# rules: claims, claims_full, claims_c1
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
            controls=[f"{METRICS}/c1_controls/{r}.json" for r in c1_learned_runs(_tag)],
            probes=[f"{METRICS}/d_probe/{r}.json" for r in probe_runs(_tag)],
            mechanism=[f"{METRICS}/c1_mechanism/{r}.json" for r in mechanism_runs(_tag)],
            study=[STUDY_REPORT["simulated"]["aggregates"]] if STUDY_SIMULATE else [],
        output:
            **CLAIM_OUTPUTS[_tag],
        params:
            cfg=section_json("claims") if "claims" in config else "{}",
            seeds=" ".join(map(str, {"claims": CLAIMS.get("seeds", [0]), "claims_full": CLAIMS.get("full_seeds", [0, 1, 2]),
                                     "claims_c1": C1_SEEDS}[_tag])),
            only=f"--only {' '.join(CLAIM_ONLY[_tag])}" if _tag in CLAIM_ONLY else "",
            mechanism=lambda wildcards, input: f"--c1-mechanism {' '.join(input.mechanism)}" if input.mechanism else "",
            arms=json.dumps({**CLAIM_RUNS[_tag], **TABLE1_ARMS}, sort_keys=True),
            modes=json.dumps({a: run_config(a)["retrieval"]["mode"] for a in CLAIM_RUNS[_tag]
                              if method_info(a).section == "retrievegan"}, sort_keys=True),
            study=lambda wildcards, input: f"--study {input.study}" if input.study else "",
            title={"claims": "Claims", "claims_full": "Claims, full version (>= 3 training seeds per arm, 5 for C1)",
                   "claims_c1": "Claim C1 where the adversary can see compatibility (composite discriminator; "
                                "5 training seeds)"}[_tag],
        resources:
            **cluster_resources("report"),
        log:
            f"{LOGS}/{_tag}.log",
        shell:
            "retrievegan claims --no-progress --params {params.cfg:q} --seeds {params.seeds} --arms {params.arms:q}"
            " --metrics {input.metrics} --compatibility {input.compatibility} --run-json {input.runs}"
            " --losses {input.losses} --compat-trace {input.traces} --trace-modes {params.modes:q} {params.study}"
            " --c1-controls {input.controls} --d-probe {input.probes} {params.mechanism} {params.only}"
            " --title {params.title:q} --out-csv {output.csv} --out-md {output.md}"
            " --out-comparisons {output.comparisons} > {log} 2>&1"


ALL_TARGETS += list(CLAIM_OUTPUTS["claims"].values())
