"""Short-lived TURN credentials in coturn's "TURN REST API" format (pure).

coturn with ``use-auth-secret`` and ``static-auth-secret=SECRET`` accepts, until
EXPIRY (Unix seconds), the username ``EXPIRY:NAME`` with the password
``base64(HMAC-SHA1(SECRET, username))`` (draft-uberti-behave-turn-rest-00, coturn's
``turnserver.conf``).  ``sfs serve`` hands each peer its own pair when it registers,
so the shared secret never leaves the server and a leaked credential expires.

HMAC-SHA1 is what coturn checks, not a choice of ours; it is the one place sfs uses
SHA-1, and only as a MAC, where its collision weakness does not matter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from sfs.defaults import DEFAULT_TURN_TTL_SECONDS

DEFAULT_TTL_SECONDS = DEFAULT_TURN_TTL_SECONDS


@dataclass(frozen=True)
class TurnSecret:
    """The shared secret; its repr never shows it (configs get logged and printed)."""

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.value:
            raise ValueError("the TURN secret is empty")


def rest_credential(*, secret: TurnSecret, name: str, expires: int) -> tuple[str, str]:
    """The (username, password) coturn accepts for ``name`` until ``expires``."""
    username = f"{expires}:{name}"
    digest = hmac.new(secret.value, username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def read_secret(text: bytes) -> TurnSecret:
    """The secret from a file's bytes, as coturn reads ``static-auth-secret``: one
    line, surrounding white space dropped."""
    return TurnSecret(text.strip())
