"""The proof both ends of a direct connection give before any frame, sans I/O.

A connection carries the transfer only after both ends proved the session key on it
(:mod:`sfs.peer.transport.tcp` drives this over TCP and through the relay,
:mod:`sfs.peer.transport.quic` over a QUIC stream)::

    dialer   -> listener:  MAGIC (8) | nonce_d (16)
    listener -> dialer:    nonce_l (16) | HMAC(proof key of the listener's role, "L" | T)
    dialer   -> listener:  HMAC(proof key of the dialer's role, "D" | T)
    T = MAGIC | nonce_d | nonce_l

Bytes in, bytes out: the transports only move what :class:`Prover` asks for.
"""

from __future__ import annotations

import secrets

from sfs.errors import CryptoError
from sfs.peer.proto.crypto import (
    QUIC_PROOF_MAGIC,
    TCP_MAGIC,
    TCP_NONCE_BYTES,
    TCP_PROOF_BYTES,
    digests_equal,
    tcp_proof,
)


class Prover:
    """One end of the proof on one TCP connection: bytes in, bytes out.

    :param dialer: this end opened the connection.
    :param own_key: the proof key of this side's role; ``peer_key`` the other's.
    :param quic_nonce: on a QUIC stream, the dialer's nonce both ends already have (its
        Initial's destination connection ID, fresh per connection): the dialer sends no
        hello, the listener proves itself first (its first flight can leave with QUIC's
        handshake, a round trip sooner), and the transcript's magic is
        QUIC_PROOF_MAGIC.
    """

    def __init__(
        self,
        *,
        dialer: bool,
        own_key: bytes,
        peer_key: bytes,
        nonce: bytes | None = None,
        quic_nonce: bytes | None = None,
    ) -> None:
        self.dialer = dialer
        self._own = own_key
        self._peer = peer_key
        self._quic = quic_nonce is not None
        self._magic = QUIC_PROOF_MAGIC if self._quic else TCP_MAGIC
        if quic_nonce is not None and dialer:
            nonce = quic_nonce
        self._nonce = nonce if nonce is not None else secrets.token_bytes(TCP_NONCE_BYTES)
        self._dialer_nonce: bytes | None = self._nonce if dialer else quic_nonce
        self.proven = False

    def hello(self) -> bytes:
        """What this end sends first: on TCP the dialer's magic and nonce; on QUIC the
        listener's nonce and proof."""
        if self._quic:
            return b"" if self.dialer else self._listener_flight()
        return TCP_MAGIC + self._nonce if self.dialer else b""

    def _listener_flight(self) -> bytes:
        assert self._dialer_nonce is not None
        return self._nonce + tcp_proof(
            key=self._own,
            side=b"L",
            dialer_nonce=self._dialer_nonce,
            listener_nonce=self._nonce,
            magic=self._magic,
        )

    @property
    def greeted(self) -> bool:
        """The dialer's hello (magic and nonce) has arrived whole (a dialer: always)."""
        return self._dialer_nonce is not None

    @property
    def wanted(self) -> int:
        """How many bytes :meth:`receive` takes next (0 once proven)."""
        if self.proven:
            return 0
        if self.dialer:
            return TCP_NONCE_BYTES + TCP_PROOF_BYTES
        if self._dialer_nonce is None:
            return len(TCP_MAGIC) + TCP_NONCE_BYTES
        return TCP_PROOF_BYTES

    def receive(self, data: bytes) -> bytes:
        """Take exactly :attr:`wanted` bytes; return what to send back.

        :raises CryptoError: the other end is not the peer of this session.
        """
        if len(data) != self.wanted or self.proven:
            raise ValueError(f"expected {self.wanted} bytes, not {len(data)}")
        if self.dialer:
            listener_nonce, proof = data[:TCP_NONCE_BYTES], data[TCP_NONCE_BYTES:]
            self._check(proof, b"L", self._nonce, listener_nonce)
            self.proven = True
            return tcp_proof(
                key=self._own,
                side=b"D",
                dialer_nonce=self._nonce,
                listener_nonce=listener_nonce,
                magic=self._magic,
            )
        if self._dialer_nonce is None:
            if data[: len(TCP_MAGIC)] != TCP_MAGIC:
                raise CryptoError("a connection that is not sfs's came to the direct port")
            self._dialer_nonce = data[len(TCP_MAGIC) :]
            return self._listener_flight()
        self._check(data, b"D", self._dialer_nonce, self._nonce)
        self.proven = True
        return b""

    def _check(self, proof: bytes, side: bytes, dialer_nonce: bytes, listener_nonce: bytes) -> None:
        expected = tcp_proof(
            key=self._peer,
            side=side,
            dialer_nonce=dialer_nonce,
            listener_nonce=listener_nonce,
            magic=self._magic,
        )
        if not digests_equal(expected, proof):
            raise CryptoError("the other end of a direct connection did not prove the session key")
