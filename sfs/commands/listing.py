"""What an offer holds, as lines: the listing before the question, the plan for
names that are taken, and the final line of a transfer."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from sfs.commands import terminal
from sfs.errors import SfsError
from sfs.text import format_size, printable

if TYPE_CHECKING:
    from sfs.peer.files.destinations import Plan
    from sfs.peer.proto.wire import FileInfo, Offer
    from sfs.peer.transfer import TransferResult


#: An offer lists at least this many names, however small the terminal.
MIN_LISTED_FILES = 5


def plan_lines(plan: Plan | None) -> list[str]:
    """What happens to the names that are taken (``report.pdf exists: will save as
    report (1).pdf``), said before the question: a few, then how many more."""
    from sfs.peer.files.destinations import MAX_PLAN_NOTES

    if plan is None:
        return []
    lines = [printable(note) for note in plan.notes[:MAX_PLAN_NOTES]]
    if len(plan.notes) > MAX_PLAN_NOTES:
        lines.append(f"…and {len(plan.notes) - MAX_PLAN_NOTES} more names that are taken")
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_tree(offer: Offer) -> str:
    """``2 files and 1 folder (1532 files, 1.2 GB)``: what the top of a folder offer
    holds, then everything in it."""
    top_files = sum(not info.folder for info in offer.files)
    top_folders = {folder[0] for folder in offer.folders}
    top_folders |= {info.folder[0] for info in offer.files if info.folder}
    parts = []
    if top_files:
        parts.append(_plural(top_files, "file"))
    if top_folders:
        parts.append(_plural(len(top_folders), "folder"))
    total = f"{_plural(len(offer.files), 'file')}, {format_size(offer.total_size)}"
    return f"{' and '.join(parts)} ({total})"


def _offered_path(info: FileInfo) -> str:
    from sfs.peer.proto.names import safe_name

    try:
        return "/".join(safe_name(part) for part in (*info.folder, info.name))
    except SfsError:
        return info.name


def offer_listing(offer: Offer, *, max_lines: int, width: int | None = None) -> list[str]:
    """One line per offered file (its safe name and size), then "… and N more" if they
    do not all fit in ``max_lines``; a name is cut with "…" to keep its line within
    ``width`` columns."""
    keep = max(max_lines, MIN_LISTED_FILES)
    shown = offer.files if len(offer.files) <= keep else offer.files[: keep - 1]

    def line(info: FileInfo) -> str:
        size = format_size(info.size)
        columns = 70 if width is None else min(70, max(8, width - 4 - len(size)))
        name = terminal.cut(printable(_offered_path(info)), columns)
        return terminal.cut(f"  {name}  {size}", width)

    lines = [line(f) for f in shown]
    if len(shown) < len(offer.files):
        lines.append(f"  … and {len(offer.files) - len(shown)} more")
    return lines


def tree_listing(offer: Offer, *, max_lines: int, width: int | None = None) -> list[str]:
    """A folder offer's top level, in the offer's order: each file with its size, each
    folder (``photos/``) with how many files it holds and their size; then "… and N
    more" if they do not all fit in ``max_lines``."""
    from sfs.peer.proto.names import safe_name

    counts: dict[tuple[str, bool], list[int]] = {}  # (name, is a folder): [files, bytes]
    for info in offer.files:
        entry = counts.setdefault(
            (info.folder[0], True) if info.folder else (info.name, False), [0, 0]
        )
        entry[0] += 1
        entry[1] += info.size
    for folder in offer.folders:
        counts.setdefault((folder[0], True), [0, 0])

    def line(name: str, folder: bool, files: int, size: int) -> str:
        with contextlib.suppress(SfsError):
            name = safe_name(name)
        what = (
            (f"{_plural(files, 'file')}, {format_size(size)}" if files else "empty")
            if folder
            else format_size(size)
        )
        columns = 70 if width is None else min(70, max(8, width - 4 - len(what)))
        shown = terminal.cut(printable(name) + ("/" if folder else ""), columns)
        return terminal.cut(f"  {shown}  {what}", width)

    keep = max(max_lines, MIN_LISTED_FILES)
    entries = list(counts.items())
    shown = entries if len(entries) <= keep else entries[: keep - 1]
    lines = [line(name, folder, files, size) for (name, folder), (files, size) in shown]
    if len(shown) < len(entries):
        lines.append(f"  … and {len(entries) - len(shown)} more")
    return lines


#: The shortest time a final line shows: below it, a rate would say more than it knows.
MIN_SHOWN_SECONDS = 0.001


def _seconds(elapsed: float) -> str:
    """``2.4 s``, ``0.35 s``, ``0.004 s``: never ``0.0 s``."""
    elapsed = max(elapsed, MIN_SHOWN_SECONDS)
    return f"{elapsed:.1f} s" if elapsed >= 1 else f"{elapsed:.2g} s"


def _final_line(verb: str, result: TransferResult) -> str:
    if result.text is not None:
        what = "a text message"
    elif len(result.records) == 1:
        record = result.records[0]
        # The name it has here: the receiver's may differ from the offered one.
        what = (record.path.name if record.path else record.name.rpartition("/")[2]) or (
            "a text message"
        )
    else:
        what = f"{len(result.records)} files"
    moved = result.total_bytes - result.resumed_bytes
    line = f"{verb} {what} ({format_size(result.total_bytes)}) in {_seconds(result.elapsed)}"
    if moved:  # nothing moved (all there already): no rate to speak of
        line += f", {format_size(moved / max(result.elapsed, MIN_SHOWN_SECONDS))}/s"
    if result.skipped_files:
        line += f", {_plural(result.skipped_files, 'file')} already there (same SHA-256)"
    if result.resumed_files:
        line += f", {_plural(result.resumed_files, 'file')} resumed"
    if result.resumed_bytes:
        line += f", {format_size(result.resumed_bytes)} not sent again"
    if result.route:
        line += f", {result.route}"
    if result.reconnects:
        line += f", {_plural(result.reconnects, 'reconnect')}"
    return line


def from_whom(offer: Offer, paired: str | None) -> str:
    """Who an offer is from, as the prompt says it: a paired device by the name kept
    for it here, marked so (the pairing authenticated it); anyone else by the name it
    gave itself, which proves nothing, and never with that mark."""
    if paired is not None:
        return f"{printable(paired, 40)} (paired)"
    return printable(offer.sender, 40).replace("(paired)", "(unpaired)")
