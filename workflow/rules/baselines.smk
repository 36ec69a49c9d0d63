# The layout2im and AttnGAN baselines of the paper's Table 1: `train_<method>` / `sample_<method>` rules
# (src/retrievegan/models/baselines/{layout2im,attngan}.py; docs/architecture.md "layout2im and AttnGAN"),
# plus `pretrain_damsm`: AttnGAN's DAMSM text + image encoders, pre-trained here on the scene-graph
# sentences (retrievegan.text) in their own run folder before AttnGAN trains with them frozen.
#
# layout2im samples only gt_bbox (it takes ground-truth boxes), AttnGAN only pred_bbox (it takes no boxes),
# as in the paper's Table 1. One thread per job: with --cores 2 two jobs run side by side.
# `rule all` is wired by the lead (ALL_TARGETS / EVAL_TARGETS); these rules only declare their outputs.

BASELINE_SETTINGS = {"layout2im": "gt_bbox", "attngan": "pred_bbox"}
DAMSM_DIR = f"{RES}/models/damsm"


rule pretrain_damsm:
    conda:
        ENV
    input:
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=[f"{MODEL_DATA}/{split}.json" for split in ("train", "val")],
        images=[f"{MODEL_DATA}/{split}_images.npy" for split in ("train", "val")],
    output:
        checkpoint=f"{DAMSM_DIR}/checkpoint.pt",
        run=f"{DAMSM_DIR}/run.json",
        losses=f"{DAMSM_DIR}/losses.jsonl",
        evaluation=f"{DAMSM_DIR}/evaluation.json",
    params:
        cfg=section_json("damsm"),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
    priority: PRIORITY["filler_training"]
    threads: 1
    resources:
        **cluster_resources("train"),
    log:
        f"{LOGS}/pretrain_damsm.log",
    benchmark:
        f"{BENCH}/pretrain_damsm.tsv"
    shell:
        "retrievegan pretrain-damsm --no-progress --params {params.cfg:q} --data-dir {params.data_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule train_layout2im:
    conda:
        ENV
    input:
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/train.json",
        images=f"{MODEL_DATA}/train_images.npy",
    output:
        checkpoint=f"{RES}/models/layout2im/checkpoint.pt",
        run=f"{RES}/models/layout2im/run.json",
        losses=f"{RES}/models/layout2im/losses.jsonl",
        snapshots=directory(f"{RES}/models/layout2im/snapshots"),
    params:
        launch=gpu_launcher("train"),
        cfg=params_json("layout2im"),
        train=train_json("layout2im"),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
    priority: PRIORITY["filler_training"]
    threads: 1
    resources:
        **cluster_resources("train"),
    log:
        f"{LOGS}/train_layout2im.log",
    benchmark:
        f"{BENCH}/train_layout2im.tsv"
    shell:
        "{params.launch} train --no-progress --method layout2im --params {params.cfg:q}"
        " --train-params {params.train:q} --data-dir {params.data_dir} --out-dir {params.out_dir} --resume"
        " --threads {threads} > {log} 2>&1"


rule train_attngan:
    conda:
        ENV
    input:
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/train.json",
        images=f"{MODEL_DATA}/train_images.npy",
        damsm=f"{DAMSM_DIR}/checkpoint.pt",
    output:
        checkpoint=f"{RES}/models/attngan/checkpoint.pt",
        run=f"{RES}/models/attngan/run.json",
        losses=f"{RES}/models/attngan/losses.jsonl",
        snapshots=directory(f"{RES}/models/attngan/snapshots"),
    params:
        launch=gpu_launcher("train"),
        cfg=params_json("attngan"),
        train=train_json("attngan"),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        out_dir=lambda wildcards, output: os.path.dirname(output.checkpoint),
    priority: PRIORITY["filler_training"]
    threads: 1
    resources:
        **cluster_resources("train"),
    log:
        f"{LOGS}/train_attngan.log",
    benchmark:
        f"{BENCH}/train_attngan.tsv"
    shell:
        "{params.launch} train --no-progress --method attngan --params {params.cfg:q}"
        " --train-params {params.train:q} --data-dir {params.data_dir} --input damsm={input.damsm}"
        " --out-dir {params.out_dir} --resume --threads {threads} > {log} 2>&1"


rule sample_layout2im:
    conda:
        ENV
    input:
        checkpoint=f"{RES}/models/layout2im/checkpoint.pt",
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/{config['sample']['split']}.json",
        images=f"{MODEL_DATA}/{config['sample']['split']}_images.npy",
    output:
        manifest=f"{RES}/samples/layout2im/{{setting}}/manifest.json",
    wildcard_constraints:
        setting=BASELINE_SETTINGS["layout2im"],
    params:
        cfg=section_json("sample"),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
    threads: 1
    resources:
        **cluster_resources("sample"),
    log:
        f"{LOGS}/sample_layout2im_{{setting}}.log",
    benchmark:
        f"{BENCH}/sample_layout2im_{{setting}}.tsv"
    shell:
        "retrievegan sample --no-progress --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --setting {wildcards.setting} --params {params.cfg:q} --out-dir {params.out_dir}"
        " --threads {threads} > {log} 2>&1"


rule sample_attngan:
    conda:
        ENV
    input:
        checkpoint=f"{RES}/models/attngan/checkpoint.pt",
        damsm=f"{DAMSM_DIR}/checkpoint.pt",
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/{config['sample']['split']}.json",
        images=f"{MODEL_DATA}/{config['sample']['split']}_images.npy",
    output:
        manifest=f"{RES}/samples/attngan/{{setting}}/manifest.json",
    wildcard_constraints:
        setting=BASELINE_SETTINGS["attngan"],
    params:
        cfg=section_json("sample"),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
    threads: 1
    resources:
        **cluster_resources("sample"),
    log:
        f"{LOGS}/sample_attngan_{{setting}}.log",
    benchmark:
        f"{BENCH}/sample_attngan_{{setting}}.tsv"
    shell:
        "retrievegan sample --no-progress --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --setting {wildcards.setting} --input damsm={input.damsm} --params {params.cfg:q}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
