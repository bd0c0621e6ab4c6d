// The direct TCP path's stream protocol, sans I/O: the page's port of the proof and
// framing in sfs/peer/transport/tcp.py (read them side by side).  The page cannot
// open TCP connections, but it speaks the same bytes through sfs serve's relay
// (./relay.js), so a CLI at the other end of the relay cannot tell the difference:
//
//   dialer   -> listener:  MAGIC (8) | nonce_d (16)
//   listener -> dialer:    nonce_l (16) | HMAC(proof key of the listener's role, "L" | T)
//   dialer   -> listener:  HMAC(proof key of the dialer's role, "D" | T)
//   T = MAGIC | nonce_d | nonce_l
//
// then the sender's CHOSEN (one byte) on the connection it chose, then frames, each
// preceded by its length (4 bytes, big endian, 1 to MAX_FRAME_BYTES), sealed under
// the `sfs/1 tcp …` keys (SessionKeys.overTcp()).  The SENDER dials, the RECEIVER
// listens.  Nothing here touches a socket: bytes in, bytes and frames out.

import {
  CryptoError,
  digestsEqual,
  TCP_MAGIC,
  TCP_NONCE_BYTES,
  TCP_PROOF_BYTES,
  tcpProof,
} from "./crypto.js";
import { RemoteProtocolError } from "./errors.js";
import { defaultEntropy } from "./spake2.js";

/** What the sender sends on the connection it chose, before any frame: on the
 * relayed stream, or as the DataChannel's first message when it chose that. */
export const CHOSEN = Uint8Array.of(0x01);
/** The length prefix of every frame (big endian). */
export const LENGTH_BYTES = 4;
/** The largest frame the stream takes (tcp.MAX_FRAME_BYTES). */
export const MAX_FRAME_BYTES = 1024 * 1024 + 64;

/**
 * One end of the proof on one connection: bytes in, bytes out (tcp.Prover).
 * @param {object} options
 * @param {boolean} options.dialer  this end opened the connection (the sender)
 * @param {Uint8Array} options.ownKey  the proof key of this side's role
 * @param {Uint8Array} options.peerKey  the other side's
 * @param {Uint8Array} [options.nonce]  only known-answer tests pass their own
 */
export class Prover {
  constructor({ dialer, ownKey, peerKey, nonce = defaultEntropy(TCP_NONCE_BYTES) }) {
    if (!(nonce instanceof Uint8Array) || nonce.length !== TCP_NONCE_BYTES) {
      throw new TypeError(`the nonce must be ${TCP_NONCE_BYTES} bytes`);
    }
    this.dialer = dialer;
    this._own = ownKey;
    this._peer = peerKey;
    this._nonce = nonce;
    this._dialerNonce = dialer ? nonce : null;
    this.proven = false;
  }

  /** What this end sends first (only the dialer speaks first). */
  hello() {
    return this.dialer ? concat(TCP_MAGIC, this._nonce) : new Uint8Array(0);
  }

  /** How many bytes receive() takes next (0 once proven). */
  get wanted() {
    if (this.proven) return 0;
    if (this.dialer) return TCP_NONCE_BYTES + TCP_PROOF_BYTES;
    if (this._dialerNonce === null) return TCP_MAGIC.length + TCP_NONCE_BYTES;
    return TCP_PROOF_BYTES;
  }

  /**
   * Take exactly `wanted` bytes; return what to send back.
   * @throws {CryptoError} the other end is not the peer of this session
   */
  receive(data) {
    if (data.length !== this.wanted || this.proven) {
      throw new RangeError(`expected ${this.wanted} bytes, not ${data.length}`);
    }
    if (this.dialer) {
      const listenerNonce = data.subarray(0, TCP_NONCE_BYTES);
      this._check(data.subarray(TCP_NONCE_BYTES), "L", this._nonce, listenerNonce);
      this.proven = true;
      return tcpProof({ key: this._own, side: "D", dialerNonce: this._nonce, listenerNonce });
    }
    if (this._dialerNonce === null) {
      if (!digestsEqual(data.subarray(0, TCP_MAGIC.length), TCP_MAGIC)) {
        throw new CryptoError("a connection that is not sfs's came to the direct port");
      }
      this._dialerNonce = data.slice(TCP_MAGIC.length);
      const nonces = { dialerNonce: this._dialerNonce, listenerNonce: this._nonce };
      return concat(this._nonce, tcpProof({ key: this._own, side: "L", ...nonces }));
    }
    this._check(data, "D", this._dialerNonce, this._nonce);
    this.proven = true;
    return new Uint8Array(0);
  }

  _check(proof, side, dialerNonce, listenerNonce) {
    const expected = tcpProof({ key: this._peer, side, dialerNonce, listenerNonce });
    if (!digestsEqual(expected, proof)) {
      throw new CryptoError("the other end of a direct connection did not prove the session key");
    }
  }
}

/** The stages of one stream, as TcpLink's. */
export const Stage = Object.freeze({
  PROVING: "proving",
  AWAITING_CHOICE: "awaiting_choice", // the receiver's end, proven
  FRAMES: "frames",
  CLOSED: "closed",
});

/**
 * One stream's incoming bytes, in whatever pieces they come (a relay's messages mean
 * nothing): the proof, the receiver's CHOSEN, then length-prefixed frames.  Holds at
 * most one part being filled (at most MAX_FRAME_BYTES); whole frames go straight out.
 *
 * feed(bytes) returns {reply, frames, proven, chosen}: bytes to send back (the
 * proof's), the frames completed, and whether this piece completed the proof or the
 * choice.  It throws CryptoError (not our peer) or RemoteProtocolError (a wrong
 * choice byte, a zero or oversized length); the stream is then closed.
 */
export class StreamReader {
  /**
   * @param {Prover} prover
   * @param {{awaitsChoice: boolean}} options  the receiver's end waits for CHOSEN
   */
  constructor(prover, { awaitsChoice }) {
    this._prover = prover;
    this._awaitsChoice = awaitsChoice;
    this.stage = Stage.PROVING;
    this._want = new Uint8Array(prover.wanted || 1);
    this._filled = 0;
    this._length = null;
  }

  /** What this end sends first, once the stream is there (the dialer's hello). */
  hello() {
    return this._prover.hello();
  }

  /** A part of a frame (or of the proof) has arrived and not yet whole. */
  get midway() {
    return this._filled > 0 || this._length !== null;
  }

  feed(data) {
    const out = { reply: [], frames: [], proven: false, chosen: false };
    if (this.stage === Stage.CLOSED) throw new Error("the stream is closed");
    let at = 0;
    try {
      while (at < data.length) {
        const n = Math.min(this._want.length - this._filled, data.length - at);
        this._want.set(data.subarray(at, at + n), this._filled);
        this._filled += n;
        at += n;
        if (this._filled === this._want.length) this._partDone(out);
      }
    } catch (error) {
      this.stage = Stage.CLOSED;
      throw error;
    }
    return out;
  }

  _partDone(out) {
    const part = this._want;
    if (this.stage === Stage.FRAMES) {
      if (this._length === null) {
        const length = new DataView(part.buffer).getUint32(0);
        if (!(length > 0 && length <= MAX_FRAME_BYTES)) {
          throw new RemoteProtocolError(
            `the other side sent a frame of ${length} bytes (at most ${MAX_FRAME_BYTES})`,
          );
        }
        this._length = length;
        this._expect(length);
        return;
      }
      out.frames.push(part);
      this._length = null;
      this._expect(LENGTH_BYTES);
    } else if (this.stage === Stage.PROVING) {
      const reply = this._prover.receive(part);
      if (reply.length) out.reply.push(reply);
      if (!this._prover.proven) {
        this._expect(this._prover.wanted);
        return;
      }
      out.proven = true;
      this.stage = this._awaitsChoice ? Stage.AWAITING_CHOICE : Stage.FRAMES;
      this._expect(this._awaitsChoice ? CHOSEN.length : LENGTH_BYTES);
    } else if (this.stage === Stage.AWAITING_CHOICE) {
      if (part[0] !== CHOSEN[0]) {
        throw new RemoteProtocolError("the other side sent something else than its choice");
      }
      out.chosen = true;
      this.stage = Stage.FRAMES;
      this._expect(LENGTH_BYTES);
    }
  }

  _expect(n) {
    // A fresh buffer per part: a frame handed out is never written again.
    this._want = new Uint8Array(n);
    this._filled = 0;
  }
}

/** One frame as it goes on the stream: its length (4 bytes, big endian), then it. */
export function lengthPrefixed(frame) {
  if (!(frame.length > 0 && frame.length <= MAX_FRAME_BYTES)) {
    throw new RangeError(`a frame must be 1 to ${MAX_FRAME_BYTES} bytes, not ${frame.length}`);
  }
  const out = new Uint8Array(LENGTH_BYTES + frame.length);
  new DataView(out.buffer).setUint32(0, frame.length);
  out.set(frame, LENGTH_BYTES);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
