// The sfs transfer protocol, sans I/O: a port of sfs/peer/protocol.py (read them side
// by side; docs/PROTOCOL.md has the full text).  Every DataChannel message is one
// frame, sealed by ./crypto.js:
//
//   [12-byte nonce = version(1) | type(1) | 0(2) | counter(8)] [AES-256-GCM ciphertext + tag]
//
// The type lives in the authenticated nonce, so chunk frames carry the raw file bytes
// and nothing else.  Control payloads are UTF-8 JSON objects.  Each direction has its
// own key and its own counter, starting at 0.
//
//   sender -> receiver              receiver -> sender
//   OFFER {v, sender, files, chunk_size}
//                                   ACCEPT {held: [offset]}  |  REJECT {reason}
//   RESUME {offsets, sha256}
//                                   START {offsets}  (only after a RESUME with an offset above 0)
//   per file, in order:
//     CHUNK <bytes> ...  (exactly `size` bytes in all)
//     FILE_DONE <32-byte SHA-256 of the file>
//                                   FILE_ACK <empty>  (after the file is verified and saved)
//   either side, at any time:  CANCEL {reason}, PING <empty>
//
// Version 3 (text, pipes, large trees): OFFER carries only a header and the files
// follow in one LISTING; a control payload too large for one frame travels as MORE
// frames and then its own frame; ACCEPT, RESUME and START list only the files whose
// offset is above 0; a FILE_ACK may carry a count.  ZCHUNK (zstd) needs an ACCEPT with
// "zstd": true, which the page never sends, so it refuses every ZCHUNK.
//
// States:
//
//   sender:   IDLE -OFFER-> OFFERED -ACCEPT-> ACCEPTED -RESUME-> SENDING
//             (or ACCEPTED -RESUME with an offset above 0-> CONFIRMING -START-> SENDING)
//             -last FILE_DONE-> AWAITING_ACKS -last FILE_ACK-> DONE
//   receiver: IDLE -OFFER-> DECIDING -ACCEPT-> ACCEPTED -RESUME-> RECEIVING
//             (version 3: IDLE -OFFER (header)-> LISTING -LISTING-> DECIDING)
//             -last FILE_DONE-> AWAITING_ACKS -last FILE_ACK-> DONE
//   both:     REJECT or CANCEL (sent or received) -> CLOSED
//
// One difference from Python, forced by WebCrypto being asynchronous: sealing and
// opening return promises.  send()/sendFrames() check the event and change the state
// at once (throwing LocalProtocolError there and then) and return a promise of the sealed
// frame(s); frames are numbered, and their promises settle, in call order.
// receive(frame) opens the frame and then runs the state machine; call it for one
// frame at a time, awaiting each, in the order the frames arrived.

import { FRAME_OVERHEAD_BYTES, FrameOpener, FrameSealer } from "./crypto.js";
import { LocalProtocolError, RemoteProtocolError, UpgradeError } from "./errors.js";
import {
  codePoints,
  encodeJson,
  isWellFormed,
  JsonError,
  JsonFloat,
  parseJson,
} from "./json.js";

/** The newest version this side speaks (it writes the oldest that carries an offer). */
export const PROTOCOL_VERSION = 3;
/** The largest DataChannel message aiortc and browsers accept (a=max-message-size). */
export const MAX_MESSAGE_BYTES = 262_144;
export const MAX_CHUNK_BYTES = MAX_MESSAGE_BYTES - FRAME_OVERHEAD_BYTES;
/** Frames of exactly 64 KiB, as the command line sends them. */
export const DEFAULT_CHUNK_BYTES = 64 * 1024 - FRAME_OVERHEAD_BYTES;
export const MAX_CONTROL_BYTES = 192 * 1024;
/** Version 3: the most a control payload joined from MORE pieces may hold. */
export const MAX_JOINED_CONTROL_BYTES = 32 * 1024 * 1024;
export const MAX_FILES = 1000;
export const MAX_ENTRIES = 100_000;
export const MAX_TEXT_BYTES = 1024 * 1024;
export const MAX_OFFERED_NAME_CHARS = 4096;
export const MAX_SENDER_NAME_CHARS = 64;
export const MAX_REASON_CHARS = 200;
/** Python's limit (2**63 - 1); a file above 2**53 is refused here, see decodeFile. */
export const MAX_FILE_BYTES = 2n ** 63n - 1n;
export const SHA256_BYTES = 32;
export const MAX_FOLDERS = 10_000;
export const MAX_PATH_DEPTH = 64;
const MIN_MTIME_NS = -(2n ** 63n);
const MAX_MTIME_NS = 2n ** 63n - 1n;

export const FrameType = Object.freeze({
  OFFER: 1,
  ACCEPT: 2,
  REJECT: 3,
  CHUNK: 4,
  FILE_DONE: 5,
  FILE_ACK: 6,
  CANCEL: 7,
  RESUME: 8,
  PING: 9,
  START: 10,
  MORE: 11,
  LISTING: 12,
  ZCHUNK: 13,
});
const TYPE_NAMES = Object.fromEntries(Object.entries(FrameType).map(([k, v]) => [v, k]));
/** Frames that are not control payloads: they never end a run of MORE pieces. */
const DATA_FRAMES = new Set([FrameType.CHUNK, FrameType.ZCHUNK, FrameType.PING, FrameType.MORE]);

export const Role = Object.freeze({ SENDER: "sender", RECEIVER: "receiver" });

export const State = Object.freeze({
  IDLE: "idle",
  OFFERED: "offered",
  LISTING: "listing", // receiver, version 3: the header is in, the files are due
  DECIDING: "deciding",
  ACCEPTED: "accepted",
  CONFIRMING: "confirming",
  SENDING: "sending",
  RECEIVING: "receiving",
  AWAITING_ACKS: "awaiting_acks",
  DONE: "done",
  CLOSED: "closed",
});

// -- events -------------------------------------------------------------------------------

/**
 * One offered file.  `size` is a number (bytes); `mtimeNs` a bigint; `folder` the
 * folders it is in, inside the transfer (v2); `stream` a pipe of unknown size (v3),
 * whose `size` is 0 and means nothing.
 */
export class FileInfo {
  constructor({ name, size, mtimeNs = 0n, folder = [], executable = false, stream = false }) {
    Object.assign(this, { name, size, mtimeNs: BigInt(mtimeNs), folder, executable, stream });
    Object.freeze(this);
  }
}

export class Offer {
  /** `resumes` false: the sender cannot continue an interrupted transfer (a client that
   * does not resume; the page does, since issue 27). */
  constructor({
    files,
    sender = "",
    chunkSize = DEFAULT_CHUNK_BYTES,
    folders = [],
    text = false,
    resumes = true,
  }) {
    Object.assign(this, { files, sender, chunkSize, folders, text, resumes });
    Object.freeze(this);
  }

  get totalSize() {
    return this.files.reduce((sum, f) => sum + f.size, 0);
  }

  get stream() {
    return this.files.some((f) => f.stream);
  }

  /** The oldest protocol version that carries this offer. */
  get version() {
    if (
      this.text ||
      this.stream ||
      this.files.length > MAX_FILES ||
      this.folders.length > MAX_FOLDERS ||
      utf8Length(encodeJson(offerObject(this, 2))) > MAX_CONTROL_BYTES
    ) {
      return 3;
    }
    if (this.folders.length || this.files.some((f) => f.folder.length || f.executable)) return 2;
    return 1;
  }
}

/** Per offered file (or none at all): how many of its first bytes the receiver holds. */
export class Accept {
  constructor(held = [], zstd = false) {
    Object.assign(this, { held, zstd });
    Object.freeze(this);
  }
}

/** Where the sender proposes to start each file, with the SHA-256 of its prefix. */
export class Resume {
  constructor(offsets, sha256 = []) {
    Object.assign(this, { offsets, sha256 });
    Object.freeze(this);
  }
}

/** Where each file really starts (only after a RESUME with an offset above 0). */
export class Start {
  constructor(offsets) {
    this.offsets = offsets;
    Object.freeze(this);
  }
}

/** Keepalive: proves the peer is still there while nothing else moves. */
export class Ping {}

/** The receiver's no: words for a person, a code (sfs/peer/proto/reasons.py) for a program. */
export class Reject {
  constructor(reason = "declined", code = "") {
    this.reason = reason;
    this.code = code;
    Object.freeze(this);
  }
}

/** File bytes (a Uint8Array). */
export class Chunk {
  constructor(data) {
    this.data = data;
    Object.freeze(this);
  }
}

/** A piece of a control payload (MORE) came in: nothing for the caller yet. */
export class Partial {}

export class FileDone {
  constructor(sha256) {
    this.sha256 = sha256;
    Object.freeze(this);
  }
}

/** The receiver verified and saved the next `count` files (more than one only in v3). */
export class FileAck {
  constructor(count = 1) {
    this.count = count;
    Object.freeze(this);
  }
}

/** Either side stops: words for a person, a code for a program ("" from older peers). */
export class Cancel {
  constructor(reason = "cancelled", code = "") {
    this.reason = reason;
    this.code = code;
    Object.freeze(this);
  }
}

// -- payload codecs -----------------------------------------------------------------------

const textEncoder = new TextEncoder();
// fatal: invalid UTF-8 is an error, as bytes.decode("utf-8") is; ignoreBOM: a BOM stays
// in the text, where the JSON parser refuses it as Python's does.
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function utf8Length(text) {
  return textEncoder.encode(text).length;
}

function describe(value) {
  if (typeof value === "string") return JSON.stringify(value.slice(0, 40));
  if (value instanceof JsonFloat) return String(value.value);
  if (value === undefined) return "None";
  if (typeof value === "object" && value !== null) return Array.isArray(value) ? "list" : "dict";
  return String(value);
}

function encodeJsonBytes(obj) {
  const text = encodeJson(obj);
  if (!isWellFormed(text)) {
    // A lone surrogate (a name that is not text): Python refuses to encode it too.
    throw new LocalProtocolError("a name or reason to send is not valid Unicode");
  }
  return textEncoder.encode(text);
}

function decodeJson(payload, limit = MAX_CONTROL_BYTES) {
  if (payload.length > limit) {
    throw new RemoteProtocolError(`control frame too large (${payload.length} bytes)`);
  }
  let obj;
  try {
    obj = parseJson(textDecoder.decode(payload));
  } catch (error) {
    if (error instanceof JsonError || error instanceof TypeError) {
      throw new RemoteProtocolError("control frame is not valid JSON", { cause: error });
    }
    throw error;
  }
  if (!isObject(obj)) throw new RemoteProtocolError("control frame is not a JSON object");
  return obj;
}

const isObject = (v) =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof JsonFloat);
// An integer from the JSON parser (number or bigint); never a boolean or a float.
const isInt = (v) => (typeof v === "number" && Number.isInteger(v)) || typeof v === "bigint";
const get = (obj, key, fallback) => (Object.hasOwn(obj, key) ? obj[key] : fallback);

/** A field that must be an integer from low to high (bigints); returns a bigint. */
function intField(obj, key, low, high) {
  const value = get(obj, key, undefined);
  if (!isInt(value) || BigInt(value) < low || BigInt(value) > high) {
    throw new RemoteProtocolError(`field '${key}' must be an integer from ${low} to ${high}`);
  }
  return BigInt(value);
}

function boolField(obj, key, fallback = false) {
  const value = get(obj, key, fallback);
  if (typeof value !== "boolean") {
    throw new RemoteProtocolError(`field '${key}' must be true or false`);
  }
  return value;
}

function strField(obj, key, maxChars, fallback) {
  const value = get(obj, key, fallback);
  if (typeof value !== "string" || (value.length > maxChars && codePoints(value) > maxChars)) {
    throw new RemoteProtocolError(`field '${key}' must be a string of at most ${maxChars} chars`);
  }
  // JSON may carry lone surrogates ("\ud800"): not text.
  if (!isWellFormed(value)) throw new RemoteProtocolError(`field '${key}' is not valid Unicode`);
  return value;
}

// Offsets above 2**53 cannot be exact here; they exceed every file this page can
// hold, so the checks that follow (offset <= size, offset in (0, held)) refuse them.
const toNumber = (v) => (typeof v === "bigint" ? Number(v) : v);

function intList(obj, key, fallback) {
  const value = get(obj, key, fallback);
  if (!Array.isArray(value) || !value.every(isInt)) {
    throw new RemoteProtocolError(`field '${key}' must be a list of integers`);
  }
  return value.map(toNumber);
}

const HEX_DIGEST = /^[0-9a-f]{64}$/;

/** One SHA-256 digest in lowercase hex; "" for none (an empty Uint8Array). */
function hexDigest(text, key) {
  if (text === "") return new Uint8Array(0);
  if (typeof text === "string" && HEX_DIGEST.test(text)) return hexToBytes(text);
  throw new RemoteProtocolError(`field '${key}' must be a list of hex SHA-256 digests`);
}

function digestList(obj, key) {
  const value = get(obj, key, []);
  if (!Array.isArray(value)) {
    throw new RemoteProtocolError(`field '${key}' must be a list of hex SHA-256 digests`);
  }
  return value.map((text) => hexDigest(text, key));
}

function hexToBytes(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
  return out;
}

function bytesToHex(data) {
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Version 3's per-file offsets: [index, offset(, hex)] for each file above 0. */
function sparse(offsets, digests = []) {
  const rows = [];
  offsets.forEach((offset, i) => {
    if (offset) rows.push(digests.length ? [i, offset, bytesToHex(digests[i])] : [i, offset]);
  });
  return rows;
}

/** Per-file offsets (and digests) from version 3's sparse rows; others are at 0. */
function dense(obj, key, count, { digests = false } = {}) {
  const rows = get(obj, key, []);
  if (!Array.isArray(rows) || rows.length > count) {
    throw new RemoteProtocolError(`field '${key}' must be a list of [index, offset] rows`);
  }
  const offsets = new Array(count).fill(0);
  const hashes = new Array(count).fill(new Uint8Array(0));
  let last = -1;
  const width = digests ? 3 : 2;
  for (const row of rows) {
    if (
      !Array.isArray(row) ||
      row.length !== width ||
      !row.slice(0, 2).every(isInt) ||
      !(last < row[0] && row[0] < count) ||
      !(row[1] > 0 && BigInt(row[1]) <= MAX_FILE_BYTES)
    ) {
      throw new RemoteProtocolError(
        `field '${key}' must list files in order, each once, with an offset above 0`,
      );
    }
    last = toNumber(row[0]);
    offsets[last] = toNumber(row[1]);
    if (digests) {
      hashes[last] = hexDigest(row[2], key);
      if (!hashes[last].length) {
        throw new RemoteProtocolError(`field '${key}' needs a SHA-256 for each offset`);
      }
    }
  }
  return [offsets, digests && rows.length ? hashes : []];
}

/** The payload of a REJECT or CANCEL we send; refuse what the peer would refuse. */
function reasonPayload(reason, code = "") {
  if (codePoints(reason) > MAX_REASON_CHARS) {
    throw new LocalProtocolError(`a reason is at most ${MAX_REASON_CHARS} characters`);
  }
  if (code && !CODE_RE.test(code)) {
    throw new LocalProtocolError(`a code matches ${CODE_PATTERN}, not ${JSON.stringify(code)}`);
  }
  return encodeJsonBytes(code ? { reason, code } : { reason });
}

/** What a CANCEL's or REJECT's "code" may be: a short ASCII token. */
export const CODE_PATTERN = "^[a-z][a-z0-9-]{0,31}$";
const CODE_RE = new RegExp(CODE_PATTERN);

/** The peer's code, or "": a malformed one is ignored, as in sfs/peer/proto/wire.py. */
function codeField(obj) {
  const value = get(obj, "code", "");
  return typeof value === "string" && CODE_RE.test(value) ? value : "";
}

function fileObject(info, version) {
  const entry = { name: info.name, size: info.stream ? null : info.size, mtime_ns: info.mtimeNs };
  if (version >= 2) {
    entry.folder = [...info.folder];
    entry.x = info.executable;
  }
  return entry;
}

/** A whole offer of version 1 or 2, as one JSON object. */
function offerObject(offer, version) {
  const obj = {
    v: version,
    sender: offer.sender,
    chunk_size: offer.chunkSize,
    files: offer.files.map((f) => fileObject(f, version)),
  };
  if (version >= 2) obj.folders = offer.folders.map((folder) => [...folder]);
  if (!offer.resumes) obj.resumes = false;
  return obj;
}

/** The OFFER payload: the whole offer (versions 1 and 2), or its header (3). */
export function encodeOffer(offer) {
  const version = offer.version;
  if (version < 3) return encodeJsonBytes(offerObject(offer, version));
  const header = { v: 3, sender: offer.sender, chunk_size: offer.chunkSize, text: offer.text };
  if (!offer.resumes) header.resumes = false;
  return encodeJsonBytes(header);
}

/** The LISTING payload of a version 3 offer: its files and folders. */
export function encodeListing(offer) {
  return encodeJsonBytes({
    files: offer.files.map((f) => fileObject(f, 3)),
    folders: offer.folders.map((folder) => [...folder]),
  });
}

function pathField(obj, key) {
  const value = get(obj, key, []);
  if (!Array.isArray(value) || value.length > MAX_PATH_DEPTH) {
    throw new RemoteProtocolError(
      `field '${key}' must be a list of at most ${MAX_PATH_DEPTH} names`,
    );
  }
  return value.map((part) => strField({ part }, "part", MAX_OFFERED_NAME_CHARS));
}

// Python's `version in (1, 2, 3)` is true for 1.0 and for true as well: the same here,
// so the page reads every offer the command line reads.
function versionNumber(value) {
  if (isInt(value)) return BigInt(value);
  if (value instanceof JsonFloat && Number.isInteger(value.value)) return BigInt(value.value);
  if (typeof value === "boolean") return value ? 1n : 0n;
  return null;
}

/**
 * The version an OFFER payload is written in; a newer one says to upgrade.
 * @throws {RemoteProtocolError} not an offer sfs can read (UpgradeError: a newer one).
 */
export function offerVersion(payload) {
  const obj = decodeJson(payload);
  const version = get(obj, "v", undefined);
  if (isInt(version) && BigInt(version) > BigInt(PROTOCOL_VERSION)) {
    throw new UpgradeError(
      `the other side runs a newer sfs (protocol ${version}; this page speaks up to ` +
        `${PROTOCOL_VERSION}): use the sfs command line, or a newer sfs serve`,
    );
  }
  const number = versionNumber(version);
  if (number === null || number < 1n || number > 3n) {
    throw new RemoteProtocolError(
      `the other side speaks sfs protocol ${describe(version)}, not 1 to 3`,
    );
  }
  return Number(number);
}

function decodeFile(entry, version) {
  if (!isObject(entry)) throw new RemoteProtocolError("a file entry is not a JSON object");
  const stream = version >= 3 && get(entry, "size", 0) === null;
  const name = strField(entry, "name", MAX_OFFERED_NAME_CHARS);
  const size = stream ? 0n : intField(entry, "size", 0n, MAX_FILE_BYTES);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
    // Legal for sfs (up to 2**63 - 1), but more than JavaScript counts exactly.
    throw new RemoteProtocolError("a file of more than 9 PB: too large for the web page");
  }
  return new FileInfo({
    name,
    size: Number(size),
    mtimeNs: intField(entry, "mtime_ns", MIN_MTIME_NS, MAX_MTIME_NS),
    folder: version >= 2 ? pathField(entry, "folder") : [],
    executable: version >= 2 ? boolField(entry, "x") : false,
    stream,
  });
}

/**
 * The offer in an OFFER payload (and, for version 3, its LISTING payload).
 * @throws {RemoteProtocolError} anything an offer may not be.
 */
export function decodeOffer(payload, listing = null) {
  const version = offerVersion(payload);
  const obj = decodeJson(payload);
  let body, maxFiles, maxFolders;
  if (version === 3) {
    if (listing === null) {
      throw new RemoteProtocolError("a version 3 offer lists its files in a LISTING");
    }
    body = decodeJson(listing, MAX_JOINED_CONTROL_BYTES);
    [maxFiles, maxFolders] = [MAX_ENTRIES, MAX_ENTRIES];
  } else {
    body = obj;
    [maxFiles, maxFolders] = [MAX_FILES, MAX_FOLDERS];
  }
  const filesObj = get(body, "files", undefined);
  if (!Array.isArray(filesObj) || !(filesObj.length >= 1 && filesObj.length <= maxFiles)) {
    throw new RemoteProtocolError(`an offer lists 1 to ${maxFiles} files`);
  }
  const foldersObj = version >= 2 ? get(body, "folders", []) : [];
  if (!Array.isArray(foldersObj) || foldersObj.length > maxFolders) {
    throw new RemoteProtocolError(`an offer lists at most ${maxFolders} folders`);
  }
  if (filesObj.length + foldersObj.length > MAX_ENTRIES) {
    throw new RemoteProtocolError(`an offer lists at most ${MAX_ENTRIES} files and folders`);
  }
  const files = filesObj.map((entry) => decodeFile(entry, version));
  const folders = foldersObj.map((f) => pathField({ folder: f }, "folder"));
  if (folders.some((folder) => !folder.length)) {
    throw new RemoteProtocolError("an offered folder has no name");
  }
  const text = version >= 3 && boolField(obj, "text");
  const offer = new Offer({
    files,
    sender: strField(obj, "sender", MAX_SENDER_NAME_CHARS, ""),
    chunkSize: Number(intField(obj, "chunk_size", 1n, BigInt(MAX_CHUNK_BYTES))),
    folders,
    text,
    resumes: boolField(obj, "resumes", true),
  });
  checkKind(offer, RemoteProtocolError);
  return offer;
}

/** A text message or a pipe comes alone. */
function checkKind(offer, ErrorClass) {
  if ((offer.text || offer.stream) && (offer.files.length !== 1 || offer.folders.length)) {
    throw new ErrorClass("a text message or a pipe is offered alone");
  }
  if (offer.text && (offer.stream || offer.files[0].size > MAX_TEXT_BYTES)) {
    throw new ErrorClass(`a text message is at most ${MAX_TEXT_BYTES} bytes (more is a file)`);
  }
}

function joinBytes(parts, total) {
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const EMPTY = new Uint8Array(0);
const isExactInt = (v) => typeof v === "number" && Number.isSafeInteger(v);

// -- the state machine ----------------------------------------------------------------------

/**
 * One side of a transfer: turns events into sealed frames and frames into events.
 *
 * @param {"sender"|"receiver"} role
 * @param {import("./crypto.js").SessionKeys} keys  the session keys from the key exchange
 * @param {object} [options]
 * @param {number} [options.maxFrameBytes]  the largest frame this side accepts (its
 *   advertised max-message-size)
 */
export class TransferProtocol {
  constructor(role, keys, { maxFrameBytes = MAX_MESSAGE_BYTES } = {}) {
    if (role !== Role.SENDER && role !== Role.RECEIVER) throw new TypeError(`unknown role ${role}`);
    this.role = role;
    this.state = State.IDLE;
    /** @type {Offer|null} */
    this.offer = null;
    /** The version of this session: that of the offer, once it is sent or read. */
    this.version = 0;
    /** ZCHUNK frames are allowed: the receiver said so in its ACCEPT. */
    this.zstd = false;
    this._sealer = new FrameSealer(keys.frameSend);
    this._opener = new FrameOpener(keys.frameReceive);
    this._maxFrameBytes = maxFrameBytes;
    this._fileIndex = 0; // the file whose bytes are moving now
    this._fileRemaining = 0; // null: a pipe, whose end FILE_DONE says
    this._acked = 0; // files the receiver has acknowledged
    this._held = []; // what the receiver said it holds (ACCEPT)
    this._offsets = []; // proposed by RESUME, then fixed by START
    this._header = EMPTY; // a version 3 OFFER payload, until its LISTING comes
    this._pieces = []; // MORE pieces of the next control payload
    this._piecesBytes = 0;
    /** Logs `old -> new` (tests and debugging); the page passes none. */
    this.onStateChange = null;
  }

  get fileIndex() {
    return this._fileIndex;
  }

  /** Bytes of the current file still due (null: a pipe). */
  get fileRemaining() {
    return this._fileRemaining;
  }

  /**
   * The sealed frame for `event`.  Throws LocalProtocolError at once if it is not allowed
   * now, or if it takes more than one frame (use sendFrames).
   * @returns {Promise<Uint8Array>}
   */
  send(event) {
    if (event instanceof Chunk) return this._sendChunk(event); // the hot path first
    const frames = this.sendFrames(event);
    if (frames.length !== 1) {
      throw new TypeError(`${event.constructor.name} takes ${frames.length} frames: sendFrames()`);
    }
    return frames[0];
  }

  /**
   * The sealed frames for `event`, in order: one, or (version 3) a large control
   * payload as MORE pieces and its own frame; a version 3 offer is its OFFER and LISTING.
   * Throws LocalProtocolError at once when not allowed now (nothing is sealed then).
   * @returns {Promise<Uint8Array>[]}  one promise per frame, settling in order
   */
  sendFrames(event) {
    if (event instanceof Chunk) return [this._sendChunk(event)];
    if (event instanceof Ping) {
      this._require(this.state !== State.CLOSED, event);
      return [this._seal(FrameType.PING, EMPTY)];
    }
    if (event instanceof Cancel) {
      this._require(this.state !== State.CLOSED, event);
      const payload = reasonPayload(event.reason, event.code);
      const frames = this._control(FrameType.CANCEL, payload);
      this._setState(State.CLOSED);
      return frames;
    }
    if (this.role === Role.SENDER) return this._senderSend(event);
    return this._receiverSend(event);
  }

  /**
   * Open one frame from the peer and return its event.
   * @param {Uint8Array|ArrayBuffer} frame
   * @returns {Promise<object>} rejects with CryptoError (forged, damaged, reordered or
   *   replayed) or RemoteProtocolError (well sealed but not allowed here)
   */
  /** A frame has arrived that receive() will get later: start decrypting it now. */
  warm(frame) {
    if (this.state !== State.CLOSED && frame.byteLength <= this._maxFrameBytes) {
      this._opener.warm(frame);
    }
  }

  async receive(frame) {
    if (this.state === State.CLOSED) {
      throw new RemoteProtocolError("frame received after the transfer was closed");
    }
    const length = frame.byteLength;
    if (length > this._maxFrameBytes) {
      throw new RemoteProtocolError(
        `frame of ${length} bytes exceeds the limit of ${this._maxFrameBytes}`,
      );
    }
    const [frameType, payload] = await this._opener.open(frame);
    return this._handle(frameType, payload);
  }

  _handle(frameType, payload) {
    const kind = frameType;
    if (TYPE_NAMES[kind] === undefined) {
      throw new RemoteProtocolError(`unknown frame type ${frameType}`);
    }
    if (kind === FrameType.MORE) {
      if (this.version < 3) throw new RemoteProtocolError("MORE frame outside a version 3 session");
      if (this._piecesBytes + payload.length > MAX_JOINED_CONTROL_BYTES) {
        throw new RemoteProtocolError("a control payload in MORE pieces is too large");
      }
      this._pieces.push(payload);
      this._piecesBytes += payload.length;
      return new Partial();
    }
    if (kind === FrameType.PING) {
      // May come between pieces: the keepalive runs apart.
      if (payload.length) throw new RemoteProtocolError("PING carries nothing");
      return new Ping();
    }
    if (!DATA_FRAMES.has(kind) && this._pieces.length) {
      payload = joinBytes([...this._pieces, payload], this._piecesBytes + payload.length);
      this._pieces = [];
      this._piecesBytes = 0;
    } else if (this._pieces.length) {
      throw new RemoteProtocolError(
        `${TYPE_NAMES[kind]} frame in the middle of a control payload`,
      );
    }
    if (kind === FrameType.CANCEL) {
      const obj = this._json(payload);
      const reason = strField(obj, "reason", MAX_REASON_CHARS, "cancelled");
      this._setState(State.CLOSED);
      return new Cancel(reason, codeField(obj));
    }
    if (this.role === Role.SENDER) return this._senderReceive(kind, payload);
    return this._receiverReceive(kind, payload);
  }

  // -- sender side --

  _senderSend(event) {
    if (event instanceof Offer) {
      this._require(this.state === State.IDLE, event);
      checkKind(event, LocalProtocolError);
      const version = event.version;
      const most = version >= 3 ? MAX_ENTRIES : MAX_FILES;
      if (!(event.files.length >= 1 && event.files.length <= most)) {
        throw new LocalProtocolError(`an offer lists 1 to ${MAX_ENTRIES} files`);
      }
      const size = event.chunkSize;
      if (!(isExactInt(size) && size >= 1 && size <= MAX_CHUNK_BYTES)) {
        throw new LocalProtocolError(`chunk size must be 1 to ${MAX_CHUNK_BYTES} bytes`);
      }
      const payload = encodeOffer(event);
      const listing = version >= 3 ? encodeListing(event) : null;
      try {
        // The receiver's own check: fail here, not after the peer refuses.
        decodeOffer(payload, listing);
      } catch (error) {
        if (error instanceof RemoteProtocolError) {
          throw new LocalProtocolError(`the receiver would refuse this offer: ${error.message}`, {
            cause: error,
          });
        }
        throw error;
      }
      this.offer = event;
      this.version = version;
      const frames = [this._seal(FrameType.OFFER, payload)];
      if (listing !== null) frames.push(...this._control(FrameType.LISTING, listing));
      this._setState(State.OFFERED);
      return frames;
    }
    if (event instanceof Resume) {
      this._require(this.state === State.ACCEPTED, event);
      this._checkResume(event, LocalProtocolError);
      let obj;
      if (this.version >= 3) {
        obj = { offsets: sparse(event.offsets, event.sha256) };
      } else {
        obj = { offsets: [...event.offsets] };
        if (event.sha256.length) obj.sha256 = event.sha256.map(bytesToHex);
      }
      const frames = this._control(FrameType.RESUME, encodeJsonBytes(obj));
      this._resumed(event.offsets);
      return frames;
    }
    if (event instanceof FileDone) {
      this._require(this.state === State.SENDING && !this._fileRemaining, event);
      if (event.sha256.length !== SHA256_BYTES) {
        throw new LocalProtocolError("FILE_DONE carries a 32-byte SHA-256");
      }
      const frame = this._seal(FrameType.FILE_DONE, event.sha256);
      this._nextFile();
      return [frame];
    }
    throw new LocalProtocolError(`a sender cannot send ${event.constructor.name}`);
  }

  _sendChunk(chunk) {
    if (this.role !== Role.SENDER || this.state !== State.SENDING) {
      throw new LocalProtocolError(`cannot send a chunk in state ${this.state}`);
    }
    const size = chunk.data.length;
    const chunkSize = this.offer.chunkSize;
    const remaining = this._fileRemaining === null ? chunkSize : this._fileRemaining;
    if (!(size > 0 && size <= Math.min(remaining, chunkSize))) {
      throw new LocalProtocolError(
        `chunk of ${size} bytes does not fit (${remaining} bytes left, chunk size ${chunkSize})`,
      );
    }
    if (this._fileRemaining !== null) this._fileRemaining -= size;
    return this._sealer.seal(FrameType.CHUNK, chunk.data);
  }

  _senderReceive(kind, payload) {
    if (kind === FrameType.ACCEPT && this.state === State.OFFERED) {
      const obj = this._json(payload);
      let held;
      if (this.version >= 3) {
        [held] = dense(obj, "held", this.offer.files.length);
        if (!held.some(Boolean)) held = [];
      } else {
        held = intList(obj, "held", []); // no "held" at all: a receiver that resumes nothing
      }
      this._checkHeld(held, RemoteProtocolError);
      this._held = held;
      this.zstd = boolField(obj, "zstd");
      this._setState(State.ACCEPTED);
      return new Accept(held, this.zstd);
    }
    if (kind === FrameType.START && this.state === State.CONFIRMING) {
      const offsets = this._readOffsets(this._json(payload));
      this._checkStart(offsets, RemoteProtocolError);
      this._start(offsets);
      return new Start(offsets);
    }
    if (kind === FrameType.REJECT && this.state === State.OFFERED) {
      const obj = this._json(payload);
      const reason = strField(obj, "reason", MAX_REASON_CHARS, "declined");
      this._setState(State.CLOSED);
      return new Reject(reason, codeField(obj));
    }
    if (
      kind === FrameType.FILE_ACK &&
      (this.state === State.SENDING || this.state === State.AWAITING_ACKS)
    ) {
      let count = 1;
      if (this.version >= 3 && payload.length === 4) {
        count = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
      } else if (payload.length) {
        throw new RemoteProtocolError("FILE_ACK carries nothing, or a count in version 3");
      }
      if (!(count > 0 && count <= this._fileIndex - this._acked)) {
        throw new RemoteProtocolError("acknowledgement for a file that was not sent");
      }
      this._acked += count;
      if (this._acked === this.offer.files.length) this._setState(State.DONE);
      return new FileAck(count);
    }
    throw new RemoteProtocolError(`unexpected ${TYPE_NAMES[kind]} frame in state ${this.state}`);
  }

  // -- receiver side --

  _receiverSend(event) {
    if (event instanceof Accept) {
      this._require(this.state === State.DECIDING, event);
      this._checkHeld(event.held, LocalProtocolError);
      const obj = { held: this.version >= 3 ? sparse(event.held) : [...event.held] };
      if (event.zstd) obj.zstd = true;
      const frames = this._control(FrameType.ACCEPT, encodeJsonBytes(obj));
      this._held = event.held;
      this.zstd = event.zstd;
      this._setState(State.ACCEPTED);
      return frames;
    }
    if (event instanceof Start) {
      this._require(this.state === State.CONFIRMING, event);
      this._checkStart(event.offsets, LocalProtocolError);
      const offsets = this.version >= 3 ? sparse(event.offsets) : [...event.offsets];
      const frames = this._control(FrameType.START, encodeJsonBytes({ offsets }));
      this._start(event.offsets);
      return frames;
    }
    if (event instanceof Reject) {
      this._require(this.state === State.DECIDING, event);
      const payload = reasonPayload(event.reason, event.code);
      const frames = this._control(FrameType.REJECT, payload);
      this._setState(State.CLOSED);
      return frames;
    }
    if (event instanceof FileAck) {
      this._require(
        (this.state === State.RECEIVING || this.state === State.AWAITING_ACKS) &&
          isExactInt(event.count) &&
          event.count > 0 &&
          event.count <= this._fileIndex - this._acked,
        event,
      );
      this._acked += event.count;
      if (this._acked === this.offer.files.length) this._setState(State.DONE);
      if (this.version >= 3) {
        // One frame for a whole batch.
        let payload = EMPTY;
        if (event.count > 1) {
          payload = new Uint8Array(4);
          new DataView(payload.buffer).setUint32(0, event.count);
        }
        return [this._seal(FrameType.FILE_ACK, payload)];
      }
      return Array.from({ length: event.count }, () => this._seal(FrameType.FILE_ACK, EMPTY));
    }
    throw new LocalProtocolError(`a receiver cannot send ${event.constructor.name}`);
  }

  _receiverReceive(kind, payload) {
    if (
      (kind === FrameType.CHUNK || kind === FrameType.ZCHUNK) &&
      this.state === State.RECEIVING
    ) {
      if (kind === FrameType.ZCHUNK) {
        // The page never says "zstd" in its ACCEPT, so no sender may compress.
        throw new RemoteProtocolError("a compressed chunk, though none was agreed");
      }
      if (!payload.length) throw new RemoteProtocolError("empty chunk");
      if (this._fileRemaining !== null && payload.length > this._fileRemaining) {
        throw new RemoteProtocolError("the sender sent more bytes than it declared");
      }
      if (payload.length > this.offer.chunkSize) {
        throw new RemoteProtocolError("chunk larger than the announced chunk size");
      }
      if (this._fileRemaining !== null) this._fileRemaining -= payload.length;
      return new Chunk(payload);
    }
    if (kind === FrameType.FILE_DONE && this.state === State.RECEIVING) {
      if (this._fileRemaining) {
        throw new RemoteProtocolError(
          `file ended ${this._fileRemaining} bytes short of its declared size`,
        );
      }
      if (payload.length !== SHA256_BYTES) {
        throw new RemoteProtocolError("FILE_DONE must carry a 32-byte SHA-256");
      }
      this._nextFile();
      return new FileDone(payload);
    }
    if (kind === FrameType.OFFER && this.state === State.IDLE) {
      const version = offerVersion(payload);
      if (version >= 3) {
        this.version = version;
        this._header = payload;
        this._setState(State.LISTING);
        return new Partial();
      }
      this.offer = decodeOffer(payload);
      this.version = version;
      this._setState(State.DECIDING);
      return this.offer;
    }
    if (kind === FrameType.LISTING && this.state === State.LISTING) {
      this.offer = decodeOffer(this._header, payload);
      this._header = EMPTY;
      this._setState(State.DECIDING);
      return this.offer;
    }
    if (kind === FrameType.RESUME && this.state === State.ACCEPTED) {
      const obj = this._json(payload);
      let resume;
      if (this.version >= 3) {
        resume = new Resume(...dense(obj, "offsets", this.offer.files.length, { digests: true }));
      } else {
        resume = new Resume(intList(obj, "offsets", undefined), digestList(obj, "sha256"));
      }
      this._checkResume(resume, RemoteProtocolError);
      this._resumed(resume.offsets);
      return resume;
    }
    throw new RemoteProtocolError(`unexpected ${TYPE_NAMES[kind]} frame in state ${this.state}`);
  }

  // -- helpers --

  /** A control payload: joined from MORE pieces in version 3, so larger. */
  _json(payload) {
    return decodeJson(payload, this.version >= 3 ? MAX_JOINED_CONTROL_BYTES : MAX_CONTROL_BYTES);
  }

  _readOffsets(obj) {
    if (this.version >= 3) return dense(obj, "offsets", this.offer.files.length)[0];
    return intList(obj, "offsets", undefined);
  }

  _checkHeld(held, ErrorClass) {
    if (held.length && held.length !== this.offer.files.length) {
      throw new ErrorClass("one held offset per offered file, or none");
    }
    held.forEach((offset, i) => {
      if (!isExactInt(offset) || !(offset >= 0 && offset <= this.offer.files[i].size)) {
        throw new ErrorClass("a held offset must be from 0 to the file's size");
      }
    });
  }

  /** Each file starts at 0, or where the receiver holds data, with a SHA-256. */
  _checkResume(resume, ErrorClass) {
    const offsets = resume.offsets;
    if (offsets.length !== this.offer.files.length) {
      throw new ErrorClass("one resume offset per offered file");
    }
    offsets.forEach((offset, i) => {
      const held = this._held.length ? this._held[i] : 0;
      if (!isExactInt(offset) || (offset !== 0 && offset !== held)) {
        throw new ErrorClass(
          `resume offset ${offset} for file ${i} is not what the receiver holds`,
        );
      }
    });
    if (!resume.sha256.length && !offsets.some(Boolean)) return;
    if (
      resume.sha256.length !== offsets.length ||
      offsets.some((offset, i) => resume.sha256[i].length !== (offset ? SHA256_BYTES : 0))
    ) {
      throw new ErrorClass("RESUME carries a SHA-256 for each offset above 0, and none for 0");
    }
  }

  _checkStart(offsets, ErrorClass) {
    if (offsets.length !== this._offsets.length) {
      throw new ErrorClass("one start offset per offered file");
    }
    offsets.forEach((offset, i) => {
      if (!isExactInt(offset) || (offset !== 0 && offset !== this._offsets[i])) {
        throw new ErrorClass(`start offset ${offset} for file ${i} was not proposed`);
      }
    });
  }

  /** After RESUME: start now, or first hear (or say) whether the prefixes match. */
  _resumed(offsets) {
    if (offsets.some(Boolean)) {
      this._offsets = offsets;
      this._setState(State.CONFIRMING);
    } else {
      this._start(offsets);
    }
  }

  _start(offsets) {
    this._offsets = offsets;
    this._fileIndex = -1;
    this._nextFile();
  }

  _nextFile() {
    this._fileIndex += 1;
    if (this._fileIndex < this.offer.files.length) {
      const info = this.offer.files[this._fileIndex];
      this._fileRemaining = info.stream ? null : info.size - this._offsets[this._fileIndex];
      this._setState(this.role === Role.SENDER ? State.SENDING : State.RECEIVING);
    } else {
      this._fileRemaining = 0;
      this._setState(State.AWAITING_ACKS);
    }
  }

  _seal(kind, payload) {
    return this._sealer.seal(kind, payload);
  }

  /** One control payload as frames: MORE pieces first when too large for one (v3). */
  _control(kind, payload) {
    if (payload.length <= MAX_CONTROL_BYTES) return [this._seal(kind, payload)];
    if (this.version < 3) {
      throw new LocalProtocolError(`a control frame of ${payload.length} bytes does not fit`);
    }
    if (payload.length > MAX_JOINED_CONTROL_BYTES) {
      throw new LocalProtocolError(`a control payload of ${payload.length} bytes is too large`);
    }
    const frames = [];
    let at = 0;
    for (; at + MAX_CONTROL_BYTES < payload.length; at += MAX_CONTROL_BYTES) {
      frames.push(this._seal(FrameType.MORE, payload.subarray(at, at + MAX_CONTROL_BYTES)));
    }
    frames.push(this._seal(kind, payload.subarray(at)));
    return frames;
  }

  _require(allowed, event) {
    if (!allowed) {
      throw new LocalProtocolError(`cannot send ${event.constructor.name} in state ${this.state}`);
    }
  }

  _setState(state) {
    if (state !== this.state) {
      const old = this.state;
      this.state = state;
      if (this.onStateChange) this.onStateChange(old, state);
    }
  }
}
