"""Trusted devices (issue 29), the pure and local parts: what a pair's secret derives
(known answers, and the construction docs/PROTOCOL.md gives), the LAN pair probe, the
sealed ``pair`` name, and the pairs file."""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from sfs.commands.listing import from_whom
from sfs.errors import SignalingError
from sfs.pairs import NAME_RE, Pair, PairsFileError, PairStore, device_name
from sfs.peer.proto.crypto import (
    PAIR_PERIOD_SECONDS,
    PAIR_PROBE_SLOTS,
    answer_pair_probe,
    pair_code,
    pair_fingerprint,
    pair_period,
    pair_probe_period,
    pair_probe_tag,
    reconnect_code,
)
from sfs.peer.proto.description import Description, decode_description, encode_description
from sfs.peer.proto.wire import FileInfo, Offer
from sfs.signal.messages import is_peer_id

SECRET = bytes(range(32))
PERIOD = 2994357  # 2026-12-07 03:30 UTC
NONCES = st.binary(min_size=16, max_size=16)


def hkdf(secret: bytes, period: int, info: bytes) -> bytes:
    """The construction as docs/PROTOCOL.md gives it, written out again."""
    return HKDF(hashes.SHA256(), 32, struct.pack(">Q", period), info).derive(secret)


def test_known_answers() -> None:
    rendezvous, password = pair_code(SECRET, PERIOD)
    assert rendezvous == "~coc775uutzh4tnhxombv7civv4"
    assert password == b"c57bc1259d74082945b438710842784c8a3606603033f5d45f627752eeaa61bd"
    assert pair_fingerprint(SECRET) == "2002-b38c-7552-a6be"
    tag = pair_probe_tag(SECRET, PERIOD, asked=bytes(16), answered=b"\1" * 16)
    assert tag.hex() == "a4ff6ab228a702b821f30f00fe78d20b"
    assert pair_period(1796614444.0) == PERIOD


def test_the_derivations_are_the_documented_construction() -> None:
    where = hkdf(SECRET, PERIOD, b"sfs/1 pair rendezvous")
    rendezvous, password = pair_code(SECRET, PERIOD)
    assert rendezvous == "~" + base64.b32encode(where).decode().lower()[:26]
    assert password == hkdf(SECRET, PERIOD, b"sfs/1 pair password").hex().encode()
    assert (
        pair_fingerprint(SECRET).replace("-", "")
        == hkdf(SECRET, 0, b"sfs/1 pair fingerprint")[:8].hex()
    )


@given(st.binary(min_size=32, max_size=32), st.integers(1, 2**40))
def test_a_rendezvous_is_a_peer_id_and_changes_every_period(secret: bytes, period: int) -> None:
    here, password = pair_code(secret, period)
    following, other_password = pair_code(secret, period + 1)
    assert is_peer_id(here)
    assert here != following
    assert password != other_password
    assert here != reconnect_code(secret)[0]  # the reconnect rendezvous is another one


def test_periods() -> None:
    start = PERIOD * PAIR_PERIOD_SECONDS
    assert pair_period(start) == pair_period(start + PAIR_PERIOD_SECONDS - 0.001) == PERIOD
    assert pair_period(start + PAIR_PERIOD_SECONDS) == PERIOD + 1


@given(
    st.lists(st.binary(min_size=32, max_size=32), min_size=0, max_size=PAIR_PROBE_SLOTS),
    NONCES,
)
def test_a_pair_probe_answer_looks_the_same_whatever_the_pairs(
    held: list[bytes], asked: bytes
) -> None:
    """Always PAIR_PROBE_SLOTS tags in sorted order (no slot is the first pair's), 16
    bytes each: how many pairs there are, and which, is not in the shape."""
    answered, tags = answer_pair_probe(held, PERIOD, asked)
    assert len(answered) == 16
    assert len(tags) == PAIR_PROBE_SLOTS
    assert tags == sorted(tags)
    assert all(len(t) == 16 for t in tags)
    for secret in held:
        assert pair_probe_period(secret, asked, answered, tags, around=PERIOD) == PERIOD


@given(NONCES, st.sampled_from([-1, 0, 1]))
def test_a_paired_device_recognises_its_pair_in_this_period_or_the_next_to_it(
    asked: bytes, skew: int
) -> None:
    answered, tags = answer_pair_probe([SECRET], PERIOD + skew, asked)
    assert pair_probe_period(SECRET, asked, answered, tags, around=PERIOD) == PERIOD + skew
    # Two periods off: too far (the clocks differ by more than a period).
    answered, tags = answer_pair_probe([SECRET], PERIOD + 2, asked)
    assert pair_probe_period(SECRET, asked, answered, tags, around=PERIOD) is None


@given(NONCES, NONCES)
def test_another_secret_or_another_nonce_recognises_nothing(asked: bytes, other: bytes) -> None:
    answered, tags = answer_pair_probe([SECRET], PERIOD, asked)
    stranger = bytes(reversed(SECRET))
    assert pair_probe_period(stranger, asked, answered, tags, around=PERIOD) is None
    if other != asked:  # a recorded answer is worth nothing to the next question
        assert pair_probe_period(SECRET, other, answered, tags, around=PERIOD) is None


def test_a_probe_with_a_bad_nonce_is_refused() -> None:
    with pytest.raises(Exception, match="16 bytes"):
        answer_pair_probe([SECRET], PERIOD, b"short")


# -- the sealed name ----------------------------------------------------------------------


def test_the_pairing_name_travels_in_the_sealed_description() -> None:
    sealed = encode_description("offer", Description(("v=0",), pair="laptop"))
    assert json.loads(sealed)["pair"] == "laptop"
    assert decode_description("offer", sealed).pair == "laptop"
    plain = encode_description("offer", Description(("v=0",)))
    assert "pair" not in json.loads(plain)
    assert decode_description("offer", plain).pair is None


@pytest.mark.parametrize("name", [1, "x" * 65, ["x"], {"a": 1}, True])
def test_a_pairing_name_that_is_not_a_short_string_is_malformed(name: object) -> None:
    message = json.dumps({"type": "offer", "sdp": "v=0", "pair": name}).encode()
    with pytest.raises(SignalingError, match="malformed"):
        decode_description("offer", message)


# -- names ---------------------------------------------------------------------------------


@given(st.text(max_size=200))
def test_any_name_a_peer_gives_becomes_one_send_at_takes(raw: str) -> None:
    assert NAME_RE.fullmatch(device_name(raw))


def test_names() -> None:
    assert device_name("laptop") == "laptop"
    assert device_name("Alice's phone") == "Alice-s-phone"
    assert device_name("../../etc") == "etc"
    assert device_name("\x1b[31m") == "31m"
    assert device_name("") == device_name("---") == "device"


def test_only_a_paired_device_is_marked_paired_in_the_prompt() -> None:
    offer = Offer(files=(FileInfo("a", 1),), sender="phone (paired)")
    assert from_whom(offer, None) == "phone (unpaired)"
    assert from_whom(offer, "phone") == "phone (paired)"


# -- the pairs file ------------------------------------------------------------------------


def a_pair(name: str = "phone") -> Pair:
    return Pair(name, os.urandom(32), time.time())


def test_the_file_is_the_users_alone(tmp_path: Path) -> None:
    store = PairStore(tmp_path / "data" / "sfs" / "pairs.json")
    assert store.load() == []
    kept = a_pair()
    assert store.add(kept) is False
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert store.load() == [kept]
    assert store.find("phone") == kept
    assert kept.secret.hex() not in repr(kept)
    assert [p.name for p in store.path.parent.iterdir()] == ["pairs.json"]  # no leftovers


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    store = PairStore(tmp_path / "pairs.json")
    store.add(a_pair())
    store.path.chmod(0o644)
    with pytest.raises(PairsFileError, match="can be read by others"):
        store.load()


def entry(**fields: object) -> bytes:
    return json.dumps({"version": 1, "pairs": [fields]}).encode()


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b"[]",
        b'{"version": 2, "pairs": []}',
        entry(name="x"),
        entry(name="../x", secret="00" * 32, paired_at=1),
        entry(name="x", secret="00", paired_at=1),
        entry(name="x", secret="00" * 32, paired_at="now"),
    ],
)
def test_a_damaged_file_is_said_so(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pairs.json"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(PairsFileError, match="damaged"):
        PairStore(path).load()


def test_replace_remove_seen_and_the_limit(tmp_path: Path) -> None:
    store = PairStore(tmp_path / "pairs.json")
    store.add(a_pair("phone"))
    again = a_pair("phone")
    assert store.add(again) is True  # pairing again under a name replaces it
    assert store.load() == [again]
    store.seen("phone", 1234.5)
    (seen,) = store.load()
    assert seen.last_seen == 1234.5
    assert seen.secret == again.secret
    assert store.remove("phone") is True
    assert store.remove("phone") is False
    for n in range(16):
        store.add(a_pair(f"d{n}"))
    with pytest.raises(PairsFileError, match="16 paired devices already"):
        store.add(a_pair("one-more"))
    store.add(a_pair("d3"))  # a replacement is no new pair
