"""Who may do what in the study app: the admin secret, signed participant links, Prolific-only ids,
the per-browser token that decides who sees a completion code.

* **Admin secret** (``admin_secret`` in the Streamlit secrets file): at least ``MIN_ADMIN_SECRET``
  characters, not a documented placeholder, not one repeated character; generate one with
  ``python -c "import secrets; print(secrets.token_urlsafe(32))"``. Wrong attempts back off
  exponentially per session (:func:`backoff_seconds`) and are logged.
* **Signed links** (``userstudy.access.signed_links``): a link carries ``sig`` = HMAC-SHA256 of the
  participant id under ``link_secret`` (Streamlit secrets file), 32 hex digits; without a valid one the
  id is refused. ``retrievegan study-links`` writes the links.
* **Prolific only** (``userstudy.access.prolific_only``): only ``PROLIFIC_PID`` of 24 hex digits is
  accepted; no ``pid`` links, no minted ids.
* **Browser token**: a random token kept in the page URL (``s``), whose hash is stored with each answer.
  The completion code is shown only where the token matches an answer of the participant, i.e. in a
  browser that answered, never to someone who only knows the participant id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

MIN_ADMIN_SECRET = 24
MIN_LINK_SECRET = 32
# what documentation and tutorials show as example secrets: refused whatever their length
PLACEHOLDER_SECRETS = frozenset(
    {
        "a long random string",
        "change me",
        "changeme",
        "change-me",
        "secret",
        "password",
        "your secret here",
        "replace me",
        "replace-with-a-long-random-string",
        "admin",
        "example",
        "xxxxxxxxxxxxxxxxxxxxxxxx",
    }
)
BACKOFF_CAP_S = 15 * 60
SIGNATURE_HEX = 32
PROLIFIC_ID_RE = re.compile(r"[0-9a-f]{24}")
BROWSER_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{22,64}")


def secret_problem(secret: object, name: str = "admin_secret", minimum: int = MIN_ADMIN_SECRET) -> str | None:
    """Why ``secret`` cannot be used (None when it can): missing, short, a placeholder, one repeated character."""
    if not isinstance(secret, str) or not secret:
        return f"{name} is not set"
    if secret.strip().lower() in PLACEHOLDER_SECRETS or "random string" in secret.lower():
        return f"{name} is the documentation's placeholder; generate one"
    if len(secret) < minimum:
        return f"{name} has {len(secret)} characters, fewer than {minimum}"
    if len(set(secret)) < 8:
        return f"{name} uses fewer than 8 distinct characters"
    return None


def backoff_seconds(failures: int) -> float:
    """Seconds a session must wait after its ``failures``-th wrong admin secret: 1, 2, 4, ... capped at 15 min."""
    if failures <= 0:
        return 0.0
    return float(min(2 ** (failures - 1), BACKOFF_CAP_S))


def sign_participant(link_secret: str, participant_id: str) -> str:
    """The link signature of ``participant_id``: HMAC-SHA256 under ``link_secret``, first 32 hex digits."""
    mac = hmac.new(link_secret.encode("utf-8"), f"participant:{participant_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:SIGNATURE_HEX]


def signature_ok(link_secret: str, participant_id: str, signature: object) -> bool:
    if not isinstance(signature, str) or len(signature) != SIGNATURE_HEX:
        return False
    return hmac.compare_digest(sign_participant(link_secret, participant_id), signature)


def is_prolific_id(participant_id: str) -> bool:
    return PROLIFIC_ID_RE.fullmatch(participant_id) is not None


def mint_browser_token() -> str:
    return secrets.token_urlsafe(24)


def valid_browser_token(raw: object) -> str | None:
    return raw if isinstance(raw, str) and BROWSER_TOKEN_RE.fullmatch(raw) else None


def token_hash(token: str) -> str:
    """What the database keeps of a browser token (32 hex digits of its sha256), never the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]
