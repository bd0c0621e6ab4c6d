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
            "a code starts with three letters and three digits, as in ABC-123-tiger-lamp"
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


# -- mistyped codes --------------------------------------------------------------------------

#: Characters typed for one another in an ID: a digit where a letter goes, and back.
_AS_LETTER = {"0": "O", "1": "I", "2": "Z", "5": "S", "6": "G", "8": "B"}
_AS_DIGIT = {"O": "0", "I": "1", "L": "1", "Z": "2", "S": "5", "G": "6", "B": "8"}
#: How an ID part may look to count as an attempt at one (letters and digits, both).
_ID_LIKE = re.compile(r"(?=.*[A-Za-z])(?=.*[0-9])[A-Za-z0-9]{4,8}")


@dataclass(frozen=True)
class _Attempt:
    """A text split into what stands for the ID and what stands for the words."""

    id_tokens: tuple[str, ...]
    words: tuple[str, ...]


def _attempt(text: str) -> _Attempt | None:
    """``text`` read as an attempt at a code: a few letters and digits, then words
    (alphabetic, at least one a code word or one typo from it), separated by ``-``,
    ``_`` or spaces.  A path (``/``, ``\\``) or a name with an extension is no code."""
    if any(sep in text for sep in "/\\."):
        return None
    tokens = [t for t in re.split(r"[-_\s]+", text.strip()) if t]
    n_words = 0
    while n_words < len(tokens) - 1 and tokens[-1 - n_words].isalpha():
        n_words += 1
    id_tokens, words = tokens[: len(tokens) - n_words], tokens[len(tokens) - n_words :]
    if not words or len(id_tokens) > 2 or _ID_LIKE.fullmatch("".join(id_tokens)) is None:
        return None
    if not any(_closest_word(w.lower()) is not None for w in words):
        return None
    return _Attempt(tuple(id_tokens), tuple(w.lower() for w in words))


def looks_like_code(text: str) -> bool:
    """Whether ``text`` is a code or an attempt at one (mistyped, or in the wrong
    shape: ``ALX232-beam-haddock``, ``0LX-232-beam-haddock``, ``ALX-2321-…``), rather
    than a file name."""
    return CODE_SHAPE.match(text) is not None or _attempt(text) is not None


def shown_part(text: str) -> str:
    """What of a code-like ``text`` may be shown: its ID part and ``-…``, never the
    secret words."""
    attempt = _attempt(text)
    head = "-".join(attempt.id_tokens) if attempt else text.strip()[:7]
    return head.upper() + ("-…" if len(text.strip()) > len(head) else "")


def suggest_code(text: str) -> Code | None:
    """The code ``text`` was most likely meant to be, when one is close: the ID's
    separator missing or misplaced, a digit typed for a letter or back (``0LX`` for
    ``OLX``), and each secret word right or one typo (a letter missing, extra, wrong,
    or two swapped) from exactly one code word.  None when no single code is close
    (``ALX-2321``: which digit is extra?)."""
    attempt = _attempt(text)
    if attempt is None or len(attempt.words) != SECRET_WORDS:
        return None
    peer_id = _fix_id("".join(attempt.id_tokens).upper())
    words = [_closest_word(word) for word in attempt.words]
    if peer_id is None or None in words:
        return None
    return Code(peer_id, "-".join(w for w in words if w is not None))


def _fix_id(chars: str) -> str | None:
    if len(chars) != 6:
        return None
    letters = "".join(_AS_LETTER.get(c, c) for c in chars[:3])
    digits = "".join(_AS_DIGIT.get(c, c) for c in chars[3:])
    peer_id = f"{letters}-{digits}"
    return peer_id if _PEER_ID_RE.fullmatch(peer_id) else None


def _closest_word(word: str) -> str | None:
    """``word`` if it is a code word, else the one code word a single typo away."""
    if word in _known():
        return word
    near = [known for known in wordlist() if _one_typo_apart(word, known)]
    return near[0] if len(near) == 1 else None


@cache
def _known() -> frozenset[str]:
    return frozenset(wordlist())


def _one_typo_apart(a: str, b: str) -> bool:
    """One letter missing, extra or wrong, or two neighbours swapped."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]
