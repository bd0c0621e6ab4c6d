"""`--proxy`: the URLs sfs takes, and the session description a side without WebRTC
applies (no candidates: no connectivity check goes out)."""

from __future__ import annotations

import pytest

from sfs.setup import without_candidates
from sfs.socks import Socks, parse_proxy, proxy_errors


def test_proxy_urls() -> None:
    assert parse_proxy("socks5h://127.0.0.1:1080") == Socks("127.0.0.1", 1080)
    assert parse_proxy("socks5://proxy.example:9050").remote_dns is False
    tor = parse_proxy("socks5h://user:p%40ss@[::1]:9050")
    assert (tor.host, tor.port, tor.username, tor.password) == ("::1", 9050, "user", "p@ss")
    assert str(tor) == "socks5h://[::1]:9050"  # never the password


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:3128", "socks4://h:1", "socks5h://h", "socks5h://:1080",
     "socks5h://h:1080/path", "socks5h://h:port", "socks5h://h:1080?x=1"],
)  # fmt: skip
def test_what_is_not_a_socks5_proxy_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="socks5h://HOST:PORT"):
        parse_proxy(url)


def test_without_candidates_keeps_all_but_the_candidates() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "a=ice-ufrag:abcd",
            "a=candidate:1 1 UDP 2130706431 127.0.0.1 40000 typ host",
            "a=end-of-candidates",
            "a=fingerprint:sha-256 00:11",
            "",
        ]
    )
    stripped = without_candidates(sdp)
    assert "a=candidate" not in stripped
    assert "end-of-candidates" not in stripped
    assert stripped.split("\r\n") == [
        "v=0",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "a=ice-ufrag:abcd",
        "a=fingerprint:sha-256 00:11",
        "",
    ]


async def test_the_libraries_take_what_sfs_gives_them() -> None:
    """The connector and the proxy are made as the oldest and the newest allowed
    aiohttp-socks and python-socks take them (by keyword: the order changed), and
    every error class sfs catches is one."""
    proxy = parse_proxy("socks5h://127.0.0.1:9")
    connector = proxy.connector()
    await connector.close()
    assert all(issubclass(e, Exception) for e in proxy_errors())
    with pytest.raises(OSError, match=r"proxy|Connect"):  # nothing listens on port 9
        await proxy.connect("example.invalid", 80, 5)
