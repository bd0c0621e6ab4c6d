"""TURN REST credentials (sfs.signal.turn) and their ServerConfig rules."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfs.peer.transport.channel import Route
from sfs.peer.transport.gathering import ice_urls
from sfs.signal.config import ServerConfig
from sfs.signal.messages import IceServer
from sfs.signal.turn import TurnSecret, read_secret, rest_credential

SECRET = TurnSecret(b"north")


def test_known_answer() -> None:
    # printf '%s' 1800000000:KQZ-042 | openssl dgst -sha1 -hmac north -binary | base64
    assert rest_credential(secret=SECRET, name="KQZ-042", expires=1_800_000_000) == (
        "1800000000:KQZ-042",
        "eWfkVno95mpwifQBVDavnRoYONE=",
    )


@given(st.binary(min_size=1, max_size=64), st.integers(0, 2**40))
def test_password_is_the_hmac_of_the_username(secret: bytes, expires: int) -> None:
    username, password = rest_credential(secret=TurnSecret(secret), name="ABC-123", expires=expires)
    assert username == f"{expires}:ABC-123"
    expected = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


def test_the_secret_never_shows() -> None:
    config = ServerConfig(turn_urls=("turn:turn.example:3478",), turn_secret=SECRET)
    assert "north" not in repr(config)
    assert "north" not in repr(SECRET)
    assert "north" not in str(config)


def test_read_secret_like_coturn() -> None:
    assert read_secret(b"  s3cret\n") == TurnSecret(b"s3cret")
    with pytest.raises(ValueError, match="the TURN secret is empty"):
        read_secret(b" \n")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"turn_urls": ("turn:t.example",)}, "--turn needs the shared secret"),
        ({"turn_secret": SECRET}, "nothing to sign"),
        ({"turn_urls": ("stun:t.example",), "turn_secret": SECRET}, "--turn takes turn:"),
        ({"stun_urls": ("turn:t.example",)}, "--stun takes stun:"),
        (
            {"turn_urls": ("turn:t.example",), "turn_secret": SECRET, "turn_ttl_seconds": 5},
            "at least 60",
        ),
    ],
)
def test_config_rules(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerConfig(**overrides)  # type: ignore[arg-type]


def test_every_turn_url_is_kept_for_gathering() -> None:
    """aiortc alone would use only the first TURN URL: sfs gathers from all of them."""
    server = IceServer(
        ("turn:t.example:3478?transport=udp", "turn:t.example:3478?transport=tcp"), "u", "p"
    )
    urls = ice_urls([IceServer(("stun:s.example:3478",)), server])
    assert [(u.kind, u.host, u.port, u.transport, u.username) for u in urls] == [
        ("stun", "s.example", 3478, "udp", None),
        ("turn", "t.example", 3478, "udp", "u"),
        ("turn", "t.example", 3478, "tcp", "u"),
    ]


def test_route_wording() -> None:
    assert str(Route("local")) == "direct on the local network"
    assert str(Route("nat")) == "direct through NAT"
    assert str(Route("relay", "10.200.0.1 (tcp)")) == "relayed by TURN 10.200.0.1 (tcp)"
    assert str(Route("relay", "10.200.0.1")) == "relayed by the other side's TURN 10.200.0.1"
