# User study (paper Fig. 3): the trial bundle built from the saved retrievals -> the Streamlit app
# (userstudy/app.py, docs/userstudy.md) -> exported responses -> report. On the embedded benchmark,
# simulated participants (labelled "simulated" in every file name, CSV column and figure title) stand
# in for people so the figure exists on a fresh machine.
# USERSTUDY_TARGETS lists the final outputs; `rule all` takes them once the retrieval methods write
# samples/<method>/<setting>/retrievals.json (beside manifest.json, which `retrievegan sample` writes last).
from retrievegan.config import from_mapping
from retrievegan.study.config import UserStudyConfig
from retrievegan.study.dburl import default_url

STUDY_CFG = from_mapping(UserStudyConfig, config.get("userstudy"), "userstudy")
USERSTUDY = f"{RES}/userstudy"
STUDY_DIR = f"{USERSTUDY}/study"
STUDY_METHODS = (STUDY_CFG.reference, *STUDY_CFG.methods)
# People's answers: never under results/ (make clean-results, DVC); UserStudyConfig refused a password in
# the URL when the config was read, so it can go on command lines. Default: userstudy/data/ (git-ignored).
STUDY_DB_URL = STUDY_CFG.database_url or default_url(os.path.join(workflow.basedir, "userstudy"), DATASET)
# simulated participants judge by the hidden themes, which only the synthetic benchmark has
STUDY_SIMULATE = STUDY_CFG.simulate.enabled and config["synth"]["enabled"]
# what `retrievegan study-report --population <p>` writes (src/retrievegan/study/analysis.py)
STUDY_REPORT = {
    population: {
        "aggregates": f"{USERSTUDY}/preference_{population}.csv",
        "participants": f"{USERSTUDY}/participants_{population}.csv",
        "summary": f"{USERSTUDY}/summary_{population}.json",
        "figure": f"{USERSTUDY}/preference_{population}.png",
    }
    for population in ("participants", "simulated")
}


rule userstudy_trials:
    conda:
        ENV
    input:
        manifests=[f"{RES}/samples/{m}/{STUDY_CFG.setting}/manifest.json" for m in STUDY_METHODS],
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/test.json",
        bank=f"{DATA}/patches/patches.npy",
        table=f"{DATA}/patches/patches.csv",
    output:
        trials=f"{STUDY_DIR}/trials.json",
        patches=f"{STUDY_DIR}/patches.npy",
        run=f"{STUDY_DIR}/run.json",
    params:
        cfg=section_json("userstudy"),
        retrievals=lambda wildcards, input: " ".join(
            f"{m}={os.path.dirname(p)}/retrievals.json" for m, p in zip(STUDY_METHODS, input.manifests)
        ),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        patch_dir=lambda wildcards, input: os.path.dirname(input.bank),
        out_dir=lambda wildcards, output: os.path.dirname(output.trials),
        dataset=DATASET,
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/userstudy_trials.log",
    shell:
        "retrievegan study-trials --no-progress --params {params.cfg:q} --retrievals {params.retrievals}"
        " --data-dir {params.data_dir} --patch-dir {params.patch_dir} --out-dir {params.out_dir}"
        " --dataset {params.dataset} > {log} 2>&1"


if STUDY_SIMULATE:

    rule userstudy_simulate:
        conda:
            ENV
        input:
            trials=f"{STUDY_DIR}/trials.json",
            patches=f"{STUDY_DIR}/patches.npy",
            table=f"{DATA}/patches/patches.csv",
        output:
            responses=f"{USERSTUDY}/responses_simulated.csv",
            truth=f"{USERSTUDY}/truth_simulated.csv",
        params:
            cfg=section_json("userstudy"),
            study_dir=lambda wildcards, input: os.path.dirname(input.trials),
        resources:
            **cluster_resources("report"),
        log:
            f"{LOGS}/userstudy_simulate.log",
        shell:
            "retrievegan study-simulate --no-progress --params {params.cfg:q} --study-dir {params.study_dir}"
            " --patch-table {input.table} --out {output.responses} --truth-out {output.truth} > {log} 2>&1"

    rule userstudy_report_simulated:
        conda:
            ENV
        input:
            responses=f"{USERSTUDY}/responses_simulated.csv",
            truth=f"{USERSTUDY}/truth_simulated.csv",
        output:
            **STUDY_REPORT["simulated"],
        params:
            cfg=section_json("userstudy"),
            out_dir=lambda wildcards, output: os.path.dirname(output.aggregates),
        resources:
            **cluster_resources("report"),
        log:
            f"{LOGS}/userstudy_report_simulated.log",
        shell:
            "retrievegan study-report --no-progress --params {params.cfg:q} --responses {input.responses}"
            " --population simulated --truth {input.truth} --out-dir {params.out_dir} > {log} 2>&1"


# People: `snakemake userstudy_report` exports the database once (rerun the export for newer answers:
# `--forcerun userstudy_export`), then reports. A database that needs a password: leave it out of
# userstudy.database_url and let the driver read it (PGPASSWORD, ~/.pgpass), or export by hand with
# RETRIEVEGAN_STUDY_DB_URL set and `retrievegan study-export --out ...`.
rule userstudy_export:
    conda:
        ENV
    output:
        f"{USERSTUDY}/responses_participants.csv",
    params:
        db_url=STUDY_DB_URL,
    log:
        f"{LOGS}/userstudy_export.log",
    shell:
        "retrievegan study-export --no-progress --database-url {params.db_url:q} --out {output} > {log} 2>&1"


rule userstudy_report:
    conda:
        ENV
    input:
        responses=f"{USERSTUDY}/responses_participants.csv",
    output:
        **STUDY_REPORT["participants"],
    params:
        cfg=section_json("userstudy"),
        out_dir=lambda wildcards, output: os.path.dirname(output.aggregates),
    resources:
        **cluster_resources("report"),
    log:
        f"{LOGS}/userstudy_report.log",
    shell:
        "retrievegan study-report --no-progress --params {params.cfg:q} --responses {input.responses}"
        " --population participants --out-dir {params.out_dir} > {log} 2>&1"


USERSTUDY_TARGETS = list(STUDY_REPORT["simulated"].values()) if STUDY_SIMULATE else []


ALL_TARGETS += USERSTUDY_TARGETS
