"""The mDNS record (sfs.lan.record): its format, what a joining side accepts from the
network, and which endpoint it chooses (or which error it reports) from the probes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs.commands.peers import peer_table
from sfs.errors import IdClaimedTwiceError, PeerBusyError, PeerNotOnLanError
from sfs.lan.record import (
    MAX_ADDRESSES,
    MAX_NAME_CHARS,
    SERVICE_TYPE,
    Advert,
    Probed,
    choose,
    connectable,
    instance_name,
    page_urls,
    parse,
    signaling_url,
    waited,
)

ADVERT = Advert("receiver", "alice", 41234, ("10.0.0.2", "fd00::2"), 1_800_000_000)


def txt(props: dict[str, str]) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in props.items()}


def test_the_record_known_answer() -> None:
    assert ADVERT.properties() == {
        "v": "2",
        "role": "receiver",
        "name": "alice",
        "since": "1800000000",
    }
    assert instance_name(token="3f9a1c") == "sfs 3f9a1c._sfs._tcp.local."
    assert SERVICE_TYPE == "_sfs._tcp.local."


def test_round_trip() -> None:
    assert parse(txt(ADVERT.properties()), port=41234, addresses=ADVERT.addresses) == ADVERT


def test_two_instance_names_differ() -> None:
    assert instance_name() != instance_name()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"v": "1"}, "version 1 named the ID: no longer read"),
        ({"v": "3"}, "a later version"),
        ({"role": "admin"}, "no such role"),
    ],
)
def test_records_that_are_not_usable(change: dict[str, str], why: str) -> None:
    assert parse(txt({**ADVERT.properties(), **change}), port=1, addresses=["10.0.0.2"]) is None


def test_missing_fields_ports_and_addresses() -> None:
    props = txt(ADVERT.properties())
    assert (
        parse({k: v for k, v in props.items() if k != b"role"}, port=1, addresses=["10.0.0.2"])
        is None
    )
    assert parse(props, port=None, addresses=["10.0.0.2"]) is None
    assert parse(props, port=0, addresses=["10.0.0.2"]) is None
    assert parse(props, port=70000, addresses=["10.0.0.2"]) is None
    assert parse(props, port=1, addresses=["127.0.0.1", "fe80::1", "::1"]) is None
    assert parse({**props, b"v": b"\xff"}, port=1, addresses=["10.0.0.2"]) is None


def test_name_and_since_are_cleaned() -> None:
    props = txt(ADVERT.properties())
    long_name = {**props, b"name": ("x" * 500).encode(), b"since": b"soon"}
    advert = parse(long_name, port=1, addresses=["10.0.0.2"])
    assert advert is not None
    assert advert.name == "x" * MAX_NAME_CHARS
    assert advert.since == 0
    bad_utf8 = parse({**props, b"name": b"\xffbob"}, port=1, addresses=["10.0.0.2"])
    assert bad_utf8 is not None
    assert bad_utf8.name == "\ufffdbob"
    no_name = parse({**props, b"name": None}, port=1, addresses=["10.0.0.2"])
    assert no_name is not None
    assert no_name.name == ""


def test_connectable_addresses() -> None:
    assert connectable(
        ["fd00::2", "127.0.0.1", "10.0.0.2", "fe80::1", "::1", "224.0.0.251", "0.0.0.0",
         "nonsense", "10.0.0.2", "169.254.3.4"]
    ) == ("10.0.0.2", "169.254.3.4", "fd00::2")  # fmt: skip
    many = [f"10.0.0.{i}" for i in range(1, 50)]
    assert len(connectable(many)) == MAX_ADDRESSES


def test_signaling_url() -> None:
    assert signaling_url("10.0.0.2", 5000) == "http://10.0.0.2:5000"
    assert signaling_url("fd00::2", 5000) == "http://[fd00::2]:5000"


@given(
    st.dictionaries(
        st.sampled_from([b"v", b"id", b"role", b"name", b"since", b"x"]),
        st.one_of(st.none(), st.binary(max_size=80)),
    ),
    st.one_of(st.none(), st.integers(-10, 70000)),
    st.lists(st.text(max_size=40), max_size=20),
)
def test_parse_never_raises_and_keeps_its_promises(
    props: dict[bytes, bytes | None], port: int | None, addresses: list[str]
) -> None:
    advert = parse(props, port=port, addresses=addresses)
    if advert is not None:
        assert advert.role in ("receiver", "sender")
        assert len(advert.name) <= MAX_NAME_CHARS
        assert 0 < advert.port < 65536
        assert 0 < len(advert.addresses) <= MAX_ADDRESSES


def test_waited() -> None:
    assert waited(1000, 1012.7) == "12 s"
    assert waited(1000, 1000 + 125) == "2 min"
    assert waited(1000, 1000 + 3 * 3600 + 60 * 5) == "3 h 5 min"
    assert waited(2000, 1000) == "0 s"  # its clock is ahead of ours
    assert waited(0, 1000) == "0 s"


def test_records_never_carry_an_id_or_anything_of_the_code() -> None:
    assert set(ADVERT.properties()) == {"v", "role", "name", "since"}


OTHER = Advert("receiver", "bob", 41235, ("10.0.0.3",), 1_800_000_000)


def test_choose_the_one_that_proved_the_id() -> None:
    holder = Probed(ADVERT, host="10.0.0.2", instance=b"a" * 16)
    assert choose([Probed(OTHER), holder], peer_id="KQZ-042", role="receiver") is holder
    # The same instance at two records or addresses (a relay, a second interface) is
    # one device: no alarm.
    again = Probed(OTHER, host="10.0.0.3", instance=b"a" * 16)
    assert choose([holder, again], peer_id="KQZ-042", role="receiver") is holder


def test_two_devices_proving_one_id_get_nothing() -> None:
    with pytest.raises(IdClaimedTwiceError) as caught:
        choose(
            [
                Probed(ADVERT, host="10.0.0.2", instance=b"a" * 16),
                Probed(OTHER, host="10.0.0.3", instance=b"b" * 16),
            ],
            peer_id="KQZ-042",
            role="receiver",
        )
    assert caught.value.exit_code == 4
    assert str(caught.value).startswith(
        "2 devices on this network claim ID KQZ-042: someone may be interfering"
    )


def test_busy_is_not_absent() -> None:
    with pytest.raises(PeerBusyError) as caught:
        choose([Probed(OTHER), Probed(ADVERT, busy=True)], peer_id="KQZ-042", role="receiver")
    assert caught.value.exit_code == 4
    assert "too busy" in str(caught.value)


def test_nobody_proved_it() -> None:
    for probed in ([], [Probed(ADVERT), Probed(OTHER)]):
        with pytest.raises(PeerNotOnLanError) as caught:
            choose(probed, peer_id="KQZ-042", role="sender")
        assert str(caught.value) == (
            "no sender with ID KQZ-042 on this network (is it on the same LAN? "
            "for other networks use --server)"
        )


@given(
    st.lists(
        st.tuples(st.one_of(st.none(), st.sampled_from([b"a" * 16, b"b" * 16])), st.booleans()),
        max_size=12,
    )
)
def test_choose_never_picks_an_unproven_endpoint(answers: list[tuple[bytes | None, bool]]) -> None:
    probed = [
        Probed(ADVERT, host="10.0.0.2" if i or busy else None, instance=i, busy=busy)
        for i, busy in answers
    ]
    instances = {i for i, _ in answers if i is not None}
    try:
        chosen = choose(probed, peer_id="KQZ-042", role="receiver")
    except IdClaimedTwiceError:
        assert len(instances) > 1
    except PeerBusyError:
        assert not instances
        assert any(busy for _, busy in answers)
    except PeerNotOnLanError:
        assert not instances
    else:
        assert len(instances) == 1
        assert chosen.instance in instances


def test_peer_table_shows_network_text_inert() -> None:
    evil = Advert("sender", "\x1b[2J\u202eevil", 1, ("10.0.0.2",), 1000)
    lines = peer_table([ADVERT, evil], now=ADVERT.since + 30)
    assert lines[0].split() == ["NAME", "WAITS", "TO", "ADDRESS", "WAITING"]
    assert lines[1].split() == ["alice", "receive", "10.0.0.2", "30", "s"]
    assert "\x1b" not in lines[2]
    assert "\u202e" not in lines[2]
    assert "\\x1b[2J\\u202eevil" in lines[2]
    assert " send " in lines[2]
    assert peer_table([], now=0) == ["Nobody is waiting on this network."]


def test_page_urls_put_the_default_routes_address_first() -> None:
    addresses = connectable(["10.0.0.5", "fd00::5", "192.168.1.20"])
    assert page_urls(addresses, 43117, "192.168.1.20") == (
        "http://192.168.1.20:43117",
        "http://10.0.0.5:43117",
        "http://[fd00::5]:43117",
    )
    # No default route, or one through an address sfs does not serve on: as listed.
    for preferred in (None, "172.16.0.1"):
        assert page_urls(addresses, 80, preferred) == (
            "http://10.0.0.5:80",
            "http://192.168.1.20:80",
            "http://[fd00::5]:80",
        )
    assert page_urls((), 80, "10.0.0.5") == ()
