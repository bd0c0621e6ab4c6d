"""Dialing ``sfs serve``'s relay: :func:`open_relay` (docs/PROTOCOL.md "Relay").

A peer connects to the relay URL (TLS for ``https://``, verified as signaling is),
asks for ``Upgrade: sfs-relay`` with its session's relay token, and waits for the
answer, which the relay sends only once it has decided: ``101`` when the partner
with the same token is there (from then on the connection is a byte pipe to the
partner), or an HTTP error with a one-line reason.  Nothing is sent before the
answer: the relay hands the connection over from its HTTP parser when it answers.

What runs through the pipe is the direct TCP path's own (sfs.peer.transport.tcp):
the proof end to end, then sealed frames; the relay sees neither key nor content.
The pure pieces (:func:`relay_request`, :func:`parse_relay_answer`) are tested
without a network.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from sfs.errors import RelayRefusedError, RelayUnreachableError, connection_end
from sfs.socks import Socks
from sfs.text import printable

logger = logging.getLogger(__name__)

#: sfs.signal.relay.RELAY_TOKEN_BYTES (the peers do not import the server).
RELAY_TOKEN_BYTES = 32
#: The answer's head (status line and headers) is at most this long.
MAX_HEAD_BYTES = 8 * 1024
#: A refusal's reason: the first line of the body, at most this many characters shown.
MAX_REASON_CHARS = 200
_BODY_BYTES = 1024

P = TypeVar("P", bound=asyncio.BaseProtocol)


def relay_request(*, host: str, path: str, token: bytes) -> bytes:
    """The upgrade request for *token* (``host`` as the Host header: ``name[:port]``)."""
    if len(token) != RELAY_TOKEN_BYTES:
        raise ValueError(f"a relay token is {RELAY_TOKEN_BYTES} bytes")
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
        f"Upgrade: sfs-relay\r\nSfs-Relay-Token: {token.hex()}\r\n\r\n"
    ).encode("ascii")


@dataclass(frozen=True)
class RelayAnswer:
    """The relay's answer to the upgrade request."""

    #: The HTTP status: 101 when paired.
    status: int
    #: A refusal's one-line reason (sanitised, short); "" for a 101.
    reason: str
    #: The bytes after the 101's head: already the partner's.
    rest: bytes = b""


def parse_relay_answer(data: bytes, *, eof: bool = False) -> RelayAnswer | None:
    """The answer in *data*, or None while more is needed (*eof*: no more will come).

    :raises ValueError: when *data* is not an HTTP answer (or its head is too long)
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD_BYTES or (eof and data):
            raise ValueError("the relay's answer is not HTTP")
        if eof:
            raise ValueError("the relay closed the connection without an answer")
        return None
    if end > MAX_HEAD_BYTES:
        raise ValueError("the relay's answer head is too long")
    lines = data[:end].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError("the relay's answer is not HTTP")
    status = int(code)
    body = data[end + 4 :]
    if status == 101:
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        if headers.get("upgrade", "").lower() != "sfs-relay":
            raise ValueError("the relay switched to another protocol")
        return RelayAnswer(101, "", body)
    length = _content_length(lines[1:])
    wanted = min(length if length is not None else _BODY_BYTES, _BODY_BYTES)
    if len(body) < wanted and not eof:
        return None
    text = body[:wanted].decode("utf-8", "replace").strip().partition("\n")[0]
    return RelayAnswer(status, printable(text.strip(), MAX_REASON_CHARS))


def _content_length(headers: list[str]) -> int | None:
    for header in headers:
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


class _AnswerReader(asyncio.Protocol):
    """Reads the answer's head; afterwards the caller's protocol takes over."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.answer: asyncio.Future[RelayAnswer] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self._parse(eof=False)

    def eof_received(self) -> bool:
        self._parse(eof=True)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            why = connection_end(exc) if exc is not None else "it closed"
            self.answer.set_exception(ConnectionError(why))

    def _parse(self, *, eof: bool) -> None:
        if self.answer.done():
            return
        try:
            answer = parse_relay_answer(bytes(self.data), eof=eof)
        except ValueError as exc:
            self.answer.set_exception(exc)
            return
        if answer is not None:
            self.answer.set_result(answer)


def relay_url(server_url: str, advertised: str | None) -> str | None:
    """The relay a server named on registration (the ack's ``relay``), as a URL:
    ``""`` means its own (``/relay`` beside the signaling URL); None for none."""
    if advertised is None:
        return None
    return advertised or server_url.rstrip("/") + "/relay"


async def open_relay(
    url: str,
    token: bytes,
    protocol_factory: Callable[[], P],
    *,
    timeout: float,  # noqa: ASYNC109 (one bound for connect, TLS and the relay's wait)
    ca_file: str | None = None,
    proxy: Socks | None = None,
) -> tuple[asyncio.Transport, P]:
    """Connect to the relay at *url* with *token*; once paired, hand the connection
    to a new ``protocol_factory()`` (``connection_made``, then what already came).

    :param url: the relay, ``http(s)://host[:port]/path``
    :param timeout: for all of it: TCP, TLS, the request and the relay's answer (give
        the relay's wait and a margin)
    :param ca_file: certificates (PEM) to trust for ``https://`` instead of the system's
    :param proxy: connect through this SOCKS5 proxy (--proxy)
    :raises RelayRefusedError: the relay answered with a refusal (its reason, sanitised)
    :raises RelayUnreachableError: no answer: cannot connect, TLS failed, timed out,
        or what answered is not a relay
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a relay URL: {url!r}")
    tls = scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    host_header = parts.netloc.rpartition("@")[2]
    request = relay_request(host=host_header, path=parts.path or "/", token=token)
    where = printable(f"{host}:{port}", 100)
    context: ssl.SSLContext | None = None
    if tls:
        try:
            context = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise RelayUnreachableError(f"cannot use {ca_file!r} as CA bundle: {exc}") from None
    loop = asyncio.get_running_loop()
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(timeout):
            if proxy is None:
                transport, reader = await loop.create_connection(
                    _AnswerReader, host, port, ssl=context, server_hostname=host if tls else None
                )
            else:
                sock = await proxy.connect(host, port, timeout)
                transport, reader = await loop.create_connection(
                    _AnswerReader, sock=sock, ssl=context, server_hostname=host if tls else None
                )
            transport.write(request)
            answer = await reader.answer
    except asyncio.CancelledError:
        # The transfer went another way (a direct connection won): leave the relay.
        _close(transport)
        raise
    except TimeoutError:
        _close(transport)
        raise RelayUnreachableError(
            f"the relay at {where} did not answer within {timeout:g} s"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        _close(transport)
        message = exc.verify_message or exc.reason or "verification failed"
        raise RelayUnreachableError(
            f"the relay at {where} has a certificate this machine does not trust ({message})"
        ) from None
    except (OSError, ValueError) as exc:
        _close(transport)
        why = str(exc) if isinstance(exc, ValueError) else connection_end(exc)
        raise RelayUnreachableError(f"cannot use the relay at {where}: {why}") from None
    raw = transport
    if answer.status != 101:
        raw.close()
        raise RelayRefusedError(
            f"the relay at {where} refused the connection: {answer.reason or 'no reason given'}"
            f" (HTTP {answer.status})",
            status=answer.status,
        )
    protocol = protocol_factory()
    raw.set_protocol(protocol)
    protocol.connection_made(raw)
    if answer.rest:
        _feed(protocol, answer.rest)
    return raw, protocol


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Give *protocol* bytes that arrived with the answer, as its transport would."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    elif isinstance(protocol, asyncio.Protocol):
        protocol.data_received(data)


def _close(transport: asyncio.BaseTransport | None) -> None:
    if transport is not None:
        transport.close()
