"""A real DVC remote over SSH: push from one clone, pull into a fresh clone, Snakemake has nothing to do.

The remote is dvc-ssh (SFTP) against an OpenSSH server that the test starts on 127.0.0.1 with its own
configuration, a throw-away client key and a free port (tests/sshserver.py). (dvc-ssh, through sshfs, does
not check the server's host key: known_hosts is not read; docs/scale.md says so.) The project is the tiny
copy of tests/workflow/test_dvc_roundtrip.py (the repository's own dvc.yaml, rules, .dvc/config). The remote is
named in the committed .dvc/config (URL only), the key goes to each clone's git-ignored .dvc/config.local,
as docs/scale.md describes for the team's remote.

Needs root and Debian's openssh-server (.ci/run installs it); it skips otherwise, unless
RETRIEVEGAN_REQUIRE_SSHD is set (`.ci/run` installs openssh-server and sets it), which makes that a failure.
"""

from __future__ import annotations

import os
import time

import pytest
from sshserver import SshServer, unavailable_reason
from test_dvc_roundtrip import BIN, ENV, REMOTE, TARGETS, clone, make_project, run, sync

pytestmark = pytest.mark.slow

REQUIRED = os.environ.get("RETRIEVEGAN_REQUIRE_SSHD", "") not in ("", "0")


def unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"RETRIEVEGAN_REQUIRE_SSHD is set but the SSH server is unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if os.geteuid() != 0:
        unavailable("starting sshd needs root")
    reason = unavailable_reason()
    if reason:
        unavailable(reason)
    with SshServer(tmp_path_factory.mktemp("sshd")) as started:
        yield started


def test_ssh_remote_push_pull_then_nothing_to_do(server, tmp_path):
    env = dict(ENV, HOME=str(server.home))  # no ~/.ssh of the machine's user is read or written
    dvc = str(BIN / "dvc")
    project = make_project(tmp_path / "project")
    run(project, dvc, "repro", "data")
    storage = tmp_path / "server-storage"  # the remote's folder on the "server" (same machine, over SFTP)
    run(project, dvc, "remote", "add", "team", server.url(storage))
    run(project, dvc, "remote", "modify", "team", "verify", "true")
    run(project, "git", "add", "dvc.lock", ".dvc/config")
    run(project, "git", "commit", "-qm", "dvc.lock + the team's SSH remote")
    run(project, dvc, "remote", "modify", "--local", "team", "keyfile", str(server.client_key))

    started = time.monotonic()
    pushed = sync(project, "push", "-r", "team", "data", env=env)
    push_seconds = time.monotonic() - started
    assert "pushed; the remote holds every object" in pushed.stdout, pushed.stdout + pushed.stderr
    objects = [p for p in (storage / "files/md5").rglob("*") if p.is_file()]
    assert objects, "nothing reached the SSH remote"
    assert not (project.parent / REMOTE).exists()  # nothing went to the default local-folder remote
    assert "Accepted publickey" in server.log.read_text()  # really over SSH, with the throw-away key

    fresh = clone(project, tmp_path / "fresh")
    run(fresh, dvc, "remote", "modify", "--local", "team", "keyfile", str(server.client_key))
    started = time.monotonic()
    pulled = sync(fresh, "pull", "-r", "team", "data", env=env)
    pull_seconds = time.monotonic() - started
    assert "touched (up to date for Snakemake): data" in pulled.stdout, pulled.stdout + pulled.stderr
    for target in TARGETS:
        assert (fresh / target).read_bytes() == (project / target).read_bytes(), target
    dry = run(fresh, str(BIN / "snakemake"), "-n", "--cores", "1", *TARGETS)
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]
    assert run(fresh, dvc, "status", "-c", "-r", "team", "data", env=env).stdout.strip() in (
        "Cache and remote 'team' are in sync.",
        "",
    )
    print(
        f"SSH remote: {len(objects)} objects; push {push_seconds:.1f} s, pull + verify + hand-over {pull_seconds:.1f} s"
    )
