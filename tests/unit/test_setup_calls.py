"""The set-up's calls to the server go out back to back: a call does not wait for the
answer to the one before (the server handles one connection's events in order)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from sfs.errors import PeerGoneError, SignalingError
from sfs.peer.proto.handshake import Action, Call, ShowCode, Status
from sfs.setup import _calls, call_batches
from sfs.signal.client import SignalClient


class Server:
    """A signaling client whose accept_connection is answered only once the next call
    (the SPAKE2 message) has gone out: a driver that waits for each answer before the
    next call never gets one (bounded by the test's timeout)."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.sent: list[str] = []
        self.key_sent = asyncio.Event()
        self.fail = fail

    async def call(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(event)
        if event == "send_public_key":
            self.key_sent.set()
        if event == "accept_connection":
            await self.key_sent.wait()
        if event in self.fail:
            raise SignalingError(f"refused {event}")
        return {"ok": True}


ACCEPT = Call("accept_connection", {"peer_id": "XYZ-789"})
KEY = Call("send_public_key", {"peer_id": "XYZ-789", "key": "a2V5"})


def test_consecutive_calls_are_one_batch_and_other_actions_stand_alone() -> None:
    show, status = ShowCode("ABC-123-tiger-lamp"), Status("…")
    actions: list[Action] = [show, ACCEPT, KEY, status, KEY]
    assert call_batches(actions) == [[show], [ACCEPT, KEY], [status], [KEY]]
    assert call_batches([]) == []


async def test_the_key_goes_out_before_the_accept_is_answered() -> None:
    server = Server()
    async with asyncio.timeout(10):
        await _calls(cast(SignalClient, server), [ACCEPT, KEY])
    assert server.sent == ["accept_connection", "send_public_key"]


async def test_the_first_failing_call_in_order_is_raised() -> None:
    server = Server(fail=frozenset({"accept_connection", "send_public_key"}))
    with pytest.raises(SignalingError, match="refused accept_connection"):
        async with asyncio.timeout(10):
            await _calls(cast(SignalClient, server), [ACCEPT, KEY])


async def test_a_best_effort_call_that_fails_raises_nothing() -> None:
    class Gone(Server):
        async def call(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
            raise PeerGoneError("gone")

    abort = Call("abort", {"peer_id": "XYZ-789", "reason": "cancelled"}, best_effort=True)
    await _calls(cast(SignalClient, Gone()), [abort, abort])
