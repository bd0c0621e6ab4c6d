"""``--json``: what `sfs send`, `sfs receive` and `sfs peers` show, as JSON lines.

One JSON object per line, each with a ``"type"``: ``code``, ``offer``, ``progress``,
``done``, ``error``, and for `sfs peers` ``peer`` and ``gone`` (README.md, "Machine-
readable output", has the schema of each).  :class:`JsonUi` is the second
:class:`sfs.app.Ui`, beside the terminal's in :mod:`sfs.commands.ui`.

Names, reasons and messages come from the peer or the server: every line is encoded
with ``ensure_ascii=True`` (and DEL escaped too), so it holds no control character and
no byte outside ASCII, whatever they wrote.  Nothing here writes anywhere: the CLI
hands in the function that prints a line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sfs.commands.listing import from_whom
from sfs.errors import SfsError
from sfs.lan.record import Advert
from sfs.peer.files.destinations import Plan, is_tree
from sfs.peer.proto.wire import Offer
from sfs.peer.transfer import FileRecord, TransferResult, describe_offer
from sfs.text import format_size

#: At most one progress event this often (and always one as each file ends).
PROGRESS_EVENT_SECONDS = 0.25


def event_line(event: dict[str, Any]) -> str:
    """``event`` as one line of JSON: ASCII only, no control character."""
    line = json.dumps(event, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    # json escapes C0 controls but not DEL, which is ASCII; it can only be in a string.
    return line.replace("\x7f", "\\u007f")


class JsonLines:
    """Writes events, one line each, through ``write`` (which must flush)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def emit(self, event: dict[str, Any]) -> None:
        self._write(event_line(event))

    def error(self, exit_code: int, message: str) -> None:
        self.emit({"type": "error", "exit_code": exit_code, "message": message})


class ReceiverLines(JsonLines):
    """One receiver's events of `sfs send --many`: each says which (``"receiver": N``)."""

    def __init__(self, lines: JsonLines, number: int) -> None:
        super().__init__(lines._write)
        self.number = number

    def emit(self, event: dict[str, Any]) -> None:
        super().emit({**event, "receiver": self.number})


def offer_kind(offer: Offer) -> str:
    """``text``, ``stream`` (a pipe), ``tree`` (folders) or ``files``."""
    if offer.text:
        return "text"
    if offer.stream:
        return "stream"
    return "tree" if is_tree(offer) else "files"


def offer_event(offer: Offer, plan: Plan | None = None) -> dict[str, Any]:
    """:param plan: where each file is to be saved (each file's ``path``: None for a
    text message or ``--stdout``), and what happens to the names that are taken."""
    paths: list[str | None] = [None] * len(offer.files)
    if plan is not None and plan.written:
        paths = [os.path.abspath(path) for path in plan.paths]
    return {
        "type": "offer",
        "kind": offer_kind(offer),
        "sender": offer.sender,
        "files": [
            {"name": "/".join((*info.folder, info.name)), "size": info.size, "path": path}
            for info, path in zip(offer.files, paths, strict=True)
        ],
        "folders": ["/".join(folder) for folder in offer.folders],
        "total": None if offer.stream else offer.total_size,
        "notes": list(plan.notes) if plan is not None else [],
    }


def _record(record: FileRecord, route: str) -> dict[str, Any]:
    return {
        "name": record.name,
        "path": None if record.path is None else os.path.abspath(record.path),
        "size": record.size,
        "sha256": record.sha256,
        "seconds": round(record.seconds, 6),
        "resumed_bytes": record.resumed_bytes,
        "route": route,
    }


def done_event(role: str, result: TransferResult) -> dict[str, Any]:
    """The last event of a transfer that worked: each file, then the totals.

    :param role: ``send`` or ``receive``.
    """
    moved = result.total_bytes - result.resumed_bytes
    return {
        "type": "done",
        "role": role,
        "files": [_record(record, result.route) for record in result.records],
        "total_bytes": result.total_bytes,
        "resumed_bytes": result.resumed_bytes,
        "skipped_files": result.skipped_files,
        "resumed_files": result.resumed_files,
        "seconds": round(result.elapsed, 6),
        "rate": round(moved / result.elapsed, 1),
        "route": result.route,
        "reconnects": result.reconnects,
        "text": result.text,
    }


class JsonProgress:
    """:class:`sfs.peer.proto.progress.Progress` as ``progress`` events.

    Both sides call ``advance`` once right after ``start`` with the bytes already
    there (a resumed file): those count as done, but not into the rate.
    """

    def __init__(
        self,
        lines: JsonLines,
        *,
        clock: Callable[[], float] = time.monotonic,
        limit: float | None = None,
    ) -> None:
        self._lines = lines
        self._clock = clock
        self._limit = limit
        self._total: int | None = None
        self._done = self._moved = 0
        self._name = ""
        self._file_size: int | None = None
        self._file_done = 0
        self._started = self._last = 0.0
        self._resumed_next = False

    def begin(self, files: int, total: int | None) -> None:
        self._total = total
        self._started = self._clock()
        self._last = float("-inf")

    def start(self, name: str, size: int | None) -> None:
        self._name, self._file_size, self._file_done = name, size, 0
        self._resumed_next = True

    def advance(self, n: int) -> None:
        self._done += n
        self._file_done += n
        if not self._resumed_next:
            self._moved += n
        self._resumed_next = False
        if self._clock() - self._last >= PROGRESS_EVENT_SECONDS:
            self._emit()

    def finish(self) -> None:
        self._emit()

    def _emit(self) -> None:
        now = self._clock()
        self._last = now
        self._lines.emit(
            {
                "type": "progress",
                "name": self._name,
                "file_bytes": self._file_done,
                "file_size": self._file_size,
                "bytes": self._done,
                "total": self._total,
                "rate": round(self._moved / max(now - self._started, 1e-6), 1),
                "limit": self._limit,
            }
        )


class JsonUi:
    """The :class:`sfs.app.Ui` of ``--json``: events on stdout, no status lines.

    :param ask: asks a yes/no question on the terminal (an offer without --yes,
        --verify); the CLI's.
    """

    def __init__(
        self,
        lines: JsonLines,
        *,
        assume_yes: bool = False,
        ask: Callable[[str], Awaitable[bool]],
        yes_from: tuple[str, ...] = (),
        limit_rate: float | None = None,
    ) -> None:
        self.lines = lines
        self.assume_yes = assume_yes
        self.yes_from = yes_from
        self.limit_rate = limit_rate
        self._ask = ask
        self.kept: list[str] = []

    def status(self, message: str) -> None:
        pass  # --json: nothing on stderr but errors

    def show_code(self, code: str, link: str | None = None) -> None:
        if isinstance(self.lines, ReceiverLines):
            return  # a receiver's session of --many: the code was shown once, before
        self.lines.emit({"type": "code", "code": code, "link": link})

    # -- `sfs send --many` --------------------------------------------------------------

    def receiver(self, number: int) -> JsonUi:
        """Receiver ``number``'s Ui: its events say ``"receiver": number``."""
        return JsonUi(ReceiverLines(self.lines, number), ask=self._ask, limit_rate=self.limit_rate)

    def received(self, number: int, result: TransferResult) -> None:
        self.lines.emit({**done_event("send", result), "receiver": number})

    def failed(self, number: int, error: SfsError) -> None:
        self.lines.emit(
            {
                "type": "failed",
                "receiver": number,
                "exit_code": error.exit_code,
                "message": str(error),
            }
        )

    def progress(self) -> JsonProgress:
        return JsonProgress(self.lines, limit=self.limit_rate)

    def kept_partial(self, name: str, held_bytes: int) -> None:
        self.kept.append(name)

    def reconnecting(self, window: float) -> None:
        self.lines.emit({"type": "reconnecting", "window": window})

    def reconnected(self, route: str) -> None:
        self.kept.clear()
        self.lines.emit({"type": "reconnected", "route": route})

    async def confirm_verifier(self, verifier: str) -> bool:
        return await self._ask(
            f"Verification string: {verifier}. Does the other side show the same?"
        )

    async def decide(
        self, offer: Offer, plan: Plan | None = None, *, paired: str | None = None
    ) -> bool:
        event = offer_event(offer, plan)
        event["paired"] = paired
        self.lines.emit(event)
        if self.assume_yes or (paired is not None and paired in self.yes_from):
            return True
        sender = f" from {from_whom(offer, paired)}" if offer.sender or paired else ""
        size = "" if offer.stream else f" ({format_size(offer.total_size)})"
        return await self._ask(f"Receive {describe_offer(offer)}{size}{sender}?")

    def done(self, role: str, result: TransferResult) -> None:
        self.lines.emit(done_event(role, result))


def peer_fields(advert: Advert) -> dict[str, Any]:
    return {
        "name": advert.name,
        "role": advert.role,
        "address": advert.addresses[0] if advert.addresses else None,
        "addresses": list(advert.addresses),
        "port": advert.port,
        "since": advert.since,
    }


class PeerEvents:
    """`sfs peers --json`: a ``peer`` event for each peer that appears, a ``gone``
    event for each that leaves (live), or one ``peer`` event each (``--once``)."""

    def __init__(self, lines: JsonLines) -> None:
        self.lines = lines
        self._seen: dict[Advert, None] = {}

    def show(self, adverts: Sequence[Advert]) -> None:
        now = dict.fromkeys(adverts)
        for advert in self._seen:
            if advert not in now:
                self.lines.emit({"type": "gone", **peer_fields(advert)})
        for advert in now:
            if advert not in self._seen:
                self.lines.emit({"type": "peer", **peer_fields(advert)})
        self._seen = now
