"""A rogue on the LAN, for tests: it advertises somebody else's peer ID.

    python -m tests.lan_rogue PEER_ID OUT_DIR

It runs two fake records for PEER_ID at once, as anyone on a LAN can:

* an impostor: a real sfs receiver in LAN mode (embedded server, mDNS) whose server
  hands it PEER_ID instead of a random ID.  It does not know the code's secret
  words: a sender that tries it gets through to SPAKE2 with the wrong password.
  It accepts any offer into OUT_DIR, so a transfer that leaked would show there.
* a dead end: a record for PEER_ID whose port nobody listens on.

It prints ``advertising`` once both records are out, then the impostor's outcome
(``impostor: <error class>``) and exits 0 when the impostor's set-up has ended.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path
from typing import Any

from sfs import app
from sfs.errors import SfsError
from sfs.lan.discovery import advertise, find_lan, open_zeroconf
from sfs.lan.record import Advert
from sfs.signal.memory_registry import PeerTable
from sfs.signal.messages import new_peer_id
from tests.helpers import QuietUi


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


async def main(peer_id: str, out: Path) -> None:
    defaults = PeerTable.__init__.__kwdefaults__
    assert defaults is not None
    ids = iter([peer_id])  # the impostor's server "draws" the victim's ID first
    defaults["new_id"] = lambda: next(ids, None) or new_peer_id()
    lan = find_lan()
    zeroconf = open_zeroconf(lan)
    dead = Advert(peer_id, "receiver", "dead end", _closed_port(), lan.addresses, int(time.time()))
    ui = QuietUi()
    config = app.ReceiveConfig(
        output_dir=out, peer=app.PeerOptions(name="impostor", connect_timeout=30)
    )
    async with advertise(zeroconf, dead):
        impostor = asyncio.ensure_future(app.receive(config, ui))
        waiters: set[asyncio.Future[Any]] = {impostor, ui.code}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        print("advertising", flush=True)
        try:
            await impostor
            print("impostor: completed", flush=True)
        except SfsError as exc:
            print(f"impostor: {type(exc).__name__}", flush=True)
    await zeroconf.async_close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
