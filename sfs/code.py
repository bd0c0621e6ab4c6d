"""One-time codes: ``ABC-123-tiger-lamp``.

The first part (``ABC-123``) is the receiver's peer ID, which the signaling server
assigned and knows.  The rest is the secret part: words the receiver drew itself,
which the server never sees.  It is the SPAKE2 password, so an attacker (server
included) gets one online guess per code: with two words from 1024 that is a
chance of one in 1 048 576.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import cache
from importlib import resources

SECRET_WORDS = 2
_CODE_RE = re.compile(r"^([A-Za-z]{3}-[0-9]{3})-([a-z]+(?:-[a-z]+)*)$")


@dataclass(frozen=True)
class Code:
    peer_id: str
    secret: str

    def __str__(self) -> str:
        return f"{self.peer_id}-{self.secret}"

    def __repr__(self) -> str:  # the secret must not reach logs through a repr
        return f"Code(peer_id={self.peer_id!r}, secret=<redacted>)"


@cache
def wordlist() -> tuple[str, ...]:
    text = resources.files("sfs").joinpath("wordlist.txt").read_text("utf-8")
    return tuple(line for line in text.splitlines() if line and not line.startswith("#"))


def new_secret(words: int = SECRET_WORDS) -> str:
    """Draw the secret part of a code from the shipped word list."""
    choices = wordlist()
    return "-".join(secrets.choice(choices) for _ in range(words))


def parse_code(text: str) -> Code:
    """Parse what a user typed: surrounding space and letter case do not matter.

    :raises ValueError: with a message for the user when the text is not a code.
    """
    cleaned = "-".join(text.strip().split()).lower()
    match = _CODE_RE.match(cleaned)
    if match is None:
        raise ValueError(
            "a code looks like ABC-123-tiger-lamp: the receiver's ID, then its secret words"
        )
    peer_id, secret = match.groups()
    known = set(wordlist())
    unknown = [word for word in secret.split("-") if word not in known]
    if unknown or len(secret.split("-")) < SECRET_WORDS:
        raise ValueError("the words of that code are not sfs code words; check for typos")
    return Code(peer_id.upper(), secret)
