// WebRTC glue: the only module that touches RTCPeerConnection and RTCDataChannel (the
// page's counterpart of sfs/peer/connection.py).
//
// It turns one DataChannel into the small Channel interface ./transfer.js uses, with
// backpressure through bufferedAmountLowThreshold and the `bufferedamountlow` event
// (never sleep-polling), and an idle clock: a peer that sends nothing at all for
// IDLE_TIMEOUT_SECONDS is gone (each side sends a PING after 2 s of silence).
//
// ICE: only the servers `sfs serve` named (never a browser default or a public STUN
// server), and the whole candidate list goes into the sealed SDP: the command line
// gathers every candidate before it seals its description and sends no trickled
// `ice_candidate` events, so the page does the same.

import { IceFailedError, PeerConnectionError, PeerGoneError } from "./errors.js";
import { IDLE_TIMEOUT_SECONDS } from "./conversation.js";
import { AsyncQueue } from "./queue.js";

export const CHANNEL_LABEL = "sfs";
/** Stop queueing frames while this much is buffered (browsers keep it in memory). */
export const HIGH_WATER_BYTES = 4 * 1024 * 1024;
/** RFC 8841: an endpoint that does not advertise a=max-message-size accepts 64 KiB. */
export const DEFAULT_REMOTE_MAX_MESSAGE_BYTES = 65_536;
/** Gathering candidates takes at most this long, as on the command line... */
export const GATHER_SECONDS = 3;
/** ...and at most this much more once a relay candidate is in. */
export const GATHER_AFTER_RELAY_SECONDS = 0.5;
const MAX_MESSAGE = /^a=max-message-size:(\d+)\s*$/m;
const CLOSED = Symbol("closed");

const now = () => performance.now() / 1000;

/** The largest message the peer accepts, from its SDP (0 in SDP means no limit). */
export function remoteMaxMessageSize(sdp) {
  const match = MAX_MESSAGE.exec(sdp);
  if (match === null) return DEFAULT_REMOTE_MAX_MESSAGE_BYTES;
  const value = Number(match[1]);
  return value > 0 ? value : 2 ** 30;
}

function lost(seconds) {
  return new PeerGoneError(`lost the connection: nothing from the other side for ${seconds} s`);
}

/**
 * One open DataChannel, seen as the Channel of ./transfer.js:
 * send(frame), receive({signal}), poll(), waitClosed(), secondsSinceSend(),
 * secondsSinceReceive(), unsentBytes(), close().  Frames arrive as Uint8Array.
 */
export class DataChannelLink {
  constructor(
    channel,
    { maxMessageSize, highWater = HIGH_WATER_BYTES, idleTimeout = IDLE_TIMEOUT_SECONDS },
  ) {
    this._channel = channel;
    this._idleTimeout = idleTimeout;
    this.maxMessageSize = maxMessageSize;
    /** How the data flows ("direct on the local network", …), once known. */
    this.route = "";
    this._highWater = highWater;
    this._lastSent = now();
    this._lastHeard = now();
    this._inbox = new AsyncQueue();
    this._error = null;
    this._closed = false;
    this._closeWaiters = [];
    this._onClose = null; // the PeerLink's: close the connection too
    /** Called with each frame as it arrives, before anyone reads it (the Pump's). */
    this.onArrival = null;
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = highWater / 2;
    channel.addEventListener("message", (event) => {
      this._lastHeard = now();
      // Text messages are not part of the protocol: an empty frame makes the protocol
      // layer refuse it like any other malformed frame.
      const data = event.data;
      const frame = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(0);
      this.onArrival?.(frame);
      this._inbox.put(frame);
    });
    channel.addEventListener("close", () => this.markClosed());
  }

  get closed() {
    return this._closed;
  }

  markClosed() {
    if (this._closed) return;
    this._closed = true;
    this._inbox.put(CLOSED);
    for (const resolve of this._closeWaiters.splice(0)) resolve();
  }

  /** Close the link; reading past what is queued rejects with `error`. */
  fail(error) {
    if (!this._closed) this._error = error;
    this.markClosed();
  }

  _gone() {
    return this._error ?? new PeerGoneError();
  }

  /** Send one frame, waiting while too much is buffered. */
  async send(frame) {
    if (this._closed || this._channel.readyState !== "open") throw this._gone();
    try {
      this._channel.send(frame);
    } catch (error) {
      // The channel closed under us, or the frame exceeds what it may carry.
      this.markClosed();
      throw this._error ?? new PeerGoneError(undefined, { cause: error });
    }
    this._lastSent = now();
    if (this._channel.bufferedAmount > this._highWater) {
      // The event fires when the amount falls through the low mark, which it must do
      // from here: no event can run between the check above and this listener.
      let done;
      const drained = new Promise((resolve) => {
        done = resolve;
        this._channel.addEventListener("bufferedamountlow", resolve, { once: true });
        this._closeWaiters.push(resolve); // a close ends the wait too
      });
      try {
        await this._withinIdleTimeout(() => drained);
      } finally {
        this._channel.removeEventListener("bufferedamountlow", done);
        const index = this._closeWaiters.indexOf(done);
        if (index >= 0) this._closeWaiters.splice(index, 1);
      }
      if (this._closed) throw this._gone();
    }
  }

  /** The next frame; rejects with PeerGoneError once the channel closed or fell silent. */
  async receive({ signal } = {}) {
    // A frame already here is delivered whatever the idle clock says: it proves the
    // peer was alive, however long the reader took to come for it.
    const frame = this.poll();
    if (frame !== undefined) return frame;
    const item = await this._withinIdleTimeout((withdraw) =>
      this._inbox.get({ signal: anySignal(signal, withdraw) }),
    );
    if (item === CLOSED) {
      this._inbox.unget(CLOSED); // every later receive() sees the close too
      throw this._gone();
    }
    return item;
  }

  /** The next frame if one is already here, else undefined. */
  poll() {
    const item = this._inbox.poll();
    if (item === CLOSED) {
      this._inbox.unget(CLOSED);
      throw this._gone();
    }
    return item;
  }

  /** Resolves once the peer (or this side) closed the channel. */
  waitClosed() {
    if (this._closed) return Promise.resolve();
    return new Promise((resolve) => this._closeWaiters.push(resolve));
  }

  secondsSinceSend() {
    return now() - this._lastSent;
  }

  /** Since the peer's last frame arrived, read or not (the conversation's idle clock). */
  secondsSinceReceive() {
    return now() - this._lastHeard;
  }

  /** Bytes given to send() that have not yet left: progress must not count them. */
  unsentBytes() {
    return this._channel.bufferedAmount;
  }

  close() {
    this.markClosed();
    if (this._onClose) this._onClose();
  }

  /**
   * `wait(withdraw)` unless the peer falls silent for the idle timeout; `withdraw`
   * is an AbortSignal that fires when the idle clock runs out, so a read can be
   * withdrawn without losing a frame.
   */
  async _withinIdleTimeout(wait) {
    for (;;) {
      const remaining = this._lastHeard + this._idleTimeout - now();
      if (remaining <= 0) {
        const error = lost(this._idleTimeout);
        this.fail(error);
        throw error;
      }
      const timeout = new AbortController();
      const timer = setTimeout(() => timeout.abort(TIMED_OUT), remaining * 1000);
      try {
        return await wait(timeout.signal);
      } catch (error) {
        if (error !== TIMED_OUT) throw error;
      } finally {
        clearTimeout(timer);
      }
      // The idle clock ran out while waiting; check again (a frame may just have come).
    }
  }
}

const TIMED_OUT = Symbol("timed out");

/** An AbortSignal that aborts when either does (AbortSignal.any is too new). */
export function anySignal(a, b) {
  if (!a) return b;
  const both = new AbortController();
  for (const signal of [a, b]) {
    if (signal.aborted) {
      both.abort(signal.reason);
      break;
    }
    signal.addEventListener("abort", () => both.abort(signal.reason), { once: true });
  }
  return both.signal;
}

/**
 * An RTCPeerConnection with one reliable, ordered DataChannel labelled "sfs".
 * The sender calls createOffer() then acceptAnswer(); the receiver answerOffer().
 * Both then await open().
 */
export class PeerLink {
  /**
   * @param {object} options
   * @param {RTCIceServer[]} options.iceServers  the servers `sfs serve` named (or none)
   * @param {typeof RTCPeerConnection} [options.RTCPeerConnection]  tests pass their own
   */
  constructor({ iceServers, RTCPeerConnection = globalThis.RTCPeerConnection }) {
    if (typeof RTCPeerConnection !== "function") {
      throw new PeerConnectionError("this browser has no WebRTC (RTCPeerConnection)");
    }
    // An explicit list, empty when the server names none: no browser default.
    this._pc = new RTCPeerConnection({ iceServers });
    this._link = null;
    this._channel = null;
    this._remoteMaxMessage = DEFAULT_REMOTE_MAX_MESSAGE_BYTES;
    this._ready = null;
    this._readyCallbacks = null;
    this._ready = new Promise((resolve, reject) => {
      this._readyCallbacks = { resolve, reject };
    });
    this._ready.catch(() => {}); // reported through open()
    this._pc.addEventListener("connectionstatechange", () => this._onState());
    this._pc.addEventListener("datachannel", (event) => {
      const channel = event.channel;
      if (channel.label !== CHANNEL_LABEL || this._channel !== null) {
        channel.close(); // not ours: sfs uses one channel
        return;
      }
      this._watch(channel);
    });
  }

  _onState() {
    const state = this._pc.connectionState;
    if (state === "failed" || state === "closed") {
      this._readyCallbacks.reject(new IceFailedError(noDirectConnection("ICE failed")));
      if (this._link !== null) this._link.markClosed();
    }
  }

  _watch(channel) {
    // Wrap the channel at once: a message that arrived before the wrapper's handler
    // was attached would be lost.
    this._channel = channel;
    this._link = new DataChannelLink(channel, { maxMessageSize: this._remoteMaxMessage });
    this._link._onClose = () => this.close();
    if (channel.readyState === "open") this._readyCallbacks.resolve();
    channel.addEventListener("open", () => this._readyCallbacks.resolve());
  }

  /** The sender's side: a channel, an offer, every candidate. @returns {Promise<string>} */
  async createOffer() {
    this._watch(this._pc.createDataChannel(CHANNEL_LABEL, { ordered: true }));
    await this._pc.setLocalDescription(await this._pc.createOffer());
    await this._gathered();
    return this._pc.localDescription.sdp;
  }

  /** The receiver's side: the answer to `sdp`, every candidate. @returns {Promise<string>} */
  async answerOffer(sdp) {
    await this._setRemote(sdp, "offer");
    await this._pc.setLocalDescription(await this._pc.createAnswer());
    await this._gathered();
    return this._pc.localDescription.sdp;
  }

  async acceptAnswer(sdp) {
    await this._setRemote(sdp, "answer");
  }

  async _setRemote(sdp, kind) {
    if (typeof sdp !== "string" || !/^m=application /m.test(sdp)) {
      throw new PeerConnectionError(`the other side's ${kind} offers no data channel`);
    }
    if (!/^a=fingerprint:/m.test(sdp)) {
      throw new PeerConnectionError(
        `the other side's ${kind} has no DTLS certificate fingerprint, so the connection ` +
          "could not be secured; it is not a WebRTC peer sfs can talk to",
      );
    }
    try {
      await this._pc.setRemoteDescription({ type: kind, sdp });
    } catch (error) {
      throw new PeerConnectionError(`the other side's ${kind} is not usable: ${error.message}`, {
        cause: error,
      });
    }
    this._remoteMaxMessage = remoteMaxMessageSize(sdp);
    if (this._link !== null) this._link.maxMessageSize = this._remoteMaxMessage;
  }

  /** Wait until gathering completes, at most GATHER_SECONDS (less once a relay is in). */
  _gathered() {
    const pc = this._pc;
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      let timer = setTimeout(done, GATHER_SECONDS * 1000);
      function done() {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", changed);
        pc.removeEventListener("icecandidate", candidate);
        resolve();
      }
      function changed() {
        if (pc.iceGatheringState === "complete") done();
      }
      let relayed = false;
      function candidate(event) {
        if (event.candidate === null) return done();
        if (!relayed && / typ relay /.test(event.candidate.candidate)) {
          relayed = true;
          clearTimeout(timer);
          timer = setTimeout(done, GATHER_AFTER_RELAY_SECONDS * 1000);
        }
      }
      pc.addEventListener("icegatheringstatechange", changed);
      pc.addEventListener("icecandidate", candidate);
    });
  }

  /**
   * Wait until the DataChannel is open.
   * @param {number} seconds
   * @returns {Promise<DataChannelLink>}
   * @throws {IceFailedError} no connection within `seconds`, or ICE failed
   */
  async open(seconds) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new IceFailedError(noDirectConnection(`nothing got through within ${seconds} s`)),
          ),
        seconds * 1000,
      );
    });
    try {
      await Promise.race([this._ready, timeout]);
    } finally {
      clearTimeout(timer);
    }
    const link = this._link;
    // What the channel may carry: the smaller of the peer's limit and the browser's.
    const sctpLimit = this._pc.sctp?.maxMessageSize;
    if (sctpLimit) link.maxMessageSize = Math.min(link.maxMessageSize, sctpLimit);
    if (this._channel.readyState !== "open") link.markClosed();
    link.route = await this.route();
    return link;
  }

  /** How the data flows, from the selected candidate pair ("" if the browser won't say). */
  async route() {
    try {
      const stats = await this._pc.getStats();
      let pair = null;
      stats.forEach((report) => {
        if (report.type === "transport" && report.selectedCandidatePairId) {
          pair = stats.get(report.selectedCandidatePairId);
        }
      });
      if (pair === null) {
        stats.forEach((report) => {
          const chosen = report.nominated && report.state === "succeeded";
          if (report.type === "candidate-pair" && chosen) pair ??= report;
        });
      }
      if (pair === null) return "";
      const local = stats.get(pair.localCandidateId);
      const remote = stats.get(pair.remoteCandidateId);
      return routeOf(local?.candidateType, remote?.candidateType, remote?.address ?? "");
    } catch {
      return "";
    }
  }

  close() {
    if (this._pc.signalingState !== "closed") this._pc.close();
    this._readyCallbacks.reject(new PeerGoneError());
    if (this._link !== null) this._link.markClosed();
  }
}

// Private and link-local ranges: a peer seen at one of these from a host candidate
// of ours is on our side of any NAT.  (100.64.0.0/10, a carrier's NAT, is not one.)
const PRIVATE_ADDRESS =
  /^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|169\.254\.|f[cd][0-9a-f]{2}:|fe[89ab][0-9a-f]:)/i;

/**
 * How the data flows, from the selected pair's candidate types and the peer's address
 * (pure; the page cannot see its own interfaces, so a private address stands for "on
 * our network").  A peer-reflexive candidate is an address learnt from the peer's
 * own checks: a NAT's, or one not signalled, so only where it is says anything.
 * "direct" when nothing is known, never a guess.
 */
export function routeOf(local, remote, remoteAddress) {
  if (local === "relay") return "relayed by TURN";
  if (remote === "relay") return "relayed by the other side's TURN";
  if (local === "srflx" || remote === "srflx") return "direct through NAT";
  // Chromium's own address comes back as peer-reflexive when it hid it behind an
  // mDNS name: the peer's checks name it, and that proves no NAT.
  const onOurSide = remoteAddress.toLowerCase().endsWith(".local") || PRIVATE_ADDRESS.test(remoteAddress);
  if (onOurSide) return "direct on the local network";
  return "direct";
}

function noDirectConnection(what) {
  return `no direct connection: ${what} (configure a STUN/TURN server for \`sfs serve\`)`;
}
