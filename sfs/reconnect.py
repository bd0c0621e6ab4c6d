"""Sessions that survive: when the connection breaks mid-transfer, both sides find
each other again and resume, with no new code (issue 28).

Each side keeps the first session's reconnect secret (``SessionKeys.reconnect``)
for ``--reconnect-window``.  From it both derive the same rendezvous ID and password
(:func:`sfs.peer.proto.crypto.reconnect_code`): the receiver registers under the
rendezvous ID at the same server and waits, the sender joins it, and the two run the
usual set-up, a fresh SPAKE2 on that password included, so the new session has new
keys and chooses its transport afresh (the other side may now be elsewhere).  The
transfer then resumes as a fresh resume does: the receiver's partial copies, checked
by the sender's SHA-256.

What counts as an outage is the other side falling silent or its connection closing
(:class:`PeerGoneError`); a CANCEL (the other user's Ctrl-C) or any other error ends
the session as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sfs.code import Code
from sfs.errors import (
    CancelledByPeerError,
    NotBackError,
    PeerConnectionError,
    PeerGoneError,
    SignalingError,
    WrongCodeError,
)
from sfs.peer.proto.conversation import Conversation
from sfs.peer.proto.crypto import reconnect_code
from sfs.peer.proto.framing import Role, TransferProtocol
from sfs.peer.proto.handshake import Handshake
from sfs.peer.transfer import Pump
from sfs.setup import PeerOptions, Session, Ui
from sfs.text import format_duration

if TYPE_CHECKING:
    from sfs.peer.files.destinations import Plan
    from sfs.peer.proto.progress import Progress
    from sfs.peer.proto.wire import Offer
    from sfs.peer.transfer import TransferResult

logger = logging.getLogger(__name__)

#: Pauses between attempts to meet again grow from the first to the last.
FIRST_PAUSE_SECONDS = 0.5
LAST_PAUSE_SECONDS = 5.0


@dataclass
class Outages:
    """The reconnections of one session: how many, and until when to keep trying.

    :param window: seconds to keep looking for the other side after an outage (0:
        never: an outage ends the session, as before --reconnect-window).
    :param secret: the first session's ``SessionKeys.reconnect``, once it is known and
        both sides said they reconnect (``Session.reconnects``).
    """

    window: float
    secret: bytes = b""
    count: int = 0

    def can_retry(self, error: BaseException) -> bool:
        """Whether ``error``, ending a transfer, is an outage to reconnect after."""
        return (
            self.window > 0
            and bool(self.secret)
            # (not NotBackError: that outage was waited out already)
            and type(error) is PeerGoneError
        )

    def deadline(self) -> float:
        return time.monotonic() + self.window


async def surviving(
    outages: Outages,
    ui: Ui,
    *,
    first: Callable[[], AbstractAsyncContextManager[Session]],
    again: Callable[[], AbstractAsyncContextManager[Session]],
    transfer: Callable[[Session], Awaitable[TransferResult]],
) -> TransferResult:
    """Run ``transfer`` over the ``first`` session, and after each outage over one
    set up ``again`` (:func:`meet_again`), until it finishes or an error is not an
    outage to wait out.  ``transfer`` sets ``outages.secret`` once the first session
    may reconnect.

    :returns: the last session's result, for the whole session: its time from the
        first start, and its reconnections (whose resumed bytes were sent in this
        session, so they are not counted as resumed).
    """
    started = time.monotonic()
    while True:
        try:
            async with again() if outages.secret else first() as session:
                result = await transfer(session)
        except PeerGoneError as exc:
            if not outages.can_retry(exc):
                raise
            logger.info("connection lost: %s", exc)
            ui.reconnecting(outages.window)
            continue
        if outages.count:
            result.started = started
            result.reconnects = outages.count
            result.resumed_files = result.resumed_bytes = result.skipped_files = 0
            result.finish()
        return result


#: How one attempt to meet again reaches the other side: through the server, or in LAN
#: mode through an embedded server found (or advertised) on mDNS (sfs.meeting's).
Connect = Callable[[AsyncExitStack, Handshake, Ui], Awaitable[Session]]


@asynccontextmanager
async def meet_again(
    role: Role,
    outages: Outages,
    options: PeerOptions,
    ui: Ui,
    connect: Connect,
    *,
    streams: int | None = 1,
) -> AsyncIterator[Session]:
    """Find the other side again after an outage and set up a new session with it.

    Tries until the window has passed, with growing pauses: the other side may not
    have noticed the outage yet, or be without a network for a while.

    :raises NotBackError: the window passed without the other side.
    """
    rendezvous, password = reconnect_code(outages.secret)
    code = Code(rendezvous, password.decode("ascii"))
    deadline = outages.deadline()
    pause = FIRST_PAUSE_SECONDS
    handshake: Handshake | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NotBackError(
                "lost the connection, and the other side did not come back within "
                f"{format_duration(outages.window)}"
            )
        handshake = _handshake(role, code, min(options.connect_timeout, remaining), streams)
        stack = AsyncExitStack()
        try:
            async with asyncio.timeout(remaining):
                session = await connect(stack, handshake, Quiet(ui))
        except (
            SignalingError,
            PeerConnectionError,
            WrongCodeError,
            OSError,
            TimeoutError,
        ) as exc:
            # Not there yet (the receiver not registered again, the network still
            # down), an attempt that broke off, or someone else at the rendezvous
            # (whose keys do not match): try again until the window ends.
            await stack.aclose()
            logger.info("meeting again failed: %s; trying again", exc)
            try:
                await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            except asyncio.CancelledError:
                await _farewell(role, code, connect, ui)
                raise
            pause = min(pause * 2, LAST_PAUSE_SECONDS)
            continue
        except CancelledByPeerError:
            await stack.aclose()
            raise CancelledByPeerError(
                "the other side was cancelled by its user while the two were reconnecting"
            ) from None
        except asyncio.CancelledError:
            await stack.aclose()
            if not handshake.paired:  # (a paired one was told by the set-up itself)
                await _farewell(role, code, connect, ui)
            raise
        except BaseException:
            await stack.aclose()
            raise
        break
    outages.count += 1
    async with stack:
        yield session


def _handshake(role: Role, code: Code, timeout: float, streams: int | None) -> Handshake:
    """One attempt's set-up machine: the receiver waits at the rendezvous, the sender
    joins it."""
    return Handshake(
        role,
        code=code if role is Role.SENDER else None,
        rendezvous=code if role is Role.RECEIVER else None,
        connect_timeout=timeout,
        streams=streams,
        reconnects=True,
    )


#: How long a Ctrl-C while meeting again spends telling the other side (the sender
#: retries at least every LAST_PAUSE_SECONDS, so a waiting receiver hears of it).
FAREWELL_SECONDS = LAST_PAUSE_SECONDS + 1.0


async def _farewell(role: Role, code: Code, connect: Connect, ui: Ui) -> None:
    """Ctrl-C while the two look for each other: meet once more, only to say so.

    The other side may be at the rendezvous, or coming to it: without a word it would
    wait out its whole window. Once met, the word is a CANCEL over the new channel; an
    attempt still setting up at the deadline is cancelled, and the set-up tells the
    partner (an ``abort`` "cancelled" through the server), as a Ctrl-C during any
    set-up does. Bounded by FAREWELL_SECONDS; nothing else is sent.
    """
    ui.status("Telling the other side…")
    deadline = time.monotonic() + FAREWELL_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        handshake = _handshake(role, code, left, 1)
        async with AsyncExitStack() as stack:
            attempt = asyncio.ensure_future(connect(stack, handshake, Quiet(ui)))
            # The attempt runs to its end (the other side not there yet is a quick
            # failure): cut off once paired, the other side could have its channel
            # open and have left the server, where the set-up's abort goes, and
            # would take the closed channel for one more outage.
            await asyncio.wait({attempt}, timeout=left)
            attempt.cancel()  # past the deadline: the set-up tells a partner, if any
            await asyncio.gather(attempt, return_exceptions=True)
            if not attempt.cancelled() and attempt.exception() is None:
                # Met: the word goes over the new channel, as a Ctrl-C during a
                # transfer's does.
                session = attempt.result()
                proto = TransferProtocol(role, session.keys)
                await Pump(session.channel, Conversation(proto, time.monotonic())).abort(
                    KeyboardInterrupt()
                )
        if handshake.paired:
            return
        # Not there (yet), or the rendezvous still held by this side's own last attempt.
        await asyncio.sleep(min(FIRST_PAUSE_SECONDS, max(0.0, deadline - time.monotonic())))


class Quiet:
    """The user's Ui during a reconnection, minus the set-up's own status lines
    ("Connecting to ~…"): what the user hears is "reconnecting" and "reconnected"."""

    def __init__(self, ui: Ui) -> None:
        self._ui = ui

    def status(self, message: str) -> None:
        logger.info("%s", message)

    def show_code(self, code: str, link: str | None = None) -> None:
        pass  # a rendezvous is no code to show

    def progress(self) -> Progress:
        return self._ui.progress()

    async def decide(self, offer: Offer, plan: Plan, *, paired: str | None = None) -> bool:
        return await self._ui.decide(offer, plan, paired=paired)

    async def confirm_verifier(self, verifier: str) -> bool:
        return await self._ui.confirm_verifier(verifier)

    def kept_partial(self, name: str, held_bytes: int) -> None:
        self._ui.kept_partial(name, held_bytes)

    def reconnecting(self, window: float) -> None:
        self._ui.reconnecting(window)

    def reconnected(self, route: str) -> None:
        self._ui.reconnected(route)
