"""`retrievegan <stage> ...`: the command every Snakemake rule calls.

Each stage parses its arguments (every path comes from the caller; hyperparameters come as the JSON
of one validated config section via ``--params``) and calls one library function. Stages live in
``STAGES`` as ``name -> "module:function"`` pairs: ``add_<name>_arguments(parser)`` registers the
options and ``run(args)`` does the work, both in the named module, imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from retrievegan.errors import ConfigError, InputError

# stage name -> module holding `configure(stage, parser)` and `run(stage, args)`
STAGES: dict[str, str] = {
    "synth": "retrievegan.commands.data",
    "preprocess": "retrievegan.commands.data",
    "dataset-table": "retrievegan.commands.data",
    "patches": "retrievegan.commands.data",
}

HELP: dict[str, str] = {
    "synth": "write the embedded synthetic benchmark in COCO-Stuff and Visual Genome formats",
    "preprocess": "raw COCO-Stuff / Visual Genome -> canonical scene graphs, resized images, stats",
    "dataset-table": "merge preprocess stats into the dataset table (Train/Val/Test/#Category/#Patches)",
    "patches": "crop the patch bank at ground-truth boxes",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrievegan", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-progress", action="store_true", help="disable progress bars")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")
    for name, module_name in STAGES.items():
        module = importlib.import_module(module_name)
        stage_parser = sub.add_parser(name, help=HELP.get(name, ""), description=HELP.get(name, ""),
                                      parents=[common])
        module.configure(name, stage_parser)
        stage_parser.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        module.run(args.stage, args)
    except (InputError, ConfigError) as exc:
        print(f"retrievegan {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
