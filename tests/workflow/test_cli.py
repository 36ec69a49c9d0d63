"""The stage registry behind `retrievegan <stage>`: every stage declared once (name, help, arguments, run), the
parser built from it, and the common options (``--no-progress``, ``--threads``, the OpenMP wait policy) applied
by ``cli.main`` before a stage runs."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from pathlib import Path

import pytest

from retrievegan import cli
from retrievegan.commands import registry
from retrievegan.errors import InputError

COMMANDS = Path(cli.__file__).parent / "commands"

# stage -> (--threads default, passive OpenMP wait) of the stages that take --threads or wait passively
COMMON = {
    **{s: (None, False) for s in ("category-cnn", "patch-features", "cooccur", "prefilter")},
    **{
        s: (0, True)
        for s in ("train", "sample", "gcn-features", "box-l1", "progress-figure", "pretrain-damsm", "paper-estimate")
    },
    "rarity": (0, False),
    **{
        s: (1, True)
        for s in (
            "synthnet",
            "real-stats",
            "metrics",
            "group-mass",
            "compat-trace",
            "d-probe",
            "c1-controls",
            "c1-mechanism",
        )
    },
    **{s: ("no --threads", True) for s in ("real-metrics", "compatibility", "compat-summary")},
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_every_stage_is_declared_once_with_help_arguments_and_run():
    stages = cli.registered_stages()
    names = [s.name for s in stages]
    assert len(names) == len(set(names)) and len(names) >= 39
    for declared in stages:
        assert re.fullmatch(r"[a-z][a-z0-9-]*", declared.name), declared.name
        assert declared.help.strip() and declared.help == declared.help.strip(), declared.name
        assert callable(declared.arguments) and callable(declared.run), declared.name
        assert declared.module in cli.COMMAND_MODULES and declared.run.__module__ == declared.module
    assert cli.STAGES == {s.name: s.module for s in stages}  # name -> module (tests/workflow/test_dvc_stages.py)


def test_parser_lists_exactly_the_registered_stages_in_order():
    parser = cli.build_parser()
    subparsers = _subparsers(parser)
    assert list(subparsers) == [s.name for s in cli.registered_stages()]
    for declared in cli.registered_stages():
        sub = subparsers[declared.name]
        assert sub.description == declared.help and sub.get_default("_stage") is declared
        assert _option(sub, "--no-progress") is not None  # the common option of every stage
    helps = {
        a.dest: a.help
        for a in next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))._choices_actions
    }
    assert helps == {s.name: s.help for s in cli.registered_stages()}


def test_command_modules_do_not_dispatch_on_the_stage_name():
    for path in COMMANDS.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\bstage\s*(==|!=|in\s*\()", text), path.name
        assert "def configure(" not in text and "def run(" not in text, path.name


def test_threads_and_passive_wait_are_declared_per_stage():
    subparsers = _subparsers(cli.build_parser())
    found = {}
    for declared in cli.registered_stages():
        sub = subparsers[declared.name]
        option, threads = _option(sub, "--threads"), sub.get_default(registry.THREADS_DEST)
        assert (option is None) == (threads is None), declared.name  # only Threads.add_to adds --threads
        if option is not None:
            assert option.type is int and option.default == threads.default, declared.name
        if option is not None or declared.passive_wait:
            found[declared.name] = (threads.default if threads else "no --threads", declared.passive_wait)
    assert found == COMMON


@pytest.mark.parametrize(
    ("default", "value", "count"),
    [
        (None, None, None),
        (None, 0, 1),
        (None, 3, 3),  # embed: None keeps torch's default
        (0, 0, None),
        (0, 2, 2),
        (0, -1, 1),  # train & co: 0 keeps torch's default
        (1, 1, 1),
        (1, 0, 1),
        (1, 4, 4),  # evaluate: at least one thread
    ],
)
def test_threads_count(default, value, count):
    assert registry.Threads(default).count(value) == count


def _replaced(monkeypatch, name: str, run) -> None:
    """Stage ``name`` with ``run`` as its work (everything else as declared)."""
    import importlib

    declared = {s.name: s for s in cli.registered_stages()}[name]
    module = importlib.import_module(declared.module)
    (function,) = [f for f in vars(module).values() if getattr(f, registry.STAGE_ATTRIBUTE, None) == declared]
    monkeypatch.setattr(function, registry.STAGE_ATTRIBUTE, dataclasses.replace(declared, run=run))


def test_main_applies_threads_and_wait_policy_before_the_stage_runs(monkeypatch, tmp_path):
    import torch

    seen = {}

    def fake_run(args: argparse.Namespace) -> None:
        seen.update(
            policy=os.environ.get("OMP_WAIT_POLICY"), threads=torch.get_num_threads(), progress=not args.no_progress
        )

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    _replaced(monkeypatch, "box-l1", fake_run)
    try:
        assert (
            cli.main(
                [
                    "box-l1",
                    "--checkpoint",
                    "c.pt",
                    "--data-dir",
                    str(tmp_path),
                    "--out",
                    "o.json",
                    "--threads",
                    "2",
                    "--no-progress",
                ]
            )
            == 0
        )
    finally:
        torch.set_num_threads(before)
    assert seen == {"policy": "PASSIVE", "threads": 2, "progress": False}


def test_main_keeps_torch_threads_and_wait_policy_of_stages_without_them(monkeypatch, tmp_path):
    import torch

    seen = {}
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.setdefault("set_num_threads", n))
    _replaced(monkeypatch, "rarity", lambda args: seen.update(policy=os.environ.get("OMP_WAIT_POLICY")))
    assert cli.main(["rarity", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path)]) == 0
    assert seen == {"policy": None}  # --threads 0: torch's default; rarity does not set the wait policy


def test_main_exit_status(monkeypatch, capsys):
    _replaced(monkeypatch, "compat-summary", lambda args: 3)
    assert cli.main(["compat-summary", "--compatibility", "a.json"]) == 3

    def bad_input(args: argparse.Namespace) -> None:
        raise InputError("a.json", "not a compatibility file")

    _replaced(monkeypatch, "compat-summary", bad_input)
    assert cli.main(["compat-summary", "--compatibility", "a.json"]) == 2
    assert capsys.readouterr().err == "retrievegan compat-summary: error: a.json: not a compatibility file\n"


def test_a_stage_name_belongs_to_one_module():
    import importlib
    import types

    declared = cli.registered_stages()[0]
    other = types.ModuleType("retrievegan.commands.other")
    run = registry.stage(declared.name, help="x", arguments=lambda parser: None)(lambda args: None)
    run.__module__ = other.__name__
    setattr(
        run,
        registry.STAGE_ATTRIBUTE,
        dataclasses.replace(getattr(run, registry.STAGE_ATTRIBUTE), module=other.__name__),
    )
    other.run = run
    with pytest.raises(ValueError, match="declared by"):
        registry.stages([importlib.import_module(declared.module), other])
