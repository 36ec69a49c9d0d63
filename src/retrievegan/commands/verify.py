"""Stage: verify (compare every output with the reference run recorded in dvc.lock; `make verify`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from retrievegan.commands.registry import stage


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stages", nargs="*", help="dvc.yaml stage names (default: every stage)")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project root (holds dvc.yaml, dvc.lock)")
    parser.add_argument(
        "--rtol",
        type=_non_negative,
        default=None,
        help="accept metric / table values within this relative tolerance (another CPU type); "
        "binary outputs are then judged by the numbers computed from them",
    )
    parser.add_argument("--atol", type=_non_negative, default=None, help="absolute tolerance (with or without --rtol)")


@stage(
    "verify",
    help="hash every output and compare it with the reference run in dvc.lock, stage by stage (numeric "
    "differences of metrics and tables; exit status 0 only when reproduced)",
    arguments=_arguments,
)
def verify(args: argparse.Namespace) -> int:
    from retrievegan.errors import ConfigError
    from retrievegan.verify import VerifyError
    from retrievegan.verify import verify as verify_outputs

    try:
        report = verify_outputs(args.root, args.stages, args.rtol, args.atol)
    except VerifyError as exc:
        raise ConfigError(str(exc)) from exc
    print("\n".join(report.lines()))
    return 0 if report.ok else 1
