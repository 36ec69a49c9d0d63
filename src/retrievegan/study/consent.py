"""The consent text shown before the first trial, and its version.

The file is Markdown with a one-line header ``consent-version: <label>``. The recorded version is
``<label>+<sha256 of the text, 10 hex digits>``, so an edit of the text changes the version stored
with each consent and response even if nobody bumps the label.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from retrievegan.errors import InputError

HEADER = "consent-version:"


@dataclasses.dataclass(frozen=True)
class Consent:
    version: str
    text: str


def load_consent(path: str | Path) -> Consent:
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(path, "consent text not found") from exc
    first, _, body = raw.partition("\n")
    if not first.startswith(HEADER) or not first[len(HEADER) :].strip():
        raise InputError(path, f"the first line must be '{HEADER} <label>'", "line 1")
    label = first[len(HEADER) :].strip()
    body = body.strip()
    if not body:
        raise InputError(path, "empty consent text")
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:10]
    return Consent(version=f"{label}+{digest}", text=body)
