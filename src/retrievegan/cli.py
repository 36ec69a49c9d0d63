"""`retrievegan <stage> ...`: the command every Snakemake rule calls.

Each stage parses its arguments (every path comes from the caller; hyperparameters come as the JSON
of one validated config section via ``--params``) and calls one library function. Every stage is declared
once, in its module under ``retrievegan.commands``, with ``retrievegan.commands.registry.stage``: name, help
line, the function adding its options and the function doing the work (returning None, or an exit status
for a check such as ``verify``). The command modules import only argparse-level code; a stage's heavy
imports (torch) happen when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from retrievegan.commands import registry
from retrievegan.errors import ConfigError, InputError

# the modules declaring the stages, in the order `retrievegan --help` lists them
COMMAND_MODULES: tuple[str, ...] = (
    "retrievegan.commands.data",
    "retrievegan.commands.embed",
    "retrievegan.commands.training",
    "retrievegan.commands.damsm",
    "retrievegan.commands.study",
    "retrievegan.commands.evaluate",
    "retrievegan.commands.claims",
    "retrievegan.commands.report",
    "retrievegan.commands.estimate",
    "retrievegan.commands.rarity",
    "retrievegan.commands.verify",
)


def registered_stages() -> list[registry.Stage]:
    """Every stage, in help order (the command modules declare them)."""
    return registry.stages(importlib.import_module(name) for name in COMMAND_MODULES)


def _stage_modules() -> dict[str, str]:
    return {s.name: s.module for s in registered_stages()}


# stage name -> module defining it (the file a DVC stage running that command depends on)
STAGES: dict[str, str] = _stage_modules()


def _common_options() -> argparse.ArgumentParser:
    """Options every stage accepts (``--threads`` is declared by the stages that take it)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-progress", action="store_true", help="disable progress bars")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``retrievegan``: one sub-parser per registered stage."""
    parser = argparse.ArgumentParser(prog="retrievegan", description=__doc__.splitlines()[0])
    common = _common_options()
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for declared in registered_stages():
        stage_parser = sub.add_parser(declared.name, help=declared.help, description=declared.help, parents=[common])
        declared.arguments(stage_parser)
        stage_parser.set_defaults(_stage=declared)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one stage; exit status 2 for an input or config error, else the stage's status (None: 0)."""
    args = build_parser().parse_args(argv)
    chosen: registry.Stage = args._stage
    registry.prepare_process(chosen, args)
    try:
        status = chosen.run(args)
    except (InputError, ConfigError) as exc:
        print(f"retrievegan {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
