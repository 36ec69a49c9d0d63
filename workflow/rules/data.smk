# Data stage: synthetic benchmark -> preprocessing (sg2im protocol) -> dataset table -> patch bank.

RAW = f"{RES}/raw"
SYNTH_COCO_JSON = [
    f"{RAW}/coco/annotations/{kind}_{split}2017.json"
    for kind in ("instances", "stuff")
    for split in ("train", "val")
]
SYNTH_VG_FILES = [
    f"{RAW}/vg/{name}"
    for name in (
        "image_data.json",
        "objects.json",
        "relationships.json",
        "attributes.json",
        "vg_splits.json",
        "object_alias.txt",
        "predicate_alias.txt",
    )
]


if config["synth"]["enabled"]:

    rule synth:
        conda:
            ENV
        output:
            coco_json=SYNTH_COCO_JSON,
            coco_train=directory(f"{RAW}/coco/images/train2017"),
            coco_val=directory(f"{RAW}/coco/images/val2017"),
            vg_files=SYNTH_VG_FILES,
            vg_images=directory(f"{RAW}/vg/images"),
        params:
            cfg=section_json("synth", drop=("enabled",)),
            out_coco=lambda wildcards, output: os.path.dirname(os.path.dirname(output.coco_train)),
            out_vg=lambda wildcards, output: os.path.dirname(output.vg_images),
        threads: 2
        resources:
            **cluster_resources("data"),
        log:
            f"{LOGS}/synth.log",
        benchmark:
            f"{BENCH}/synth.tsv"
        shell:
            "retrievegan synth --no-progress --params {params.cfg:q}"
            " --out-coco {params.out_coco} --out-vg {params.out_vg} --workers {threads} > {log} 2>&1"


rule preprocess:
    conda:
        ENV
    input:
        unpack(raw_inputs),
    output:
        vocab=f"{DATA}/{{source}}/vocab.json",
        graphs=[f"{DATA}/{{source}}/{split}.json" for split in SPLITS],
        images=[f"{DATA}/{{source}}/{split}_images.npy" for split in SPLITS],
        stats=f"{DATA}/{{source}}/stats.json",
        run=f"{DATA}/{{source}}/run.json",
    params:
        cfg=lambda wildcards: section_json(wildcards.source),
        preprocess=section_json("preprocess"),
        out_dir=lambda wildcards, output: os.path.dirname(output.vocab),
        dataset=DATASET,
    threads: config["preprocess"].get("num_workers", 4)
    resources:
        **cluster_resources("data"),
    log:
        f"{LOGS}/preprocess_{{source}}.log",
    benchmark:
        f"{BENCH}/preprocess_{{source}}.tsv"
    shell:
        "retrievegan preprocess --no-progress --source {wildcards.source} --dataset {params.dataset}"
        " --params {params.cfg:q} --preprocess-params {params.preprocess:q}"
        " --out-dir {params.out_dir} > {log} 2>&1"


# A few milliseconds of CSV merging: never worth a cluster job.
localrules:
    dataset_table,


rule dataset_table:
    conda:
        ENV
    input:
        stats=expand(f"{DATA}/{{source}}/stats.json", source=SOURCES),
    output:
        table=f"{DATA}/dataset_table.csv",
    log:
        f"{LOGS}/dataset_table.log",
    shell:
        "retrievegan dataset-table --no-progress --stats {input.stats} --out {output.table} > {log} 2>&1"


rule patches:
    conda:
        ENV
    input:
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=[f"{MODEL_DATA}/{split}.json" for split in SPLITS],
    output:
        bank=f"{DATA}/patches/patches.npy",
        table=f"{DATA}/patches/patches.csv",
        run=f"{DATA}/patches/run.json",
    params:
        cfg=section_json("patches"),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        out_dir=lambda wildcards, output: os.path.dirname(output.bank),
    priority: PRIORITY["critical"]
    threads: config["patches"].get("num_workers", 4)
    resources:
        **cluster_resources("data"),
    log:
        f"{LOGS}/patches.log",
    benchmark:
        f"{BENCH}/patches.tsv"
    shell:
        "retrievegan patches --no-progress --params {params.cfg:q} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} > {log} 2>&1"


ALL_TARGETS += [
    f"{DATA}/dataset_table.csv",
    f"{DATA}/patches/patches.npy",
    f"{DATA}/patches/patches.csv",
]
