"""Why a transfer stops, in both forms the peer reads: a code and a reason.

A CANCEL or REJECT carries ``reason`` (words for the person at the other end) and,
since this table, ``code`` (a short token a program decides by).  We send both; we
decide by the code, and fall back to the reason text for peers that send none (every
sfs before the codes, and old pages), so the texts below must never change.  The page
has the same table in ``sfs/web/src/reasons.js``, checked against vectors.json.

Pure: no asyncio here (see pyproject's contracts), so "we were stopped" is told by the
exception's kind, not by ``asyncio.CancelledError``'s class.
"""

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
from sfs.peer.proto.wire import Cancel, Event, Reject

# -- the codes ----------------------------------------------------------------------------

DECLINED = "declined"
STDOUT_ONLY = "stdout-only"
FOLDERS = "folders"
DISK = "disk"
EXISTS = "exists"
INTEGRITY = "integrity"
VERIFICATION = "verification"
UPGRADE = "upgrade"
PROTOCOL = "protocol"
SOURCE = "source"
CANCELLED = "cancelled"
PAGE_CLOSED = "page-closed"
ERROR = "error"

#: The CANCEL reason that tells the sender the destination exists (its exit code 10).
EXISTS_REASON = "the file already exists on the receiving side"
#: The CANCEL reason of a receiver that cannot read the offer's protocol version.
UPGRADE_REASON = "the receiver runs an older sfs: upgrade sfs there"
#: What a receiver answers to a protocol violation; one of protocol 2 or older (no
#: codes) answers so to an offer of version 3.
PROTOCOL_REASON = "protocol violation"
#: What a receiver's REJECT says when its user answered no.
DECLINED_REASON = "declined by the receiver"

#: The REJECT codes and the reason sent with each.
REJECT_REASONS: dict[str, str] = {
    DECLINED: DECLINED_REASON,
    STDOUT_ONLY: "the receiver takes one file or pipe (--stdout)",
    FOLDERS: "the web page takes files, not folders: use the sfs command line",
}

#: The CANCEL codes and the reason sent with each.
CANCEL_REASONS: dict[str, str] = {
    DISK: "the receiver cannot write the file (disk full or not writable)",
    EXISTS: EXISTS_REASON,
    INTEGRITY: "the received data failed its integrity check",
    VERIFICATION: "the verification strings were not confirmed",
    UPGRADE: UPGRADE_REASON,
    PROTOCOL: PROTOCOL_REASON,
    SOURCE: "the file changed or became unreadable on the sending side",
    CANCELLED: "cancelled by the user",
    PAGE_CLOSED: "the other side went away (its web page was closed)",
    ERROR: "the other side hit an error",
}

#: Which code a failure of ours is told as; the first match wins (subclasses first).
_CANCEL_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (DiskError, DISK),
    (DestinationExistsError, EXISTS),
    (IntegrityError, INTEGRITY),
    (VerificationError, VERIFICATION),
    (UpgradeError, UPGRADE),
    (RemoteProtocolError, PROTOCOL),
    (SourceError, SOURCE),
)


def cancel_code(exc: BaseException) -> str:
    """The code that tells the peer what kind of failure ``exc`` is."""
    for kind, code in _CANCEL_CODES:
        if isinstance(exc, kind):
            return code
    if not isinstance(exc, Exception):
        # KeyboardInterrupt, asyncio.CancelledError: this side was stopped, it did not
        # fail (told by kind, as this module may not import asyncio).
        return CANCELLED
    return ERROR


def cancel_for(exc: BaseException) -> Cancel:
    """What to tell the peer: the kind of failure, never a local path or detail."""
    code = cancel_code(exc)
    return Cancel(CANCEL_REASONS[code], code)


def cancel(code: str) -> Cancel:
    """The CANCEL for ``code``, one of :data:`CANCEL_REASONS`."""
    return Cancel(CANCEL_REASONS[code], code)


def reject(code: str = DECLINED) -> Reject:
    """The REJECT for ``code``, one of :data:`REJECT_REASONS`."""
    return Reject(REJECT_REASONS[code], code)


def code_of(event: Cancel | Reject) -> str:
    """The event's code; for a peer that sends none (or one we do not know), the code
    its reason text stands for, or ""."""
    table = CANCEL_REASONS if isinstance(event, Cancel) else REJECT_REASONS
    if event.code in table:
        return event.code
    if isinstance(event, Reject) and event.reason in ("", "declined"):
        return DECLINED  # older receivers' plain no
    return next((code for code, reason in table.items() if reason == event.reason), "")


def stopped_by(event: Event, offer_version: int = 0) -> SfsError:
    """Why the peer's ``event`` ends the transfer; ``offer_version``, when it is the
    answer to our offer, tells an old receiver's refusal of a newer offer."""
    if isinstance(event, Reject):
        # Its reason only when it says more than that it declined.
        plain = code_of(event) == DECLINED
        return RejectedError(
            "the receiver declined the transfer" + ("" if plain else f" ({event.reason})")
        )
    if not isinstance(event, Cancel):
        return RemoteProtocolError(f"unexpected {type(event).__name__} from the other side")
    code = code_of(event)
    # A receiver that sends no code is from before protocol 3 and answers an offer of
    # version 3 with a plain protocol violation; one that sends codes reads version 3.
    old_receiver = not event.code and offer_version >= 3 and code == PROTOCOL
    if code == UPGRADE or old_receiver:
        return UpgradeError(
            "the receiver cannot read this offer: it runs an older sfs (text, pipes and "
            "trees of more than 1000 files need protocol 3); upgrade sfs there"
        )
    if code == EXISTS:
        # The same exit code on both sides: the cause and the remedy are the same.
        return DestinationExistsError(
            f"the other side stopped the transfer: {event.reason} (the receiver "
            "can pass --overwrite or choose another --output folder)"
        )
    return CancelledByPeerError(f"the other side stopped the transfer: {event.reason}")
