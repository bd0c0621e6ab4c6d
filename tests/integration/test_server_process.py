"""The `sfs serve` process itself."""

from __future__ import annotations

import urllib.request

from tests.conftest import ServerProcess


def test_healthz(sfs_server: ServerProcess) -> None:
    with urllib.request.urlopen(sfs_server.url + "/healthz", timeout=10) as response:
        assert response.status == 200
