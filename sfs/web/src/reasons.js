// Why a transfer stops, in both forms the peer reads: a code and a reason.  A port of
// sfs/peer/proto/reasons.py (the codes and texts are checked against vectors.json):
// send both, decide by the code, fall back to the reason text for peers without codes.

import {
  CancelledByPeerError,
  CancelledError,
  DestinationExistsError,
  DiskError,
  IntegrityError,
  RejectedError,
  RemoteProtocolError,
  SourceError,
  UpgradeError,
} from "./errors.js";
import { Cancel, Reject } from "./protocol.js";

export const DECLINED = "declined";
export const STDOUT_ONLY = "stdout-only";
export const FOLDERS = "folders";
export const DISK = "disk";
export const EXISTS = "exists";
export const INTEGRITY = "integrity";
export const VERIFICATION = "verification";
export const UPGRADE = "upgrade";
export const PROTOCOL = "protocol";
export const SOURCE = "source";
export const CANCELLED = "cancelled";
export const PAGE_CLOSED = "page-closed";
export const ERROR = "error";

/** The CANCEL reason that tells the sender the destination exists. */
export const EXISTS_REASON = "the file already exists on the receiving side";
/** The CANCEL reason of a receiver that cannot read the offer's protocol version. */
export const UPGRADE_REASON = "the receiver runs an older sfs: upgrade sfs there";
/** A protocol violation; a receiver of protocol 2 or older answers so to version 3. */
export const PROTOCOL_REASON = "protocol violation";
export const DECLINED_REASON = "declined by the receiver";

/** The REJECT codes and the reason sent with each. */
export const REJECT_REASONS = Object.freeze({
  [DECLINED]: DECLINED_REASON,
  [STDOUT_ONLY]: "the receiver takes one file or pipe (--stdout)",
  [FOLDERS]: "the web page takes files, not folders: use the sfs command line",
});

/** The CANCEL codes and the reason sent with each. */
export const CANCEL_REASONS = Object.freeze({
  [DISK]: "the receiver cannot write the file (disk full or not writable)",
  [EXISTS]: EXISTS_REASON,
  [INTEGRITY]: "the received data failed its integrity check",
  [VERIFICATION]: "the verification strings were not confirmed",
  [UPGRADE]: UPGRADE_REASON,
  [PROTOCOL]: PROTOCOL_REASON,
  [SOURCE]: "the file changed or became unreadable on the sending side",
  [CANCELLED]: "cancelled by the user",
  [PAGE_CLOSED]: "the other side went away (its web page was closed)",
  [ERROR]: "the other side hit an error",
});

const CANCEL_CODES = [
  [DiskError, DISK],
  [DestinationExistsError, EXISTS],
  [IntegrityError, INTEGRITY],
  [UpgradeError, UPGRADE],
  [RemoteProtocolError, PROTOCOL],
  [SourceError, SOURCE],
  [CancelledError, CANCELLED],
];

/** The CANCEL for `code`, one of CANCEL_REASONS. */
export const cancel = (code) => new Cancel(CANCEL_REASONS[code], code);
/** The REJECT for `code`, one of REJECT_REASONS. */
export const reject = (code = DECLINED) => new Reject(REJECT_REASONS[code], code);

/** What to tell the peer: the kind of failure, never a local path or detail. */
export function cancelFor(error) {
  for (const [Kind, code] of CANCEL_CODES) {
    if (error instanceof Kind) {
      // A CancelledError may say why (the tab closing), with its own reason.
      if (Kind === CancelledError && error.reason) return new Cancel(error.reason, CANCELLED);
      return cancel(code);
    }
  }
  return cancel(ERROR);
}

/** The event's code; for a peer that sends none, the code its reason stands for, or "". */
export function codeOf(event) {
  const table = event instanceof Cancel ? CANCEL_REASONS : REJECT_REASONS;
  if (Object.hasOwn(table, event.code)) return event.code;
  if (event instanceof Reject && (event.reason === "" || event.reason === "declined")) {
    return DECLINED;
  }
  const found = Object.entries(table).find(([, reason]) => reason === event.reason);
  return found ? found[0] : "";
}

/**
 * Why the peer's `event` ends the transfer; `offerVersion`, when it is the answer to
 * our offer, tells an old receiver's refusal of a newer offer.
 */
export function stoppedBy(event, offerVersion = 0) {
  if (event instanceof Reject) {
    return new RejectedError(`the other side declined the transfer (${event.reason})`);
  }
  if (!(event instanceof Cancel)) {
    return new RemoteProtocolError(`unexpected ${event.constructor.name} from the other side`);
  }
  const code = codeOf(event);
  const oldReceiver = !event.code && offerVersion >= 3 && code === PROTOCOL;
  if (code === UPGRADE || oldReceiver) {
    return new UpgradeError(
      "the receiver cannot read this offer: it runs an older sfs (more than 1000 files " +
        "need protocol 3); upgrade sfs there",
    );
  }
  if (code === EXISTS) {
    return new DestinationExistsError(`the other side stopped the transfer: ${event.reason}`);
  }
  return new CancelledByPeerError(`the other side stopped the transfer: ${event.reason}`);
}
