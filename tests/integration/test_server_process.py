"""The `sfs serve` process itself."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from tests.conftest import ServerProcess, start_server, stop_process


def test_healthz(sfs_server: ServerProcess) -> None:
    with urllib.request.urlopen(sfs_server.url + "/healthz", timeout=10) as response:
        assert response.status == 200


def test_healthz_with_each_registry(tmp_path: Path, registry_args: list[str]) -> None:
    server = start_server(tmp_path, *registry_args)
    try:
        with urllib.request.urlopen(server.url + "/healthz", timeout=10) as response:
            assert response.status == 200
    finally:
        stop_process(server.process)
    assert "Traceback" not in server.log_text(), server.log_text()
