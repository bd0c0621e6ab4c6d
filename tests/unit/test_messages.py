"""Signaling schema (sfs.signal.messages) and the server's PeerTable, without a network."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator

import pytest

from sfs.signal import messages as m
from sfs.signal.config import ServerConfig
from sfs.signal.memory_registry import PeerTable
from sfs.signal.registry import Delivery, Departure, Rejected, Standing

KEY = "q83vEjRWeJA="  # 8 bytes of base64
A, B, C = "AAA-001", "BBB-002", "CCC-003"

# --------------------------------------------------------------------------- peer IDs


def test_new_peer_id_matches_format() -> None:
    for _ in range(200):
        peer_id = m.new_peer_id()
        assert m.PEER_ID_RE.fullmatch(peer_id), peer_id
        assert m.is_peer_id(peer_id)


def test_new_peer_id_is_random() -> None:
    ids = {m.new_peer_id() for _ in range(200)}
    # 200 draws from 17.6 million: a handful of repeats would mean a broken RNG.
    assert len(ids) >= 195


@pytest.mark.parametrize("good", ["ABC-123", "ZZZ-000", "KQZ-042"])
def test_is_peer_id_accepts(good: str) -> None:
    assert m.is_peer_id(good)


@pytest.mark.parametrize(
    "bad",
    ["abc-123", "AB-123", "ABCD-123", "ABC-12", "ABC-1234", "ABC123", "ABC-123\n", " ABC-123",
     "ÄBC-123", "ABC-١٢٣", "", 123, None, b"ABC-123"],
)  # fmt: skip
def test_is_peer_id_rejects(bad: object) -> None:
    assert not m.is_peer_id(bad)


# --------------------------------------------------------------------------- base64


@pytest.mark.parametrize("good", ["AA==", "AAA=", "AAAA", "q83vEjRWeJA=", "+/+/"])
def test_is_base64_accepts(good: str) -> None:
    assert m.is_base64(good, max_chars=16)


@pytest.mark.parametrize(
    "bad", ["", "A", "AA", "AAA", "A===", "AA=A", "AA-_", "AAAA\n", "AA==AAAA", "AA AA=", 7, None]
)
def test_is_base64_rejects(bad: object) -> None:
    assert not m.is_base64(bad, max_chars=16)


def test_is_base64_size_limit() -> None:
    assert m.is_base64("A" * 16, max_chars=16)
    assert not m.is_base64("A" * 20, max_chars=16)


# --------------------------------------------------------------------------- ICE servers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stun:stun.example.org", m.IceServer(urls=("stun:stun.example.org",))),
        ("stun:stun.l.google.com:19302", m.IceServer(urls=("stun:stun.l.google.com:19302",))),
        ("STUNS:10.0.0.1:5349", m.IceServer(urls=("stuns:10.0.0.1:5349",))),
        (
            "turn:alice:s3cret@turn.example.org:3478?transport=tcp",
            m.IceServer(
                urls=("turn:turn.example.org:3478?transport=tcp",),
                username="alice",
                credential="s3cret",
            ),
        ),
        (
            "turn:u:p@turn.example.org",
            m.IceServer(urls=("turn:turn.example.org",), username="u", credential="p"),
        ),
        (
            "turn:u:p@turn.example.org?transport=udp",
            m.IceServer(
                urls=("turn:turn.example.org?transport=udp",), username="u", credential="p"
            ),
        ),
        (
            # A password may hold ":" and "@"; a username may hold a percent-encoded ":".
            "turns:1700000000%3Abob:pa:ss@word@turn.example.org:5349?transport=tcp",
            m.IceServer(
                urls=("turns:turn.example.org:5349?transport=tcp",),
                username="1700000000:bob",
                credential="pa:ss@word",
            ),
        ),
        ("  stun:example.org:3478  ", m.IceServer(urls=("stun:example.org:3478",))),
    ],
)
def test_parse_ice_server_accepts(text: str, expected: m.IceServer) -> None:
    assert m.parse_ice_server(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must start with"),
        ("example.org:3478", "must start with"),
        ("http://example.org", "must start with"),
        ("stun:", "host"),
        ("stun:-bad-.org", "host"),
        ("stun:[::1]:3478", "host"),
        ("stun:example.org:0", "port"),
        ("stun:example.org:65536", "port"),
        ("stun:example.org:http", "port"),
        ("stun:example.org:3478?transport=udp", "no ?transport"),
        ("stun:user:pw@example.org", "no username"),
        ("turn:example.org:3478", "username and password"),
        ("turn:alice@example.org", "USER:PASSWORD"),
        ("turn::pw@example.org", "USER:PASSWORD"),
        ("turn:alice:@example.org", "USER:PASSWORD"),
        ("turn:u:p@example.org?transport=sctp", "transport"),
        ("turn:u:p@example.org?foo=udp", "transport"),
        ("turns:u:p@example.org?transport=udp", "transport=tcp"),
        ("stun:" + "a" * 600, "512"),
    ],
)
def test_parse_ice_server_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        m.parse_ice_server(text)


def test_parse_ice_server_error_never_repeats_password() -> None:
    with pytest.raises(ValueError, match="needs a host name") as info:
        m.parse_ice_server("turn:alice:hunter2@bad host?transport=tcp")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "server",
    [
        m.IceServer(urls=("stun:a.example",)),
        m.IceServer(
            urls=("turn:t.example:3478?transport=udp", "turns:t.example:5349?transport=tcp"),
            username="u",
            credential="p",
        ),
    ],
)
def test_ice_server_dict_round_trip(server: m.IceServer) -> None:
    as_dict = server.to_dict()
    assert set(as_dict) == {"urls", "username", "credential"}
    assert isinstance(as_dict["urls"], list)
    assert m.IceServer.from_dict(as_dict) == server


def test_ice_server_from_dict_without_optional_fields() -> None:
    assert m.IceServer.from_dict({"urls": ["stun:a.example"]}) == m.IceServer(
        urls=("stun:a.example",)
    )


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (None, "must be an object"),
        (["stun:a.example"], "must be an object"),
        ({}, "needs urls"),
        ({"urls": "stun:a.example"}, "urls must be a non-empty list"),
        ({"urls": []}, "urls must be a non-empty list"),
        ({"urls": [7]}, "urls must be strings"),
        ({"urls": ["stun:a.example"] * 9}, "at most 8 urls"),
        ({"urls": ["stun:" + "a" * 510]}, "at most 512 characters"),
        ({"urls": ["http://a.example"]}, "must start with stun:"),
        ({"urls": ["stun:a.example"], "extra": 1}, "unexpected fields"),
        ({"urls": ["stun:a.example"], "username": 5}, "username must be a non-empty string"),
        ({"urls": ["stun:a.example"], "credential": ""}, "credential must be a non-empty string"),
        ({"urls": ["turn:t.example"]}, "a TURN server needs a username and password"),
        (
            {"urls": ["turn:t.example"], "username": "u"},
            "a TURN server needs a username and password",
        ),
        (
            {"urls": ["turn:u:p@t.example"], "username": "u", "credential": "p"},
            "must not contain credentials",
        ),
        (
            {"urls": ["turn:t.example"], "username": "u", "credential": "p" * 513},
            "credential may be at most 512 characters",
        ),
    ],
)
def test_ice_server_from_dict_rejects(bad: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        m.IceServer.from_dict(bad)


# --------------------------------------------------------------------------- payloads


R = "~" + "a2" * 13  # a rendezvous ID (issue 28)


def test_parse_register_peer() -> None:
    assert m.parse_register_peer({}) == m.RegisterPeer(version=1)
    assert m.parse_register_peer({"version": 1}) == m.RegisterPeer(version=1)
    assert m.parse_register_peer({"rendezvous": R}) == m.RegisterPeer(rendezvous=R)
    assert m.parse_peer_ref({"peer_id": R}) == m.PeerRef(R)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "x",
        {"version": 2},
        {"version": True},
        {"version": "1"},
        {"v": 1},
        {"rendezvous": "ABC-123"},  # a code's ID is the server's to give
        {"rendezvous": R + "a"},
        {"rendezvous": R.upper()},
        {"rendezvous": 5},
    ],
)
def test_parse_register_peer_rejects(bad: object) -> None:
    with pytest.raises(m.InvalidMessage) as info:
        m.parse_register_peer(bad)
    assert info.value.code == m.INVALID


def test_parse_peer_ref() -> None:
    assert m.parse_peer_ref({"peer_id": A}) == m.PeerRef(A)
    assert m.PeerRef(A).to_dict() == {"peer_id": A}


@pytest.mark.parametrize(
    "bad",
    [None, {}, {"peer_id": "abc-123"}, {"peer_id": 5}, {"peer_id": A, "x": 1}, {"id": A}, [A]],
)
def test_parse_peer_ref_rejects(bad: object) -> None:
    with pytest.raises(m.InvalidMessage):
        m.parse_peer_ref(bad)


def test_parse_public_key() -> None:
    msg = m.parse_public_key({"peer_id": A, "key": KEY})
    assert msg == m.PublicKey(peer_id=A, key=KEY)
    assert m.parse_public_key(msg.to_dict()) == msg
    long_key = "A" * m.MAX_KEY_CHARS
    assert m.parse_public_key({"peer_id": A, "key": long_key}).key == long_key


@pytest.mark.parametrize(
    "bad",
    [
        {"peer_id": A},
        {"key": KEY},
        {"peer_id": A, "key": KEY, "sealed": KEY},
        {"peer_id": A, "key": ""},
        {"peer_id": A, "key": "not base64!"},
        {"peer_id": A, "key": b"AAAA"},
        {"peer_id": A, "key": "A" * (m.MAX_KEY_CHARS + 4)},
        {"peer_id": "nope", "key": KEY},
    ],
)
def test_parse_public_key_rejects(bad: object) -> None:
    with pytest.raises(m.InvalidMessage):
        m.parse_public_key(bad)


@pytest.mark.parametrize(
    ("event", "limit"),
    [
        (m.OFFER, m.MAX_SEALED_SDP_CHARS),
        (m.ANSWER, m.MAX_SEALED_SDP_CHARS),
        (m.ICE_CANDIDATE, m.MAX_SEALED_CANDIDATE_CHARS),
    ],
)
def test_parse_sealed_limits(event: str, limit: int) -> None:
    assert m.SEALED_LIMITS[event] == limit
    at_limit = {"peer_id": A, "sealed": "A" * limit}
    assert m.parse_sealed(at_limit, max_chars=limit) == m.Sealed(A, "A" * limit)
    with pytest.raises(m.InvalidMessage, match=str(limit)):
        m.parse_sealed({"peer_id": A, "sealed": "A" * (limit + 4)}, max_chars=limit)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"peer_id": A},
        {"peer_id": A, "sealed": KEY, "key": KEY},
        {"peer_id": A, "sealed": 12},
        {"peer_id": A, "sealed": "AAA"},
        {"peer_id": 1, "sealed": KEY},
    ],
)
def test_parse_sealed_rejects(bad: object) -> None:
    with pytest.raises(m.InvalidMessage):
        m.parse_sealed(bad, max_chars=m.MAX_SEALED_SDP_CHARS)


def test_parse_abort() -> None:
    msg = m.parse_abort({"peer_id": A, "reason": "wrong_code"})
    assert msg == m.Abort(peer_id=A, reason="wrong_code")
    assert m.parse_abort(msg.to_dict()) == msg
    assert m.parse_abort({"peer_id": A, "reason": "x" * m.MAX_REASON_CHARS}).reason


@pytest.mark.parametrize(
    "bad",
    [
        {"peer_id": A},
        {"peer_id": A, "reason": ""},
        {"peer_id": A, "reason": "Wrong code"},
        {"peer_id": A, "reason": "wrong-code"},
        {"peer_id": A, "reason": "x" * (m.MAX_REASON_CHARS + 1)},
        {"peer_id": A, "reason": None},
        {"peer_id": A, "reason": "wrong_code", "extra": True},
    ],
)
def test_parse_abort_rejects(bad: object) -> None:
    with pytest.raises(m.InvalidMessage):
        m.parse_abort(bad)


def test_invalid_message_is_value_error() -> None:
    assert issubclass(m.InvalidMessage, ValueError)


def test_error_codes_are_distinct() -> None:
    codes = [
        m.INVALID, m.UNKNOWN_EVENT, m.NOT_REGISTERED, m.ALREADY_REGISTERED, m.UNKNOWN_PEER,
        m.BUSY, m.NOT_PAIRED, m.RATE_LIMITED, m.SERVER_FULL, m.USED_UP,
    ]  # fmt: skip
    assert len(set(codes)) == 10
    assert set(codes) == m.ERROR_CODES
    assert "peers_updated" not in m.CLIENT_EVENTS


# --------------------------------------------------------------------------- acks


def test_ack_builders_and_parser() -> None:
    assert m.ok_ack(peer_id=A) == {"ok": True, "peer_id": A}
    assert m.error_ack(m.BUSY, "busy") == {"ok": False, "error": "busy", "message": "busy"}
    assert m.error_event("find_peer", m.BUSY, "b") == {
        "event": "find_peer",
        "error": "busy",
        "message": "b",
    }
    assert m.parse_ack(m.ok_ack(peer_id=A)) == m.Ack(ok=True, data={"peer_id": A})
    assert m.parse_ack(m.error_ack(m.BUSY, "b")) == m.Ack(ok=False, error="busy", message="b")


@pytest.mark.parametrize("bad", [None, {}, {"ok": 1}, {"ok": False}, {"ok": False, "error": 3}])
def test_parse_ack_rejects(bad: object) -> None:
    with pytest.raises(m.InvalidMessage):
        m.parse_ack(bad)


def test_parse_register_reply() -> None:
    server = m.IceServer(urls=("turn:t.example",), username="u", credential="p")
    ack = m.parse_ack(m.ok_ack(peer_id=A, ice_servers=[server.to_dict()]))
    assert m.parse_register_reply(ack) == m.RegisterReply(peer_id=A, ice_servers=(server,))
    with pytest.raises(m.InvalidMessage):
        m.parse_register_reply(m.parse_ack(m.ok_ack(peer_id="x", ice_servers=[])))
    with pytest.raises(m.InvalidMessage):
        m.parse_register_reply(m.parse_ack(m.ok_ack(peer_id=A, ice_servers="stun:x")))
    with pytest.raises(m.InvalidMessage):
        m.parse_register_reply(m.parse_ack(m.error_ack(m.SERVER_FULL, "full")))


# --------------------------------------------------------------------------- ServerConfig


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"port": -1}, "port must be between 0 and 65535"),
        ({"port": 65536}, "port must be between 0 and 65535"),
        ({"max_connections": 0}, "max_connections must be at least 1"),
        ({"max_lookups_per_connection": 0}, "max_lookups_per_connection must be at least 1"),
        ({"max_lookups_per_address": 0}, "max_lookups_per_address must be at least 1"),
        ({"lookup_window_seconds": 0.0}, "lookup_window_seconds must be positive"),
        (
            {"ice_servers": (m.IceServer(urls=("stun:a.example",)),) * 9},
            "at most 8 ICE servers",
        ),
    ],
)
def test_server_config_rejects(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PeerTable


def _ids(*ids: str) -> Callable[[], str]:
    it: Iterator[str] = iter(ids)
    return lambda: next(it)


def _table(*ids: str, **limits: int | float) -> PeerTable:
    config = ServerConfig(**limits)  # type: ignore[arg-type]
    return PeerTable(config, new_id=_ids(*ids) if ids else m.new_peer_id)


def _paired() -> PeerTable:
    """sa (A) asked sb (B), which accepted; sc (C) is registered and free."""
    table = _table(A, B, C)
    for sid in ("sa", "sb", "sc"):
        assert table.connect(sid, "10.0.0.1", now=0.0)
        table.register(sid)
    table.request("sa", B, now=0.0)
    table.accept("sb", A)
    return table


def _code(call: Callable[[], object]) -> str:
    with pytest.raises(Rejected) as info:
        call()
    return info.value.code


def test_register_gives_unique_ids_and_skips_live_ones() -> None:
    table = _table(A, A, A, B)
    table.connect("s1", "x", now=0.0)
    table.connect("s2", "x", now=0.0)
    assert table.register("s1") == A
    assert table.register("s2") == B  # two draws of A were skipped
    assert table.sid_of(A) == "s1"
    assert table.peer_id_of("s2") == B


def test_register_reuses_an_id_once_its_peer_left() -> None:
    table = _table(A, A)
    table.connect("s1", "x", now=0.0)
    table.register("s1")
    table.disconnect("s1")
    table.connect("s2", "x", now=0.0)
    assert table.register("s2") == A


def test_register_at_a_rendezvous_takes_that_id_while_it_is_free() -> None:
    table = _table(A, B)
    for sid in ("s1", "s2", "s3"):
        table.connect(sid, "x", now=0.0)
    assert table.register("s1", R) == R
    assert table.sid_of(R) == "s1"
    assert _code(lambda: table.register("s2", R)) == m.BUSY
    table.disconnect("s1")
    assert table.register("s3", R) == R


def test_register_twice_is_rejected() -> None:
    table = _table(A, B)
    table.connect("s1", "x", now=0.0)
    table.register("s1")
    assert _code(lambda: table.register("s1")) == m.ALREADY_REGISTERED
    assert table.peer_id_of("s1") == A


def test_register_gives_up_when_no_id_is_free() -> None:
    table = PeerTable(ServerConfig(), new_id=lambda: A)
    table.connect("s1", "x", now=0.0)
    table.connect("s2", "x", now=0.0)
    table.register("s1")
    assert _code(lambda: table.register("s2")) == m.SERVER_FULL
    assert table.peer_id_of("s2") is None


def test_many_registrations_are_unique() -> None:
    table = _table()
    for i in range(2000):
        table.connect(f"s{i}", "x", now=0.0)
        table.register(f"s{i}")
    assert len({table.peer_id_of(f"s{i}") for i in range(2000)}) == 2000


def test_connect_refuses_over_max_connections() -> None:
    table = _table(max_connections=2)
    assert table.connect("s1", "x", now=0.0)
    assert table.connect("s2", "x", now=0.0)
    assert not table.connect("s3", "x", now=0.0)
    assert table.connection_count == 2
    table.disconnect("s1")
    assert table.connect("s3", "x", now=0.0)


def test_unregistered_peer_can_do_nothing() -> None:
    table = _table(A)
    table.connect("s1", "x", now=0.0)
    table.connect("s2", "x", now=0.0)
    table.register("s2")
    for call in (
        lambda: table.find("s1", A, now=0.0),
        lambda: table.request("s1", A, now=0.0),
        lambda: table.accept("s1", A),
        lambda: table.relay("s1", A),
        lambda: table.abort("s1", A),
    ):
        assert _code(call) == m.NOT_REGISTERED


def test_find() -> None:
    table = _table(A, B, C)
    for sid in ("sa", "sb", "sc"):
        table.connect(sid, "x", now=0.0)
        table.register(sid)
    table.find("sa", B, now=0.0)
    assert table.standing_of("sb") == (Standing.FREE, None)  # finding changes nothing
    assert _code(lambda: table.find("sa", "ZZZ-999", now=0.0)) == m.UNKNOWN_PEER
    assert _code(lambda: table.find("sa", A, now=0.0)) == m.INVALID
    table.request("sa", B, now=0.0)
    assert _code(lambda: table.find("sc", B, now=0.0)) == m.BUSY


def test_find_busy_when_target_pending_or_paired() -> None:
    table = _paired()
    assert _code(lambda: table.find("sc", A, now=0.0)) == m.BUSY
    assert _code(lambda: table.find("sc", B, now=0.0)) == m.BUSY


def test_request_and_accept_pair_both_ends() -> None:
    table = _table(A, B)
    for sid in ("sa", "sb"):
        table.connect(sid, "x", now=0.0)
        table.register(sid)
    assert table.request("sa", B, now=0.0) == Delivery(to_sid="sb", from_peer_id=A)
    assert table.standing_of("sa") == (Standing.REQUESTING, B)
    assert table.standing_of("sb") == (Standing.REQUESTED, A)
    assert table.accept("sb", A) == Delivery(to_sid="sa", from_peer_id=B)
    assert table.standing_of("sa") == (Standing.PAIRED, B)
    assert table.standing_of("sb") == (Standing.PAIRED, A)


def test_request_rejections() -> None:
    table = _paired()
    assert _code(lambda: table.request("sc", "ZZZ-999", now=0.0)) == m.UNKNOWN_PEER
    assert _code(lambda: table.request("sc", C, now=0.0)) == m.INVALID
    assert _code(lambda: table.request("sc", A, now=0.0)) == m.BUSY
    assert _code(lambda: table.request("sa", C, now=0.0)) == m.BUSY  # caller is paired
    assert table.standing_of("sc") == (Standing.FREE, None)


def test_request_to_a_peer_with_a_pending_request_is_busy() -> None:
    table = _table(A, B, C)
    for sid in ("sa", "sb", "sc"):
        table.connect(sid, "x", now=0.0)
        table.register(sid)
    table.request("sa", B, now=0.0)
    assert _code(lambda: table.request("sc", B, now=0.0)) == m.BUSY  # B was asked
    assert _code(lambda: table.request("sc", A, now=0.0)) == m.BUSY  # A is asking
    assert _code(lambda: table.request("sa", C, now=0.0)) == m.BUSY  # one request at a time


def test_accept_needs_a_pending_request_from_that_peer() -> None:
    table = _table(A, B, C)
    for sid in ("sa", "sb", "sc"):
        table.connect(sid, "x", now=0.0)
        table.register(sid)
    assert _code(lambda: table.accept("sb", A)) == m.UNKNOWN_PEER  # nothing pending
    table.request("sa", B, now=0.0)
    assert _code(lambda: table.accept("sb", C)) == m.UNKNOWN_PEER  # wrong requester
    assert _code(lambda: table.accept("sa", B)) == m.UNKNOWN_PEER  # requester can't accept
    assert _code(lambda: table.accept("sc", A)) == m.UNKNOWN_PEER  # not the target
    assert _code(lambda: table.accept("sb", "ZZZ-999")) == m.UNKNOWN_PEER
    table.accept("sb", A)
    assert _code(lambda: table.accept("sb", A)) == m.UNKNOWN_PEER  # already paired


def test_relay_only_between_partners() -> None:
    table = _paired()
    assert table.relay("sa", B) == Delivery(to_sid="sb", from_peer_id=A)
    assert table.relay("sb", A) == Delivery(to_sid="sa", from_peer_id=B)
    assert _code(lambda: table.relay("sc", A)) == m.NOT_PAIRED  # a third peer
    assert _code(lambda: table.relay("sa", C)) == m.NOT_PAIRED  # not its partner
    assert _code(lambda: table.relay("sa", A)) == m.NOT_PAIRED  # itself
    assert _code(lambda: table.relay("sa", "ZZZ-999")) == m.NOT_PAIRED


def test_relay_refused_while_only_pending() -> None:
    table = _table(A, B)
    for sid in ("sa", "sb"):
        table.connect(sid, "x", now=0.0)
        table.register(sid)
    table.request("sa", B, now=0.0)
    assert _code(lambda: table.relay("sa", B)) == m.NOT_PAIRED
    assert _code(lambda: table.relay("sb", A)) == m.NOT_PAIRED


def test_abort_relays_then_dissolves_the_pairing() -> None:
    table = _paired()
    assert table.abort("sb", A) == Delivery(to_sid="sa", from_peer_id=B)
    assert table.standing_of("sa") == (Standing.FREE, None)
    assert table.standing_of("sb") == (Standing.FREE, None)
    assert _code(lambda: table.relay("sa", B)) == m.NOT_PAIRED
    assert _code(lambda: table.abort("sc", A)) == m.NOT_PAIRED


def test_disconnect_of_a_partner() -> None:
    table = _paired()
    assert table.disconnect("sa") == Departure(peer_id=A, notify_sid="sb")
    assert table.sid_of(A) is None
    assert not table.is_connected("sa")
    assert table.standing_of("sb") == (Standing.FREE, None)
    assert table.disconnect("sa") is None  # idempotent
    table.find("sc", B, now=0.0)  # B is free again


@pytest.mark.parametrize(("leaving", "staying"), [("sa", "sb"), ("sb", "sa")])
def test_disconnect_during_a_pending_request(leaving: str, staying: str) -> None:
    table = _table(A, B)
    for sid in ("sa", "sb"):
        table.connect(sid, "x", now=0.0)
        table.register(sid)
    table.request("sa", B, now=0.0)
    departure = table.disconnect(leaving)
    assert departure is not None
    assert departure.notify_sid == staying
    assert table.standing_of(staying) == (Standing.FREE, None)


def test_disconnect_of_unregistered_or_free_peer() -> None:
    table = _table(A)
    table.connect("s1", "x", now=0.0)
    assert table.disconnect("s1") == Departure(peer_id=None, notify_sid=None)
    table.connect("s2", "x", now=0.0)
    table.register("s2")
    assert table.disconnect("s2") == Departure(peer_id=A, notify_sid=None)
    assert table.connection_count == 0


def test_lookups_limited_per_connection() -> None:
    table = _table(A, B, max_lookups_per_connection=3)
    for sid in ("sa", "sb"):
        table.connect(sid, "x", now=0.0)
        table.register(sid)
    table.find("sa", B, now=0.0)
    assert _code(lambda: table.find("sa", "ZZZ-999", now=1.0)) == m.UNKNOWN_PEER  # misses count
    table.find("sa", B, now=2.0)
    assert _code(lambda: table.find("sa", B, now=3.0)) == m.RATE_LIMITED
    assert _code(lambda: table.request("sa", B, now=1e6)) == m.RATE_LIMITED  # for good
    table.find("sb", A, now=3.0)  # another connection has its own budget


def test_lookups_limited_per_address_in_a_sliding_window() -> None:
    table = _table(A, B, C, max_lookups_per_address=3, lookup_window_seconds=10.0)
    table.connect("sa", "10.0.0.1", now=0.0)
    table.connect("sb", "10.0.0.1", now=0.0)
    table.connect("sc", "10.0.0.2", now=0.0)
    for sid in ("sa", "sb", "sc"):
        table.register(sid)
    table.find("sa", C, now=0.0)
    table.find("sa", C, now=4.0)
    table.find("sb", C, now=5.0)
    assert _code(lambda: table.find("sb", C, now=9.0)) == m.RATE_LIMITED
    table.find("sc", A, now=9.0)  # another address is unaffected
    table.find("sb", C, now=10.0)  # the lookup at 0.0 has left the window
    assert _code(lambda: table.find("sb", C, now=13.9)) == m.RATE_LIMITED
    table.find("sb", C, now=14.0)


def test_rejected_lookups_do_not_use_up_the_window() -> None:
    table = _table(A, B, max_lookups_per_address=1, lookup_window_seconds=10.0)
    for sid in ("sa", "sb"):
        table.connect(sid, "x", now=0.0)
        table.register(sid)
    table.find("sa", B, now=0.0)
    for t in range(1, 10):
        assert _code(functools.partial(table.find, "sa", B, now=float(t))) == m.RATE_LIMITED
    table.find("sa", B, now=10.0)


def test_idle_addresses_are_forgotten() -> None:
    table = _table(*(f"AAA-{i:03d}" for i in range(101)), lookup_window_seconds=10.0)
    table.connect("target", "t", now=0.0)
    table.register("target")
    for i in range(100):
        table.connect(f"s{i}", f"10.0.{i}.1", now=0.0)
        table.register(f"s{i}")
        table.find(f"s{i}", "AAA-000", now=float(i) / 100)
    assert table.tracked_addresses == 100
    table.find("s0", "AAA-000", now=20.0)
    assert table.tracked_addresses == 1
