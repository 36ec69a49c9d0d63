"""Cluster execution: Snakemake resources for the SLURM executor plugin and the multi-GPU launcher.

The ``cluster`` config section (validated by the schema, built here into ``ClusterConfig``) names a few
*resource classes* (``data``, ``train``, ``sample``, ``metrics``, ``report``); each rule asks for one
class with ``resources: **cluster_resources("<class>")`` (``workflow/rules/common.smk``). The keys
returned are the ones snakemake-executor-plugin-slurm turns into ``sbatch`` options:

==================  ==========================================  ==================================
resource            sbatch option                               from
==================  ==========================================  ==================================
``mem_mb``          ``--mem``                                   class ``mem_mb``
``runtime``         ``-t`` (minutes)                            class ``runtime``
``gpu``             ``--gpus=<n>`` (``--gpus=<model>:<n>``)     class ``gpus`` (+ ``gpu_model``)
``slurm_partition`` ``-p``                                      class ``partition`` or ``partition``
``slurm_account``   ``-A``                                      ``account``
``slurm_extra``     appended verbatim                           class ``slurm_extra``
==================  ==========================================  ==================================

``--cpus-per-task`` is the rule's ``threads``. ``gpu`` is always present (0 for CPU classes) so a
rule's shell can read ``{resources.gpu}``; the plugin adds ``--gpus`` only when it is positive, and
its job step runs the rule's command in one ``srun -n1`` task holding all the job's GPUs and CPUs.
A multi-GPU rule therefore starts its own workers: ``launcher(cfg, "train")`` is
``torchrun --standalone --nnodes=1 --nproc_per_node=<gpus> -m retrievegan.cli`` when the class has
more than one GPU and plain ``retrievegan`` otherwise (the rule appends ``train ...``).

Local runs (``--profile workflow/profiles/default``) ignore partition/account; ``mem_mb``/``gpu`` only
limit concurrency when given to ``--resources``.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from typing import Any

from retrievegan.config import from_mapping
from retrievegan.errors import ConfigError

RESOURCE_CLASSES = ("data", "train", "sample", "metrics", "report")


@dataclasses.dataclass(frozen=True)
class ResourceClass:
    gpus: int = 0  # GPUs per job (torchrun workers when > 1)
    mem_mb: int = 4000  # memory per job (sbatch --mem)
    runtime: int = 60  # wall-clock limit in minutes (sbatch -t)
    partition: str | None = None  # overrides ClusterConfig.partition for this class
    slurm_extra: str | None = None  # extra sbatch options, verbatim (not --gpus/--mem/-p/-A/...)

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.mem_mb < 1 or self.runtime < 1:
            raise ValueError(f"gpus must be >= 0, mem_mb and runtime >= 1 (got {self})")


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    partition: str | None = None  # default SLURM partition (None: the cluster's default)
    account: str | None = None  # SLURM account (None: none / the plugin's guess)
    gpu_model: str | None = None  # e.g. "a100" -> --gpus=a100:<n> (None: any GPU)
    resources: Mapping[str, ResourceClass] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.resources) - set(RESOURCE_CLASSES))
        if unknown:
            raise ValueError(f"unknown resource class(es) {unknown}; known: {list(RESOURCE_CLASSES)}")

    def resource_class(self, name: str) -> ResourceClass:
        if name not in RESOURCE_CLASSES:
            raise ConfigError(f"cluster: unknown resource class {name!r}; known: {list(RESOURCE_CLASSES)}")
        return self.resources.get(name, ResourceClass())


def cluster_config(section: Mapping[str, Any] | None) -> ClusterConfig:
    return from_mapping(ClusterConfig, section or {}, "cluster")


def slurm_resources(section: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """Snakemake ``resources`` of resource class ``name`` (see the module docstring)."""
    cfg = cluster_config(section)
    cls = cfg.resource_class(name)
    out: dict[str, Any] = {"mem_mb": cls.mem_mb, "runtime": cls.runtime, "gpu": cls.gpus}
    if cls.gpus > 0 and cfg.gpu_model:
        out["gpu_model"] = cfg.gpu_model
    partition = cls.partition or cfg.partition
    if partition:
        out["slurm_partition"] = partition
    if cfg.account:
        out["slurm_account"] = cfg.account
    if cls.slurm_extra:
        out["slurm_extra"] = cls.slurm_extra
    return out


def launcher(section: Mapping[str, Any] | None, name: str, module: str = "retrievegan.cli") -> str:
    """Command prefix that starts ``retrievegan`` with one process per GPU of class ``name``.

    ``gpus <= 1``: ``retrievegan``. ``gpus > 1``: a single-node ``torchrun`` with ``--nproc_per_node``
    equal to the class's GPU count (the same number the job asks Slurm for); the stage then runs under
    DistributedDataParallel (rank/world size from torchrun's environment; gloo on CPU).
    """
    gpus = cluster_config(section).resource_class(name).gpus
    if gpus <= 1:
        return "retrievegan"
    return f"torchrun --standalone --nnodes=1 --nproc_per_node={gpus} -m {shlex.quote(module)}"
