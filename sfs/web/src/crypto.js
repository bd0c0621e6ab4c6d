// All of the page's cryptography: a port of sfs/peer/crypto.py that must agree with
// it byte for byte (tests/web_vectors.py writes the known answers that prove it).
//
// * Key agreement: SPAKE2 (./spake2.js) on the secret words of the code, with
//   identities that bind the peer ID in the code and which side printed it.
// * HKDF-SHA256 turns the SPAKE2 key into one key per purpose and direction, so no
//   two uses share a key, plus a verification string users may compare.
// * Signaling messages (offer, answer): [12 random nonce bytes][AES-256-GCM ct+tag],
//   associated data "sfs/1 signal " + kind.  Base64 is the caller's job, as in
//   Python (sfs/peer/handshake.py): these functions take and return raw bytes.
// * DataChannel frames: [12-byte nonce][AES-256-GCM ct+tag], where the nonce is the
//   header version(1) | type(1) | 0x0000 | counter(8, big-endian) and is also the
//   associated data; a receiver accepts only the next counter of its direction.
//
// AES-GCM comes from WebCrypto (browsers, and Node 20 as globalThis.crypto), which is
// asynchronous: see FrameSealer/FrameOpener for how frame order survives that.
// WebCrypto exists only in a secure context (https, or http://localhost): a page
// that `sfs serve` serves over plain http on a LAN address has none, and there the
// audited @noble/ciphers AES-GCM takes over (slower, same bytes).

import { gcm } from "@noble/ciphers/aes.js";
import { concatBytes } from "@noble/hashes/utils.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { defaultEntropy, SPAKE2_A, SPAKE2_B } from "./spake2.js";

export const PROTOCOL_VERSION = 1;
export const KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const FRAME_OVERHEAD_BYTES = NONCE_BYTES + TAG_BYTES;
export const MAX_COUNTER = 2n ** 64n - 1n;

const SPAKE2_ID_SENDER = "sfs/1 sender";
const SPAKE2_ID_RECEIVER_PREFIX = "sfs/1 receiver ";
// The sender-first flow: the sender printed the code, so its ID is the one bound.
const SPAKE2_ID_CODE_SENDER_PREFIX = "sfs/1 code sender ";
const SPAKE2_ID_RECEIVER = "sfs/1 receiver";

export const INFO_SIGNAL_SENDER = "sfs/1 signaling sender->receiver";
export const INFO_SIGNAL_RECEIVER = "sfs/1 signaling receiver->sender";
export const INFO_DATA_SENDER = "sfs/1 data sender->receiver";
export const INFO_CONTROL_RECEIVER = "sfs/1 control receiver->sender";
export const INFO_VERIFY = "sfs/1 verification";
// The direct TCP path's stream protocol, which the page speaks through a relay
// (./tcp.js): its frame keys, one proof key per role, and the relay token.
export const INFO_TCP_DATA_SENDER = "sfs/1 tcp data sender->receiver";
export const INFO_TCP_CONTROL_RECEIVER = "sfs/1 tcp control receiver->sender";
export const INFO_TCP_PROOF_SENDER = "sfs/1 tcp proof sender";
export const INFO_TCP_PROOF_RECEIVER = "sfs/1 tcp proof receiver";
export const INFO_RELAY_TOKEN = "sfs/1 relay token";
export const RELAY_TOKEN_BYTES = KEY_BYTES;
// A session that lost its connection meets again (docs/PROTOCOL.md, "Sessions that
// survive an outage"): the command line's labels, kept equal here (reconnectCode).
export const INFO_RECONNECT = "sfs/1 reconnect";
export const INFO_RENDEZVOUS = "sfs/1 reconnect rendezvous";
export const INFO_RECONNECT_PASSWORD = "sfs/1 reconnect password";

const ROLES = ["sender", "receiver"];

/** A message failed its integrity check: it was damaged or tampered with. */
export class CryptoError extends Error {
  constructor(
    message = "A message failed its integrity check: it was damaged or tampered with.",
    options,
  ) {
    super(message, options);
  }
}
CryptoError.prototype.name = "CryptoError"; // spelled out: a minifier renames classes

/** The two sides did not derive the same keys: a typo in the code, or interference. */
export class WrongCodeError extends CryptoError {
  constructor(
    message = "Wrong code: the two sides did not agree on a key (a typo, or someone interfering).",
    options,
  ) {
    super(message, options);
  }
}
WrongCodeError.prototype.name = "WrongCodeError";

// Python's str.encode("ascii"): identities, salts and labels are ASCII on the wire.
function ascii(text, name) {
  if (typeof text !== "string" || !/^[\x00-\x7f]*$/.test(text)) {
    throw new TypeError(`${name} must be an ASCII string`);
  }
  return new TextEncoder().encode(text);
}

// Accept what a DataChannel or fetch hands over (ArrayBuffer or any view) as bytes,
// without copying.
function bytes(value, name) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  throw new TypeError(`${name} must be bytes (Uint8Array or ArrayBuffer)`);
}

function checkRole(role, name) {
  if (!ROLES.includes(role)) throw new TypeError(`unknown ${name} ${JSON.stringify(role)}`);
}

/**
 * The keys of one transfer session, as seen from one side: `*Send` keys seal what
 * this side sends, `*Receive` keys open what it receives.  All keys are 32 bytes.
 * The TCP path's frame keys and proof keys (this side's role's, the other's) and
 * the relay token (the same on both sides) are there for the relay; tests that
 * build keys by hand may leave them out.
 */
export class SessionKeys {
  constructor(
    role,
    signalSend,
    signalReceive,
    frameSend,
    frameReceive,
    verifier,
    {
      tcpSend = null,
      tcpReceive = null,
      proofSend = null,
      proofReceive = null,
      relayToken = null,
      reconnect = null,
    } = {},
  ) {
    Object.assign(this, { role, signalSend, signalReceive, frameSend, frameReceive, verifier });
    Object.assign(this, { tcpSend, tcpReceive, proofSend, proofReceive, relayToken, reconnect });
    Object.freeze(this);
  }

  /**
   * These keys with the TCP path's frame keys as the frame keys (SessionKeys.over_tcp):
   * a transfer runs on one transport with one set of counters, and the two
   * transports never share a key, so no nonce is ever used twice under one key.
   */
  overTcp() {
    if (this.tcpSend === null) throw new TypeError("these keys have no TCP frame keys");
    const { tcpSend, tcpReceive, proofSend, proofReceive, relayToken, reconnect } = this;
    return new SessionKeys(
      this.role,
      this.signalSend,
      this.signalReceive,
      tcpSend,
      tcpReceive,
      this.verifier,
      { tcpSend, tcpReceive, proofSend, proofReceive, relayToken, reconnect },
    );
  }

  // Never let a key reach a log line: console.log in Node, JSON.stringify, `${keys}`.
  toString() {
    return "SessionKeys(<redacted>)";
  }
  toJSON() {
    return this.toString();
  }
  [Symbol.for("nodejs.util.inspect.custom")]() {
    return this.toString();
  }
}

/**
 * One side of the SPAKE2 exchange on the secret part of the code.
 *
 * The identities bind the peer ID of the side that printed the code, and which side
 * that was, so a code never works in the other flow (see docs/PROTOCOL.md).
 *
 * @param {object} options
 * @param {"sender"|"receiver"} options.role  sender = SPAKE2 side A, receiver = side B
 * @param {Uint8Array|string} options.password  the secret words, e.g. "tiger-lamp"
 *   (a string is UTF-8 encoded, as Python's str.encode() does)
 * @param {string} options.codeId  the peer ID in the code, e.g. "ABC-123"
 * @param {"receiver"|"sender"} [options.printedBy="receiver"]  who printed the code
 * @param {(n: number) => Uint8Array} [options.entropy]  only known-answer tests pass one
 */
export class KeyExchange {
  constructor({ role, password, codeId, printedBy = "receiver", entropy = defaultEntropy }) {
    checkRole(role, "role");
    checkRole(printedBy, "printedBy");
    const pw =
      typeof password === "string"
        ? new TextEncoder().encode(password)
        : bytes(password, "password");
    this.role = role;
    this._codeId = ascii(codeId, "codeId");
    const [idA, idB] =
      printedBy === "receiver" // the original flow: its identities are unchanged
        ? [SPAKE2_ID_SENDER, SPAKE2_ID_RECEIVER_PREFIX + codeId]
        : [SPAKE2_ID_CODE_SENDER_PREFIX + codeId, SPAKE2_ID_RECEIVER];
    const Side = role === "sender" ? SPAKE2_A : SPAKE2_B;
    this._spake = new Side(pw, { idA: ascii(idA, "idA"), idB: ascii(idB, "idB"), entropy });
    this._message = this._spake.start();
  }

  /** The 33-byte message for the other side (base64 it into `send_public_key`). */
  get message() {
    return this._message;
  }

  /**
   * Combine the other side's message into this side's SessionKeys.
   *
   * A wrong code is not detected here (SPAKE2 cannot tell); it shows when the first
   * sealed message fails to open.  The SPAKE2 state, which is derived from the
   * password, is dropped either way: an exchange is good for one attempt.
   * @param {Uint8Array|ArrayBuffer} peerMessage
   * @returns {SessionKeys}
   */
  finish(peerMessage) {
    const spake = this._spake;
    this._spake = null;
    if (spake === null) throw new Error("this key exchange has already finished");
    let pakeKey;
    try {
      pakeKey = spake.finish(bytes(peerMessage, "peerMessage"));
    } catch (error) {
      throw new WrongCodeError("the other side's key exchange message is invalid", {
        cause: error,
      });
    }
    return deriveKeys({ pakeKey, transcript: this._codeId, role: this.role });
  }
}

function hkdf32({ pakeKey, transcript, info }) {
  return hkdf(sha256, pakeKey, transcript, new TextEncoder().encode(info), KEY_BYTES);
}

/**
 * Derive one key per purpose and direction from the SPAKE2 key.
 * @param {object} options
 * @param {Uint8Array} options.pakeKey  the 32-byte SPAKE2 key
 * @param {Uint8Array} options.transcript  the peer ID in the code (ASCII bytes); the HKDF salt
 * @param {"sender"|"receiver"} options.role  decides which keys send and which receive
 * @returns {SessionKeys}
 */
export function deriveKeys({ pakeKey, transcript, role }) {
  checkRole(role, "role");
  const key = (info) => hkdf32({ pakeKey, transcript, info });
  const signalSender = key(INFO_SIGNAL_SENDER);
  const signalReceiver = key(INFO_SIGNAL_RECEIVER);
  const dataSender = key(INFO_DATA_SENDER);
  const controlReceiver = key(INFO_CONTROL_RECEIVER);
  const verifier = formatVerifier(key(INFO_VERIFY));
  const tcpData = key(INFO_TCP_DATA_SENDER);
  const tcpControl = key(INFO_TCP_CONTROL_RECEIVER);
  const proofSender = key(INFO_TCP_PROOF_SENDER);
  const proofReceiver = key(INFO_TCP_PROOF_RECEIVER);
  const relayToken = deriveRelayToken({ pakeKey, transcript });
  const reconnect = key(INFO_RECONNECT);
  return role === "sender"
    ? new SessionKeys(role, signalSender, signalReceiver, dataSender, controlReceiver, verifier, {
        tcpSend: tcpData,
        tcpReceive: tcpControl,
        proofSend: proofSender,
        proofReceive: proofReceiver,
        relayToken,
        reconnect,
      })
    : new SessionKeys(role, signalReceiver, signalSender, controlReceiver, dataSender, verifier, {
        tcpSend: tcpControl,
        tcpReceive: tcpData,
        proofSend: proofReceiver,
        proofReceive: proofSender,
        relayToken,
        reconnect,
      });
}

/** A rendezvous ID is "~" and this many base32 letters (130 bits). */
export const RENDEZVOUS_CHARS = 26;
const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";

/** RFC 4648 base32, lower case, no padding. */
function base32(bytes) {
  let out = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(buffer << (5 - bits)) & 31];
  return out;
}

/**
 * Where a session that lost its connection meets again, and the password of the
 * fresh SPAKE2 there (crypto.py reconnect_code): {rendezvous, password}, both strings.
 * @param {Uint8Array} secret  the first session's keys.reconnect
 */
export function reconnectCode(secret) {
  if (!(secret instanceof Uint8Array) || secret.length !== KEY_BYTES) {
    throw new TypeError("no reconnect secret: this session cannot reconnect");
  }
  const empty = new Uint8Array(0);
  const where = hkdf32({ pakeKey: secret, transcript: empty, info: INFO_RENDEZVOUS });
  const password = hkdf32({ pakeKey: secret, transcript: empty, info: INFO_RECONNECT_PASSWORD });
  const hex = Array.from(password, (b) => b.toString(16).padStart(2, "0")).join("");
  return { rendezvous: "~" + base32(where).slice(0, RENDEZVOUS_CHARS), password: hex };
}

/**
 * The 32 bytes both peers of one session present to a relay to be joined (the same
 * on both sides).  The relay sees it, so it has a label of its own: it tells nothing
 * about any key of the session.
 */
export function deriveRelayToken({ pakeKey, transcript }) {
  return hkdf32({ pakeKey, transcript, info: INFO_RELAY_TOKEN });
}

/** A short string both sides can read aloud to compare: "1a2b-3c4d-5e6f". */
export function formatVerifier(material) {
  const hex = (b) => b.toString(16).padStart(2, "0");
  const digest = Array.from(material.subarray(0, 6), hex).join("");
  return digest.match(/.{1,4}/g).join("-");
}

// -- AES-256-GCM through WebCrypto, or @noble/ciphers outside a secure context ----------

let useWebCrypto = Boolean(globalThis.crypto?.subtle);

/** Tests only: use @noble/ciphers as a page over plain http does. */
export function useNobleAesForTests() {
  useWebCrypto = false;
}

function importKey(key) {
  if (bytes(key, "key").length !== KEY_BYTES) throw new TypeError(`key must be ${KEY_BYTES} bytes`);
  if (!useWebCrypto) return Promise.resolve({ raw: Uint8Array.from(key) });
  return crypto.subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
}

async function encrypt(cryptoKey, nonce, plaintext, aad) {
  // Copied before the first await, so a caller may reuse its buffer as soon as seal()
  // returns, even though the key import may still be pending.
  const data = plaintext.slice();
  const key = await cryptoKey;
  if (key.raw) return gcm(key.raw, nonce, aad).encrypt(data);
  const params = { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: TAG_BYTES * 8 };
  return new Uint8Array(await crypto.subtle.encrypt(params, key, data));
}

// Resolves to null when the tag does not verify (wrong key, AAD or tampered bytes).
async function decrypt(cryptoKey, nonce, ciphertext, aad) {
  const params = { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: TAG_BYTES * 8 };
  const key = await cryptoKey; // a bad key is a programming error: let it throw as is
  try {
    if (key.raw) return gcm(key.raw, nonce, aad).decrypt(ciphertext);
    return new Uint8Array(await crypto.subtle.decrypt(params, key, ciphertext));
  } catch {
    return null;
  }
}

// -- signaling messages -------------------------------------------------------------------

const signalAad = (kind) => ascii("sfs/1 signal " + kind, "kind");

/**
 * Seal one signaling message (offer, answer, ICE candidate) with a random nonce.
 * @param {object} options
 * @param {Uint8Array} options.key  this side's SessionKeys.signalSend
 * @param {string} options.kind  "offer", "answer" or "ice_candidate"
 * @param {Uint8Array} options.plaintext  the JSON session description, UTF-8
 * @param {(n: number) => Uint8Array} [options.entropy]  supplies the nonce; only
 *   known-answer tests pass their own
 * @returns {Promise<Uint8Array>} nonce || ciphertext || tag (raw bytes; base64 is the caller's)
 */
export async function sealMessage({ key, kind, plaintext, entropy = defaultEntropy }) {
  const aad = signalAad(kind);
  const nonce = entropy(NONCE_BYTES);
  if (!(nonce instanceof Uint8Array) || nonce.length !== NONCE_BYTES) {
    throw new TypeError(`entropy(${NONCE_BYTES}) must return ${NONCE_BYTES} bytes`);
  }
  const cryptoKey = importKey(key);
  return concatBytes(nonce, await encrypt(cryptoKey, nonce, bytes(plaintext, "plaintext"), aad));
}

/**
 * Open a sealed signaling message; rejects with WrongCodeError if it does not
 * authenticate.  A message sealed under another key means the two sides derived
 * different keys from the code: a typo, a guess, or a server in the middle.
 * @param {{key: Uint8Array, kind: string, sealed: Uint8Array|ArrayBuffer}} options
 * @returns {Promise<Uint8Array>} the plaintext
 */
export async function openMessage({ key, kind, sealed }) {
  const aad = signalAad(kind);
  const data = bytes(sealed, "sealed");
  const cryptoKey = importKey(key);
  if (data.length < FRAME_OVERHEAD_BYTES) throw new WrongCodeError();
  const nonce = data.subarray(0, NONCE_BYTES);
  const plaintext = await decrypt(cryptoKey, nonce, data.subarray(NONCE_BYTES), aad);
  if (plaintext === null) throw new WrongCodeError();
  return plaintext;
}

// -- DataChannel frames -------------------------------------------------------------------

function header(frameType, counter) {
  const nonce = new Uint8Array(NONCE_BYTES);
  const view = new DataView(nonce.buffer);
  view.setUint8(0, PROTOCOL_VERSION);
  view.setUint8(1, frameType);
  view.setUint16(2, 0); // reserved
  view.setBigUint64(4, counter); // big-endian, like Python's struct ">BBHQ"
  return nonce;
}

/** Seals the frames of one direction, numbering them 0, 1, 2, … */
export class FrameSealer {
  /** @param {Uint8Array} key  this side's SessionKeys.frameSend */
  constructor(key) {
    this._key = importKey(key);
    this._counter = 0n;
    this._last = Promise.resolve();
  }

  /**
   * @param {number} frameType  0..255 (see docs/PROTOCOL.md for the types)
   * @param {Uint8Array|ArrayBuffer} payload
   * @returns {Promise<Uint8Array>} the whole frame, ready for DataChannel.send()
   */
  seal(frameType, payload) {
    if (!Number.isInteger(frameType) || frameType < 0 || frameType > 0xff) {
      throw new TypeError(`frame type must be an integer 0..255, not ${frameType}`);
    }
    if (this._counter > MAX_COUNTER) {
      return Promise.reject(new CryptoError("too many frames for one session"));
    }
    // The counter is taken now, synchronously, so frames are numbered in call order
    // even when the caller does not await one seal before starting the next.
    const nonce = header(frameType, this._counter);
    this._counter += 1n;
    const ciphertext = encrypt(this._key, nonce, bytes(payload, "payload"), nonce);
    // Settle in call order too, so `seal(...).then(send)` sends frames in order.
    const previous = this._last;
    const frame = (async () => {
      const sealed = concatBytes(nonce, await ciphertext);
      await previous;
      return sealed;
    })();
    this._last = frame.catch(() => {});
    return frame;
  }
}

/** Opens the frames of one direction, accepting only the next counter. */
export class FrameOpener {
  /** @param {Uint8Array} key  this side's SessionKeys.frameReceive */
  constructor(key) {
    this._key = importKey(key);
    this._counter = 0n;
    this._last = Promise.resolve();
    /** Decryptions started ahead of their turn (warm()), by frame. */
    this._early = new WeakMap();
  }

  /**
   * Start decrypting a frame that has arrived but is not yet being opened: WebCrypto
   * runs it off the main thread while the frames before it are handled, instead of one
   * round trip to its thread per frame in turn.  Nothing is decided here: open() still
   * checks the header and the counter in order and refuses what does not authenticate.
   * The frame's bytes must not change until it is opened.
   * @param {Uint8Array} frame
   */
  warm(frame) {
    if (!(frame instanceof Uint8Array) || frame.length < FRAME_OVERHEAD_BYTES) return;
    if (this._early.has(frame)) return;
    const nonce = frame.subarray(0, NONCE_BYTES);
    const payload = decrypt(this._key, nonce, frame.subarray(NONCE_BYTES), nonce);
    payload.catch(() => {}); // open() awaits it, or the frame is never opened
    this._early.set(frame, payload);
  }

  /**
   * Open one frame; rejects with CryptoError on any mismatch.  Calls are handled one
   * at a time in call order (whether a frame is "next" depends on how the previous
   * one fared), so a caller may open frames as they arrive without awaiting each.
   * The frame's bytes must not change until the promise settles.
   * @param {Uint8Array|ArrayBuffer} frame
   * @returns {Promise<[number, Uint8Array]>} [frameType, payload]
   */
  open(frame) {
    const data = bytes(frame, "frame");
    const result = this._last.then(() => this._openNext(data));
    this._last = result.catch(() => {});
    return result;
  }

  async _openNext(frame) {
    if (frame.length < FRAME_OVERHEAD_BYTES) {
      throw new CryptoError(`frame too short (${frame.length} bytes)`);
    }
    const view = new DataView(frame.buffer, frame.byteOffset, NONCE_BYTES);
    const version = view.getUint8(0);
    const frameType = view.getUint8(1);
    const counter = view.getBigUint64(4);
    if (version !== PROTOCOL_VERSION || view.getUint16(2) !== 0) {
      throw new CryptoError(`unsupported frame version ${version}`);
    }
    if (counter !== this._counter) {
      throw new CryptoError(
        `frame ${counter} arrived where frame ${this._counter} was due` +
          " (reordered, replayed or dropped)",
      );
    }
    const nonce = frame.subarray(0, NONCE_BYTES);
    const early = this._early.get(frame);
    this._early.delete(frame);
    const payload = await (early ?? decrypt(this._key, nonce, frame.subarray(NONCE_BYTES), nonce));
    if (payload === null) {
      throw new CryptoError("a frame failed its integrity check (tampered or damaged)");
    }
    this._counter += 1n;
    return [frameType, payload];
  }
}

/** Constant-time comparison for digests and other secrets (like hmac.compare_digest,
 * only the lengths may leak). */
export function digestsEqual(a, b) {
  const x = bytes(a, "a");
  const y = bytes(b, "b");
  if (x.length !== y.length) return false;
  let difference = 0;
  for (let i = 0; i < x.length; i++) difference |= x[i] ^ y[i];
  return difference === 0;
}

// -- the direct TCP path's proof (./tcp.js runs it) ---------------------------------------

/** The first bytes a dialer sends on a direct connection; the version of that path. */
export const TCP_MAGIC = new TextEncoder().encode("sfs/tcp1");
export const TCP_NONCE_BYTES = 16;
export const TCP_PROOF_BYTES = 32;

/**
 * HMAC-SHA256 of one connection's handshake under a role's proof key (crypto.tcp_proof).
 * `side` is "L" for the listener's proof and "D" for the dialer's: with a key per
 * role as well, a proof can be neither reflected nor used for the other end; the two
 * fresh nonces make a recorded one useless.
 * @param {{key: Uint8Array, side: "L"|"D", dialerNonce: Uint8Array, listenerNonce: Uint8Array}} options
 * @returns {Uint8Array} 32 bytes
 */
export function tcpProof({ key, side, dialerNonce, listenerNonce }) {
  if (side !== "L" && side !== "D") throw new TypeError(`side must be "L" or "D", not ${side}`);
  const transcript = concatBytes(ascii(side, "side"), TCP_MAGIC, dialerNonce, listenerNonce);
  return hmac(sha256, bytes(key, "key"), transcript);
}
