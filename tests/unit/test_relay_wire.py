"""The relay's pure pieces: the request and answer heads, tokens, the rate budget."""

from __future__ import annotations

import pytest

from sfs.peer.transport.relay import RelayAnswer, parse_relay_answer, relay_request
from sfs.signal.config import parse_byte_count
from sfs.signal.relay import TokenBucket, http_refusal, token_from_header, token_from_message

TOKEN = bytes(range(32))


def test_the_request_is_exactly_the_documented_bytes() -> None:
    assert relay_request(host="h:5000", path="/relay", token=TOKEN) == (
        b"GET /relay HTTP/1.1\r\nHost: h:5000\r\nConnection: Upgrade\r\nUpgrade: sfs-relay\r\n"
        b"Sfs-Relay-Token: 000102030405060708090a0b0c0d0e0f"
        b"101112131415161718191a1b1c1d1e1f\r\n\r\n"
    )
    with pytest.raises(ValueError, match="32 bytes"):
        relay_request(host="h", path="/relay", token=TOKEN[:31])


def test_a_101_answer_keeps_the_bytes_after_its_head() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: sfs-relay\r\n\r\n"
    assert parse_relay_answer(head + b"MAGIC") == RelayAnswer(101, "", b"MAGIC")
    # Fed a byte at a time: nothing until the head is whole.
    for n in range(len(head)):
        assert parse_relay_answer(head[:n]) is None
    with pytest.raises(ValueError, match="another protocol"):
        parse_relay_answer(head.replace(b"sfs-relay", b"websocket"))


def test_a_refusal_gives_its_status_and_one_sanitised_line() -> None:
    answer = http_refusal(409, "this relay token has already formed a pair")
    assert answer.startswith(b"HTTP/1.1 409 Conflict\r\nContent-Type: text/plain")
    assert parse_relay_answer(answer) == RelayAnswer(
        409, "this relay token has already formed a pair"
    )
    assert parse_relay_answer(answer[:-3]) is None  # the body is not whole yet
    hostile = b"HTTP/1.1 429 No\r\nContent-Length: 13\r\n\r\n\x1b[31mred\nmore"
    assert parse_relay_answer(hostile) == RelayAnswer(429, "\\x1b[31mred")


@pytest.mark.parametrize("data", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n", b"x" * 9000])
def test_what_is_not_http_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"HTTP|too long"):
        parse_relay_answer(data)


def test_an_answer_cut_short_is_an_error() -> None:
    with pytest.raises(ValueError, match="without an answer"):
        parse_relay_answer(b"", eof=True)
    assert parse_relay_answer(b"HTTP/1.1 503 X\r\nContent-Length: 50\r\n\r\nbusy", eof=True) == (
        RelayAnswer(503, "busy")
    )


def test_tokens_from_a_header_or_a_message() -> None:
    assert token_from_header(None) is None
    assert token_from_header("") is None
    assert token_from_header(TOKEN.hex()) == TOKEN
    for bad in (TOKEN.hex().upper(), TOKEN.hex()[:-1], "zz" * 32, "é" * 64):
        token = token_from_header(bad)
        assert token is not None, bad
        assert len(token) != 32, bad
    assert token_from_message(TOKEN) == TOKEN
    assert token_from_message(b"") is None
    assert token_from_message("a text message") == b"?"


def test_the_token_bucket_known_answers() -> None:
    bucket = TokenBucket(rate=1000, burst=250, now=0.0)
    assert bucket.spend(250, now=0.0) == 0.0  # the burst passes at once
    assert bucket.spend(500, now=0.0) == pytest.approx(0.5)  # 500 in debt: half a second
    assert bucket.spend(0, now=0.5) == 0.0  # paid back
    assert bucket.spend(100, now=10.0) == 0.0  # a quiet spell refills only to the burst
    assert bucket.level == pytest.approx(150)
    with pytest.raises(ValueError, match="at least 1"):
        TokenBucket(rate=0, burst=1, now=0.0)


def test_byte_counts() -> None:
    assert parse_byte_count("0") == 0
    assert parse_byte_count("500k") == 512_000
    assert parse_byte_count("2M") == 2 << 20
    assert parse_byte_count("2MiB") == 2 << 20
    assert parse_byte_count("1G") == 1 << 30
    for bad in ("", "k", "-1", "1.5M", "2X", "١٢"):
        with pytest.raises(ValueError, match="byte count"):
            parse_byte_count(bad)
