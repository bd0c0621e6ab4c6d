"""The one exception hierarchy of sfs.

Every class docstring is written for the person at the terminal: the CLI prints
``str(exc)`` as one line and exits with ``exc.exit_code``.  Exit codes are part of
the user interface and are listed in README.md; never reuse or renumber one.
"""

from __future__ import annotations

import errno


class SfsError(Exception):
    """Something went wrong."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "error").strip().splitlines()[0])


class ProtocolError(SfsError):
    """The transfer protocol was violated.

    Never raised itself: :class:`LocalProtocolError` (this side's fault) and
    :class:`RemoteProtocolError` (the other side's) are siblings beneath it, as in
    h11's ``_util.py``; catch this class for either."""

    exit_code = 13


class LocalProtocolError(ProtocolError):
    """This side tried to send something the transfer protocol does not allow now: a bug in sfs."""


class RemoteProtocolError(ProtocolError):
    """The other side sent something the transfer protocol does not allow."""


class UpgradeError(RemoteProtocolError):
    """The two sides run versions of sfs that cannot talk: upgrade the older one."""


class CryptoError(SfsError):
    """A message failed its integrity check: it was damaged or tampered with."""

    exit_code = 12


class WrongCodeError(CryptoError):
    """Wrong code: the two sides did not agree on a key (a typo, or someone interfering).
    Run `sfs receive` again for a new code."""

    exit_code = 5


class VerificationError(CryptoError):
    """The verification strings were not confirmed as matching; nothing was transferred."""

    exit_code = 14


class IntegrityError(CryptoError):
    """The received file does not match what the sender sent; it was not kept."""

    exit_code = 12


class SignalingError(SfsError):
    """The signaling server failed or refused the request."""

    exit_code = 3


class PairingMismatchError(SignalingError):
    """One side pairs (`sfs pair`) and the other transfers: both must run `sfs pair`."""

    exit_code = 6


class ServerUnreachableError(SignalingError):
    """Cannot reach the signaling server."""

    exit_code = 3


class ServerLostError(SignalingError):
    """Lost the connection to the signaling server."""

    exit_code = 3


class CodeNotFoundError(SignalingError):
    """No receiver is waiting with that code. Check the code, or ask for a new one."""

    exit_code = 4


class PeerNotOnLanError(CodeNotFoundError):
    """No peer with that ID on this network (for other networks use --server)."""

    exit_code = 4


class PeerBusyError(CodeNotFoundError):
    """The peer's device on this network is too busy to answer: try again in a moment.

    (Someone may be flooding it with requests.)"""

    exit_code = 4


class IdClaimedTwiceError(CodeNotFoundError):
    """Two devices on this network claim that code's ID: someone may be interfering.
    Nothing was sent; ask for a new code."""

    exit_code = 4


class NoLanError(SignalingError):
    """No network interface with multicast here for LAN mode; use --server URL instead."""

    exit_code = 3


class CodeUsedUpError(CodeNotFoundError):
    """That code has served every receiver its sender allowed (sfs send --many)."""

    exit_code = 4


class RoomFullError(SignalingError):
    """That code is already in use by another transfer. Ask for a new one."""

    exit_code = 4


class RegistryUnreachableError(SignalingError):
    """`sfs serve --redis` cannot reach Redis, where the nodes keep their peers."""

    exit_code = 3


class PeerConnectionError(SfsError):
    """Could not connect to the other side."""

    exit_code = 8


class IceFailedError(PeerConnectionError):
    """Could not open a direct connection to the other side (ICE failed).
    Across NATs or firewalls, configure a STUN/TURN server with --ice-server."""

    exit_code = 8


class RelayUnreachableError(PeerConnectionError):
    """Cannot reach the relay of the signaling server (`sfs serve`'s /relay)."""

    exit_code = 8


class RelayRefusedError(PeerConnectionError):
    """The relay refused the connection."""

    exit_code = 8

    def __init__(self, message: str | None = None, *, status: int = 0) -> None:
        super().__init__(message)
        #: The HTTP status of the refusal (409, 429, ...); 0 if the relay sent none.
        self.status = status


class PeerGoneError(PeerConnectionError):
    """The other side went away before the transfer finished."""

    exit_code = 7


class NotBackError(PeerGoneError):
    """The connection broke, and the other side did not come back in time.

    An outage that was waited out (--reconnect-window), so not one to wait out again;
    raised with the window in its message."""


class TransferError(SfsError):
    """The transfer did not complete."""

    exit_code = 1


class RejectedError(TransferError):
    """The receiver declined the transfer."""

    exit_code = 6


class DeclinedError(RejectedError):
    """Declined: nothing was received.

    The user's own answer, not a failure: the CLI says it plainly, not as an error,
    and exits 6 as for any refusal."""


class CancelledByPeerError(TransferError):
    """The other side cancelled the transfer."""

    exit_code = 7


class SourceError(TransferError):
    """A file to send is missing or unreadable."""

    exit_code = 9


class DestinationExistsError(TransferError):
    """The destination file already exists; pass --overwrite to replace it."""

    exit_code = 10


class DiskError(TransferError):
    """Cannot write the received file (disk full or not writable)."""

    exit_code = 11


#: How a connection's end reads in words, by errno (never ``[Errno 104] ...``).
_CONNECTION_ENDS = {
    errno.ECONNRESET: "the other side reset it",
    errno.EPIPE: "the other side closed it",
    errno.ECONNABORTED: "it was aborted on this machine",
    errno.ETIMEDOUT: "it timed out",
    errno.EHOSTUNREACH: "the other side became unreachable",
    errno.ENETUNREACH: "the network became unreachable",
    errno.ENETDOWN: "the network went down",
}


def connection_end(exc: BaseException) -> str:
    """Why a connection ended, for a message: in words, without ``[Errno N]``."""
    if isinstance(exc, OSError):
        if exc.errno in _CONNECTION_ENDS:
            return _CONNECTION_ENDS[exc.errno]
        if exc.strerror:
            return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__
