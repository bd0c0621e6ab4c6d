"""Text from elsewhere, made safe to show on a terminal.

Anything a peer or a server wrote (a file name, a sender name, a cancel reason, an
error message) may carry terminal control sequences: ESC and CSI sequences that clear
the screen, move the cursor or colour a fake "Received" line, OSC 52 that writes the
clipboard, carriage returns and newlines that overwrite or add lines, and Unicode bidi
overrides that make ``exe.pdf`` of ``fdp.exe``.  :func:`printable` turns every such
character into a visible escape, so what is shown is exactly one line of inert text.

The CLI (``sfs.commands.output.say``) passes everything it prints through this one
function (status lines, prompts, errors, log records), whatever its source: a peer's
text cannot reach the terminal on a path that was forgotten.  The function is pure and cheap.
"""

from __future__ import annotations

import unicodedata

#: Unicode categories never shown as they are: controls (C0, DEL, C1), invisible
#: formatting (bidi embeddings, overrides and isolates, zero-width characters, BOM),
#: surrogates, and the line and paragraph separators.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
ELLIPSIS = "…"


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def is_unsafe(char: str) -> bool:
    """Whether one character must not reach a terminal as it is."""
    return unicodedata.category(char) in UNSAFE_CATEGORIES


def printable(text: str, limit: int | None = None, *, keep: frozenset[str] = frozenset()) -> str:
    """Return ``text`` as one line of inert text: unsafe characters become ``\\x1b``-style
    escapes (a backslash itself stays, it controls nothing).

    :param limit: cut the result to this many characters, ending it with ``…``.
    :param keep: unsafe characters to leave as they are (a message's line breaks).
    """
    clean = "".join(_escape(c) if is_unsafe(c) and c not in keep else c for c in text)
    if limit is not None and len(clean) > limit:
        clean = clean[: max(limit - 1, 0)] + ELLIPSIS
    return clean


#: Kept in a message shown as text (``sfs send --text``): line breaks and tabs.
_TEXT_KEEPS = frozenset("\n\t")


def printable_text(text: str) -> str:
    """Return a text message as inert lines: as :func:`printable`, but newlines and
    tabs stay (CRLF becomes a newline), so a message keeps its lines and no line
    can control the terminal."""
    return printable(text.replace("\r\n", "\n"), keep=_TEXT_KEEPS)


def format_size(n: float) -> str:
    """``1.2 MB`` style, decimal units as file managers show them."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``5 min``, ``90 s``, ``0.5 s``: a span the user set, for messages."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g} s"
