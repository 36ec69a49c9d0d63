"""Stages: claims (the paper's claims C1-C6 tested), headline (README headline figures from the reference run)."""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import stage


def _claims_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the `claims` config section")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="training seeds of the C1-C4 arms")
    parser.add_argument("--arms", required=True, help="JSON {arm: [run per seed]} (common.smk claim_runs)")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics/<run>_<setting>.json")
    parser.add_argument("--compatibility", nargs="+", required=True, help="metrics/compatibility/*.json")
    parser.add_argument("--run-json", nargs="+", required=True, help="models/<run>/run.json (training seeds)")
    parser.add_argument("--losses", nargs="*", default=[], help="models/<run>/losses.jsonl (E_p gradient trace)")
    parser.add_argument("--compat-trace", nargs="*", default=[], help="metrics/compat_trace/<run>.json")
    parser.add_argument("--trace-modes", default="{}", help="JSON {run: retrieval mode} for the trace table")
    parser.add_argument(
        "--c1-controls",
        nargs="*",
        default=[],
        help="metrics/c1_controls/<run>.json (C1's fixed embeddings at a val-tuned scale)",
    )
    parser.add_argument("--d-probe", nargs="*", default=[], help="metrics/d_probe/<run>.json (discriminator probe)")
    parser.add_argument(
        "--c1-mechanism", nargs="*", default=[], help="metrics/c1_mechanism/<run>.json (C1's positive control)"
    )
    parser.add_argument("--only", nargs="+", default=None, help="evaluate these claims only (e.g. C1 C1-eq4)")
    parser.add_argument("--study", default=None, help="user-study aggregates (preference_<population>.csv)")
    parser.add_argument("--title", default="Claims")
    parser.add_argument("--out-csv", required=True)
    parser.add_argument("--out-md", required=True)
    parser.add_argument("--out-comparisons", required=True)


@stage(
    "claims",
    help="the paper's claims C1-C6: values per arm over training seeds, paired differences, verdicts",
    arguments=_claims_arguments,
)
def claims(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from retrievegan import runinfo
    from retrievegan.config import from_json
    from retrievegan.eval.claims import ClaimsConfig, Runs, write_claims

    cfg = from_json(ClaimsConfig, args.params, "claims")
    runs = Runs(
        args.metrics,
        args.compatibility,
        {Path(p).parent.name: p for p in args.run_json},
        args.c1_controls,
        args.d_probe,
        args.c1_mechanism,
    )
    table = write_claims(
        args.out_csv,
        args.out_md,
        args.out_comparisons,
        json.loads(args.arms),
        runs,
        cfg,
        args.seeds,
        args.study,
        {Path(p).parent.name: p for p in args.losses},
        args.compat_trace,
        json.loads(args.trace_modes),
        args.title,
        args.only,
    )
    for rec in table.to_dict("records"):
        print(f"{rec['claim']}: {rec['verdict']} ({rec['basis']})")
        print(f"  {rec['answer']}")
    runinfo.report_provenance(args.out_csv)  # the commit and time of claims.csv (headline_provenance.json)


def _headline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference",
        default="reference-run/results/synth",
        help="the stored reference run's results folder (metric files, claims)",
    )
    parser.add_argument("--readme", default="README.md")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite the README's headline block")
    mode.add_argument("--check", action="store_true", help="exit 1 if the README's block differs")
    mode.add_argument(
        "--record",
        metavar="RESULTS_DIR",
        help="store a finished run's headline inputs under --reference (with commit and date)",
    )


@stage(
    "headline",
    help="README headline figures from the stored reference run's metric files (write or check)",
    arguments=_headline_arguments,
)
def headline(args: argparse.Namespace) -> None:
    import sys

    from retrievegan.eval import headline as readme_headline

    if args.record:
        stored = readme_headline.record_reference(args.record, args.reference)
        print(f"stored {len(stored)} file(s) under {args.reference}")
        return
    block = readme_headline.render(args.reference)
    if args.write:
        readme_headline.write_readme(args.readme, block)
        print(f"{args.readme}: headline block written from {args.reference}")
        return
    if not readme_headline.readme_matches(args.readme, block):
        print(
            f"{args.readme}: the headline block differs from {args.reference} (run `retrievegan headline --write`)",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f"{args.readme}: headline block matches {args.reference}")
