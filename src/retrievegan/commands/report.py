"""Stages: tables, figure-qualitative, figure-compatibility, figure-losses, report."""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import stage
from retrievegan.config import from_json
from retrievegan.errors import ConfigError


def _params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the `report` config section")


def _report_config(args: argparse.Namespace):
    from retrievegan.eval.tables import ReportConfig

    return from_json(ReportConfig, args.params, "report")


def _results_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval-params", default="{}", help="JSON of the `evaluation` config section")
    parser.add_argument("--dataset", required=True, help="dataset name (results/<dataset>)")
    parser.add_argument("--metrics", nargs="*", default=[], help="metric files metrics/<method>_<setting>.json")
    parser.add_argument("--real", default=None, help="metrics/real_data.json")
    parser.add_argument("--compatibility", nargs="*", default=[], help="metrics/compatibility/*.json")
    parser.add_argument("--variants", nargs="*", default=[], help="configured variants (config `variants`)")
    parser.add_argument(
        "--variant-setting",
        default=None,
        choices=["pred_bbox", "gt_bbox"],
        help="the setting of the variants and Table 2 ablations (report.ablation_setting)",
    )
    parser.add_argument("--factors", default="{}", help="JSON {run: {Table 2 factor: value}} (factor_levels)")
    parser.add_argument(
        "--config-values", default="{}", help="JSON {config key: value} of retrievegan.eval.report.REPORTED_CONFIG_KEYS"
    )


def _json_object(text: str, option: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option}: invalid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: expected a JSON object")
    return value


def _results(args: argparse.Namespace):
    from retrievegan.eval.metrics import EvaluationConfig
    from retrievegan.eval.tables import load_results

    evaluation = from_json(EvaluationConfig, args.eval_params, "evaluation")
    if args.variants and args.variant_setting is None:
        raise ConfigError("--variants needs --variant-setting (report.ablation_setting)")
    results = load_results(
        args.dataset,
        args.metrics,
        args.real,
        args.compatibility,
        evaluation.methods,
        evaluation.settings,
        evaluation.compatibility,
        args.variants,
        args.variant_setting,
        _json_object(args.factors, "--factors"),
        _json_object(args.config_values, "--config-values"),
    )
    return evaluation, results


def _extras(items: list[str]) -> list[tuple[str, str]]:
    """``--extra TITLE=PATH`` options as (title, path) pairs; a malformed one is a ConfigError."""
    extras = []
    for item in items:
        title, sep, path = item.partition("=")
        if not sep or not title or not path:
            raise ConfigError(f"--extra expects TITLE=PATH, got {item!r}")
        extras.append((title, path))
    return extras


def _tables_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    _results_arguments(parser)
    parser.add_argument("--dataset-table", required=True, help="data/dataset_table.csv")
    parser.add_argument("--out-dir", required=True)


@stage(
    "tables",
    help="Table 1, Table 2, dataset and compatibility tables (CSV, Markdown, LaTeX) with the paper's values",
    arguments=_tables_arguments,
)
def tables(args: argparse.Namespace) -> None:
    from retrievegan.eval.tables import write_tables

    cfg = _report_config(args)
    _, results = _results(args)
    for path in write_tables(results, cfg, args.dataset_table, args.out_dir):
        print(path)


def _figure_qualitative_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--setting", required=True, choices=["pred_bbox", "gt_bbox"])
    parser.add_argument("--data-dir", required=True, help="canonical data folder of the evaluated source")
    parser.add_argument("--split", default="test")
    parser.add_argument("--patches-dir", default=None, help="patch bank folder (methods that retrieve)")
    parser.add_argument("--out", required=True)


@stage(
    "figure-qualitative",
    help="scene graph, real image, samples and retrieved patches with their source images",
    arguments=_figure_qualitative_arguments,
)
def figure_qualitative(args: argparse.Namespace) -> None:
    from retrievegan.eval.figures import qualitative_figure

    cfg = _report_config(args)
    qualitative_figure(
        args.run_dir,
        args.method,
        args.setting,
        args.data_dir,
        args.split,
        args.patches_dir,
        cfg.qualitative_images,
        cfg.qualitative_seed,
        args.out,
    )


def _figure_compatibility_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--compatibility", nargs="+", required=True)
    parser.add_argument("--out", required=True)


@stage(
    "figure-compatibility",
    help="bar chart of the compatibility score with bootstrap intervals",
    arguments=_figure_compatibility_arguments,
)
def figure_compatibility(args: argparse.Namespace) -> None:
    from retrievegan.eval.figures import compatibility_figure

    _report_config(args)  # validated like every report stage's, though the figure takes no setting from it
    compatibility_figure(args.compatibility, args.out)


def _figure_losses_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--losses", required=True, help="models/<method>/losses.jsonl")
    parser.add_argument("--method", required=True)
    parser.add_argument("--out", required=True)


@stage(
    "figure-losses", help="training-loss curves of one method from its losses.jsonl", arguments=_figure_losses_arguments
)
def figure_losses(args: argparse.Namespace) -> None:
    from retrievegan.eval.figures import losses_figure

    cfg = _report_config(args)
    losses_figure(args.losses, args.method, args.out, cfg.loss_smoothing)


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    _results_arguments(parser)
    parser.add_argument("--tables", nargs="+", required=True)
    parser.add_argument("--figures", nargs="*", default=[])
    parser.add_argument("--synthnet-quality", default=None)
    parser.add_argument("--group-mass", nargs="*", default=[], help="metrics/group_mass/*.json")
    parser.add_argument("--claims", default=None, help="claims.md (`retrievegan claims`): REPORT.md opens with it")
    parser.add_argument(
        "--extra",
        nargs="*",
        default=[],
        metavar="TITLE=PATH",
        help="further result files for the 'Other results' section",
    )
    parser.add_argument("--out", required=True)


@stage(
    "report",
    help="REPORT.md linking tables and figures and stating what is comparable to the paper",
    arguments=_report_arguments,
)
def report(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from retrievegan.eval.report import write_report
    from retrievegan.eval.samples import read_json_object

    cfg = _report_config(args)
    evaluation, results = _results(args)
    quality = json.loads(Path(args.synthnet_quality).read_text()) if args.synthnet_quality else None
    sizes = {r["image_size"] for r in results.runs.values() if "image_size" in r}
    files = list(args.metrics) + ([args.real] if args.real else []) + list(args.compatibility)
    extras = _extras(args.extra)
    group_mass = [read_json_object(p, "group-mass file") for p in args.group_mass]
    write_report(
        args.out,
        results,
        cfg,
        evaluation,
        args.tables,
        args.figures,
        files + list(args.group_mass),
        quality,
        sizes.pop() if len(sizes) == 1 else None,
        extras,
        group_mass,
        args.claims,
    )
    print(args.out)
