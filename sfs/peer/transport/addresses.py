"""``--ice-address`` checked before anything connects, without importing aiortc (the
options of every command are checked; only a transfer needs aiortc)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from sfs.errors import PeerConnectionError


def check_local_addresses(addresses: Sequence[str]) -> tuple[str, ...]:
    """Validate ``--ice-address`` values: IP literals that this machine can bind.

    :raises PeerConnectionError: with a message naming the bad address.
    """
    checked = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            raise PeerConnectionError(f"--ice-address {text!r} is not an IP address") from None
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((str(address), 0))
            except OSError:
                raise PeerConnectionError(
                    f"--ice-address {text!r} is not an address of this machine"
                ) from None
        checked.append(str(address))
    return tuple(checked)
