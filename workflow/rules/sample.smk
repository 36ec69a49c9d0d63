# Sampling stage: for each trained method and each setting it supports, two samples per test scene graph
# (`retrievegan sample`, src/retrievegan/eval/sampler.py) into results/<ds>/samples/<method>/<setting>/.
# The declared output is manifest.json, written last: the sample0/ and sample1/ PNGs beside it are
# complete whenever it exists (docs/architecture.md, "Methods, settings, samples").

SAMPLES = f"{RES}/samples"


rule sample_sg2im:
    conda:
        ENV
    input:
        checkpoint=f"{RES}/models/sg2im/checkpoint.pt",
        vocab=f"{MODEL_DATA}/vocab.json",
        graphs=f"{MODEL_DATA}/{config['sample']['split']}.json",
        images=f"{MODEL_DATA}/{config['sample']['split']}_images.npy",
    output:
        manifest=f"{SAMPLES}/sg2im/{{setting}}/manifest.json",
    wildcard_constraints:
        setting="pred_bbox|gt_bbox",
    params:
        cfg=section_json("sample"),
        data_dir=lambda wildcards, input: os.path.dirname(input.vocab),
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
    # One thread, as the other methods' samplers: two threads took 7.5 s a setting, one 8.5-10.5 s, but the two
    # settings then run side by side on the 2-core machine; the samples are bit-identical.
    threads: 1
    resources:
        **cluster_resources("sample"),
    log:
        f"{LOGS}/sample_sg2im_{{setting}}.log",
    shell:
        "retrievegan sample --no-progress --checkpoint {input.checkpoint} --data-dir {params.data_dir}"
        " --setting {wildcards.setting} --params {params.cfg:q} --out-dir {params.out_dir}"
        " --threads {threads} > {log} 2>&1"


# sg2im's variants (SG2IM_VARIANTS, train.smk): sampled in report.ablation_setting only, like every variant
if SG2IM_VARIANTS:

    use rule sample_sg2im as sample_sg2im_variant with:
        input:
            checkpoint=f"{RES}/models/{{variant}}/checkpoint.pt",
            vocab=f"{MODEL_DATA}/vocab.json",
            graphs=f"{MODEL_DATA}/{config['sample']['split']}.json",
            images=f"{MODEL_DATA}/{config['sample']['split']}_images.npy",
        output:
            manifest=f"{SAMPLES}/{{variant}}/{{setting}}/manifest.json",
        wildcard_constraints:
            variant="|".join(SG2IM_VARIANTS),
            setting=ABLATION_SETTING,
        log:
            f"{LOGS}/sample_{{variant}}_{{setting}}.log",


ALL_TARGETS += [f"{SAMPLES}/sg2im/{setting}/manifest.json" for setting in ("pred_bbox", "gt_bbox")]
