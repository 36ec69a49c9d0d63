"""Same computation, same bytes: the writers of DVC-tracked outputs leave out everything that varies between
runs (times, hosts, git SHA, command line, temporary names, object identity), and that goes to the job
log's provenance line instead. (End to end: `make verify`, docs/scale.md; training: tests/train/test_train_loop.py.)
"""

from __future__ import annotations

import collections
import io as _io
import json
import os
import time

import numpy as np
import torch
from test_userstudy import bundle, bundle_dir, root, themes  # noqa: F401 -- the user-study fixtures

from retrievegan import io, runinfo
from retrievegan.study.config import SimulationConfig
from retrievegan.study.simulate import SIMULATION_EPOCH, SimulatedClock, simulate
from retrievegan.study.store import Store
from retrievegan.weights import portable_path


def test_run_json_is_the_same_bytes_and_provenance_goes_to_the_log(tmp_path, monkeypatch, capsys):
    config = {"lr": 0.001, "steps": 3}
    runinfo.write_run_json(tmp_path / "a", "train", config, 0, {"steps": 3}, measured={"wall_seconds": 1.5})
    first = capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)  # another day, another working directory
    runinfo.write_run_json(tmp_path / "b", "train", config, 0, {"steps": 3}, measured={"wall_seconds": 9.0})
    second = capsys.readouterr().err
    assert (tmp_path / "a/run.json").read_bytes() == (tmp_path / "b/run.json").read_bytes()
    record = json.loads((tmp_path / "a/run.json").read_text())
    assert set(record) == {"stage", "config", "seed", "versions", "steps"} and record["versions"]["torch"]
    logged = runinfo.read_provenance(first.splitlines() + second.splitlines())
    a, b = logged[(tmp_path / "a/run.json").as_posix()], logged[(tmp_path / "b/run.json").as_posix()]
    assert {"git_sha", "command", "cwd", "host", "recorded_utc"} <= set(a)
    assert (a["wall_seconds"], b["wall_seconds"]) == (1.5, 9.0) and b["cwd"] == str(tmp_path)


def test_torch_payload_bytes_do_not_depend_on_file_name_or_object_identity(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    fresh = {
        "networks": {"net": net.state_dict()},
        "optimizer": {"0": {"exp_avg": torch.ones(2)}, "1": {"exp_avg": torch.zeros(2)}},
    }
    # what a resumed run holds: the same values, but equal keys as distinct string objects (loaded state
    # merged into live objects), which pickle writes out in full instead of as back-references
    copied = {
        "networks": {"net": net.state_dict()},
        "optimizer": {
            "".join(["0"]): {"".join(["exp_", "avg"]): torch.ones(2)},
            "".join(["1"]): {"".join(["exp_", "avg"]): torch.zeros(2)},
        },
    }
    plain, plain_copied = _io.BytesIO(), _io.BytesIO()
    torch.save(fresh, plain)
    torch.save(copied, plain_copied)
    assert plain.getvalue() != plain_copied.getvalue()  # the problem io.save_torch solves
    reloaded = copied
    io.save_torch(tmp_path / "checkpoint.pt", fresh)
    io.save_torch(tmp_path / "other-name.pt", reloaded)
    assert (tmp_path / "checkpoint.pt").read_bytes() == (tmp_path / "other-name.pt").read_bytes()
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert isinstance(loaded["networks"]["net"], collections.OrderedDict)
    assert loaded["networks"]["net"]._metadata == net.state_dict()._metadata  # module versions kept
    fresh_net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    fresh_net.load_state_dict(loaded["networks"]["net"])
    assert all(torch.equal(a, b) for a, b in zip(fresh_net.state_dict().values(), net.state_dict().values()))


def test_npz_bytes_do_not_depend_on_the_time(tmp_path, monkeypatch):
    arrays = {"mu": np.arange(4.0), "meta": np.array(json.dumps({"split": "val"}))}
    io.save_npz(tmp_path / "a.npz", arrays)
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    monkeypatch.setattr(time, "localtime", lambda *a: time.struct_time((2033, 5, 18, 3, 33, 20, 2, 138, 0)))
    io.save_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert data["mu"].tolist() == [0, 1, 2, 3] and json.loads(str(data["meta"])) == {"split": "val"}


def test_weights_outside_the_project_are_named_by_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path("results/synth/models/synthnet/synthnet.pt") == "results/synth/models/synthnet/synthnet.pt"
    assert portable_path(tmp_path / "weights/x.pth") == "weights/x.pth"
    assert (
        portable_path("/home/alice/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth") == "alexnet-owt-7be5be79.pth"
    )


def test_simulated_responses_export_the_same_bytes(bundle, themes, tmp_path):  # noqa: F811 -- fixtures
    cfg = SimulationConfig(enabled=True, participants=4, seed=3)
    exports = []
    for name in ("one", "two"):
        clock = SimulatedClock()
        store = Store(f"sqlite:///{tmp_path / name}.sqlite", create=True, clock=clock)
        simulate(bundle, themes, cfg, store, clock)
        exports.append(store.export_responses().to_csv(index=False))
        store.dispose()
        time.sleep(1.1)  # a real clock would have moved on
    assert exports[0] == exports[1]
    first = exports[0].splitlines()[1]
    assert first.split(",")[-1].startswith(str(SIMULATION_EPOCH.date())), first
    assert os.path.getsize(tmp_path / "one.sqlite") > 0
