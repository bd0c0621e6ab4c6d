// The page's exception hierarchy: a mirror of sfs/errors.py, so a failure reads the
// same in a browser as at the terminal.  The page shows `error.message` as one line
// of text (never as HTML).  CryptoError and WrongCodeError live in ./crypto.js,
// which must stay a byte-exact port of sfs/peer/crypto.py; the ones here that are
// kinds of crypto failure extend them.

import { CryptoError } from "./crypto.js";

// Each class's default message is the first line of the Python class docstring.
function define(name, Base, defaultMessage) {
  const Class = class extends Base {
    constructor(message = defaultMessage, options) {
      super(message, options);
    }
  };
  // Spelled out: a minifier renames classes, and the name is what a log shows.
  Object.defineProperty(Class, "name", { value: name });
  Class.prototype.name = name;
  return Class;
}

/** Something went wrong. */
export const SfsError = define("SfsError", Error, "Something went wrong.");

export const ProtocolError = define(
  "ProtocolError",
  SfsError,
  "The transfer protocol was violated.",
);
// Siblings, as in sfs/errors.py: what this side did wrong (a bug) and what the peer did.
export const LocalProtocolError = define(
  "LocalProtocolError",
  ProtocolError,
  "This side tried to send something the transfer protocol does not allow now: a bug in sfs.",
);
export const RemoteProtocolError = define(
  "RemoteProtocolError",
  ProtocolError,
  "The other side sent something the transfer protocol does not allow.",
);
export const UpgradeError = define(
  "UpgradeError",
  RemoteProtocolError,
  "The two sides run versions of sfs that cannot talk: upgrade the older one.",
);

export const IntegrityError = define(
  "IntegrityError",
  CryptoError,
  "The received file does not match what the sender sent; it was not kept.",
);

export const SignalingError = define(
  "SignalingError",
  SfsError,
  "The signaling server failed or refused the request.",
);
export const ServerUnreachableError = define(
  "ServerUnreachableError",
  SignalingError,
  "Cannot reach the signaling server.",
);
export const ServerLostError = define(
  "ServerLostError",
  SignalingError,
  "Lost the connection to the signaling server.",
);
export const CodeNotFoundError = define(
  "CodeNotFoundError",
  SignalingError,
  "No receiver is waiting with that code. Check the code, or ask for a new one.",
);
export const CodeUsedUpError = define(
  "CodeUsedUpError",
  CodeNotFoundError,
  "That code has served every receiver its sender allowed (sfs send --many).",
);
export const RoomFullError = define(
  "RoomFullError",
  SignalingError,
  "That code is already in use by another transfer. Ask for a new one.",
);

export const PeerConnectionError = define(
  "PeerConnectionError",
  SfsError,
  "Could not connect to the other side.",
);
export const IceFailedError = define(
  "IceFailedError",
  PeerConnectionError,
  "no direct connection: ICE failed (configure a STUN/TURN server for `sfs serve`)",
);
export const PeerGoneError = define(
  "PeerGoneError",
  PeerConnectionError,
  "The other side went away before the transfer finished.",
);

export const TransferError = define(
  "TransferError",
  SfsError,
  "The transfer did not complete.",
);
export const RejectedError = define(
  "RejectedError",
  TransferError,
  "The receiver declined the transfer.",
);
export const CancelledByPeerError = define(
  "CancelledByPeerError",
  TransferError,
  "The other side cancelled the transfer.",
);
export const CancelledError = define(
  "CancelledError",
  TransferError,
  "Cancelled.", // this side's user stopped it (Python: KeyboardInterrupt)
);
export const SourceError = define(
  "SourceError",
  TransferError,
  "A file to send is missing or unreadable.",
);
export const DestinationExistsError = define(
  "DestinationExistsError",
  TransferError,
  "The destination file already exists.",
);
export const DiskError = define(
  "DiskError",
  TransferError,
  "Cannot write the received file (disk full or not writable).",
);
