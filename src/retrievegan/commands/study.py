"""Stages: study-trials, study-simulate, study-export, study-report (the user study, paper Fig. 3), and the
operator commands study-serve (check everything, then run the app) and study-links (signed links).

No command takes a database password on its command line: ``--database-url`` / ``--db-url`` refuse one;
the full URL goes in the environment (``RETRIEVEGAN_STUDY_DB_URL``) or the Streamlit secrets file.
"""

from __future__ import annotations

import argparse

from retrievegan.config import from_json
from retrievegan.errors import ConfigError


def _method_path(text: str) -> tuple[str, str]:
    method, sep, path = text.partition("=")
    if not sep or not method or not path:
        raise argparse.ArgumentTypeError(f"expected METHOD=PATH, got {text!r}")
    return method, path


def configure(stage: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="{}", help="JSON of the `userstudy` config section")
    if stage == "study-trials":
        parser.add_argument("--retrievals", nargs="+", type=_method_path, required=True, metavar="METHOD=PATH",
                            help="retrievals.json of the reference and of every compared method")
        parser.add_argument("--data-dir", required=True, help="canonical data folder (vocab.json, test.json)")
        parser.add_argument("--patch-dir", required=True, help="patch bank folder (patches.npy, patches.csv)")
        parser.add_argument("--out-dir", required=True, help="study bundle folder to write")
        parser.add_argument("--dataset", default="", help="dataset name recorded in the bundle")
    elif stage == "study-simulate":
        parser.add_argument("--study-dir", required=True, help="study bundle folder")
        parser.add_argument("--patch-table", required=True, help="patches.csv (with themes: synthetic benchmark)")
        parser.add_argument("--out", required=True, help="responses CSV of the simulated participants")
        parser.add_argument("--truth-out", required=True,
                            help="CSV: per simulated participant and pair, the expected number preferring the reference")
    elif stage == "study-export":
        parser.add_argument("--database-url", default=None,
                            help="SQLAlchemy URL of the study database, without a password (default: "
                                 "$RETRIEVEGAN_STUDY_DB_URL, which may hold one)")
        parser.add_argument("--out", required=True, help="responses CSV to write")
    elif stage == "study-serve":
        parser.add_argument("--study-dir", default=None, help="study bundle folder (default: $RETRIEVEGAN_STUDY_DIR, "
                                                              "else results/synth/userstudy/study)")
        parser.add_argument("--consent", default=None, help="consent text (default: userstudy/consent.md)")
        parser.add_argument("--db-url", default=None, help="database URL without a password (default: "
                                                           "$RETRIEVEGAN_STUDY_DB_URL, the secret database_url, "
                                                           "userstudy.database_url, userstudy/data/...)")
        parser.add_argument("--init", action="store_true", help="create the database if it does not exist "
                                                                "(once, before the study); without it a missing "
                                                                "database refuses the start")
        parser.add_argument("--address", default="127.0.0.1", help="address to listen on (0.0.0.0: every "
                                                                   "interface; put HTTPS in front)")
        parser.add_argument("--port", type=int, default=8501)
        parser.add_argument("--app", default=None, help="the app script (default: userstudy/app.py of this checkout)")
        parser.add_argument("--check", action="store_true", help="only run the start-up checks, do not serve")
    elif stage == "study-links":
        parser.add_argument("--ids", required=True, help="text file, one participant id a line")
        parser.add_argument("--base-url", required=True, help="the study's public URL, e.g. https://study.example.org/")
        parser.add_argument("--out", required=True, help="CSV of participant_id, link")
        parser.add_argument("--app", default=None, help="the app script whose .streamlit/secrets.toml holds link_secret")
    elif stage == "study-report":
        parser.add_argument("--responses", required=True, help="exported responses CSV")
        parser.add_argument("--population", required=True, choices=["participants", "simulated"])
        parser.add_argument("--truth", default=None, help="expected preference CSV (simulated population only)")
        parser.add_argument("--out-dir", required=True)
    else:
        raise ValueError(stage)


def run(stage: str, args: argparse.Namespace) -> None:
    from retrievegan.study.config import UserStudyConfig

    cfg = from_json(UserStudyConfig, args.params, "userstudy")
    if stage == "study-trials":
        from retrievegan import runinfo
        from retrievegan.study.pool import build_bundle

        retrievals = dict(args.retrievals)
        if len(retrievals) != len(args.retrievals):
            raise ConfigError("--retrievals names a method twice")
        content = build_bundle(retrievals, args.data_dir, args.patch_dir, cfg, args.out_dir, args.dataset,
                               cfg.database_url)
        runinfo.write_run_json(args.out_dir, "study-trials", cfg, cfg.plan.seed, {"study_id": content["study_id"]})
        counts = ", ".join(f"{m}: {len(v)}" for m, v in content["pairs"].items())
        print(f"study {content['study_id']}: pair items {counts}; {len(content['catch'])} catch items; "
              f"{len(content['patch_ids'])} patches")
    elif stage == "study-simulate":
        import tempfile
        from pathlib import Path

        from retrievegan import io
        from retrievegan.study.pool import load_bundle
        from retrievegan.study.simulate import SimulatedClock, patch_themes, simulate, truth
        from retrievegan.study.store import Store

        bundle = load_bundle(args.study_dir)
        themes = patch_themes(args.patch_table, bundle)
        sim_cfg = cfg.simulate
        with tempfile.TemporaryDirectory(prefix="study-sim-") as tmp:
            clock = SimulatedClock()  # created_at: simulated time, the same on every run
            store = Store(f"sqlite:///{Path(tmp) / 'simulated.sqlite'}", create=True, clock=clock)  # throwaway
            try:
                people = simulate(bundle, themes, sim_cfg, store, clock)
                responses = store.export_responses()
                plans = [store.get_plan(p) for p in people["participant_id"]]
            finally:
                store.dispose()
        attentive = dict(zip(people["participant_id"], people["attentive"]))
        expected = truth(bundle, themes, sim_cfg, [p for p in plans if p is not None], attentive)
        responses.insert(0, "population", "simulated")
        io.write_text(args.out, responses.to_csv(index=False))
        io.write_text(args.truth_out, expected.assign(population="simulated").to_csv(index=False, float_format="%.6g"))
        print(f"simulated {len(people)} participants ({int(people['attentive'].sum())} attentive), "
              f"{len(responses)} responses")
    elif stage == "study-export":
        from pathlib import Path

        import os

        import sqlalchemy as sa

        from retrievegan import io
        from retrievegan.errors import InputError
        from retrievegan.study import dburl
        from retrievegan.study.store import DatabaseMissing, Store

        dburl.refuse_password(args.database_url, "--database-url")
        raw = args.database_url or os.environ.get(dburl.ENV_DB_URL)
        if not raw:
            raise ConfigError(f"no database: give --database-url or set {dburl.ENV_DB_URL}")
        url = dburl.absolute(raw)
        shown = dburl.shown(url)
        path = dburl.sqlite_path(url)
        if path is not None and not path.exists():
            raise InputError(shown, "study database not found (has the app run with this URL?)")
        try:
            store = Store(url)
        except DatabaseMissing as exc:
            raise InputError(shown, str(exc).split(": ", 1)[-1]) from exc
        try:
            responses = store.export_responses()
        except sa.exc.DBAPIError as exc:
            raise InputError(shown, f"cannot read the study tables: {exc.orig}") from exc
        finally:
            store.dispose()
        io.write_text(args.out, responses.to_csv(index=False))
        print(f"exported {len(responses)} responses of {responses['participant_id'].nunique()} participants")
    elif stage == "study-serve":
        import os
        from pathlib import Path

        from retrievegan.study import server

        app_file = Path(args.app) if args.app else server.default_app_file()
        secrets = server.read_secrets_files(server.app_dir_of(app_file))
        prepared = server.prepare(app_file, args.study_dir, args.consent, args.db_url, args.init, os.environ, secrets)
        print(prepared.summary, flush=True)
        if not args.check:
            print(f"serving http://{args.address}:{args.port}/ (Streamlit in {server.app_dir_of(app_file)})", flush=True)
            server.exec_streamlit(app_file, prepared, args.address, args.port)
    elif stage == "study-links":
        from pathlib import Path

        from retrievegan import io
        from retrievegan.study import server

        app_file = Path(args.app) if args.app else server.default_app_file()
        links = server.signed_links(Path(args.ids), args.base_url, server.read_secrets_files(server.app_dir_of(app_file)))
        io.write_text(args.out, links.to_csv(index=False))
        print(f"wrote {len(links)} signed links to {args.out}")
    elif stage == "study-report":
        import pandas as pd

        from retrievegan.errors import InputError
        from retrievegan.study.analysis import analyze, load_responses, write_report

        responses = load_responses(args.responses)
        if "population" in responses.columns and set(responses["population"]) != {args.population}:
            raise InputError(args.responses, f"population column says {sorted(set(responses['population']))}, "
                                             f"--population {args.population}")
        is_sim = responses["id_source"].eq("simulated")
        if args.population == "participants" and is_sim.any():
            raise InputError(args.responses, "simulated responses in a report on participants")
        if args.population == "simulated" and not is_sim.all():
            raise InputError(args.responses, "responses of people in a report on simulated participants")
        expected = None
        if args.truth:
            if args.population != "simulated":
                raise ConfigError("--truth goes only with --population simulated")
            expected = pd.read_csv(args.truth, dtype={"participant_id": str})
            missing = {"participant_id", "other", "n_trials", "expected_prefer_reference"} - set(expected.columns)
            if missing:
                raise InputError(args.truth, f"missing columns {sorted(missing)}")
        report = analyze(responses, cfg.reference, cfg.methods, cfg.analysis, args.population, expected,
                         source=args.responses)
        paths = write_report(report, args.out_dir)
        for _, row in report.aggregates.iterrows():
            print(f"{row['population']} {row['measure']} {row['label']}: {row['share']:.3f} "
                  f"[{row['wilson_low']:.3f}, {row['wilson_high']:.3f}] n={row['n']} p_holm={row['p_holm']:.3g}")
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    else:
        raise ValueError(stage)
