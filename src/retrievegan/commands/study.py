"""Stages: study-trials, study-simulate, study-export, study-report (the user study, paper Fig. 3), and the
operator commands study-serve (check everything, then run the app) and study-links (signed links).

No command takes a database password on its command line: ``--database-url`` / ``--db-url`` refuse one;
the full URL goes in the environment (``RETRIEVEGAN_STUDY_DB_URL``) or the Streamlit secrets file.
Every stage validates ``--params`` (the `userstudy` section) first, also those that use none of it.
"""

from __future__ import annotations

import argparse

from retrievegan.commands.registry import stage
from retrievegan.config import from_json
from retrievegan.errors import ConfigError


def _method_path(text: str) -> tuple[str, str]:
    method, sep, path = text.partition("=")
    if not sep or not method or not path:
        raise argparse.ArgumentTypeError(f"expected METHOD=PATH, got {text!r}")
    return method, path


def _params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the `userstudy` config section")


def _config(args: argparse.Namespace):
    from retrievegan.study.config import UserStudyConfig

    return from_json(UserStudyConfig, args.params, "userstudy")


def _trials_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument(
        "--retrievals",
        nargs="+",
        type=_method_path,
        required=True,
        metavar="METHOD=PATH",
        help="retrievals.json of the reference and of every compared method",
    )
    parser.add_argument("--data-dir", required=True, help="canonical data folder (vocab.json, test.json)")
    parser.add_argument("--patch-dir", required=True, help="patch bank folder (patches.npy, patches.csv)")
    parser.add_argument("--out-dir", required=True, help="study bundle folder to write")
    parser.add_argument("--dataset", default="", help="dataset name recorded in the bundle")


@stage(
    "study-trials",
    help="user study: build the trial bundle (pairs vs. the reference, catch items) from retrievals",
    arguments=_trials_arguments,
)
def study_trials(args: argparse.Namespace) -> None:
    from retrievegan import runinfo
    from retrievegan.study.pool import build_bundle

    cfg = _config(args)
    retrievals = dict(args.retrievals)
    if len(retrievals) != len(args.retrievals):
        raise ConfigError("--retrievals names a method twice")
    content = build_bundle(retrievals, args.data_dir, args.patch_dir, cfg, args.out_dir, args.dataset, cfg.database_url)
    runinfo.write_run_json(args.out_dir, "study-trials", cfg, cfg.plan.seed, {"study_id": content["study_id"]})
    counts = ", ".join(f"{m}: {len(v)}" for m, v in content["pairs"].items())
    print(
        f"study {content['study_id']}: pair items {counts}; {len(content['catch'])} catch items; "
        f"{len(content['patch_ids'])} patches"
    )


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--study-dir", required=True, help="study bundle folder")
    parser.add_argument("--patch-table", required=True, help="patches.csv (with themes: synthetic benchmark)")
    parser.add_argument("--out", required=True, help="responses CSV of the simulated participants")
    parser.add_argument(
        "--truth-out",
        required=True,
        help="CSV: per simulated participant and pair, the expected number preferring the reference",
    )


@stage(
    "study-simulate",
    help="user study: simulated participants on the synthetic benchmark (labelled simulated)",
    arguments=_simulate_arguments,
)
def study_simulate(args: argparse.Namespace) -> None:
    from retrievegan.study.simulate import write_simulated_study

    cfg = _config(args)
    study = write_simulated_study(args.study_dir, args.patch_table, cfg.simulate, args.out, args.truth_out)
    print(
        f"simulated {len(study.people)} participants ({int(study.people['attentive'].sum())} attentive), "
        f"{len(study.responses)} responses"
    )


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLAlchemy URL of the study database, without a password (default: "
        "$RETRIEVEGAN_STUDY_DB_URL, which may hold one)",
    )
    parser.add_argument("--out", required=True, help="responses CSV to write")


@stage(
    "study-export",
    help="user study: export the stored responses of a study database as CSV",
    arguments=_export_arguments,
)
def study_export(args: argparse.Namespace) -> None:
    import os

    from retrievegan.study.export import export_responses

    _config(args)
    responses = export_responses(args.database_url, os.environ, args.out)
    print(f"exported {len(responses)} responses of {responses['participant_id'].nunique()} participants")


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--responses", required=True, help="exported responses CSV")
    parser.add_argument("--population", required=True, choices=["participants", "simulated"])
    parser.add_argument("--truth", default=None, help="expected preference CSV (simulated population only)")
    parser.add_argument("--out-dir", required=True)


@stage(
    "study-report",
    help="user study: preference shares, intervals, tests, biases, exclusions, figure",
    arguments=_report_arguments,
)
def study_report(args: argparse.Namespace) -> None:
    from retrievegan.study.analysis import report_responses

    cfg = _config(args)
    report, paths = report_responses(args.responses, args.population, args.truth, cfg, args.out_dir)
    for _, row in report.aggregates.iterrows():
        print(
            f"{row['population']} {row['measure']} {row['label']}: {row['share']:.3f} "
            f"[{row['wilson_low']:.3f}, {row['wilson_high']:.3f}] n={row['n']} p_holm={row['p_holm']:.3g}"
        )
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument(
        "--study-dir",
        default=None,
        help="study bundle folder (default: $RETRIEVEGAN_STUDY_DIR, else results/synth/userstudy/study)",
    )
    parser.add_argument("--consent", default=None, help="consent text (default: userstudy/consent.md)")
    parser.add_argument(
        "--db-url",
        default=None,
        help="database URL without a password (default: "
        "$RETRIEVEGAN_STUDY_DB_URL, the secret database_url, "
        "userstudy.database_url, userstudy/data/...)",
    )
    parser.add_argument(
        "--init",
        action="store_true",
        help="create the database if it does not exist "
        "(once, before the study); without it a missing "
        "database refuses the start",
    )
    parser.add_argument(
        "--address", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; put HTTPS in front)"
    )
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--app", default=None, help="the app script (default: userstudy/app.py of this checkout)")
    parser.add_argument("--check", action="store_true", help="only run the start-up checks, do not serve")


@stage(
    "study-serve",
    help="user study: check bundle, consent, secrets and database, then serve the app (Streamlit)",
    arguments=_serve_arguments,
)
def study_serve(args: argparse.Namespace) -> None:
    from retrievegan.study.server import serve

    _config(args)
    serve(
        args.app,
        args.study_dir,
        args.consent,
        args.db_url,
        args.init,
        args.address,
        args.port,
        args.check,
        say=lambda message: print(message, flush=True),
    )


def _links_arguments(parser: argparse.ArgumentParser) -> None:
    _params(parser)
    parser.add_argument("--ids", required=True, help="text file, one participant id a line")
    parser.add_argument("--base-url", required=True, help="the study's public URL, e.g. https://study.example.org/")
    parser.add_argument("--out", required=True, help="CSV of participant_id, link")
    parser.add_argument("--app", default=None, help="the app script whose .streamlit/secrets.toml holds link_secret")


@stage(
    "study-links",
    help="user study: signed participant links (HMAC of the id under link_secret)",
    arguments=_links_arguments,
)
def study_links(args: argparse.Namespace) -> None:
    from retrievegan.study.server import write_signed_links

    _config(args)
    links = write_signed_links(args.ids, args.base_url, args.app, args.out)
    print(f"wrote {len(links)} signed links to {args.out}")
