"""Trusted devices: the pairs `sfs pair` made, kept in a file only the user can read.

Each pair is the other device's name and the 256-bit secret both devices took from the
pairing session's SPAKE2 key (``SessionKeys.pairing``).  The secret is the way in: who
holds the file can send to the paired devices and receive from them as this device,
so the file is written with mode 0600 in a folder of mode 0700, and a file others can
read is refused (as ssh refuses a readable key).  ``sfs pairs --remove NAME`` forgets
one; the other device then finds nobody at the pair's rendezvous.

Where: ``$XDG_DATA_HOME/sfs/pairs.json`` (``~/.local/share/sfs``) on Linux and the BSDs,
``~/Library/Application Support/sfs`` on macOS, ``%APPDATA%\\sfs`` on Windows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from sfs import platform
from sfs.defaults import MAX_PAIRS
from sfs.errors import SfsError
from sfs.peer.proto.crypto import KEY_BYTES, pair_fingerprint

#: A device's name: what `sfs send @NAME` and `sfs pairs --remove NAME` take.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
MAX_FILE_BYTES = 64 * 1024
FILE_VERSION = 1


class PairsFileError(SfsError):
    """The pairs file cannot be used."""


@dataclass(frozen=True)
class Pair:
    """One trusted device.

    :param paired_at: when the two paired (Unix seconds).
    :param last_seen: when a session with it last began, if ever.
    """

    name: str
    secret: bytes
    paired_at: float
    last_seen: float | None = None

    @property
    def fingerprint(self) -> str:
        return pair_fingerprint(self.secret)

    def __repr__(self) -> str:  # never let the secret reach a log line or traceback
        return f"Pair({self.name!r}, <secret>)"


def device_name(raw: str) -> str:
    """A name the other side gave itself, made one that `sfs send @NAME` can take:
    other characters become ``-``, at most 32 of them; ``device`` if nothing is left."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", raw)[:32].strip(".-_")
    return cleaned if NAME_RE.fullmatch(cleaned) else "device"


def default_name() -> str:
    """This device's name when `sfs pair` is given none: its host name."""
    import socket

    return device_name(socket.gethostname().split(".")[0])


def data_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "sfs"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "sfs"
    base = os.environ.get("XDG_DATA_HOME") or ""
    return (Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share") / "sfs"


def default_path() -> Path:
    return data_dir() / "pairs.json"


class PairStore:
    """The pairs file: read whole, written whole (a new file moved into place)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def load(self) -> list[Pair]:
        try:
            fd = os.open(self.path, platform.open_flags(os.O_RDONLY))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise PairsFileError(f"cannot read {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if sys.platform != "win32" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise PairsFileError(
                    f"{self.path} can be read by others (mode {stat.S_IMODE(mode):o}): it "
                    f"holds the keys to your paired devices; `chmod 600 {self.path}`"
                )
            data = f.read(MAX_FILE_BYTES + 1)
        try:
            if len(data) > MAX_FILE_BYTES:
                raise ValueError("too large")
            document = json.loads(data)
            if document.get("version") != FILE_VERSION:
                raise ValueError(f"version {document.get('version')!r}")
            pairs = [_pair(entry) for entry in document["pairs"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PairsFileError(
                f"{self.path} is damaged ({exc}); remove it and pair again"
            ) from None
        return pairs

    def save(self, pairs: list[Pair]) -> None:
        document = {
            "version": FILE_VERSION,
            "pairs": [
                {
                    "name": p.name,
                    "secret": p.secret.hex(),
                    "paired_at": p.paired_at,
                    "last_seen": p.last_seen,
                }
                for p in pairs
            ],
        }
        folder = self.path.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = folder / f".{self.path.name}.{secrets.token_hex(4)}"
            new = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            fd = os.open(temporary, platform.open_flags(new), 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(json.dumps(document, indent=1).encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            raise PairsFileError(f"cannot write {self.path}: {exc.strerror}") from None

    def find(self, name: str) -> Pair | None:
        return next((p for p in self.load() if p.name == name), None)

    def add(self, pair: Pair) -> bool:
        """Keep ``pair``; True if it replaced an earlier pair of that name."""
        pairs = self.load()
        kept = [p for p in pairs if p.name != pair.name]
        if len(kept) >= MAX_PAIRS:
            raise PairsFileError(
                f"this device has {MAX_PAIRS} paired devices already: "
                "remove one first (sfs pairs --remove NAME)"
            )
        self.save([*kept, pair])
        return len(kept) < len(pairs)

    def remove(self, name: str) -> bool:
        pairs = self.load()
        kept = [p for p in pairs if p.name != name]
        if len(kept) == len(pairs):
            return False
        self.save(kept)
        return True

    def seen(self, name: str, when: float | None = None) -> None:
        """Note that a session with ``name`` began (best effort: a transfer never fails
        for the list's sake)."""
        with contextlib.suppress(PairsFileError):
            pairs = self.load()
            stamp = time.time() if when is None else when
            self.save([replace(p, last_seen=stamp) if p.name == name else p for p in pairs])


def _pair(entry: dict[str, object]) -> Pair:
    name, secret = entry["name"], entry["secret"]
    paired_at, last_seen = entry["paired_at"], entry.get("last_seen")
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise ValueError(f"a name {name!r}")
    if not isinstance(secret, str) or len(bytes.fromhex(secret)) != KEY_BYTES:
        raise ValueError(f"the secret of {name}")
    if not isinstance(paired_at, int | float) or not (
        last_seen is None or isinstance(last_seen, int | float)
    ):
        raise ValueError(f"the times of {name}")
    return Pair(name, bytes.fromhex(secret), float(paired_at), last_seen and float(last_seen))
