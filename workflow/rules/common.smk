# Shared names for every rule file. Rules call one `retrievegan <stage>` command each; the only
# code here turns config sections into the JSON those commands take.
import json
import os

DATASET = config["dataset"]
RES = f"{config['results']}/{DATASET}"
DATA = f"{RES}/data"
LOGS = f"{RES}/logs"
BENCH = f"{RES}/benchmarks"
SPLITS = ("train", "val", "test")
SOURCES = tuple(config["sources"])
MODEL_DATA = f"{DATA}/{config['model_source']}"

ENV = "../envs/retrievegan.yaml"  # conda env for --software-deployment-method conda

# Each rule file appends the final outputs it contributes to `rule all`.
ALL_TARGETS = []


def section_json(name, drop=()):
    """The config section `name` as canonical JSON for a CLI `--params` option."""
    return json.dumps({k: v for k, v in config[name].items() if k not in drop}, sort_keys=True)


wildcard_constraints:
    source="coco_stuff|visual_genome",
    split="train|val|test",


def raw_inputs(wildcards):
    """The raw files a source's reader opens, as named in its config section."""
    section = config[wildcards.source]
    keys = {
        "coco_stuff": (
            "instances_train",
            "stuff_train",
            "image_dir_train",
            "instances_val",
            "stuff_val",
            "image_dir_val",
        ),
        "visual_genome": (
            "image_data",
            "objects",
            "relationships",
            "attributes",
            "splits",
            "object_aliases",
            "predicate_aliases",
            "image_dir",
        ),
    }[wildcards.source]
    return {key: section[key] for key in keys}
