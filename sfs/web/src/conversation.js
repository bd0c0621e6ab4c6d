// The transfer conversation, sans I/O: a port of sfs/peer/proto/conversation.py,
// name for name (camelCase), checked against the same scripts (vectors.json
// "conversations", test/conversation.test.mjs; tests/unit/test_conversation_vectors.py
// runs them against Python).
//
// Sender and Receiver sit on ./protocol.js's TransferProtocol: the framing says which
// frame is allowed now and seals it; the conversation says what to do next.  They own
// no timer and no channel and never read a clock: time comes in as `now` (seconds,
// any monotonic origin), and the driver (./transfer.js) carries out what they return.
//
// Inputs: frameReceived(frame, now) for each frame from the peer, the user's and the
// disk's answers (accept, refuse, prefixesHashed, prefixesConfirmed, filesPlaced, ...)
// and handleTimer(now) once nextDeadline() has passed.  Outputs: the frames to send,
// taken with framesToSend(now), and the action an input returns (AskUser,
// HashPrefixes, ConfirmPrefixes, SendFiles, a received Chunk to write, a FileDone to
// verify, Acknowledged) or null.  A failure is thrown: the peer's CANCEL or REJECT as
// the error it means here (stoppedBy), a silent peer as PeerGoneError, a frame out of
// place as RemoteProtocolError; the driver then calls abort(error).
//
// What differs from Python, because sealing and opening are asynchronous (WebCrypto):
// * framesToSend(now) returns promises of frames, not frames.  TransferProtocol
//   numbers a frame when it is asked to seal it (synchronously, in this machine's
//   order), and each promise settles to that frame; the driver sends them in the
//   order given, awaiting each, so the order on the wire is the order the machine
//   decided, whenever a seal or a send completes.  (The machine's outbox holds
//   numbered frames, as Python's does: the Outbox of old is now the driver's one
//   send chain, which only keeps order between successive framesToSend() batches.)
// * frameReceived(frame, now) is async: it resolves to the action once the frame is
//   opened.  The driver gives it one frame at a time, in order.

import { PeerGoneError, LocalProtocolError } from "./errors.js";
import { cancelFor, reject, stoppedBy } from "./reasons.js";
import { Accept, Chunk, FileAck, FileDone, Offer, Partial, Ping, Resume, Role, Start, State } from "./protocol.js";

/** A side sends a PING after this long without sending anything else. */
export const PING_INTERVAL_SECONDS = 2.0;
/** Nothing at all from the peer for this long means the connection is lost. */
export const IDLE_TIMEOUT_SECONDS = 10.0;

// -- actions: what the driver does next ----------------------------------------------------

/** (Receiver) The offer is in: ask the user, then accept() or refuse(). */
export class AskUser {
  constructor(offer) {
    this.offer = offer;
  }
}

/** (Sender) The receiver accepted: hash the first held[i] bytes of each file (none when
 * empty), then prefixesHashed(). */
export class HashPrefixes {
  constructor(held) {
    this.held = held;
  }
}

/** (Receiver) The sender proposes where each file starts: check our own bytes against
 * its prefixes' SHA-256, then prefixesConfirmed(). */
export class ConfirmPrefixes {
  constructor(resume) {
    this.resume = resume;
  }
}

/** (Sender) Stream each file from offsets[i]: sendChunk() for its bytes, fileDone() at
 * its end; `restarted` lists the files proposed above 0 that go from 0 after all. */
export class SendFiles {
  constructor(offsets, restarted = []) {
    this.offsets = offsets;
    this.restarted = restarted;
  }
}

/** (Sender) The receiver verified and placed `count` more files; `done`: all. */
export class Acknowledged {
  constructor(count, done) {
    this.count = count;
    this.done = done;
  }
}

/** What both sides share: the outbox, the keepalive, the idle deadline, the last word. */
export class Conversation {
  constructor(proto, now) {
    this.proto = proto;
    this._outbox = []; // promises of frames, numbered in this order
    this._lastSent = now;
    this._lastHeard = now;
  }

  /** Nothing more to say: done, or closed by a CANCEL or REJECT. */
  get over() {
    return this.proto.state === State.DONE || this.proto.state === State.CLOSED;
  }

  /** When handleTimer() is due; null once the conversation is over. */
  nextDeadline() {
    if (this.over) return null;
    return Math.min(this._lastSent + PING_INTERVAL_SECONDS, this._lastHeard + IDLE_TIMEOUT_SECONDS);
  }

  /** The transport saw something from the peer at `at` (read yet or not). */
  heard(at) {
    this._lastHeard = Math.max(this._lastHeard, at);
  }

  /** Queue a PING when this side has been quiet long enough.
   * @throws {PeerGoneError} nothing heard from the peer for IDLE_TIMEOUT_SECONDS */
  handleTimer(now) {
    if (this.over) return;
    if (now - this._lastHeard >= IDLE_TIMEOUT_SECONDS) {
      throw new PeerGoneError(
        `lost the connection: nothing from the other side for ${IDLE_TIMEOUT_SECONDS} s`,
      );
    }
    if (now - this._lastSent >= PING_INTERVAL_SECONDS && !this._outbox.length) {
      this._outbox.push(this.proto.send(new Ping()));
    }
  }

  /** Take the frames to send, in order (promises: see the top of this file). */
  framesToSend(now) {
    const frames = this._outbox;
    this._outbox = [];
    if (frames.length) this._lastSent = now;
    return frames;
  }

  /**
   * One frame from the peer: what to do about it, if anything.
   * @returns {Promise<object|null>} rejects with CryptoError, RemoteProtocolError, or
   *   what the peer's CANCEL or REJECT means here
   */
  async frameReceived(frame, now) {
    this._lastHeard = Math.max(this._lastHeard, now);
    const event = await this.proto.receive(frame);
    if (event instanceof Ping || event instanceof Partial) return null;
    return this._handle(event);
  }

  _handle(event) {
    throw stoppedBy(event);
  }

  /**
   * Queue the CANCEL that tells the peer why this side stops (never a local path or
   * detail); false when the protocol allows no word any more.  `word` is the CANCEL
   * to send instead, when the page says why itself (its tab closing).
   */
  abort(error, word = cancelFor(error)) {
    if (this.over) return false;
    this._outbox.push(...this.proto.sendFrames(word));
    return true;
  }

  _queue(event) {
    this._outbox.push(...this.proto.sendFrames(event));
  }
}

/** The sending side: offer, resume, stream, and wait for every acknowledgement. */
export class Sender extends Conversation {
  /** @param {object} [options] @param {boolean} [options.resume]  continue what the
   * receiver partly holds (the page never does: it passes false) */
  constructor(proto, now, { resume = true } = {}) {
    if (proto.role !== Role.SENDER) throw new LocalProtocolError("a Sender needs the sender's framing");
    super(proto, now);
    this.resume = resume;
    this._proposed = [];
    this._accepted = false;
  }

  /** Queue the offer; the receiver's answer comes as HashPrefixes. */
  offer(offer) {
    if (!(offer instanceof Offer)) throw new TypeError("offer() takes an Offer");
    this._queue(offer);
  }

  /** Where each file can start and the SHA-256 of our bytes before it; SendFiles at
   * once when nothing resumes, else null (the receiver's START comes as SendFiles). */
  prefixesHashed(offsets, digests) {
    this._proposed = offsets;
    this._queue(new Resume(offsets, offsets.some((o) => o) ? digests : []));
    if (this.proto.state === State.CONFIRMING) return null;
    return new SendFiles(offsets);
  }

  /** The sealed frame of one chunk (the hot path: nothing queued, no object).
   * @returns {Promise<Uint8Array>} */
  sendChunk(chunk, now) {
    this._lastSent = now;
    return this.proto.send(chunk);
  }

  /** The current file's bytes are all sent: queue its FILE_DONE. */
  fileDone(sha256) {
    this._queue(new FileDone(sha256));
  }

  _handle(event) {
    if (event instanceof FileAck) return new Acknowledged(event.count, this.proto.state === State.DONE);
    if (event instanceof Accept) {
      this._accepted = true;
      return new HashPrefixes(this.resume ? event.held : []);
    }
    if (event instanceof Start) {
      const restarted = [];
      event.offsets.forEach((start, i) => {
        if (this._proposed[i] && !start) restarted.push(i);
      });
      return new SendFiles(event.offsets, restarted);
    }
    // The answer to our offer: an old receiver refuses a newer one its own way.
    throw stoppedBy(event, this._accepted ? 0 : this.proto.version);
  }
}

/** The receiving side: hear the offer, answer it, confirm where files resume, take
 * their bytes and acknowledge them once they are safe. */
export class Receiver extends Conversation {
  constructor(proto, now) {
    if (proto.role !== Role.RECEIVER) {
      throw new LocalProtocolError("a Receiver needs the receiver's framing");
    }
    super(proto, now);
  }

  /** The user said yes: queue the ACCEPT, with how much of each file is already here. */
  accept(held, zstd) {
    this._queue(new Accept(held.some((h) => h) ? held : [], zstd));
  }

  /** Queue the REJECT: the user said no, or this side cannot take the offer. */
  refuse(refusal = reject()) {
    this._queue(refusal);
  }

  /** Where each file really starts; queues the START the sender waits for when a file
   * was proposed to resume. */
  prefixesConfirmed(offsets) {
    if (this.proto.state === State.CONFIRMING) this._queue(new Start(offsets));
  }

  /** `count` more files are verified and in place: acknowledge them (one frame). */
  filesPlaced(count) {
    if (count) this._queue(new FileAck(count));
  }

  get done() {
    return this.proto.state === State.DONE;
  }

  _handle(event) {
    if (event instanceof Chunk || event instanceof FileDone) return event;
    if (event instanceof Offer) return new AskUser(event);
    if (event instanceof Resume) return new ConfirmPrefixes(event);
    return super._handle(event);
  }
}
