"""`sfs send --many N`: one code, up to N receivers, at once or in turn (issue 30).

The sender registers once with ``many`` (the server lets up to N peers ask it, each
its own pairing: docs/PROTOCOL.md, "One code, many receivers") and shows one code.
Each connection request that comes starts a session of its own: a
:class:`~sfs.peer.proto.handshake.Handshake` on the code's words, pumped by
:func:`sfs.setup.set_up` over a :class:`PartnerSignal` (the view of the one
server connection that carries this receiver's events only), then the transfer as
`sfs send` runs it, with its own keys, progress, resume and reconnects.

This side accepts at most N requests, whatever the server does: each is one SPAKE2
run, one guess at the code, so the code gives at most N guesses (SECURITY.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sfs.errors import ServerLostError, SfsError
from sfs.setup import Ui
from sfs.signal.client import SERVER_LOST, Registration

if TYPE_CHECKING:
    from sfs.peer.transfer import TransferResult
    from sfs.setup import Signal

logger = logging.getLogger(__name__)

#: Server events of one receiver's set-up that a partner's view passes on; the
#: lobby's own are the requests.
_REQUEST = "connection_request"


class ManyUi(Ui, Protocol):
    """What `sfs send --many` shows: the code once (this Ui), then each receiver's
    session through a Ui of its own, and how each ended."""

    def receiver(self, number: int) -> Ui:
        """The Ui of receiver ``number`` (1, 2, … in the order they came); it never
        shows the code (this one did)."""

    def received(self, number: int, result: TransferResult) -> None: ...
    def failed(self, number: int, error: SfsError) -> None: ...


@dataclass(frozen=True)
class Served:
    """How one receiver's session ended: a result, or the error that ended it."""

    number: int
    result: TransferResult | None = None
    error: SfsError | None = None


@dataclass
class ManyResult:
    """What `sfs send --many` did.

    :param many: the receivers the code could serve.
    :param served: each that came, in the order they came.
    :param stopped: why it ended before ``many`` came: ``"interrupted"`` (the user's
        Ctrl-C, with no transfer under way) or ``"server_lost"``; else None.
    """

    many: int
    served: list[Served] = field(default_factory=list)
    stopped: str | None = None

    @property
    def received(self) -> list[Served]:
        return [s for s in self.served if s.result is not None]

    @property
    def failures(self) -> list[Served]:
        return [s for s in self.served if s.error is not None]


class PartnerSignal:
    """One receiver's view of the lobby's server connection (:class:`sfs.setup.Signal`):
    its events only, its calls through the shared connection, and a registration
    that is the lobby's (made once, for all)."""

    def __init__(self, lobby: Signal, registration: Registration) -> None:
        self._lobby = lobby
        self._registration = registration
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def put(self, name: str, data: dict[str, Any]) -> None:
        self._events.put_nowait((name, data))

    async def register(self, rendezvous: str | None = None) -> Registration:
        return self._registration

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        return await self._lobby.call(event, data)

    async def next_event(self) -> tuple[str, dict[str, Any]]:
        return await self._events.get()

    def leave(self) -> None:
        """The lobby stays for the next receiver; the server forgets this link when
        the receiver leaves."""


#: Serves one receiver over its partner view: its whole session, set-up to the end.
ServeOne = Callable[[int, PartnerSignal], Awaitable["TransferResult"]]


async def serve_many(
    lobby: Signal,
    registration: Registration,
    many: int,
    ui: ManyUi,
    serve_one: ServeOne,
) -> ManyResult:
    """Take up to ``many`` receivers' requests from the ``lobby`` connection (which
    registered with ``many``, and whose code has been shown), each served by
    ``serve_one`` beside the others, until all ``many`` are done.

    A Ctrl-C with no transfer under way ends it (``stopped``); with some, it cancels
    them and goes on as KeyboardInterrupt.  Losing the server ends the wait for more;
    the transfers under way go on (they no longer need it).
    """
    return await _Lobby(lobby, registration, many, ui, serve_one).run()


class _Lobby:
    """What :func:`serve_many` holds: the receivers that came, by peer ID, and the
    sessions under way."""

    def __init__(
        self,
        lobby: Signal,
        registration: Registration,
        many: int,
        ui: ManyUi,
        serve_one: ServeOne,
    ) -> None:
        self.lobby = lobby
        self.registration = registration
        self.ui = ui
        self.serve_one = serve_one
        self.result = ManyResult(many)
        self.partners: dict[str, PartnerSignal] = {}
        self.running: set[asyncio.Task[Served]] = set()

    @property
    def waiting(self) -> bool:
        """Whether more receivers may come."""
        return len(self.partners) < self.result.many and self.result.stopped is None

    async def run(self) -> ManyResult:
        receiving: asyncio.Future[tuple[str, dict[str, Any]]] | None = None
        try:
            while self.running or self.waiting:
                if receiving is None and self.result.stopped is None:
                    # Also once all have come: their sessions' events come this way.
                    receiving = asyncio.ensure_future(self.lobby.next_event())
                waiters: set[asyncio.Future[Any]] = set(self.running)
                if receiving is not None:
                    waiters.add(receiving)
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in self.running if t.done()]:
                    self.running.discard(task)
                    self.result.served.append(task.result())
                if receiving is not None and receiving.done():
                    self._take(*receiving.result())
                    receiving = None
        except asyncio.CancelledError:
            if self.running or not _uncancel():
                for task in self.running:
                    task.cancel()
                await asyncio.gather(*self.running, return_exceptions=True)
                raise
            self.result.stopped = "interrupted"
        finally:
            if receiving is not None:
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)
        self.result.served.sort(key=lambda s: s.number)
        if not self.result.served and self.result.stopped == "server_lost":
            raise ServerLostError()
        return self.result

    def _take(self, name: str, data: dict[str, Any]) -> None:
        """One event from the server: a new receiver's request, or one for a receiver
        under way (passed on to its session)."""
        if name == SERVER_LOST:
            if self.waiting:
                self.ui.status(
                    "Lost the signaling server: no more receivers can join with this code"
                )
            self.result.stopped = "server_lost"
            for partner in self.partners.values():
                partner.put(name, data)
            return
        peer_id = data.get("peer_id")
        if not isinstance(peer_id, str):
            return
        if peer_id in self.partners:
            self.partners[peer_id].put(name, data)
        elif name == _REQUEST:
            if not self.waiting:
                # The server should have refused it (used_up): the code's guesses are
                # spent, whatever it does.
                logger.info("a request beyond --many %d: not taken", self.result.many)
                return
            partner = self.partners[peer_id] = PartnerSignal(self.lobby, self.registration)
            partner.put(name, data)
            self.running.add(asyncio.ensure_future(self._serve(len(self.partners), partner)))

    async def _serve(self, number: int, partner: PartnerSignal) -> Served:
        try:
            done = await self.serve_one(number, partner)
        except SfsError as exc:
            self.ui.failed(number, exc)
            return Served(number, error=exc)
        self.ui.received(number, done)
        return Served(number, result=done)


def _uncancel() -> bool:
    """Take back the Ctrl-C that cancelled this task, so it can end normally: true if
    it was the only cancellation (nothing else asked this task to stop)."""
    task = asyncio.current_task()
    return task is not None and task.uncancel() == 0
