"""`--json`'s events (sfs.commands.jsonui): one valid, inert JSON object per line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sfs.commands.jsonui import (
    PROGRESS_EVENT_SECONDS,
    JsonLines,
    JsonProgress,
    JsonUi,
    PeerEvents,
    event_line,
)
from sfs.lan.record import Advert
from sfs.peer.proto.wire import FileInfo, Offer
from sfs.peer.transfer import FileRecord, TransferResult

#: What a peer or a server may write: any code point, surrogates and controls included.
hostile = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


def parse(lines: list[str]) -> list[dict[str, Any]]:
    """Every line one JSON object with a type, and nothing in it but printable ASCII."""
    events = []
    for line in lines:
        assert "\n" not in line
        assert "\r" not in line
        assert all(0x20 <= ord(c) < 0x7F for c in line), repr(line)
        event = json.loads(line)
        assert isinstance(event, dict)
        assert isinstance(event["type"], str)
        events.append(event)
    return events


async def no(question: str) -> bool:
    return False


async def yes(question: str) -> bool:
    return True


@settings(max_examples=300, deadline=None)
@given(names=st.lists(hostile, min_size=1, max_size=4), sender=hostile, reason=hostile)
def test_hostile_strings_give_one_inert_object_per_line(
    names: list[str], sender: str, reason: str
) -> None:
    lines: list[str] = []
    ui = JsonUi(JsonLines(lines.append), assume_yes=True, ask=no)
    offer = Offer(
        tuple(FileInfo(name, 3, folder=(name,)) for name in names), sender, folders=((sender,),)
    )
    ui.show_code("ABC-123-tiger-lamp", None)
    assert asyncio.run(ui.decide(offer))
    progress = ui.progress()
    progress.begin(len(names), 3 * len(names))
    for name in names:
        progress.start(name, 3)
        progress.advance(0)
        progress.advance(3)
        progress.finish()
    result = TransferResult(text=reason, route=reason)
    result.records = [
        FileRecord(name, Path(name.replace("\0", "")), 3, "00" * 32, 0.5, 0) for name in names
    ]
    result.finish()
    ui.done("receive", result)
    ui.lines.error(7, reason)
    events = parse(lines)
    assert [e["type"] for e in events][:2] == ["code", "offer"]
    assert events[-2]["type"] == "done"
    assert events[-1]["type"] == "error"
    # Nothing lost: the decoded strings are the hostile ones, as they were.
    assert [f["name"] for f in events[1]["files"]] == [f"{n}/{n}" for n in names]
    assert events[1]["sender"] == sender
    assert events[1]["folders"] == [sender]
    assert events[-1] == {"type": "error", "exit_code": 7, "message": reason}
    assert events[-2]["text"] == reason
    assert [f["route"] for f in events[-2]["files"]] == [reason] * len(names)


@given(st.dictionaries(hostile, hostile, max_size=5))
def test_event_line_round_trips(fields: dict[str, str]) -> None:
    event = {"type": "x", **fields}
    assert parse([event_line(event)]) == [event]


def test_progress_at_most_every_quarter_second_and_at_each_file_end() -> None:
    now = [100.0]
    lines: list[str] = []
    progress = JsonProgress(JsonLines(lines.append), clock=lambda: now[0])
    progress.begin(2, 2000)
    progress.start("a", 1000)
    progress.advance(0)  # what was already there: first event
    for _ in range(8):
        now[0] += PROGRESS_EVENT_SECONDS / 8  # exact in binary
        progress.advance(50)
    now[0] += 0.01
    progress.advance(600)
    progress.finish()
    events = parse(lines)
    # At the start, a quarter second later (not between, nor 0.01 s after), at the end.
    assert [e["file_bytes"] for e in events] == [0, 400, 1000]
    last = events[-1]
    assert last == {
        "type": "progress",
        "name": "a",
        "file_bytes": 1000,
        "file_size": 1000,
        "bytes": 1000,
        "total": 2000,
        "rate": round(1000 / (now[0] - 100.0), 1),
        "limit": None,
    }


def test_resumed_bytes_count_as_done_but_not_into_the_rate() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = JsonProgress(JsonLines(lines.append), clock=lambda: now[0])
    progress.begin(1, 1000)
    progress.start("a", 1000)
    progress.advance(900)
    now[0] = 1.0
    progress.advance(100)
    progress.finish()
    last = parse(lines)[-1]
    assert last["bytes"] == 1000
    assert last["rate"] == 100.0


def test_an_offer_without_yes_is_asked() -> None:
    lines: list[str] = []
    asked: list[str] = []

    async def ask(question: str) -> bool:
        asked.append(question)
        return False

    ui = JsonUi(JsonLines(lines.append), ask=ask)
    assert not asyncio.run(ui.decide(Offer((FileInfo("a\x1b[2J", 5),), "bob\x07")))
    assert parse(lines)[0]["kind"] == "files"
    assert asked == ["Receive 1 file (5 B) from bob\\x07?"]


def test_offer_kinds() -> None:
    lines: list[str] = []
    ui = JsonUi(JsonLines(lines.append), assume_yes=True, ask=no)
    offers = [
        Offer((FileInfo("m", 4),), text=True),
        Offer((FileInfo("stdin", 0, stream=True),)),
        Offer((FileInfo("a", 1, folder=("d",)),), folders=(("d",),)),
        Offer((FileInfo("a", 1), FileInfo("b", 2))),
    ]
    for offer in offers:
        asyncio.run(ui.decide(offer))
    events = parse(lines)
    assert [e["kind"] for e in events] == ["text", "stream", "tree", "files"]
    assert events[1]["total"] is None
    assert events[3]["total"] == 3


def test_peers_come_and_go() -> None:
    lines: list[str] = []
    peers = PeerEvents(JsonLines(lines.append))
    alice = Advert("receiver", "alice\x1b]52;c;", 5000, ("192.168.1.20",), 1700000000)
    bob = Advert("sender", "bob", 5001, ("192.168.1.21", "fe80::1"), 1700000001)
    peers.show([alice])
    peers.show([alice])  # no change, no event
    peers.show([alice, bob])
    peers.show([bob])
    events = parse(lines)
    assert [(e["type"], e["port"]) for e in events] == [
        ("peer", 5000),
        ("peer", 5001),
        ("gone", 5000),
    ]
    assert events[1] == {
        "type": "peer",
        "name": "bob",
        "role": "sender",
        "address": "192.168.1.21",
        "addresses": ["192.168.1.21", "fe80::1"],
        "port": 5001,
        "since": 1700000001,
    }
    assert events[0]["name"] == "alice\x1b]52;c;"


def test_a_reconnection_is_two_events_and_a_count_in_done() -> None:
    lines: list[str] = []
    ui = JsonUi(JsonLines(lines.append), assume_yes=True, ask=no)
    ui.kept_partial("big.iso", 10)
    ui.reconnecting(300.0)
    ui.reconnected("direct over TCP")
    ui.done("send", TransferResult(reconnects=1).finish())
    events = [json.loads(line) for line in lines]
    assert events[0] == {"type": "reconnecting", "window": 300.0}
    assert events[1] == {"type": "reconnected", "route": "direct over TCP"}
    assert events[2]["reconnects"] == 1
    assert ui.kept == []  # what was kept is being continued
