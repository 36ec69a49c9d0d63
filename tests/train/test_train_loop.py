"""The shared training loop: one step lowers the losses, run folder contents, kill-and-resume equivalence."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_support import TINY_SG2IM, TINY_TRAIN, assert_states_equal, train_config

from retrievegan import io
from retrievegan.data.dataset import SceneGraphDataset, collate_scene_graphs
from retrievegan.errors import ConfigError
from retrievegan.train import checkpoint as ckpt
from retrievegan.train.loop import Trainer, train
from retrievegan.train.registry import create_method


def test_one_step_lowers_generator_and_discriminator_losses(tiny_dataset):
    ds = SceneGraphDataset(tiny_dataset.data_dir, "train")
    batch = collate_scene_graphs([ds[i] for i in range(4)])
    params = {**TINY_SG2IM, "optim_generator": {"lr": 1e-3}, "optim_d_img": {"lr": 1e-3}, "optim_d_obj": {"lr": 1e-3}}
    method = create_method("sg2im", params, ds.spec)
    trainer = Trainer(method, train_config(), torch.device("cpu"))
    ctx = trainer.context(batch, 0, 0)
    with torch.no_grad():
        g_before = method.generator_step(trainer.nets, batch, ctx)
        d_before = method.discriminator_step(trainer.nets, batch, g_before.cache, ctx).loss
    params_before = {k: v.clone() for k, v in trainer.nets["generator"].state_dict().items()}
    logs = trainer.train_step(batch, 0, 0)
    assert logs["skipped"] == 0 and set(logs["G"]) >= {"l1_pixel", "bbox", "mask", "ac_obj", "adv_obj", "adv_img"}
    with torch.no_grad():
        g_after = method.generator_step(trainer.nets, batch, trainer.context(batch, 0, 0)).loss
        d_after = method.discriminator_step(trainer.nets, batch, g_before.cache, ctx).loss
    assert g_after < g_before.loss, (float(g_before.loss), float(g_after))
    assert d_after < d_before, (float(d_before), float(d_after))
    changed = [k for k, v in trainer.nets["generator"].state_dict().items() if not torch.equal(v, params_before[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("crn.") for k in changed)


def test_gradients_equal_a_plain_backward_bit_for_bit(tiny_dataset):
    """``Trainer._backward`` (``torch.autograd.grad`` into ``.grad`` without DDP) gives the gradients that
    ``loss.backward()`` into cleared gradients gives, bit for bit, for every parameter of both roles (the other
    role's parameters get none)."""
    ds = SceneGraphDataset(tiny_dataset.data_dir, "train")
    batch = collate_scene_graphs([ds[i] for i in range(4)])
    trainers = [
        Trainer(create_method("sg2im", TINY_SG2IM, ds.spec), train_config(), torch.device("cpu")) for _ in range(2)
    ]
    for role in ("generator", "discriminator"):
        grads = []
        for use_trainer, trainer in zip((True, False), trainers):
            ctx = trainer.context(batch, 0, 0)
            with trainer._frozen(role):
                out = trainer.method.generator_step(trainer._view(role), batch, ctx)
                if role == "discriminator":
                    out = trainer.method.discriminator_step(trainer._view(role), batch, out.cache, ctx)
                for net in trainer.nets.values():
                    net.zero_grad(set_to_none=True)
                if use_trainer:
                    assert bool(trainer._backward(role, out.loss))
                else:
                    out.loss.backward()
            grads.append({f"{n}.{k}": p.grad for n, net in trainer.nets.items() for k, p in net.named_parameters()})
        mine, plain = grads
        assert mine.keys() == plain.keys()
        for key, grad in plain.items():
            assert (grad is None) == (mine[key] is None), key
            assert grad is None or torch.equal(grad, mine[key]), key
        owned = {f"{n}." for n in trainers[0].names(role)}
        assert all((grad is not None) == any(k.startswith(o) for o in owned) for k, grad in mine.items())


def test_run_folder_contents(tiny_sg2im_run):
    out = tiny_sg2im_run.out_dir
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "losses.jsonl", "run.json", "snapshots"]
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [f"step_{s:08d}.pt" for s in (0, 2, 4)]
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0 and run["config"]["method"] == "sg2im" and run["steps"] == 4
    assert run["config"]["train"]["batch_size"] == 4 and run["versions"]["torch"]
    assert run["checkpoint_sha256"] == io.sha256_file(out / "checkpoint.pt")
    lines = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all("G/total" in line and "D/total" in line for line in lines)
    payload = ckpt.load(out / "checkpoint.pt")
    assert payload["step"] == 4 and set(payload["networks"]) == {"generator", "d_img", "d_obj"}
    assert set(payload["optimizers"]) == {"generator", "d_img", "d_obj"}
    assert "rng" not in payload  # no per-process global RNG state: same computation, same bytes
    run_text = (out / "run.json").read_text()
    for varying in ("git_sha", "host", "command", "started_utc", "wall_seconds", "resumed_from", "images_per_second"):
        assert f'"{varying}' not in run_text, varying  # provenance goes to the job log, not to run.json
    assert all(
        set(line) == {"step", "epoch", "meta", "G/total", "D/total"} | {k for k in line if "/" in k}
        and set(line["meta"]) == {"skipped"}
        for line in lines
    )  # no wall times in the loss log
    # the step-0 snapshot differs from the final generator
    first = torch.load(out / "snapshots" / "step_00000000.pt", weights_only=True)["networks"]["generator"]
    assert any(not torch.equal(v, payload["networks"]["generator"][k]) for k, v in first.items())


def _wait_for(predicate, proc, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def _logged_step(out_dir):
    logs = list(out_dir.glob("state/*/losses.jsonl"))
    if not logs:
        return 0
    lines = [line for line in logs[0].read_text().splitlines() if line.endswith("}")]
    return json.loads(lines[-1])["step"] if lines else 0


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted_run(tiny_dataset, tmp_path):
    steps = 30  # 12 steps per epoch: the kill and the resume cross epoch boundaries
    cfg = {**TINY_TRAIN, "steps": steps, "checkpoint_every": 3, "snapshot_every": 0}
    reference = train("sg2im", TINY_SG2IM, train_config(**cfg), tiny_dataset.data_dir, tmp_path / "ref", progress=False)

    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "retrievegan.cli",
        "train",
        "--no-progress",
        "--method",
        "sg2im",
        "--params",
        json.dumps(TINY_SG2IM),
        "--train-params",
        json.dumps(cfg),
        "--data-dir",
        str(tiny_dataset.data_dir),
        "--out-dir",
        str(killed),
        "--resume",
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        reached = _wait_for(lambda: _logged_step(killed) >= 4, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate()[0].decode(errors="replace")
    assert reached, f"the run ended before it could be killed:\n{output}"
    assert not (killed / "checkpoint.pt").exists()
    assert list(killed.glob("state/*/last.pt")), "no checkpoint was written before the kill"

    # a changed configuration never resumes a stale state
    other = tmp_path / "other"
    shutil.copytree(killed, other)
    fresh = train(
        "sg2im",
        TINY_SG2IM,
        train_config(**{**cfg, "seed": 1, "steps": 1}),
        tiny_dataset.data_dir,
        other,
        resume=True,
        progress=False,
    )
    assert fresh.resumed_from is None

    resumed = train(
        "sg2im", TINY_SG2IM, train_config(**cfg), tiny_dataset.data_dir, killed, resume=True, progress=False
    )
    assert resumed.resumed_from is not None and 3 <= resumed.resumed_from < steps
    a, b = ckpt.load(reference.checkpoint), ckpt.load(resumed.checkpoint)
    for key in ("networks", "optimizers", "scalers", "step", "epoch", "config_hash"):
        assert_states_equal(a[key], b[key], key)
    # the run folders are the same bytes (DVC-tracked outputs: `make verify`): checkpoint (no global RNG
    # state), run.json (no times, no resume step), loss log (no timings); the resume shows in the provenance
    for name in ("checkpoint.pt", "run.json", "losses.jsonl"):
        assert (tmp_path / "ref" / name).read_bytes() == (killed / name).read_bytes(), name
    assert not (killed / "state").exists()


def test_bad_configuration_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        train(
            "sg2im", {**TINY_SG2IM, "gconv_layers": 3}, train_config(), tiny_dataset.data_dir, tmp_path, progress=False
        )
    with pytest.raises(ConfigError, match="unknown method"):
        train("nope", {}, train_config(), tiny_dataset.data_dir, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="not divisible"):
        train(
            "sg2im",
            {**TINY_SG2IM, "refinement_dims": [8, 8, 8, 8, 8, 8]},
            train_config(),
            tiny_dataset.data_dir,
            tmp_path,
            progress=False,
        )
    with pytest.raises(ConfigError, match="exceeds"):
        train("sg2im", TINY_SG2IM, train_config(batch_size=1000), tiny_dataset.data_dir, tmp_path, progress=False)


@pytest.mark.slow
def test_compiled_networks_train_like_eager_ones(tiny_sg2im_run, tmp_path):
    """torch.compile (the cheap `eager` backend here) changes neither the checkpoint format nor the result."""
    result = train(
        "sg2im",
        TINY_SG2IM,
        train_config(compile=True, compile_backend="eager"),
        tiny_sg2im_run.data_dir,
        tmp_path / "compiled",
        progress=False,
    )
    compiled = ckpt.load(result.checkpoint)["networks"]
    eager = ckpt.load(tiny_sg2im_run.checkpoint)["networks"]
    for name in eager:
        assert set(compiled[name]) == set(eager[name])
        for key, value in eager[name].items():
            assert torch.allclose(compiled[name][key].float(), value.float(), atol=1e-5), f"{name}.{key}"


def test_resume_extends_a_finished_run(tiny_sg2im_run, tmp_path):
    """--resume on a finished run with more steps continues from its checkpoint (same result as one long run)."""
    extended = tmp_path / "extended"
    shutil.copytree(tiny_sg2im_run.out_dir, extended)
    longer = train(
        "sg2im", TINY_SG2IM, train_config(steps=6), tiny_sg2im_run.data_dir, extended, resume=True, progress=False
    )
    assert longer.resumed_from == 4
    straight = train(
        "sg2im", TINY_SG2IM, train_config(steps=6), tiny_sg2im_run.data_dir, tmp_path / "straight", progress=False
    )
    a, b = ckpt.load(longer.checkpoint), ckpt.load(straight.checkpoint)
    assert_states_equal(a["networks"], b["networks"], "networks")
    assert_states_equal(a["optimizers"], b["optimizers"], "optimizers")
    assert [json.loads(x)["step"] for x in (extended / "losses.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (extended / "snapshots").iterdir()) == [f"step_{s:08d}.pt" for s in (0, 2, 4, 6)]
