"""`sfs send --many`'s lobby (sfs.many) without a network: which requests it takes
(never more than N, whatever the server sends: each is a guess at the code), where
each event goes, and how it ends.  The server connection is a queue of events; each
receiver's session is a coroutine that reads its own events."""

from __future__ import annotations

import asyncio
from typing import Any

from sfs.errors import SfsError, WrongCodeError
from sfs.many import ManyResult, PartnerSignal, serve_many
from sfs.peer.proto.progress import Progress
from sfs.peer.transfer import TransferResult
from sfs.setup import Ui
from sfs.signal.client import SERVER_LOST, Registration

REGISTRATION = Registration("ABC-123", ())


class Lobby:
    """The server connection: events pushed by the test; calls recorded."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def push(self, name: str, peer_id: str | None = None, **data: Any) -> None:
        self.events.put_nowait((name, data if peer_id is None else {"peer_id": peer_id, **data}))

    async def register(self, rendezvous: str | None = None) -> Registration:
        raise AssertionError("the lobby registered once, before")

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((event, data))
        return {"ok": True}

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        return await self.events.get()

    def leave(self) -> None:
        raise AssertionError("the lobby stays")


class Shown:
    """The command's Ui: what it was told."""

    def __init__(self) -> None:
        self.said: list[str] = []
        self.ended: list[tuple[int, str]] = []

    def status(self, message: str) -> None:
        self.said.append(message)

    def show_code(self, code: str, link: str | None = None) -> None:
        raise AssertionError("the lobby's code is shown by the caller")

    def progress(self) -> Progress:
        raise AssertionError("no transfer here")

    async def decide(self, *args: Any, **kwargs: Any) -> bool:
        raise AssertionError("a sender decides nothing")

    async def confirm_verifier(self, verifier: str) -> bool:
        raise AssertionError("not with --many")

    def kept_partial(self, name: str, held_bytes: int) -> None:
        raise AssertionError("a sender keeps nothing")

    def reconnecting(self, window: float) -> None: ...
    def reconnected(self, route: str) -> None: ...

    def receiver(self, number: int) -> Ui:
        return self

    def received(self, number: int, result: TransferResult) -> None:
        self.ended.append((number, "received"))

    def failed(self, number: int, error: SfsError) -> None:
        self.ended.append((number, str(error)))


def run(lobby: Lobby, many: int, serve_one: Any, ui: Shown | None = None) -> ManyResult:
    async def main() -> ManyResult:
        return await asyncio.wait_for(
            serve_many(lobby, REGISTRATION, many, ui or Shown(), serve_one), 5
        )

    return asyncio.run(main())


def test_never_more_than_n_sessions_whatever_the_server_sends() -> None:
    """A server that ignores `many` and sends five requests for three: three sessions,
    three key exchanges, no more; a request repeated by one peer is its own session's."""
    lobby = Lobby()
    served: dict[int, list[tuple[str, dict[str, Any]]]] = {}

    async def serve_one(number: int, partner: PartnerSignal) -> TransferResult:
        seen = served.setdefault(number, [])
        while len(seen) < 2:
            seen.append(await partner.next_event())
        return TransferResult().finish()

    for peer in ("AAA-001", "BBB-002", "CCC-003", "DDD-004", "EEE-005"):
        lobby.push("connection_request", peer)
    lobby.push("connection_request", "AAA-001")  # again: AAA's own business
    for peer in ("BBB-002", "CCC-003", "DDD-004"):
        lobby.push("receive_public_key", peer, key="k")
    result = run(lobby, 3, serve_one)
    assert sorted(served) == [1, 2, 3]
    assert served[1] == [("connection_request", {"peer_id": "AAA-001"})] * 2
    assert served[2][1] == ("receive_public_key", {"peer_id": "BBB-002", "key": "k"})
    assert served[3][1] == ("receive_public_key", {"peer_id": "CCC-003", "key": "k"})
    assert [s.number for s in result.received] == [1, 2, 3]
    assert result.stopped is None


def test_a_failed_session_spends_its_place_and_the_rest_go_on() -> None:
    lobby = Lobby()
    shown = Shown()

    async def serve_one(number: int, partner: PartnerSignal) -> TransferResult:
        await partner.next_event()
        if number == 1:
            raise WrongCodeError()
        return TransferResult().finish()

    lobby.push("connection_request", "AAA-001")
    lobby.push("connection_request", "BBB-002")
    result = run(lobby, 2, serve_one, shown)
    assert [s.number for s in result.failures] == [1]
    assert isinstance(result.failures[0].error, WrongCodeError)
    assert [s.number for s in result.received] == [2]
    assert sorted(shown.ended) == [(1, str(WrongCodeError())), (2, "received")]


def test_events_of_no_session_and_without_a_peer_are_dropped() -> None:
    lobby = Lobby()
    seen: list[tuple[str, dict[str, Any]]] = []

    async def serve_one(number: int, partner: PartnerSignal) -> TransferResult:
        seen.append(await partner.next_event())
        seen.append(await partner.next_event())
        return TransferResult().finish()

    lobby.push("offer", "ZZZ-999", sealed="x")  # no session of that peer: dropped
    lobby.push("peer_disconnected")  # no peer_id: dropped
    lobby.push("connection_request", "AAA-001")
    lobby.push("answer", "AAA-001", sealed="y")
    run(lobby, 1, serve_one)
    assert seen == [
        ("connection_request", {"peer_id": "AAA-001"}),
        ("answer", {"peer_id": "AAA-001", "sealed": "y"}),
    ]


def test_losing_the_server_ends_the_wait_and_lets_sessions_finish() -> None:
    lobby = Lobby()
    shown = Shown()
    release = asyncio.Event()

    async def serve_one(number: int, partner: PartnerSignal) -> TransferResult:
        await partner.next_event()
        assert await partner.next_event() == (SERVER_LOST, {})  # passed on
        await release.wait()
        return TransferResult().finish()

    async def main() -> ManyResult:
        lobby.push("connection_request", "AAA-001")
        lobby.push(SERVER_LOST)
        task = asyncio.ensure_future(serve_many(lobby, REGISTRATION, 3, shown, serve_one))
        await asyncio.sleep(0.05)
        assert not task.done()  # the session under way goes on
        release.set()
        return await asyncio.wait_for(task, 5)

    result = asyncio.run(main())
    assert result.stopped == "server_lost"
    assert [s.number for s in result.received] == [1]
    assert shown.said == ["Lost the signaling server: no more receivers can join with this code"]


def test_calls_go_through_the_one_connection() -> None:
    lobby = Lobby()

    async def serve_one(number: int, partner: PartnerSignal) -> TransferResult:
        await partner.next_event()
        assert await partner.register() is REGISTRATION
        await partner.call("accept_connection", {"peer_id": "AAA-001"})
        partner.leave()  # the lobby stays
        return TransferResult().finish()

    lobby.push("connection_request", "AAA-001")
    run(lobby, 1, serve_one)
    assert lobby.calls == [("accept_connection", {"peer_id": "AAA-001"})]
