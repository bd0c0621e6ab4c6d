// The page's way through sfs serve's relay: a WebSocket to `ws(s)://…/relay` (browsers
// cannot set the raw relay's headers), the counterpart of sfs/peer/transport/relay.py.
//
//   page -> relay:  the 32-byte relay token, one binary message (never in the URL:
//                   URLs end up in access logs)
//   relay -> page:  the text `paired` once the partner came (or a close with code
//                   4000 + an HTTP status and a one-line reason)
//   then binary messages carry the byte stream both ways; their boundaries mean
//   nothing.  On it runs the direct TCP path's stream protocol (./tcp.js): the proof
//   (the sender dials, the receiver listens), CHOSEN, length-prefixed frames under
//   the `sfs/1 tcp …` keys.  The relay sees only nonces, HMACs and sealed frames.
//
// RelayLink is the Channel of ./transfer.js over that stream: it is a DataChannelLink
// (./connection.js) over a RelayStream, which looks to it like an RTCDataChannel
// carrying one frame per message, so backpressure, the idle clock and closing work
// exactly as on WebRTC and the Pump runs on it unchanged.
//
// Receiving, the page must not read faster than the Pump takes frames (a phone, a
// slow disk), or frames pile up in memory.  Where the browser has WebSocketStream
// (Chromium 124+), the socket is one (StreamSocket): its readable is read only while
// fewer than READ_AHEAD_BYTES of frames wait, so the browser stops reading the TCP
// connection, the relay stops reading the sender's, and TCP's windows hold the sender
// back, with nothing added to the wire.  A classic WebSocket cannot stop reading:
// there (Firefox, Safari) the page gives up past MAX_HELD_BYTES instead.

import { PeerConnectionError, PeerGoneError } from "./errors.js";
import { DataChannelLink, HIGH_WATER_BYTES } from "./connection.js";
import { IDLE_TIMEOUT_SECONDS } from "./conversation.js";
import { MAX_CHUNK_BYTES } from "./protocol.js";
import { CHOSEN, lengthPrefixed, MAX_FRAME_BYTES, Prover, StreamReader } from "./tcp.js";
import { printable } from "./text.js";

/** How long the relay may take to pair us: its own wait (10 s by default) and a margin. */
export const RELAY_PAIR_SECONDS = 15;
/** How long the proof may take once paired (tcp.PROOF_SECONDS). */
export const PROOF_SECONDS = 3;
/** Frames received and not yet taken beyond which the page gives up: a classic
 * WebSocket cannot stop reading, so this bounds the memory a too-fast sender can fill. */
export const MAX_HELD_BYTES = 128 * 1024 * 1024;
/** Frames received and not yet taken at which a StreamSocket stops reading (and
 * below which it reads again): a few frames, so the Pump never waits for the network. */
export const READ_AHEAD_BYTES = 4 * 1024 * 1024;
/** How often a send waiting for the WebSocket to drain looks again: a WebSocket has
 * no `bufferedamountlow` event, so this is the one poll the page does. */
export const DRAIN_POLL_MS = 5;
const PAIRED = "paired";

// -- where the relay is (pure) --------------------------------------------------------------

/**
 * The relay this side would use, from the register ack's `relay`: "" means the
 * signaling server's own `/relay` (the page's origin), an absolute http(s) URL that
 * one; absent (or anything else) means none.  null when there is none or `mode` is
 * "never".
 * @param {unknown} ackRelay  the ack's `relay`, unchecked
 * @param {string} origin  the signaling server's URL (the page's origin)
 * @param {"auto"|"never"|"only"} [mode]
 * @returns {string|null}
 */
export function relayUrlOf(ackRelay, origin, mode = "auto") {
  if (mode === "never" || typeof ackRelay !== "string" || ackRelay.length > 512) return null;
  let url;
  try {
    url = ackRelay === "" ? new URL("/relay", origin) : new URL(ackRelay);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  if (url.username || url.password) return null;
  url.hash = "";
  return url.href;
}

/** The WebSocket URL of a relay's http(s) URL; PeerConnectionError if it is not one. */
export function webSocketUrl(relay) {
  let url;
  try {
    url = new URL(relay);
  } catch (error) {
    throw new PeerConnectionError("the other side named a relay that is not a URL", { cause: error });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new PeerConnectionError("the other side named a relay that is not an http(s) URL");
  }
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  return url.href;
}

/** How the data flows through `relay`, for the final line: "relayed by HOST". */
export function relayRoute(relay) {
  try {
    return `relayed by ${printable(new URL(relay).hostname, 80)}`;
  } catch {
    return "relayed";
  }
}

/** The page's `--relay`: `?relay=never|only` in its address (default auto). */
export function relayMode(search) {
  const value = new URLSearchParams(search).get("relay");
  return value === "never" || value === "only" ? value : "auto";
}

/** A relay's refusal (close code 4000 + HTTP status) as the line a user reads. */
export function refusal(code, reason) {
  const why = printable(String(reason || ""), 200);
  const status = code >= 4000 && code < 5000 ? code - 4000 : 0;
  const told = {
    400: "it did not take our token",
    408: "the other side did not come to it in time",
    409: "this session's token was already used there",
    429: "too many relayed connections from this address",
    503: "it is busy",
  }[status];
  const what = told ?? (why ? "" : "the connection closed");
  return `the relay refused: ${[what, why].filter(Boolean).join(": ")}`;
}

// -- the socket -----------------------------------------------------------------------------

/**
 * A WebSocketStream seen as the classic WebSocket the rest of this file uses (readyState,
 * send, bufferedAmount, close, the `open`, `message` and `close` events), plus what a
 * classic one cannot do: `reading = false` stops reading until it is set true again.
 * `bufferedAmount` is what was given to send() and not yet taken by the browser.
 */
export class StreamSocket extends EventTarget {
  /** Whether reading can be held back (a classic WebSocket has no such switch). */
  static flowControlled = true;

  constructor(url, { WebSocketStream = globalThis.WebSocketStream } = {}) {
    super();
    this.url = url;
    this.readyState = 0;
    this.bufferedAmount = 0;
    this.binaryType = "arraybuffer"; // what it delivers anyway
    this._reading = true;
    this._resume = null;
    this._writer = null;
    this._closeEvent = null;
    try {
      this._wss = new WebSocketStream(url);
    } catch (error) {
      this._wss = null;
      queueMicrotask(() => this._closed(1006, String(error?.message ?? error)));
      return;
    }
    this._wss.closed.then(
      (info) => this._closed(info?.closeCode ?? 1005, info?.reason ?? ""),
      () => this._closed(1006, ""),
    );
    this._run();
  }

  get reading() {
    return this._reading;
  }

  set reading(on) {
    this._reading = on;
    if (on && this._resume) {
      this._resume();
      this._resume = null;
    }
  }

  async _run() {
    let reader;
    try {
      const { readable, writable } = await this._wss.opened;
      if (this.readyState !== 0) return;
      this._writer = writable.getWriter();
      this._writer.closed.catch(() => {});
      reader = readable.getReader();
      this.readyState = 1;
      this.dispatchEvent(new Event("open"));
      for (;;) {
        if (!this._reading) await new Promise((resolve) => (this._resume = resolve));
        if (this.readyState !== 1) return;
        const { value, done } = await reader.read();
        if (done || this.readyState !== 1) return;
        this.dispatchEvent(Object.assign(new Event("message"), { data: value }));
        // A text message (`paired`) hands the socket to new listeners, which a
        // classic WebSocket's next message event (a task) would find in place; so
        // does ours once this macrotask boundary has passed.
        if (typeof value === "string") await new Promise((resolve) => setTimeout(resolve));
      }
    } catch {
      // closed or failed: `closed` says how
    } finally {
      reader?.releaseLock();
    }
  }

  send(data) {
    if (this.readyState !== 1) throw new DOMException("the WebSocket is not open", "InvalidStateError");
    const size = typeof data === "string" ? data.length : data.byteLength;
    this.bufferedAmount += size;
    this._writer.write(data).then(
      () => (this.bufferedAmount -= size),
      () => (this.bufferedAmount -= size),
    );
  }

  close(code, reason) {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this._resume?.();
    try {
      this._wss?.close(code === undefined ? undefined : { closeCode: code, reason });
    } catch {
      this._closed(1006, "");
    }
  }

  _closed(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this._resume?.();
    this.dispatchEvent(Object.assign(new Event("close"), { code, reason }));
  }
}

/** The socket to `url`: a StreamSocket where the browser has WebSocketStream. */
export function openSocket(url, { WebSocket, WebSocketStream }) {
  if (WebSocket === undefined && typeof WebSocketStream === "function") {
    return new StreamSocket(url, { WebSocketStream });
  }
  const ws = new (WebSocket ?? globalThis.WebSocket)(url);
  ws.binaryType = "arraybuffer";
  return ws;
}

// -- the stream -----------------------------------------------------------------------------

/**
 * A paired relay connection, seen as an RTCDataChannel that carries one frame per
 * message: what DataChannelLink needs (readyState, send, bufferedAmount, the
 * `message`, `close` and `bufferedamountlow` events).  Incoming bytes go through a
 * StreamReader (the proof, the choice, frames); `proven` and `chosen` settle as
 * those complete.
 */
export class RelayStream extends EventTarget {
  constructor(ws, reader, { proofSeconds = PROOF_SECONDS } = {}) {
    super();
    this._ws = ws;
    this._reader = reader;
    this.binaryType = "arraybuffer";
    this.bufferedAmountLowThreshold = 0;
    this.error = null;
    this._ended = false;
    this.link = null; // the RelayLink, which a failure must reach
    let settle;
    this.proven = new Promise((resolve, reject) => (settle = { resolve, reject }));
    this._proven = settle;
    this.chosen = new Promise((resolve, reject) => (settle = { resolve, reject }));
    this._chosen = settle;
    this.proven.catch(() => {});
    this.chosen.catch(() => {});
    this._proofTimer = setTimeout(
      () => this.fail(new PeerConnectionError("the other end through the relay did not prove itself in time")),
      proofSeconds * 1000,
    );
    ws.addEventListener("message", (event) => this._onMessage(event.data));
    ws.addEventListener("close", () => this._end(null));
    ws.addEventListener("error", () => this._end(null));
    const hello = reader.hello();
    if (hello.length) ws.send(hello);
  }

  get readyState() {
    return !this._ended && this._ws.readyState === 1 ? "open" : "closed";
  }

  get bufferedAmount() {
    return this._ws.bufferedAmount;
  }

  /** Whether incoming bytes can be held back in the socket (see StreamSocket). */
  get flowControlled() {
    return this._ws.constructor.flowControlled === true;
  }

  /** Read from the socket or not (only a flow-controlled one can stop). */
  set reading(on) {
    if (this.flowControlled) this._ws.reading = on;
  }

  /** One frame, with its length before it. */
  send(frame) {
    if (this.readyState !== "open") throw this.error ?? new PeerGoneError();
    this._ws.send(lengthPrefixed(frame));
  }

  /** (Sender) make this the connection of the transfer: tell the other end. */
  choose() {
    if (this.readyState !== "open") throw this.error ?? new PeerGoneError();
    this._ws.send(CHOSEN);
  }

  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (type === "bufferedamountlow") this._watchDrain();
  }

  _watchDrain() {
    if (this._drainTimer) return;
    const look = () => {
      if (this._ended || this._ws.bufferedAmount <= this.bufferedAmountLowThreshold) {
        this._drainTimer = null;
        this.dispatchEvent(new Event("bufferedamountlow"));
        return;
      }
      this._drainTimer = setTimeout(look, DRAIN_POLL_MS);
    };
    this._drainTimer = setTimeout(look, DRAIN_POLL_MS);
  }

  _onMessage(data) {
    if (this._ended) return;
    if (!(data instanceof ArrayBuffer)) {
      this.fail(new PeerConnectionError("the relay sent text in the middle of the stream"));
      return;
    }
    let step;
    try {
      step = this._reader.feed(new Uint8Array(data));
    } catch (error) {
      this.fail(error);
      return;
    }
    for (const reply of step.reply) this._ws.send(reply);
    if (step.proven) {
      clearTimeout(this._proofTimer);
      this._proven.resolve(this);
    }
    if (step.chosen) this._chosen.resolve(this);
    for (const frame of step.frames) {
      // A frame is a fresh Uint8Array over its own buffer: hand over the buffer whole.
      this.dispatchEvent(Object.assign(new Event("message"), { data: frame.buffer }));
    }
  }

  /** End the stream with `error` (what reading past the frames here then raises). */
  fail(error) {
    if (this.error === null) this.error = error;
    this._end(error);
    this._ws.close();
  }

  _end(error) {
    if (this._ended) return;
    this._ended = true;
    clearTimeout(this._proofTimer);
    let why = this.error ?? error;
    if (why === null && this._reader.midway) {
      why = new PeerGoneError("the relayed connection broke mid-frame");
    }
    if (why === null && this._reader.stage !== "frames") {
      why = new PeerGoneError("the relayed connection closed before it was set up");
    }
    this.error = why;
    this._proven.reject(why ?? new PeerGoneError());
    this._chosen.reject(why ?? new PeerGoneError());
    if (why !== null) this.link?.fail(why);
    this.dispatchEvent(new Event("close"));
  }

  close() {
    this._end(null);
    this._ws.close();
  }
}

/** The Channel over a paired relay connection (see the top of this file). */
export class RelayLink extends DataChannelLink {
  constructor(stream, { relay, highWater = HIGH_WATER_BYTES, idleTimeout = IDLE_TIMEOUT_SECONDS } = {}) {
    super(stream, { maxMessageSize: MAX_FRAME_BYTES, highWater, idleTimeout });
    this.stream = stream;
    stream.link = this;
    this.route = relayRoute(relay);
    /** 256 KiB frames, as on the direct TCP path (tcp.TcpLink.preferred_chunk_size). */
    this.preferredChunkSize = MAX_CHUNK_BYTES;
    this._held = 0;
    /** The most bytes of frames that waited at once (the page's debug stats). */
    this.peakHeld = 0;
    /** How incoming bytes are held back: "backpressure" or "limit" (MAX_HELD_BYTES). */
    this.flow = stream.flowControlled ? "backpressure" : "limit";
    this._onClose = () => stream.close();
    stream.addEventListener("message", (event) => {
      this._held += event.data.byteLength;
      this.peakHeld = Math.max(this.peakHeld, this._held);
      relayStats.flow = this.flow;
      relayStats.peakHeld = Math.max(relayStats.peakHeld, this._held);
      if (this._held >= READ_AHEAD_BYTES) stream.reading = false;
      if (this._held > MAX_HELD_BYTES) {
        const mib = MAX_HELD_BYTES / 1024 / 1024;
        this.fail(
          new PeerConnectionError(
            `the other side sends faster than this page can take in (more than ${mib} MiB waiting)`,
          ),
        );
        stream.close();
      }
    });
  }

  poll() {
    const frame = super.poll();
    if (frame !== undefined) {
      this._taken(frame);
      this._polled = frame; // receive() may have taken it through here
    }
    return frame;
  }

  async receive(options) {
    const frame = await super.receive(options);
    if (frame !== this._polled) this._taken(frame);
    this._polled = null;
    return frame;
  }

  _taken(frame) {
    this._held -= frame.length;
    if (this._held < READ_AHEAD_BYTES) this.stream.reading = true;
  }
}

/** What the page's relayed links did, for its debug attributes (app.js). */
export const relayStats = { flow: "", peakHeld: 0 };

/**
 * Connect to the relay at `relay` (http(s) URL), present `token`, wait until it pairs
 * us (at most `pairSeconds`), and start the proof: the sender dials, the receiver
 * listens.  Resolves to a RelayLink whose stream's `proven` (and, at the receiver,
 * `chosen`) settle later; rejects with PeerConnectionError (a refusal's reason,
 * sanitised) if there is no pairing.
 * @param {object} options
 * @param {string} options.relay
 * @param {import("./crypto.js").SessionKeys} options.keys
 * @param {boolean} options.sender
 * @param {AbortSignal} [options.signal]  give up (the other path won)
 * @param {typeof WebSocket} [options.WebSocket]  tests pass their own (a classic one)
 * @param {Function} [options.WebSocketStream]  used when there is no `WebSocket` option
 * @param {Uint8Array} [options.nonce]  the proof's nonce (known-answer tests)
 */
export async function connectRelay({
  relay,
  keys,
  sender,
  signal,
  pairSeconds = RELAY_PAIR_SECONDS,
  proofSeconds = PROOF_SECONDS,
  WebSocket,
  WebSocketStream = globalThis.WebSocketStream,
  nonce,
}) {
  const ws = openSocket(webSocketUrl(relay), { WebSocket, WebSocketStream });
  await paired(ws, keys.relayToken, { pairSeconds, signal });
  const prover = new Prover({
    dialer: sender,
    ownKey: keys.proofSend,
    peerKey: keys.proofReceive,
    ...(nonce ? { nonce } : {}),
  });
  const stream = new RelayStream(ws, new StreamReader(prover, { awaitsChoice: !sender }), {
    proofSeconds,
  });
  const link = new RelayLink(stream, { relay });
  signal?.addEventListener("abort", () => link.close(), { once: true });
  return link;
}

/** Send the token, wait for `paired`. */
function paired(ws, token, { pairSeconds, signal }) {
  return new Promise((resolve, reject) => {
    const done = (error) => {
      clearTimeout(timer);
      ws.removeEventListener("open", onOpen);
      ws.removeEventListener("message", onMessage);
      ws.removeEventListener("close", onClose);
      signal?.removeEventListener("abort", onAbort);
      if (error === null) return resolve();
      ws.close();
      reject(error);
    };
    const timer = setTimeout(
      () => done(new PeerConnectionError(`the relay did not pair us within ${pairSeconds} s`)),
      pairSeconds * 1000,
    );
    const onOpen = () => ws.send(token);
    const onMessage = (event) => {
      if (event.data === PAIRED) done(null);
      else done(new PeerConnectionError("the relay answered something else than `paired`"));
    };
    const onClose = (event) => done(new PeerConnectionError(refusal(event.code, event.reason)));
    const onAbort = () => done(signal.reason ?? new PeerGoneError());
    if (signal?.aborted) return onAbort();
    ws.addEventListener("open", onOpen);
    ws.addEventListener("message", onMessage);
    ws.addEventListener("close", onClose);
    signal?.addEventListener("abort", onAbort);
  });
}
