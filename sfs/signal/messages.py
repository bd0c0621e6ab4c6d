"""Signaling schema shared by the server and the client (pure: no I/O).

The signaling server only introduces peers and relays their messages.  Every key
and SDP it relays is an opaque base64 string that the peers sealed themselves, so
all this module checks is *shape*: the right keys, the right types, a sane size.
The server runs every incoming payload through one of the ``parse_*`` functions
before it touches its state; anything else is rejected with :class:`InvalidMessage`.

The wire format is described in docs/PROTOCOL.md, section "Signaling".
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from sfs.defaults import MAX_MANY as MAX_MANY
from sfs.defaults import SIGNALING_PROTOCOL_VERSION

# Client -> server events (each sent with an ack).
REGISTER_PEER = "register_peer"
FIND_PEER = "find_peer"
SEND_CONNECTION_REQUEST = "send_connection_request"
ACCEPT_CONNECTION = "accept_connection"
SEND_PUBLIC_KEY = "send_public_key"
OFFER = "offer"
ANSWER = "answer"
ICE_CANDIDATE = "ice_candidate"
ABORT = "abort"

CLIENT_EVENTS = frozenset(
    {
        REGISTER_PEER,
        FIND_PEER,
        SEND_CONNECTION_REQUEST,
        ACCEPT_CONNECTION,
        SEND_PUBLIC_KEY,
        OFFER,
        ANSWER,
        ICE_CANDIDATE,
        ABORT,
    }
)

# Server -> client events.  `offer`, `answer` and `ice_candidate` are relayed under
# their own names.  There is deliberately no `peers_updated`: the server never
# tells anyone which peer IDs exist.
PEER_FOUND = "peer_found"
CONNECTION_REQUEST = "connection_request"
CONNECTION_ACCEPTED = "connection_accepted"
RECEIVE_PUBLIC_KEY = "receive_public_key"
PEER_ABORTED = "peer_aborted"
PEER_DISCONNECTED = "peer_disconnected"
ERROR = "error"

# Error codes carried in failed acks and `error` events.
INVALID = "invalid"
UNKNOWN_EVENT = "unknown_event"
NOT_REGISTERED = "not_registered"
ALREADY_REGISTERED = "already_registered"
UNKNOWN_PEER = "unknown_peer"
BUSY = "busy"
NOT_PAIRED = "not_paired"
RATE_LIMITED = "rate_limited"
SERVER_FULL = "server_full"
USED_UP = "used_up"

ERROR_CODES = frozenset(
    {
        INVALID,
        UNKNOWN_EVENT,
        NOT_REGISTERED,
        ALREADY_REGISTERED,
        UNKNOWN_PEER,
        BUSY,
        NOT_PAIRED,
        RATE_LIMITED,
        SERVER_FULL,
        USED_UP,
    }
)

# Size limits, in characters of the (ASCII) base64 text.  A SPAKE2 message is
# 44 characters and a sealed SDP a few kilobytes; the headroom is for larger
# key-exchange messages and long candidate lists, not for arbitrary data.
MAX_KEY_CHARS = 1024
MAX_SEALED_SDP_CHARS = 65536
MAX_SEALED_CANDIDATE_CHARS = 4096
MAX_REASON_CHARS = 64

MAX_ICE_SERVERS = 8
MAX_ICE_URLS = 8
MAX_ICE_URL_CHARS = 512
MAX_ICE_CREDENTIAL_CHARS = 512
MAX_ERROR_MESSAGE_CHARS = 256

PEER_ID_RE = re.compile(r"^[A-Z]{3}-[0-9]{3}$")
#: A rendezvous ID (sfs.peer.proto.crypto.reconnect_code): the peer ID a session that
#: lost its connection registers under to meet again.  The server never makes one.
RENDEZVOUS_RE = re.compile(r"^~[a-z2-7]{26}$")
# Standard alphabet with padding; fullmatch() so a trailing newline is rejected.
BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
REASON_RE = re.compile(r"^[a-z_]{1,64}$")

ICE_SCHEMES = ("stun", "stuns", "turn", "turns")
# aiortc's URI parser knows no bracketed IPv6 literals, so neither do we.
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")


class InvalidMessage(ValueError):
    """A signaling payload or ICE server description is malformed."""

    code = INVALID


# --------------------------------------------------------------------------- peer IDs


def new_peer_id() -> str:
    """Return a fresh random peer ID such as ``"KQZ-042"``.

    The server still has to check it against the live peers: there are only
    26**3 * 1000 (about 17.6 million) of them.
    """
    letters = "".join(secrets.choice(string.ascii_uppercase) for _ in range(3))
    return f"{letters}-{secrets.randbelow(1000):03d}"


def is_peer_id(s: object) -> bool:
    """Tell whether *s* is a well-formed peer ID (``ABC-123``, or a rendezvous ID)."""
    return isinstance(s, str) and (
        PEER_ID_RE.fullmatch(s) is not None or RENDEZVOUS_RE.fullmatch(s) is not None
    )


def is_base64(s: object, *, max_chars: int) -> bool:
    """Tell whether *s* is non-empty padded standard base64 of at most *max_chars*."""
    return (
        isinstance(s, str)
        and 0 < len(s) <= max_chars
        and len(s) % 4 == 0
        and BASE64_RE.fullmatch(s) is not None
    )


# --------------------------------------------------------------------------- ICE servers


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as handed to ``RTCIceServer``.

    :param urls: one or more ``stun:``/``stuns:``/``turn:``/``turns:`` URLs
    :param username: TURN username
    :param credential: TURN password
    """

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_dict(self) -> dict[str, object]:
        """Return the JSON form sent in the ``register_peer`` ack."""
        return {"urls": list(self.urls), "username": self.username, "credential": self.credential}

    @classmethod
    def from_dict(cls, obj: object) -> IceServer:
        """Validate and convert the JSON form.

        :raises InvalidMessage: (a ``ValueError``) on anything malformed
        """
        if not isinstance(obj, dict):
            raise InvalidMessage("an ICE server must be an object")
        extra = set(obj) - {"urls", "username", "credential"}
        if extra:
            raise InvalidMessage("an ICE server has unexpected fields")
        if "urls" not in obj:
            raise InvalidMessage("an ICE server needs urls")
        urls = obj["urls"]
        if not isinstance(urls, list | tuple) or not urls:
            raise InvalidMessage("ICE server urls must be a non-empty list")
        if len(urls) > MAX_ICE_URLS:
            raise InvalidMessage(f"an ICE server may have at most {MAX_ICE_URLS} urls")
        checked: list[str] = []
        for url in urls:
            if not isinstance(url, str):
                raise InvalidMessage("ICE server urls must be strings")
            checked.append(_canonical_url(url))
        username = _optional_credential(obj.get("username"), "username")
        credential = _optional_credential(obj.get("credential"), "credential")
        server = cls(urls=tuple(checked), username=username, credential=credential)
        _require_turn_credentials(server)
        return server


def parse_ice_server(text: str) -> IceServer:
    """Parse the value of the ``--ice-server`` option.

    Accepts ``stun:host[:port]``, ``stuns:host[:port]``,
    ``turn:[USER:PASSWORD@]host[:port][?transport=udp|tcp]`` and the same for
    ``turns:`` (which aiortc only speaks over TCP).  USER and PASSWORD may be
    percent-encoded, e.g. ``%3A`` for a colon inside a username.

    :raises ValueError: with a message fit for the user; it never repeats the password
    """
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in ICE_SCHEMES:
        raise InvalidMessage(
            "an ICE server must start with stun:, stuns:, turn: or turns: "
            "(e.g. stun:stun.example.org:3478)"
        )
    scheme = scheme.lower()
    username: str | None = None
    credential: str | None = None
    if "@" in rest:
        if scheme in ("stun", "stuns"):
            raise InvalidMessage("a STUN server takes no username or password")
        # The host cannot contain "@", so the last one ends the credentials.
        userinfo, _, rest = rest.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if not colon or not user or not password:
            raise InvalidMessage("TURN credentials must be written turn:USER:PASSWORD@host:port")
        username, credential = unquote(user), unquote(password)
        _optional_credential(username, "username")
        _optional_credential(credential, "credential")
    server = IceServer(
        urls=(_canonical_url(f"{scheme}:{rest}"),), username=username, credential=credential
    )
    _require_turn_credentials(server)
    return server


def canonical_ice_url(url: str) -> str:
    """Check a credential-free STUN/TURN URL (RFC 7064/7065) and return it normalised.

    :raises InvalidMessage: (a ``ValueError``) with a message for the user
    """
    return _canonical_url(url.strip())


def _canonical_url(url: str) -> str:
    """Check a credential-free STUN/TURN URL (RFC 7064/7065) and return it normalised."""
    if len(url) > MAX_ICE_URL_CHARS:
        raise InvalidMessage(f"an ICE server URL may be at most {MAX_ICE_URL_CHARS} characters")
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ICE_SCHEMES:
        raise InvalidMessage("an ICE server URL must start with stun:, stuns:, turn: or turns:")
    if "@" in rest:
        raise InvalidMessage("an ICE server URL must not contain credentials")
    host_port, question, query = rest.partition("?")
    host, colon, port = host_port.partition(":")
    if _HOST_RE.fullmatch(host) is None:
        raise InvalidMessage("an ICE server URL needs a host name or IPv4 address")
    if colon:
        if _PORT_RE.fullmatch(port) is None or not 1 <= int(port) <= 65535:
            raise InvalidMessage("an ICE server port must be a number from 1 to 65535")
        port = str(int(port))
    canonical = f"{scheme}:{host}" + (f":{port}" if colon else "")
    if not question:
        return canonical
    if scheme in ("stun", "stuns"):
        raise InvalidMessage("a STUN server URL takes no ?transport=")
    allowed = ("tcp",) if scheme == "turns" else ("udp", "tcp")
    name, _, value = query.partition("=")
    if name != "transport" or value not in allowed:
        raise InvalidMessage(
            f"{scheme}: supports only ?transport=" + " or ?transport=".join(allowed)
        )
    return f"{canonical}?transport={value}"


def _optional_credential(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidMessage(f"an ICE server {what} must be a non-empty string")
    if len(value) > MAX_ICE_CREDENTIAL_CHARS:
        raise InvalidMessage(
            f"an ICE server {what} may be at most {MAX_ICE_CREDENTIAL_CHARS} characters"
        )
    return value


def _require_turn_credentials(server: IceServer) -> None:
    # WebRTC refuses a TURN URL without both; fail here, where the user can fix it.
    is_turn = any(url.startswith("turn") for url in server.urls)
    if is_turn and (server.username is None or server.credential is None):
        raise InvalidMessage(
            "a TURN server needs a username and password: turn:USER:PASSWORD@host:port"
        )


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class RegisterPeer:
    """``register_peer``: ``{}`` or ``{"version": 1}``; ``"rendezvous": "~…"`` asks
    for that peer ID (a session meeting again) instead of a new one; ``"many": N``
    (1 to MAX_MANY) lets up to N peers ask for a connection, each its own pairing
    (``sfs send --many``)."""

    version: int = SIGNALING_PROTOCOL_VERSION
    rendezvous: str | None = None
    many: int = 0


@dataclass(frozen=True)
class PeerRef:
    """``{"peer_id": ...}``: find_peer, send_connection_request, accept_connection,
    and the server's peer_found, connection_request, connection_accepted,
    peer_disconnected."""

    peer_id: str

    def to_dict(self) -> dict[str, object]:
        return {"peer_id": self.peer_id}


@dataclass(frozen=True)
class PublicKey:
    """``send_public_key`` and ``receive_public_key``: ``{"peer_id", "key"}``."""

    peer_id: str
    key: str

    def to_dict(self) -> dict[str, object]:
        return {"peer_id": self.peer_id, "key": self.key}


@dataclass(frozen=True)
class Sealed:
    """``offer``, ``answer`` and ``ice_candidate``: ``{"peer_id", "sealed"}``."""

    peer_id: str
    sealed: str

    def to_dict(self) -> dict[str, object]:
        return {"peer_id": self.peer_id, "sealed": self.sealed}


@dataclass(frozen=True)
class Abort:
    """``abort`` and ``peer_aborted``: ``{"peer_id", "reason"}``."""

    peer_id: str
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"peer_id": self.peer_id, "reason": self.reason}


def _fields(
    obj: object, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> dict[str, object]:
    if not isinstance(obj, dict):
        raise InvalidMessage("payload must be an object")
    keys = set(obj)
    if not keys <= required | optional:
        # Don't echo the client's keys: they are its data, and may be long.
        raise InvalidMessage("payload has unexpected fields")
    missing = required - keys
    if missing:
        raise InvalidMessage(f"payload is missing {', '.join(sorted(missing))}")
    return obj


def _peer_id_field(fields: Mapping[str, object]) -> str:
    value = fields["peer_id"]
    if not isinstance(value, str) or not is_peer_id(value):
        raise InvalidMessage("peer_id must look like ABC-123 (or be a rendezvous ID)")
    return value


def _base64_field(fields: Mapping[str, object], name: str, *, max_chars: int) -> str:
    value = fields[name]
    if not isinstance(value, str) or not is_base64(value, max_chars=max_chars):
        raise InvalidMessage(f"{name} must be padded base64 of at most {max_chars} characters")
    return value


_PEER_ID = frozenset({"peer_id"})


def parse_register_peer(obj: object) -> RegisterPeer:
    """Validate a ``register_peer`` payload."""
    fields = _fields(obj, frozenset(), frozenset({"version", "rendezvous", "many"}))
    rendezvous = fields.get("rendezvous")
    if rendezvous is not None and (
        not isinstance(rendezvous, str) or RENDEZVOUS_RE.fullmatch(rendezvous) is None
    ):
        raise InvalidMessage("rendezvous must be ~ and 26 base32 letters")
    many = fields.get("many", 0)
    if type(many) is not int or not 0 <= many <= MAX_MANY:
        raise InvalidMessage(f"many must be a whole number from 0 to {MAX_MANY}")
    if many and rendezvous is not None:
        raise InvalidMessage("a rendezvous is met by one peer: not with many")
    version = fields.get("version", SIGNALING_PROTOCOL_VERSION)
    if type(version) is not int:  # bool is an int subclass; reject it
        raise InvalidMessage("version must be an integer")
    if version != SIGNALING_PROTOCOL_VERSION:
        raise InvalidMessage(
            f"unsupported protocol version (this server speaks {SIGNALING_PROTOCOL_VERSION})"
        )
    return RegisterPeer(version=version, rendezvous=rendezvous, many=many)


def parse_peer_ref(obj: object) -> PeerRef:
    """Validate a ``{"peer_id": ...}`` payload."""
    return PeerRef(peer_id=_peer_id_field(_fields(obj, _PEER_ID)))


def parse_public_key(obj: object) -> PublicKey:
    """Validate a ``send_public_key`` / ``receive_public_key`` payload."""
    fields = _fields(obj, _PEER_ID | {"key"})
    return PublicKey(
        peer_id=_peer_id_field(fields), key=_base64_field(fields, "key", max_chars=MAX_KEY_CHARS)
    )


def parse_sealed(obj: object, *, max_chars: int) -> Sealed:
    """Validate an ``offer``/``answer``/``ice_candidate`` payload.

    :param max_chars: ``MAX_SEALED_SDP_CHARS`` or ``MAX_SEALED_CANDIDATE_CHARS``
    """
    fields = _fields(obj, _PEER_ID | {"sealed"})
    return Sealed(
        peer_id=_peer_id_field(fields), sealed=_base64_field(fields, "sealed", max_chars=max_chars)
    )


def parse_abort(obj: object) -> Abort:
    """Validate an ``abort`` / ``peer_aborted`` payload."""
    fields = _fields(obj, _PEER_ID | {"reason"})
    reason = fields["reason"]
    if not isinstance(reason, str) or REASON_RE.fullmatch(reason) is None:
        raise InvalidMessage(f"reason must be 1 to {MAX_REASON_CHARS} of a-z and _")
    return Abort(peer_id=_peer_id_field(fields), reason=reason)


# Limit per relayed event, so server and client agree on them.
SEALED_LIMITS: Mapping[str, int] = {
    OFFER: MAX_SEALED_SDP_CHARS,
    ANSWER: MAX_SEALED_SDP_CHARS,
    ICE_CANDIDATE: MAX_SEALED_CANDIDATE_CHARS,
}


# --------------------------------------------------------------------------- acks


def ok_ack(**fields: object) -> dict[str, object]:
    """Build a successful ack: ``{"ok": True, **fields}``."""
    return {"ok": True, **fields}


def error_ack(code: str, message: str) -> dict[str, object]:
    """Build a failed ack: ``{"ok": False, "error": code, "message": message}``."""
    return {"ok": False, "error": code, "message": message}


def error_event(event: str, code: str, message: str) -> dict[str, object]:
    """Build the payload of the ``error`` event sent alongside a failed ack."""
    return {"event": event, "error": code, "message": message}


@dataclass(frozen=True)
class Ack:
    """A server's reply to one client event.

    :param ok: whether the server did what was asked
    :param error: one of the error codes when not ok (a newer server may send others)
    :param message: human-readable explanation when not ok
    :param data: the remaining fields of a successful ack
    """

    ok: bool
    error: str | None = None
    message: str | None = None
    data: Mapping[str, object] | None = None


def parse_ack(obj: object) -> Ack:
    """Validate an ack received by a client.

    Unknown fields are ignored so that a newer server can add some.
    """
    if not isinstance(obj, dict) or type(obj.get("ok")) is not bool:
        raise InvalidMessage("the server sent a malformed reply")
    if obj["ok"]:
        return Ack(ok=True, data={k: v for k, v in obj.items() if k != "ok"})
    error, message = obj.get("error"), obj.get("message", "")
    if not isinstance(error, str) or not isinstance(message, str):
        raise InvalidMessage("the server sent a malformed error reply")
    return Ack(ok=False, error=error, message=message[:MAX_ERROR_MESSAGE_CHARS])


@dataclass(frozen=True)
class RegisterReply:
    """The data of a successful ``register_peer`` ack."""

    peer_id: str
    ice_servers: tuple[IceServer, ...]


def parse_register_reply(ack: Ack) -> RegisterReply:
    """Extract the peer ID and ICE servers from a successful ``register_peer`` ack."""
    data = ack.data or {}
    peer_id = data.get("peer_id")
    if not ack.ok or not isinstance(peer_id, str) or not is_peer_id(peer_id):
        raise InvalidMessage("the server sent a malformed registration reply")
    servers = data.get("ice_servers", [])
    if not isinstance(servers, list) or len(servers) > MAX_ICE_SERVERS:
        raise InvalidMessage("the server sent a malformed list of ICE servers")
    return RegisterReply(
        peer_id=peer_id, ice_servers=tuple(IceServer.from_dict(s) for s in servers)
    )
