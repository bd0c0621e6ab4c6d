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
_PEER_ID_RE = re.compile(r"[A-Z]{3}-[0-9]{3}")
#: Anything that starts like a code: a peer ID, then maybe words (or the start of one).
CODE_SHAPE = re.compile(r"^\s*[A-Za-z]{3}-[0-9]{3}(?:[-\s].*)?$", re.DOTALL)
_ORDINALS = ("first", "second", "third", "fourth", "fifth")


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

    :raises ValueError: with a message for the user that says which part of the code
        is wrong or missing; it never repeats the secret words.
    """
    parts = "-".join(text.strip().split()).lower().split("-")
    if parts == [""]:
        raise ValueError("no code given; a code looks like ABC-123-tiger-lamp")
    peer_id = "-".join(parts[:2]).upper()
    if _PEER_ID_RE.fullmatch(peer_id) is None:
        raise ValueError(
            "a code starts with the receiver's ID, three letters and three digits, "
            "as in ABC-123-tiger-lamp"
        )
    words = parts[2:]
    while words and not words[-1]:  # "ABC-123-" or "ABC-123-tiger-": a word to come
        words.pop()
    if not words:
        raise ValueError(
            f"{peer_id} is missing its secret words (a code looks like ABC-123-tiger-lamp)"
        )
    if len(words) < SECRET_WORDS:
        raise ValueError(f"the code {peer_id}-… is missing its {_ordinal(len(words))} secret word")
    known = set(wordlist())
    for i, word in enumerate(words):
        if word not in known:
            raise ValueError(
                f"the {_ordinal(i)} secret word of {peer_id}-… is not an sfs code word; "
                "check for typos"
            )
    return Code(peer_id, "-".join(words))


def _ordinal(index: int) -> str:
    return _ORDINALS[index] if index < len(_ORDINALS) else f"#{index + 1}"
