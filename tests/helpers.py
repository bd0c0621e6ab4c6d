"""Shared test helpers (no fixtures here; see conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from sfs.defaults import DEFAULT_CHUNK_BYTES, MAX_MESSAGE_BYTES
from sfs.errors import PeerGoneError
from sfs.peer.files.destinations import Plan
from sfs.peer.proto.crypto import KeyExchange, SessionKeys
from sfs.peer.proto.progress import NullProgress, Progress
from sfs.peer.proto.wire import Offer
from sfs.peer.transport.channel import Route


class QuietUi:
    """An :class:`sfs.app.Ui` that shows nothing and accepts every offer; the code it
    is shown (a receiver's, or a sender's with ``--print-code``) lands in ``code``.
    Create it in a running event loop."""

    def __init__(self) -> None:
        self.code: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def status(self, message: str) -> None:
        pass

    def show_code(self, code: str, link: str | None = None) -> None:
        if not self.code.done():
            self.code.set_result(code)

    def progress(self) -> Progress:
        return NullProgress()

    async def decide(self, offer: Offer, plan: Plan, *, paired: str | None = None) -> bool:
        return True

    async def confirm_verifier(self, verifier: str) -> bool:
        return True

    def kept_partial(self, name: str, held_bytes: int) -> None:
        pass

    def reconnecting(self, window: float) -> None:
        pass

    def reconnected(self, route: str) -> None:
        pass


def counter_entropy(seed: int) -> Callable[[int], bytes]:
    """Deterministic 'randomness' for known-answer vectors."""
    state = hashlib.sha256(seed.to_bytes(4, "big")).digest()

    def entropy(n: int) -> bytes:
        nonlocal state
        out = b""
        while len(out) < n:
            state = hashlib.sha256(state).digest()
            out += state
        return out[:n]

    return entropy


def key_pair(
    password: bytes = b"tiger-lamp",
    receiver_id: str = "ABC-123",
    *,
    sender_password: bytes | None = None,
    sender_receiver_id: str | None = None,
) -> tuple[SessionKeys, SessionKeys]:
    """(sender keys, receiver keys) from a real SPAKE2 run."""
    sender = KeyExchange(
        role="sender",
        password=sender_password or password,
        code_id=sender_receiver_id or receiver_id,
    )
    receiver = KeyExchange(role="receiver", password=password, code_id=receiver_id)
    return sender.finish(receiver.message), receiver.finish(sender.message)


class QueueChannel:
    """One end of an in-memory, message-preserving channel pair."""

    max_message_size = MAX_MESSAGE_BYTES
    preferred_chunk_size = DEFAULT_CHUNK_BYTES
    route: Route | None = None

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.peer: QueueChannel | None = None
        self.sent: list[bytes] = []
        self.tamper: Callable[[int, bytes], bytes | None] | None = None
        self.unsent = 0

    congested = False

    def send(self, frame: bytes) -> None:
        assert self.peer is not None
        index = len(self.sent)
        self.sent.append(frame)
        if self.tamper is not None:
            changed = self.tamper(index, frame)
            if changed is None:
                return
            frame = changed
        self.peer.inbox.put_nowait(frame)

    async def receive(self) -> bytes:
        item = await self.inbox.get()
        if item is None:
            self.inbox.put_nowait(None)
            raise PeerGoneError()
        return item

    def poll(self) -> bytes | None:
        if self.inbox.empty():
            return None
        item = self.inbox.get_nowait()
        if item is None:
            self.inbox.put_nowait(None)
            raise PeerGoneError()
        return item

    async def wait_closed(self) -> None:
        pass  # an in-memory queue loses nothing at close

    async def drain(self) -> None:
        pass  # never congested

    def seconds_since_receive(self) -> float:
        return 0.0  # never idle: a queue does not lose its peer silently

    def unsent_bytes(self) -> int:
        return self.unsent  # what a test says is still buffered

    def close(self) -> None:
        assert self.peer is not None
        self.peer.inbox.put_nowait(None)


def channel_pair() -> tuple[QueueChannel, QueueChannel]:
    a, b = QueueChannel(), QueueChannel()
    a.peer, b.peer = b, a
    return a, b
