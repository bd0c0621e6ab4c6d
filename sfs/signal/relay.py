"""Which relay connections ``sfs serve`` joins, refuses or closes: :class:`RelayTable` (no I/O).

The server's contract with relay clients.  A client connects and presents a
32-byte token (:func:`sfs.peer.proto.crypto.relay_token`: both peers of one session
derive the same one from their SPAKE2 key; to the server it is an opaque name).
The I/O layer reports each connection to the table with :meth:`RelayTable.arrive`,
each departure with :meth:`RelayTable.leave`, and wakes it at
:meth:`RelayTable.next_deadline` with :meth:`RelayTable.handle_timer`; it then does
what the table answers (copy bytes between a :class:`Pair`, close what was refused or
waited too long) and enforces the byte and idle limits of :class:`RelayLimits`.

The rules, in the order :meth:`RelayTable.arrive` applies them:

=========================================  ==========================================
a connection that ...                      gets
=========================================  ==========================================
presents no token                          ``Refuse(NO_TOKEN)``
presents anything but 32 bytes             ``Refuse(MALFORMED_TOKEN)``
presents a token that has formed a pair    ``Refuse(TOKEN_USED)``: a token is good for
(the pair is active, or ended less than    one pair only, so a third party that learnt
``token_memory_seconds`` ago)              it can neither join nor replace a peer
comes from an address that takes part in   ``Refuse(PAIRS_PER_ADDRESS)``
``max_pairs_per_address`` active pairs
finds a connection waiting with its token  ``Refuse(RELAY_FULL)`` if ``max_pairs`` are
                                           active, ``Refuse(PAIRS_PER_ADDRESS)`` if the
                                           waiting one's address has its share; else
                                           ``Pair(waiting, arriving)``
finds none, and its address has            ``Refuse(WAITING_PER_ADDRESS)``
``max_waiting_per_address`` waiting
finds none, and ``max_waiting`` wait       ``Refuse(RELAY_BUSY)``
finds none                                 ``Wait()``, until its partner comes or
                                           ``wait_seconds`` pass (then
                                           :meth:`~RelayTable.handle_timer` names it)
=========================================  ==========================================

A refusal changes nothing in the table (a waiting partner keeps waiting).  When a
connection leaves, a waiting one simply goes (its token may be presented again: no
pair was formed with it); a paired one ends its pair, :meth:`~RelayTable.leave`
names the partner to close, and the token is remembered for
``token_memory_seconds`` more.  Addresses are counted per
:func:`~sfs.signal.addresses.address_key` (an IPv6 client's /64).

What the relay cannot do follows from the peers, not from this table: the direct
TCP path's proof (docs/PROTOCOL.md) runs end to end through a pair, so a relay (or
whoever joined a pair with a stolen token) sees only sealed frames and can delay or
drop a transfer, never read, alter, replay or redirect it.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice

from sfs.signal.addresses import address_key

logger = logging.getLogger(__name__)

RELAY_TOKEN_BYTES = 32  # sfs.peer.proto.crypto.RELAY_TOKEN_BYTES; the server does not import peers


@dataclass(frozen=True)
class RelayLimits:
    """What the relay gives one address, one pair and everyone (``sfs serve`` options)."""

    #: How long a connection waits for its partner before it is closed.
    wait_seconds: float = 10.0
    #: Connections one address may have waiting at once.
    max_waiting_per_address: int = 8
    #: Connections waiting at once, from everyone: each holds a socket.
    max_waiting: int = 1000
    #: Active pairs one address may take part in.
    max_pairs_per_address: int = 8
    #: Active pairs in all.
    max_pairs: int = 500
    #: How long a token is remembered (refused) after its pair ended.
    token_memory_seconds: float = 600.0
    #: Tokens remembered at most; past that the oldest is forgotten early.
    max_remembered_tokens: int = 100_000

    # The I/O layer enforces these; the table only carries them.  None is no limit:
    # a relay's speed is its point, and an operator on a metered link sets them.
    #: Bytes per second one pair may move (both directions together).
    bytes_per_second_per_pair: int | None = None
    #: Bytes one pair may move in all (both directions together).
    max_bytes_per_pair: int | None = None
    #: A pair that moves nothing for this long is closed.  Longer than the peers' own
    #: idle timeout (sfs.peer.proto.conversation, 10 s with a ping every 2 s), so the
    #: peers, who know why they are quiet, decide first.
    idle_seconds: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_waiting_per_address", "max_waiting", "max_pairs_per_address"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_pairs < 1 or self.max_remembered_tokens < 0:
            raise ValueError("max_pairs must be at least 1, max_remembered_tokens at least 0")
        if self.wait_seconds <= 0 or self.idle_seconds <= 0 or self.token_memory_seconds < 0:
            raise ValueError("wait_seconds and idle_seconds must be positive")


class Refusal(StrEnum):
    """Why a connection was refused (what metrics count)."""

    NO_TOKEN = "no_token"
    MALFORMED_TOKEN = "malformed_token"
    TOKEN_USED = "token_used"
    PAIRS_PER_ADDRESS = "pairs_per_address"
    RELAY_FULL = "relay_full"
    WAITING_PER_ADDRESS = "waiting_per_address"
    RELAY_BUSY = "relay_busy"


@dataclass(frozen=True)
class Wait:
    """Hold the connection open: its partner has not come yet."""


@dataclass(frozen=True)
class Pair:
    """Join two connections and copy bytes both ways."""

    #: The connection that was waiting.
    first: Hashable
    #: The connection that just arrived.
    second: Hashable


@dataclass(frozen=True)
class Refuse:
    """Close the connection; nothing of it is kept."""

    #: Why.
    reason: Refusal


Decision = Wait | Pair | Refuse


@dataclass
class _Waiting:
    token: bytes
    address: str
    due: float


@dataclass
class _Paired:
    token: bytes
    partner: Hashable
    addresses: tuple[str, ...]  # the pair's distinct addresses, counted once each


class RelayTable:
    """Waiting connections, active pairs and used tokens (no I/O; the rules above).

    Connection IDs are whatever the I/O layer uses (hashable, unique while open).
    Time comes in as *now*, monotonic seconds that never go back.

    :param limits: what to enforce
    """

    def __init__(self, limits: RelayLimits | None = None) -> None:
        self.limits = limits or RelayLimits()
        self._waiting: dict[Hashable, _Waiting] = {}  # oldest first: deadline order
        self._waiting_by_token: dict[bytes, Hashable] = {}
        self._waiting_by_address: dict[str, int] = {}
        self._paired: dict[Hashable, _Paired] = {}  # both ends of every pair
        self._paired_tokens: set[bytes] = set()
        self._pairs_by_address: dict[str, int] = {}
        self._used: dict[bytes, float] = {}  # ended pairs' tokens -> when to forget, oldest first

    # -- what the I/O layer reads --------------------------------------------------------

    @property
    def active_pairs(self) -> int:
        return len(self._paired_tokens)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def remembered_tokens(self) -> int:
        return len(self._used)

    def partner(self, conn_id: Hashable) -> Hashable | None:
        """The other end of *conn_id*'s pair, or None if it is not paired."""
        paired = self._paired.get(conn_id)
        return paired.partner if paired is not None else None

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has something to do, or None."""
        # Both are oldest first, and one wait (one memory) for all: the first is due first.
        dues = [waiting.due for waiting in islice(self._waiting.values(), 1)]
        dues += islice(self._used.values(), 1)
        return min(dues, default=None)

    # -- events --------------------------------------------------------------------------

    def arrive(
        self, conn_id: Hashable, address: str, token: bytes | None, *, now: float
    ) -> Decision:
        """A connection presented *token*: wait, pair or refuse it (the table above)."""
        if conn_id in self._waiting or conn_id in self._paired:
            raise ValueError(f"connection {conn_id!r} has already arrived")
        key = address_key(address)
        refusal = self._refusal(key, token)
        if refusal is not None:
            logger.debug("relay: refused a connection from %s: %s", key, refusal)
            return Refuse(refusal)
        assert token is not None  # _refusal checked it
        first = self._waiting_by_token.get(token)
        if first is not None:
            return self._pair(first, conn_id, key, token)
        self._waiting[conn_id] = _Waiting(token, key, now + self.limits.wait_seconds)
        self._waiting_by_token[token] = conn_id
        _count(self._waiting_by_address, key, +1)
        return Wait()

    def leave(self, conn_id: Hashable, *, now: float) -> Hashable | None:
        """*conn_id* is gone; return its partner to close, if it was paired.

        Unknown and already forgotten connections are ignored, so the I/O layer may
        report every close, refused and timed-out connections included.
        """
        if conn_id in self._waiting:
            self._unwait(conn_id)
            return None
        paired = self._paired.pop(conn_id, None)
        if paired is None:
            return None
        del self._paired[paired.partner]
        self._paired_tokens.discard(paired.token)
        for key in paired.addresses:
            _count(self._pairs_by_address, key, -1)
        self._remember(paired.token, now=now)
        return paired.partner

    def handle_timer(self, now: float) -> list[Hashable]:
        """Forget what has expired; return the waiting connections to close, oldest first."""
        overdue: list[Hashable] = []
        for conn_id, waiting in self._waiting.items():
            if waiting.due > now:
                break
            overdue.append(conn_id)
        for conn_id in overdue:
            self._unwait(conn_id)
        forgotten: list[bytes] = []
        for token, forget_at in self._used.items():
            if forget_at > now:
                break
            forgotten.append(token)
        for token in forgotten:
            del self._used[token]
        return overdue

    # -- the rules -----------------------------------------------------------------------

    def _refusal(self, key: str, token: bytes | None) -> Refusal | None:
        """Why a connection from *key* with *token* may not wait or pair (its partner aside)."""
        if not token:
            return Refusal.NO_TOKEN
        if not isinstance(token, bytes) or len(token) != RELAY_TOKEN_BYTES:
            return Refusal.MALFORMED_TOKEN
        if token in self._paired_tokens or token in self._used:
            return Refusal.TOKEN_USED
        if self._pairs_by_address.get(key, 0) >= self.limits.max_pairs_per_address:
            return Refusal.PAIRS_PER_ADDRESS
        if token in self._waiting_by_token:
            return None  # its partner is here: the pair's own limits decide
        if self._waiting_by_address.get(key, 0) >= self.limits.max_waiting_per_address:
            return Refusal.WAITING_PER_ADDRESS
        if len(self._waiting) >= self.limits.max_waiting:
            return Refusal.RELAY_BUSY
        return None

    def _pair(self, first: Hashable, second: Hashable, key: str, token: bytes) -> Decision:
        first_key = self._waiting[first].address
        if len(self._paired_tokens) >= self.limits.max_pairs:
            return Refuse(Refusal.RELAY_FULL)
        if self._pairs_by_address.get(first_key, 0) >= self.limits.max_pairs_per_address:
            return Refuse(Refusal.PAIRS_PER_ADDRESS)
        self._unwait(first)
        addresses = tuple(dict.fromkeys((first_key, key)))
        self._paired[first] = _Paired(token, second, addresses)
        self._paired[second] = _Paired(token, first, addresses)
        self._paired_tokens.add(token)
        for address in addresses:
            _count(self._pairs_by_address, address, +1)
        return Pair(first, second)

    def _unwait(self, conn_id: Hashable) -> None:
        waiting = self._waiting.pop(conn_id)
        del self._waiting_by_token[waiting.token]
        _count(self._waiting_by_address, waiting.address, -1)

    def _remember(self, token: bytes, *, now: float) -> None:
        self._used[token] = now + self.limits.token_memory_seconds
        while len(self._used) > self.limits.max_remembered_tokens:
            del self._used[next(iter(self._used))]  # the oldest goes first


def _count(counts: dict[str, int], key: str, delta: int) -> None:
    """Add *delta* to *key*'s count, dropping keys that reach zero (bounded by what is open)."""
    left = counts.get(key, 0) + delta
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class TokenBucket:
    """A pair's byte budget per second (no I/O): what ``bytes_per_second_per_pair`` allows.

    The bucket holds up to *burst* bytes and refills at *rate* bytes per second.  The
    relay has already read what it reports (it cannot un-read), so :meth:`spend` may
    take the level below zero; the answer is how long the pair must then stop reading
    until the level is back at zero.  Over any stretch of time the bytes moved are at
    most ``burst + rate * seconds`` plus one read.

    :param rate: bytes per second, at least 1
    :param burst: bytes that may pass at once after a quiet spell, at least 1
    :param now: the clock's reading when the pair formed (the bucket starts full)
    """

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        if not rate >= 1 or not burst >= 1:
            raise ValueError("rate and burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self.level = burst
        self._last = now

    def spend(self, nbytes: int, *, now: float) -> float:
        """Take *nbytes*; return the seconds to pause before reading more (0: go on)."""
        refill = max(now - self._last, 0.0) * self.rate
        self.level = min(self.burst, self.level + refill) - nbytes
        self._last = max(self._last, now)
        return 0.0 if self.level >= 0 else -self.level / self.rate


#: The HTTP status of each refusal (docs/PROTOCOL.md "Relay"); a WebSocket end gets
#: close code 4000 + status.
REFUSAL_STATUS = {
    Refusal.NO_TOKEN: 400,
    Refusal.MALFORMED_TOKEN: 400,
    Refusal.TOKEN_USED: 409,
    Refusal.PAIRS_PER_ADDRESS: 429,
    Refusal.WAITING_PER_ADDRESS: 429,
    Refusal.RELAY_FULL: 503,
    Refusal.RELAY_BUSY: 503,
}
#: The one line a refused client reads (the peers show it sanitised).
REFUSAL_TEXT = {
    Refusal.NO_TOKEN: "no relay token (send Sfs-Relay-Token)",
    Refusal.MALFORMED_TOKEN: "the relay token is not 32 bytes (64 lowercase hex digits)",
    Refusal.TOKEN_USED: "this relay token has already formed a pair",
    Refusal.PAIRS_PER_ADDRESS: "too many relay pairs from your address",
    Refusal.WAITING_PER_ADDRESS: "too many relay connections waiting from your address",
    Refusal.RELAY_FULL: "the relay is full, try again later",
    Refusal.RELAY_BUSY: "the relay is busy, try again later",
}
#: A waiting connection whose partner did not come within ``wait_seconds``.
NO_PARTNER_STATUS = 408
NO_PARTNER = "no_partner"  # what metrics count it as
_HEX_DIGITS = frozenset("0123456789abcdef")
_STATUS_PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    409: "Conflict",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def token_from_header(value: str | None) -> bytes | None:
    """The token of an ``Sfs-Relay-Token`` header: None when absent or empty, the 32
    bytes of 64 lowercase hex digits, else a non-empty value that is not 32 bytes (the
    table refuses it as malformed)."""
    if not value:
        return None
    if len(value) == 2 * RELAY_TOKEN_BYTES and set(value) <= _HEX_DIGITS:
        return bytes.fromhex(value)
    return b"?"


def token_from_message(data: object) -> bytes | None:
    """The token of a WebSocket end's first message: the 32 bytes of a binary message;
    anything else is malformed (a text message is never a token), nothing is None."""
    if isinstance(data, bytes):
        return data if data else None
    return b"?" if data else None


def http_refusal(status: int, reason: str) -> bytes:
    """The whole HTTP response that refuses a raw relay connection: *status* and one
    line of ``text/plain``; the server closes the connection after it."""
    body = reason.encode("utf-8") + b"\n"
    phrase = _STATUS_PHRASES.get(status, "Error")
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
