"""Install Debian packages a test needs (root + apt-get), for the tests that start real daemons
(tests/slurmcluster.py: Slurm + munge; tests/sshserver.py: OpenSSH)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence


def ensure_packages(missing: Callable[[], list[str]], packages: Sequence[str], timeout: float = 900) -> str | None:
    """``apt-get install packages`` when ``missing()`` (the absent binaries) is not empty.

    Returns None when everything is present (afterwards), else the reason it could not be installed."""
    if not missing():
        return None
    absent = ", ".join(missing())
    if os.geteuid() != 0:
        return f"{absent} missing and not root, cannot apt-get install {' '.join(packages)}"
    if shutil.which("apt-get") is None:
        return f"{absent} missing and no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if proc.returncode != 0:
            return f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-1500:]}"
    still = missing()
    return f"still missing after apt-get install: {', '.join(still)}" if still else None
