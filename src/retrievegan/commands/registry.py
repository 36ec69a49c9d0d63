"""The stages of ``retrievegan <stage>``, each declared once with :func:`stage`.

A stage is a name, a help line, a function adding its options to its parser and a function doing the work
(``run(args)`` returns None on success, or an exit status for a check such as ``verify``)::

    def _prefilter_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--features", required=True)

    @stage("prefilter", help="k nearest same-category training patches per object", arguments=_prefilter_arguments)
    def prefilter(args: argparse.Namespace) -> None:
        ...

Options common to several stages are applied by ``retrievegan.cli.main`` before the stage runs, never by the
stage itself: ``--no-progress`` (every stage), ``--threads`` (a stage whose arguments call
:meth:`Threads.add_to`) and ``passive_wait`` (declared with the stage). This module imports nothing heavy: the
command modules import it at parser-build time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterable
from types import ModuleType

Arguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], "int | None"]

THREADS_DEST = "_threads"  # parser default holding the stage's Threads (set by Threads.add_to)


@dataclasses.dataclass(frozen=True)
class Threads:
    """A stage's ``--threads`` option: its default and help, and how ``retrievegan`` applies it.

    Before the stage runs, ``torch.set_num_threads(max(1, n))``, except for None, or 0 where the default is 0
    (both: torch's own default, torch is not imported for it).
    """

    default: int | None
    help: str | None = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add ``--threads`` here (its place in the stage's help) and have it applied before the stage runs."""
        parser.add_argument("--threads", type=int, default=self.default, help=self.help)
        parser.set_defaults(**{THREADS_DEST: self})

    def count(self, value: int | None) -> int | None:
        """The torch thread count for ``--threads value``; None keeps torch's default."""
        if value is None or (value == 0 and self.default == 0):
            return None
        return max(1, value)

    def apply(self, value: int | None) -> None:
        """Set torch's intra-op thread count for ``--threads value`` (importing torch only when needed)."""
        count = self.count(value)
        if count is not None:
            import torch

            torch.set_num_threads(count)


# --threads of the stages that train or time a torch network (train, sample, ..., pretrain-damsm, paper-estimate, rarity)
TORCH_THREADS = Threads(default=0, help="torch intra-op threads (0: torch's default)")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One ``retrievegan <name>`` command."""

    name: str
    help: str
    arguments: Arguments
    run: Run
    module: str  # the module defining ``run`` (the stage's file, a dependency of its DVC stages)
    # OMP_WAIT_POLICY=PASSIVE (unless set) before torch loads OpenMP: idle worker threads sleep instead of spinning.
    # On a machine whose cores are shared (2 CPU cores, parallel Snakemake jobs) spinning threads made a 2-thread
    # training step ~5x slower than a 1-thread one and synthnet's epoch cost ~6x the CPU time, same weights;
    # passive waiting costs nothing measurable when the cores are free.
    passive_wait: bool = False


STAGE_ATTRIBUTE = "__stage__"  # where stage() puts a run function's Stage (no registry outside the modules)


def stage(name: str, *, help: str, arguments: Arguments, passive_wait: bool = False) -> Callable[[Run], Run]:
    """Declare the decorated ``run(args)`` as the stage ``name`` (its :class:`Stage` rides on the function, so the
    command module itself is the registry); the function is returned unchanged."""

    def declare(run: Run) -> Run:
        setattr(run, STAGE_ATTRIBUTE, Stage(name, help, arguments, run, run.__module__, passive_wait))
        return run

    return declare


def stages(modules: Iterable[ModuleType]) -> list[Stage]:
    """The stages declared in ``modules``, module by module in declaration order; a name declared twice is an
    error naming both modules."""
    found: dict[str, Stage] = {}
    for module in modules:
        for value in vars(module).values():
            declared = getattr(value, STAGE_ATTRIBUTE, None)
            if not isinstance(declared, Stage) or declared.module != module.__name__:
                continue
            if declared.name in found:
                raise ValueError(
                    f"stage {declared.name!r} declared by {found[declared.name].module} and {declared.module}"
                )
            found[declared.name] = declared
    return list(found.values())


def prepare_process(chosen: Stage, args: argparse.Namespace) -> None:
    """The common behaviour of the process before ``chosen`` runs: OpenMP wait policy, then torch threads."""
    if chosen.passive_wait:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads: Threads | None = getattr(args, THREADS_DEST, None)
    if threads is not None:
        threads.apply(args.threads)
