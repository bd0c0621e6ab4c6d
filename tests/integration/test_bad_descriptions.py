"""A session description the other side sends that aiortc cannot use is one clear
PeerConnectionError, with no traceback logged from aiortc's background tasks."""

from __future__ import annotations

import asyncio
import gc
import logging
import re

import pytest

from sfs.errors import PeerConnectionError
from sfs.peer.transport.webrtc import PeerLink
from tests.conftest import LOOPBACK


@pytest.mark.parametrize("side", ["offer", "answer"])
async def test_a_description_without_a_fingerprint_is_one_clear_error(
    side: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    offerer = PeerLink(ice_servers=(), host_addresses=(LOOPBACK,))
    answerer = PeerLink(ice_servers=(), host_addresses=(LOOPBACK,))

    def strip(description: dict[str, str]) -> dict[str, str]:
        sdp = re.sub(r"a=fingerprint:[^\r\n]*\r\n", "", description["sdp"])
        return {"type": description["type"], "sdp": sdp}

    async def connect() -> None:
        offer = await offerer.create_offer()
        if side == "offer":
            offer = strip(offer)
        answer = await answerer.answer_offer(offer)
        if side == "answer":
            answer = strip(answer)
        await offerer.accept_answer(answer)
        await asyncio.gather(offerer.open(5), answerer.open(5))

    try:
        with pytest.raises(PeerConnectionError, match="fingerprint") as raised:
            await connect()
        assert "Traceback" not in str(raised.value)
        await asyncio.sleep(0.5)  # let aiortc's background tasks run, if it started any
    finally:
        await asyncio.gather(offerer.close(), answerer.close())
    gc.collect()  # asyncio logs a task's unretrieved exception when the task is collected
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()
