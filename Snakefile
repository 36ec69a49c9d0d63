# RetrieveGAN reproducibility workflow. Default: the embedded synthetic benchmark (config/config.yaml).
# Paper scale: snakemake --configfile config/paper-coco.yaml --cores all
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/retrievegan.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/userstudy.smk"
include: "workflow/rules/rarity.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/estimate.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
