"""What `sfs serve` serves of the browser page, over plain HTTP (no browser needed):
every asset from the server itself, with a Content-Security-Policy that allows only
the page's own script, and nothing else under that name."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from sfs.signal.page import CONTENT_SECURITY_POLICY, PAGE_FILES, STATIC_DIR
from tests.conftest import ServerProcess


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.skipif(not (STATIC_DIR / "index.html").exists(), reason="the page is not built")
@pytest.mark.parametrize("path", sorted(PAGE_FILES))
def test_every_asset_comes_with_the_security_headers(sfs_server: ServerProcess, path: str) -> None:
    status, headers, body = get(sfs_server.url + path)
    assert status == 200
    assert body == (STATIC_DIR / PAGE_FILES[path][0]).read_bytes()
    assert headers["Content-Type"] == PAGE_FILES[path][1]
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_the_policy_allows_only_the_pages_own_code() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval, no CDN
    assert directives["connect-src"] == "'self'"  # only this server's websocket
    assert directives["frame-ancestors"] == "'none'"


@pytest.mark.skipif(not (STATIC_DIR / "index.html").exists(), reason="the page is not built")
def test_the_page_loads_nothing_from_elsewhere() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert links, "the page links its script and style"
    for link in links:
        assert not re.match(r"^[a-z]+:|^//", link, re.I) or link.startswith(("data:", "#")), link
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"


def test_unknown_paths_are_404_and_the_server_stays_up(sfs_server: ServerProcess) -> None:
    for path in ("/../../etc/passwd", "/static/../sfs/cli.py", "/app.js.map", "/x"):
        status, _, _ = get(sfs_server.url + path)
        assert status == 404, path
    assert get(sfs_server.url + "/healthz")[0] == 200
