"""A throw-away OpenSSH server on loopback, for the DVC SSH-remote test (`tests/workflow/test_dvc_ssh.py`).

Everything lives in one temporary folder: a fresh host key, a fresh client key (ed25519, no passphrase),
``authorized_keys``, ``sshd_config`` (127.0.0.1 only, a free port, public-key login only, no PAM, the
built-in SFTP server that dvc-ssh talks to) and a ``home/.ssh/known_hosts`` holding the host key under
``[127.0.0.1]:<port>`` (a HOME for the clients, so the test neither reads nor writes the machine user's
``~/.ssh``; plain ``ssh`` would check the key there, dvc-ssh does not check it). ``sshd -D`` runs in the
foreground as a child of this process and is stopped by its process id.

Needs root (sshd's privilege separation; the login user is the current one) and Debian's
``openssh-server`` (``.ci/run`` installs it); ``unavailable_reason()`` says what is missing.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start without it


def missing() -> list[str]:
    return [name for name in (SSHD, "ssh-keygen") if shutil.which(name) is None and not Path(name).exists()]


def unavailable_reason() -> str | None:
    """None when sshd and ssh-keygen are present, else which are missing and how to install them."""
    absent = missing()
    return f"{', '.join(absent)} missing (apt-get install openssh-server, as .ci/run does)" if absent else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SshServer:
    """``with SshServer(folder) as server:`` -> ``server.port``, ``server.user``, ``server.client_key``,
    ``server.home`` (a HOME whose ``.ssh/known_hosts`` trusts the server), ``server.log``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.port = _free_port()
        self.user = getpass.getuser()
        self.client_key = self.folder / "client_ed25519"
        self.home = self.folder / "home"
        self.log = self.folder / "sshd.log"
        self._proc: subprocess.Popen | None = None

    def _keygen(self, path: Path) -> None:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "retrievegan-test", "-f", str(path)],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> SshServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        host_key = self.folder / "ssh_host_ed25519_key"
        self._keygen(host_key)
        self._keygen(self.client_key)
        authorized = self.folder / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        config = self.folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {self.folder / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    f"AllowUsers {self.user}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",  # the temporary folder is not owned the way ~/.ssh would be
                    "Subsystem sftp internal-sftp",  # dvc-ssh (sshfs / asyncssh) speaks SFTP
                    "LogLevel VERBOSE",
                ]
            )
            + "\n"
        )
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        key_type, key = host_key.with_suffix(".pub").read_text().split()[:2]
        (ssh_dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {key_type} {key}\n")
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        checked = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True, timeout=60)
        if checked.returncode != 0:
            raise RuntimeError(f"sshd -t refused the configuration: {checked.stderr}")
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({self._proc.returncode}): {self.log.read_text()[-2000:]}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port} within 30 s: {self.log.read_text()[-2000:]}")

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{Path(path).resolve()}"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
