"""Why a transfer stops, in the words both sides exchange: the reason a CANCEL or
REJECT carries (never a local path or detail), and what the peer's means here."""

from __future__ import annotations

from sfs.errors import (
    CancelledByPeerError,
    DestinationExistsError,
    DiskError,
    IntegrityError,
    RejectedError,
    RemoteProtocolError,
    SfsError,
    SourceError,
    UpgradeError,
    VerificationError,
)
from sfs.peer.proto.wire import Cancel, Reject

#: The CANCEL reason that tells the sender the destination exists (its exit code 10).
EXISTS_REASON = "the file already exists on the receiving side"
#: The CANCEL reason of a receiver that cannot read the offer's protocol version.
UPGRADE_REASON = "the receiver runs an older sfs: upgrade sfs there"
#: What a receiver of protocol 2 or older answers to an offer of version 3.
_OLD_RECEIVER_REASON = "protocol violation"
#: What a receiver's REJECT says when its user answered no.
DECLINED_REASON = "declined by the receiver"

_REASONS: list[tuple[type[BaseException], str]] = [
    (DiskError, "the receiver cannot write the file (disk full or not writable)"),
    (DestinationExistsError, EXISTS_REASON),
    (IntegrityError, "the received data failed its integrity check"),
    (VerificationError, "the verification strings were not confirmed"),
    (UpgradeError, UPGRADE_REASON),
    (RemoteProtocolError, "protocol violation"),
    (SourceError, "the file changed or became unreadable on the sending side"),
    (KeyboardInterrupt, "cancelled by the user"),
]


def cancel_reason(exc: BaseException) -> str:
    """What to tell the peer: the kind of failure, never a local path or detail."""
    # asyncio's CancelledError by name: this module imports no event loop.
    if type(exc).__name__ == "CancelledError":
        return "cancelled by the user"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the other side hit an error"


def cancel_for(exc: BaseException) -> Cancel:
    """The CANCEL that tells the peer why this side stops."""
    return Cancel(cancel_reason(exc))


def declined() -> Reject:
    """The REJECT of a receiver whose user said no."""
    return Reject(DECLINED_REASON)


def stopped_by(event: object, offer_version: int = 0) -> SfsError:
    """Why the peer's ``event`` ends the transfer; ``offer_version``, when it is the
    answer to our offer, tells an old receiver's refusal of a newer offer."""
    if isinstance(event, Reject):
        # Its reason only when it says more than that it declined (every receiver,
        # the page's too, sends DECLINED_REASON when its user says no).
        plain = event.reason in ("", "declined", DECLINED_REASON)
        return RejectedError(
            "the receiver declined the transfer" + ("" if plain else f" ({event.reason})")
        )
    if isinstance(event, Cancel) and (
        event.reason == UPGRADE_REASON
        or (offer_version >= 3 and event.reason == _OLD_RECEIVER_REASON)
    ):
        return UpgradeError(
            "the receiver cannot read this offer: it runs an older sfs (text, pipes and "
            "trees of more than 1000 files need protocol 3); upgrade sfs there"
        )
    if isinstance(event, Cancel):
        if event.reason == EXISTS_REASON:
            # The same exit code on both sides: the cause and the remedy are the same.
            return DestinationExistsError(
                f"the other side stopped the transfer: {EXISTS_REASON} (the receiver "
                "can pass --overwrite or choose another --output folder)"
            )
        return CancelledByPeerError(f"the other side stopped the transfer: {event.reason}")
    return RemoteProtocolError(f"unexpected {type(event).__name__} from the other side")
