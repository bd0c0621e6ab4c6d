"""Settings of ``sfs serve``: :class:`ServerConfig` and the checks that refuse
limits that contradict each other.

No I/O and nothing heavy: the CLI, the registries and the server all import it, and
it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from sfs.defaults import (
    DEFAULT_FD_RESERVE,
    DEFAULT_HEADER_TIMEOUT_SECONDS,
    DEFAULT_JOIN_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION,
    DEFAULT_PAIRING_TIMEOUT_SECONDS,
    DEFAULT_PORT,
    DEFAULT_REDIS_TTL_SECONDS,
    DEFAULT_REGISTER_TIMEOUT_SECONDS,
    DEFAULT_RELAY_IDLE_SECONDS,
    DEFAULT_RELAY_MAX_PAIRS,
    DEFAULT_RELAY_PAIRS_PER_ADDRESS,
    DEFAULT_RELAY_WAIT_SECONDS,
    MIN_FD_RESERVE,
    MIN_REDIS_TTL_SECONDS,
)
from sfs.signal import messages as m
from sfs.signal.relay import RelayLimits
from sfs.signal.turn import DEFAULT_TTL_SECONDS, TurnSecret

# Far above the largest valid payload (a 64 KiB sealed SDP) yet small enough
# that nobody can make the server buffer much for them.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024
# The defaults of the exhaustion limits live in sfs.defaults (light, for the CLI);
# ServerConfig has the reasoning per field.
# What ``--redis`` takes: the schemes redis-py connects with.
REDIS_SCHEMES = ("redis", "rediss", "unix")
#: What ``--relay-rate`` and ``--relay-max-bytes`` accept after the number (binary).
BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_byte_count(text: str) -> int:
    """``"500k"`` -> 512000: a whole number of bytes with an optional binary unit
    (k, M, G, T; a trailing ``B`` or ``iB`` is allowed: ``2MiB``, ``64KB``).

    :raises ValueError: with a line for the user
    """
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = value[-1:] if value[-1:] in BYTE_UNITS else ""
    digits = value[: len(value) - len(unit)].strip()
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"{text!r} is not a byte count (e.g. 500k, 2M, 1G, 0)")
    return int(digits) * BYTE_UNITS[unit]


def check_relay_url(url: str) -> str:
    """*url* if it can be a relay's address for the peers: an absolute ``http(s)://``
    URL with a host and no user, query or fragment.

    :raises ValueError: with a line for the user
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ValueError("--relay-url has a bad host or port") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("--relay-url takes an absolute http:// or https:// URL")
    if parts.username is not None or parts.query or parts.fragment:
        raise ValueError("--relay-url takes no user, query or fragment")
    return url


def redis_url_display(url: str) -> str:
    """*url* as logs and errors may show it: no user name, password or query.

    :raises ValueError: with a line for the user when *url* is not a Redis URL
        (the message never repeats the URL, which may hold a password)
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("the --redis URL has a bad host or port") from None
    scheme = parts.scheme.lower()
    if scheme not in REDIS_SCHEMES:
        raise ValueError("--redis takes a redis://, rediss:// or unix:// URL")
    if scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// --redis URL needs the socket's path")
        return f"unix://{parts.path}"
    if not parts.hostname:
        raise ValueError("the --redis URL names no host")
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ValueError("the path of a --redis URL is a database number, e.g. /0")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((scheme, netloc, f"/{database or 0}", "", ""))


@dataclass(frozen=True)
class ServerConfig:
    """Settings of ``sfs serve``.

    :param host: address to bind
    :param port: TCP port to bind; 0 picks a free one
    :param ice_servers: STUN/TURN servers handed to every registering peer
    :param max_connections: concurrent Socket.IO connections; more are refused
    :param max_lookups_per_connection: find_peer/send_connection_request attempts
        one connection may make in its lifetime
    :param max_lookups_per_address: attempts from one client address per window
    :param lookup_window_seconds: length of that sliding window
    :param max_message_bytes: largest frame accepted; a larger one drops the connection
    :param max_connections_per_address: TCP connections one client address (IPv6:
        one /64) may hold at once; more are closed on accept.  Each sfs peer holds
        one while it sets up, so this is how many peers may share a NAT.
    :param header_timeout_seconds: a connection that has not sent a whole HTTP
        request (the websocket upgrade, or ``/healthz``) by then is closed
    :param join_timeout_seconds: a websocket that has not joined the Socket.IO
        namespace by then is closed (clients join at once)
    :param register_timeout_seconds: a client that has not sent ``register_peer``
        by then, counted from joining, is disconnected
    :param pairing_timeout_seconds: a connection request, accepted or not, that
        has not ended by then (the peers leave as soon as their DataChannel is
        open) costs both peers their connection; must exceed the clients'
        ``--connect-timeout`` plus the key exchange and gathering
    :param max_queued_bytes_per_connection: data waiting for one client to read
        it; a client that lets more pile up is dropped
    :param max_queued_bytes: the same over all clients; when it is exceeded the
        clients with the most unread data are dropped, not the ones sending
    :param fd_reserve: file descriptors kept free for plain HTTP (``/healthz``):
        websocket sessions are answered 503 once only this many are left
    :param stun_urls: STUN servers handed to every registering peer
    :param turn_urls: TURN servers handed to every registering peer, each with a
        credential of its own from ``turn_secret`` (coturn's ``static-auth-secret``)
    :param turn_ttl_seconds: how long such a credential is valid
    :param tls: certificate and key files to serve HTTPS (and websockets over TLS)
    :param page: serve the browser page at ``/`` (sfs.signal.page)
    :param redis_url: keep the peers in this Redis, shared with every node that
        uses it (sfs.signal.redis_registry); None keeps them in this process
    :param request_timeout_seconds: if set, a client from another machine (not
        loopback) that has not asked for a connection by then, counted from
        connecting, is disconnected: LAN mode's embedded server, where only its own
        waiting side (on loopback) has reason to wait; with the memory registry only
    :param redis_ttl_seconds: how long a node's peers stay in Redis after its last
        heartbeat (it sends one every third of that): the bound on how long the
        partners of a node that died wait to be told
    :param relay: serve the relay at ``/relay`` (sfs.signal.relay_server)
    :param relay_url: the relay the peers are told to use (the register ack's
        ``relay``) instead of this server's own ``/relay``
    :param relay_wait_seconds: how long a relay connection waits for its partner
    :param relay_pairs_per_address: relay pairs one address (IPv6: /64) may take part
        in, and relay connections it may have waiting
    :param relay_max_pairs: relay pairs at once, from everyone
    :param relay_rate: bytes per second one pair may move (both ways); 0 = no limit
    :param relay_max_bytes: bytes one pair may move in all; 0 = no limit
    :param relay_idle_seconds: a pair that moves nothing for this long is closed
    """

    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    ice_servers: tuple[m.IceServer, ...] = ()
    max_connections: int = 10000
    max_lookups_per_connection: int = 10
    max_lookups_per_address: int = 60
    lookup_window_seconds: float = 60.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    #: More connections loopback may hold: in LAN mode the waiting side's own, one for
    #: its code and one per paired device it waits for (sfs.lan.embedded).
    loopback_extra_connections: int = 0
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    join_timeout_seconds: float = DEFAULT_JOIN_TIMEOUT_SECONDS
    register_timeout_seconds: float = DEFAULT_REGISTER_TIMEOUT_SECONDS
    pairing_timeout_seconds: float = DEFAULT_PAIRING_TIMEOUT_SECONDS
    max_queued_bytes_per_connection: int = DEFAULT_MAX_QUEUED_BYTES_PER_CONNECTION
    max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    fd_reserve: int = DEFAULT_FD_RESERVE
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: TurnSecret | None = field(default=None, repr=False)
    turn_ttl_seconds: int = DEFAULT_TTL_SECONDS
    tls: tuple[str, str] | None = None
    page: bool = True
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_ttl_seconds: float = DEFAULT_REDIS_TTL_SECONDS
    request_timeout_seconds: float | None = None
    relay: bool = True
    relay_url: str | None = None
    relay_wait_seconds: float = DEFAULT_RELAY_WAIT_SECONDS
    relay_pairs_per_address: int = DEFAULT_RELAY_PAIRS_PER_ADDRESS
    relay_max_pairs: int = DEFAULT_RELAY_MAX_PAIRS
    relay_rate: int = 0
    relay_max_bytes: int = 0
    relay_idle_seconds: float = DEFAULT_RELAY_IDLE_SECONDS
    #: Whether peers may come back here after an outage (the register ack says so):
    #: not an embedded server, which is gone once its transfer starts.
    come_back: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if self.relay_url is not None:
            check_relay_url(self.relay_url)
        if self.relay_rate < 0 or self.relay_max_bytes < 0:
            raise ValueError("relay_rate and relay_max_bytes must be 0 (no limit) or more")
        self.relay_limits()  # raises ValueError for limits RelayLimits refuses
        self._check_ice_servers()
        self._check_limits()
        self._check_redis()

    def relay_limits(self) -> RelayLimits:
        """The relay's limits (what sfs.signal.relay_server enforces)."""
        return RelayLimits(
            wait_seconds=self.relay_wait_seconds,
            max_waiting_per_address=self.relay_pairs_per_address,
            max_pairs_per_address=self.relay_pairs_per_address,
            max_pairs=self.relay_max_pairs,
            bytes_per_second_per_pair=self.relay_rate or None,
            max_bytes_per_pair=self.relay_max_bytes or None,
            idle_seconds=self.relay_idle_seconds,
        )

    def _check_ice_servers(self) -> None:
        if len(self.ice_servers) + bool(self.stun_urls) + bool(self.turn_urls) > m.MAX_ICE_SERVERS:
            raise ValueError(f"at most {m.MAX_ICE_SERVERS} ICE servers can be configured")
        for urls, schemes, option in (
            (self.stun_urls, ("stun", "stuns"), "--stun"),
            (self.turn_urls, ("turn", "turns"), "--turn"),
        ):
            if len(urls) > m.MAX_ICE_URLS:
                raise ValueError(f"at most {m.MAX_ICE_URLS} {option} URLs")
            for url in urls:
                if url.partition(":")[0].lower() not in schemes:
                    raise ValueError(f"{option} takes {' or '.join(s + ':' for s in schemes)} URLs")
        if self.turn_urls and self.turn_secret is None:
            raise ValueError(
                "--turn needs the shared secret: --turn-secret-file or SFS_TURN_SECRET"
            )
        if self.turn_secret is not None and not self.turn_urls:
            raise ValueError("a TURN secret without --turn URLs has nothing to sign")
        if self.turn_ttl_seconds < 60:
            raise ValueError("--turn-ttl must be at least 60 seconds")

    def _check_limits(self) -> None:
        for name in (
            "max_connections",
            "max_lookups_per_connection",
            "max_lookups_per_address",
            "max_message_bytes",
            "max_connections_per_address",
            "max_queued_bytes_per_connection",
            "max_queued_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "lookup_window_seconds",
            "header_timeout_seconds",
            "join_timeout_seconds",
            "register_timeout_seconds",
            "pairing_timeout_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_queued_bytes < self.max_queued_bytes_per_connection:
            raise ValueError("max_queued_bytes must be at least max_queued_bytes_per_connection")
        if self.fd_reserve < MIN_FD_RESERVE:
            raise ValueError(f"fd_reserve must be at least {MIN_FD_RESERVE}")

    def _check_redis(self) -> None:
        if self.redis_url is not None:
            redis_url_display(self.redis_url)  # raises ValueError for a bad URL
        if self.request_timeout_seconds is not None and (
            self.redis_url is not None or not self.request_timeout_seconds > 0
        ):
            raise ValueError("request_timeout_seconds: positive, without Redis")
        if not self.redis_ttl_seconds >= MIN_REDIS_TTL_SECONDS:
            raise ValueError(f"--redis-ttl must be at least {MIN_REDIS_TTL_SECONDS:g} seconds")
