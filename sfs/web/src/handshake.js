// The set-up of one sfs session, sans I/O: pairing, SPAKE2, sealed offer/answer.
// A port of sfs/peer/handshake.py (read them side by side): the same states, events,
// actions and messages, so the page and the command line set up a session alike.
//
// One Handshake per side.  It is fed events (from the signaling server, the peer
// connection, the user) with the time `now` in seconds, and answers with actions for
// the glue in ./session.js to carry out; it never waits on the network or a timer
// itself.  The one difference from Python: sealing and opening use WebCrypto, which
// is asynchronous, so handle() returns a promise; the glue awaits each call before it
// makes the next, which keeps the events in order.
//
//   waiting side (shows the code)       server       joining side (typed the code)
//   register_peer -> peer ID, ICE                    register_peer -> ICE
//   ShowCode(peer ID + new words)                    find_peer, send_connection_request
//                  <- connection_request ------------
//   accept_connection -------------------------------> connection_accepted
//   send_public_key (SPAKE2)  <-----------------------> send_public_key (SPAKE2)
//   sender:   offer {sealed}  ------------------------> receiver: opens it, answers
//   sender:   opens the answer <----------------------- answer {sealed}
//   both: ICE/DTLS/SCTP until the DataChannel opens, then leave the server
//
// A sealed offer or answer that does not open means the two sides hold different keys
// (a typo, a guess, a server in the middle): that side sends `abort wrong_code` and
// stops.  The partner leaving or aborting ends the set-up at any step; before the
// pairing, events of other peers are kept for later (a server may reorder what it
// relays), after it they are dropped.
//
// States:
//
//   both:     IDLE -Registered->
//   waiting:    AWAITING_REQUEST -ConnectionRequested-> AWAITING_KEY
//               (AWAITING_REQUEST -ServerLost-> RECONNECTING -Registered-> AWAITING_REQUEST,
//                with a new code: the server forgot every peer ID)
//   joining:    AWAITING_ACCEPT -ConnectionAccepted-> AWAITING_KEY
//   sender:   AWAITING_KEY -PublicKeyReceived-> CREATING_OFFERS -LocalDescription->
//             AWAITING_ANSWER -SealedReceived(answer)-> OPENING
//   receiver: AWAITING_KEY -PublicKeyReceived-> AWAITING_OFFER -SealedReceived(offer)->
//             ANSWERING -LocalDescription-> OPENING
//   both:     OPENING -ChannelOpen-> DONE
//             (OPENING -PartnerLeft-> PARTNER_LEFT -ChannelOpen-> DONE, or the grace
//              timer -> FAILED: the partner leaves the server once its own side is open)
//             any error, timeout or Cancelled -> FAILED

import { KeyExchange, openMessage, sealMessage, WrongCodeError } from "./crypto.js";
import { Code } from "./code.js";
import {
  CancelledByPeerError,
  PeerGoneError,
  ServerLostError,
  SignalingError,
} from "./errors.js";
import { Role } from "./protocol.js";

/** The `abort` reason of a peer whose user cancelled during set-up. */
export const CANCELLED_REASON = "cancelled";
export const WRONG_CODE_REASON = "wrong_code";
/** How long a channel may still take to open after the partner left the server. */
export const PARTNER_GONE_GRACE_SECONDS = 5.0;
/** Early events kept for a later step; a flood only ever costs this many. */
export const BACKLOG_LIMIT = 64;
/** The most peer connections one session stripes over (the page offers one). */
export const MAX_STREAMS = 8;
/** The longest relay URL a sealed offer or answer may name. */
export const MAX_RELAY_URL_CHARS = 512;
/** The `reconnect` value of a sealed description (handshake.py RECONNECT_VERSION). */
export const RECONNECT_VERSION = 1;

/**
 * `url` is what a relay may be named by, as sfs/peer/proto/handshake.py's is_relay_url
 * judges it (checked against the same list in vectors.json): http or https with a host,
 * no user name or password, no query or fragment, no space or control character, at most
 * MAX_RELAY_URL_CHARS characters. WHATWG URL parsing is lenient (it reads "https:///x"
 * as host "x"), so the shape is checked on the text too.
 */
export function isRelayUrl(url) {
  if (typeof url !== "string" || url.length > MAX_RELAY_URL_CHARS) return false;
  if (/[\p{C}\p{Z}]/u.test(url) || /[?#]/.test(url)) return false;
  const scheme = /^(https?):\/\/([^/@]+)(\/.*)?$/i.exec(url);
  if (scheme === null) return false;
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  return parsed.hostname !== "" && !parsed.username && !parsed.password;
}

const LEFT_MESSAGE = "the other side left before the connection was set up";

// -- events -------------------------------------------------------------------------------

/**
 * The server gave us a peer ID (register_peer's reply): the ICE servers it names,
 * and `relay`, the absolute `http(s)://…/relay` URL of the relay this side would use
 * (null: none, or this side takes no part; ./relay.js relayUrlOf makes it).
 */
export class Registered {
  constructor(peerId, iceServers = [], relay = null) {
    Object.assign(this, { peerId, iceServers, relay });
  }
}
/** Someone typed our code and asks for a connection (`connection_request`). */
export class ConnectionRequested {
  constructor(peerId) {
    this.peerId = peerId;
  }
}
export class ConnectionAccepted {
  constructor(peerId) {
    this.peerId = peerId;
  }
}
/** The partner's SPAKE2 message, base64 as the server relays it (unchecked). */
export class PublicKeyReceived {
  constructor(peerId, key) {
    Object.assign(this, { peerId, key });
  }
}
/** A sealed `offer` or `answer`, base64 as the server relays it (unchecked). */
export class SealedReceived {
  constructor(peerId, kind, sealed) {
    Object.assign(this, { peerId, kind, sealed });
  }
}
export class PartnerLeft {
  constructor(peerId) {
    this.peerId = peerId;
  }
}
export class PartnerAborted {
  constructor(peerId, reason) {
    Object.assign(this, { peerId, reason });
  }
}
/** The connection to the signaling server dropped. */
export class ServerLost {}
/** The peer connection made the offer (sender) or answer (receiver) asked for. */
export class LocalDescription {
  constructor(sdps) {
    this.sdps = sdps;
  }
}
/** The DataChannel opened. */
export class ChannelOpen {}
/** The local user gave up (a Cancel button, the tab closing). */
export class Cancelled {}

/**
 * Turn one pushed signaling event into a handshake event; null for the ones set-up
 * does not use (`peer_found`, `ice_candidate`, anything unknown).
 */
export function signalEvent(name, data) {
  const peerId = data.peer_id;
  switch (name) {
    case "connection_request":
      return new ConnectionRequested(peerId);
    case "connection_accepted":
      return new ConnectionAccepted(peerId);
    case "receive_public_key":
      return new PublicKeyReceived(peerId, data.key);
    case "offer":
    case "answer":
      return new SealedReceived(peerId, name, data.sealed);
    case "peer_disconnected":
      return new PartnerLeft(peerId);
    case "peer_aborted":
      return new PartnerAborted(peerId, data.reason);
    default:
      return null;
  }
}

// -- actions ------------------------------------------------------------------------------

/** A request to the signaling server; `bestEffort`: the session ends either way. */
export class Call {
  constructor(event, payload, { bestEffort = false } = {}) {
    Object.assign(this, { event, payload, bestEffort });
  }
}
export class ShowCode {
  constructor(code) {
    this.code = code;
  }
}
export class Status {
  constructor(message) {
    this.message = message;
  }
}
/** Connect to the server again (retrying a while), then feed a new Registered. */
export class Reconnect {}
/** Make `count` peer connections and feed their offers as LocalDescription. */
export class CreateOffers {
  constructor(count, iceServers) {
    Object.assign(this, { count, iceServers });
  }
}
/** Make one peer connection per offer and feed the answers as LocalDescription. */
export class AnswerOffers {
  constructor(sdps, iceServers) {
    Object.assign(this, { sdps, iceServers });
  }
}
export class AcceptAnswers {
  constructor(sdps) {
    this.sdps = sdps;
  }
}
/** Wait for the DataChannel to open, then feed ChannelOpen. */
export class OpenChannel {
  /**
   * @param {string|null} relay  both descriptions named a relay: the pair meets at
   *   this one (the receiver's, from the answer), and the sender chooses between it
   *   and the DataChannel and says which with CHOSEN (./opening.js).  null: the
   *   DataChannel, as before the relay existed (no CHOSEN).
   * @param {SessionKeys|null} keys  with a relay: the keys its proof and token need
   */
  constructor(relay = null, keys = null) {
    this.relay = relay;
    this.keys = relay === null ? null : keys;
  }
}
/** Leave the signaling server: the peers talk directly from now on. */
export class Leave {}
export class Done {
  constructor(keys) {
    this.keys = keys;
  }
}
/** The set-up is over: raise `error` (after the actions before this one). */
export class Fail {
  constructor(error) {
    this.error = error;
  }
}

// -- the machine --------------------------------------------------------------------------

export const State = Object.freeze({
  IDLE: "idle",
  AWAITING_REQUEST: "awaiting_request",
  RECONNECTING: "reconnecting",
  AWAITING_ACCEPT: "awaiting_accept",
  AWAITING_KEY: "awaiting_key",
  CREATING_OFFERS: "creating_offers",
  AWAITING_ANSWER: "awaiting_answer",
  AWAITING_OFFER: "awaiting_offer",
  ANSWERING: "answering",
  OPENING: "opening",
  PARTNER_LEFT: "partner_left",
  DONE: "done",
  FAILED: "failed",
});

/** From the pairing on, the partner is told about a cancel or a wrong code. */
const PAIRED = new Set([
  State.AWAITING_KEY,
  State.CREATING_OFFERS,
  State.AWAITING_ANSWER,
  State.AWAITING_OFFER,
  State.ANSWERING,
  State.OPENING,
  State.PARTNER_LEFT,
]);
const OVER = new Set([State.DONE, State.FAILED]);
const isLocal = (e) =>
  e instanceof Registered || e instanceof LocalDescription || e instanceof ChannelOpen;
const isKept = (e) =>
  e instanceof PublicKeyReceived || e instanceof SealedReceived || e instanceof ConnectionAccepted;

/**
 * One side's set-up.
 *
 * @param {"sender"|"receiver"} role  the sender is SPAKE2 side A and makes the offer
 * @param {object} options
 * @param {Code|null} [options.code]  the other side's code to join; null to register,
 *   show a new code and wait for whoever types it
 * @param {number} options.connectTimeout  seconds each step of the other side may take
 * @param {object[]|null} [options.iceServers]  STUN/TURN servers; null for the server's
 * @param {number} [options.streams]  peer connections the sender offers
 * @param {() => string} options.newWords  where a waiting side's secret words come from
 */
export class Handshake {
  constructor(
    role,
    {
      code = null,
      rendezvous = null,
      connectTimeout,
      iceServers = null,
      streams = 1,
      newWords,
      reconnects = false,
    } = {},
  ) {
    if (!(streams >= 1 && streams <= MAX_STREAMS)) {
      throw new RangeError(`streams must be 1 to ${MAX_STREAMS}, not ${streams}`);
    }
    if (code !== null && rendezvous !== null) {
      throw new TypeError("a side joins with a code or waits at a rendezvous, not both");
    }
    if (code === null && rendezvous === null && typeof newWords !== "function") {
      throw new TypeError("a waiting side needs newWords");
    }
    // A session meeting again after its connection broke (handshake.py): this waiting
    // side registers under the rendezvous ID and shows no code.
    this._rendezvous = rendezvous;
    this._reconnects = reconnects;
    this._peerReconnects = false;
    this._wasPaired = false;
    this.role = role;
    this.waits = code === null;
    this.connectTimeout = connectTimeout;
    this._iceOverride = iceServers;
    this._serverIce = [];
    this._ownRelay = null; // the relay this side would use (Registered)
    this._peerRelay = null; // the one the other side's description named
    this._streams = streams;
    this._newWords = newWords;
    // The joining side knows its partner from the code; the waiting side learns it
    // from the first connection_request.
    this._partner = code === null ? null : code.peerId;
    this._code = code;
    this._exchange = null;
    this._keys = null;
    this._backlog = [];
    this._deadline = null;
    this._state = State.IDLE;
    /** Logs `old -> new` (tests and debugging). */
    this.onStateChange = null;
  }

  get state() {
    return this._state;
  }

  get partner() {
    return this._partner;
  }

  /** The peer ID this waiting side registers under, if it is meeting again. */
  get rendezvous() {
    return this._rendezvous === null ? null : this._rendezvous.peerId;
  }

  /** Whether this side offers to meet again after an outage (say it before sealing). */
  set reconnects(value) {
    this._reconnects = Boolean(value);
  }

  /** Both sides said they keep the session after an outage ("reconnect"). */
  get canReconnect() {
    return this._reconnects && this._peerReconnects;
  }

  /** A partner has been paired with; stays true after the set-up ends. */
  get paired() {
    return this._wasPaired;
  }

  _setState(state, { deadline = null } = {}) {
    if (this.onStateChange) this.onStateChange(this._state, state);
    this._state = state;
    this._deadline = deadline;
    if (PAIRED.has(state)) this._wasPaired = true;
    if (OVER.has(state)) {
      // Nothing secret outlives the set-up.
      this._code = null;
      this._rendezvous = null;
      this._exchange = null;
      this._keys = null;
      this._backlog = [];
    }
  }

  /** When handleTimer() must be called (seconds), if the current step can time out. */
  nextDeadline() {
    return this._deadline;
  }

  /** Fire the deadline if it has passed. */
  handleTimer(now) {
    if (this._deadline === null || now < this._deadline) return [];
    if (this._state === State.PARTNER_LEFT) return this._fail(new PeerGoneError(LEFT_MESSAGE));
    let message = `the other side did not answer within ${this.connectTimeout.toFixed(0)} s`;
    if (this._state === State.AWAITING_ANSWER) {
      // Whoever holds our sealed offer can test one guess of the words against it
      // offline; a server that plays the receiver then says nothing.  Retrying the
      // same code would hand it another guess.
      message +=
        "; this code has had its one try: ask the receiver for a new code " +
        "instead of retrying it";
    }
    return this._fail(new SignalingError(message));
  }

  /**
   * Take one event; resolve to what to do, in order.  Await each call before the next.
   *
   * Events from the server never reject (a bad one ends in Fail); local events the
   * state does not expect are the glue's bug and reject with an Error.
   */
  async handle(event, now) {
    if (OVER.has(this._state)) {
      if (isLocal(event)) throw new Error(`${event.constructor.name} after the handshake is over`);
      return [];
    }
    if (event instanceof Cancelled) return this._cancel();
    if (isLocal(event)) return this._local(event, now);
    return this._remote(event, now);
  }

  // -- local events ---------------------------------------------------------------------

  async _local(event, now) {
    if (
      event instanceof Registered &&
      (this._state === State.IDLE || this._state === State.RECONNECTING)
    ) {
      return this._registered(event, now);
    }
    if (event instanceof LocalDescription && this._state === State.CREATING_OFFERS) {
      const call = await this._sealedCall("offer", event.sdps, this._ownRelay);
      this._setState(State.AWAITING_ANSWER, { deadline: now + this.connectTimeout });
      return [call, ...(await this._fromBacklog(now))];
    }
    if (event instanceof LocalDescription && this._state === State.ANSWERING) {
      // A relay in the answer only if the offer had one: the pair meets at ours.
      const relay = this._peerRelay !== null ? this._ownRelay : null;
      const call = await this._sealedCall("answer", event.sdps, relay);
      this._setState(State.OPENING);
      return [call, new OpenChannel(relay, this._keys)];
    }
    if (
      event instanceof ChannelOpen &&
      (this._state === State.OPENING || this._state === State.PARTNER_LEFT)
    ) {
      const keys = this._keys;
      this._setState(State.DONE);
      return [new Leave(), new Done(keys)];
    }
    throw new Error(`${event.constructor.name} in state ${this._state}`);
  }

  async _registered(event, now) {
    this._serverIce = event.iceServers;
    this._ownRelay = event.relay ?? null;
    if (!this.waits) {
      const payload = { peer_id: this._partner };
      this._setState(State.AWAITING_ACCEPT, { deadline: now + this.connectTimeout });
      return [
        new Call("find_peer", payload),
        new Call("send_connection_request", payload),
        new Status(`Connecting to ${this._partner}…`),
        ...(await this._fromBacklog(now)),
      ];
    }
    const reconnected = this._state === State.RECONNECTING;
    if (this._rendezvous !== null) {
      if (event.peerId !== this._rendezvous.peerId) {
        return this._fail(new SignalingError("the signaling server gave another rendezvous"));
      }
      this._code = this._rendezvous;
      this._setState(State.AWAITING_REQUEST);
      return [new Status("Waiting for the other side to come back…"), ...(await this._fromBacklog(now))];
    }
    this._code = new Code(event.peerId, this._newWords());
    this._setState(State.AWAITING_REQUEST);
    const actions = [];
    if (reconnected) {
      actions.push(new Status("Reconnected. The old code no longer works; use this one:"));
    }
    actions.push(new ShowCode(String(this._code)));
    return [...actions, ...(await this._fromBacklog(now))];
  }

  _cancel() {
    const actions = [];
    if (PAIRED.has(this._state)) {
      // There is no channel yet to carry a CANCEL: only the server can tell the
      // partner at once, so that it does not wait out a timeout.
      actions.push(this._abortCall(CANCELLED_REASON));
    }
    this._setState(State.FAILED);
    return actions;
  }

  // -- server events --------------------------------------------------------------------

  async _remote(event, now) {
    if (event instanceof ServerLost) {
      if (this._state === State.AWAITING_REQUEST) {
        // The server forgot every peer ID when it went away: come back with a new
        // code rather than wait for a peer that can no longer find us.
        this._setState(State.RECONNECTING);
        return [new Status("Lost the signaling server; reconnecting…"), new Reconnect()];
      }
      if (this._state === State.OPENING || this._state === State.PARTNER_LEFT) {
        return []; // the peers no longer need the server
      }
      return this._fail(new ServerLostError());
    }
    const peerId = event.peerId;
    if (this._partner === null) {
      // Not paired yet: only a request pairs; keep the rest for when one does.
      if (event instanceof ConnectionRequested && this._state === State.AWAITING_REQUEST) {
        return this._requested(event, now);
      }
      if (isKept(event)) this._keep(event);
      return [];
    }
    if (peerId !== this._partner) return []; // not from our partner
    if (event instanceof PartnerLeft) {
      if (this._state === State.OPENING) {
        // The partner leaves the server as soon as its side of the channel is open,
        // which on a long link is a round trip before ours: only a channel that then
        // stays shut means the partner is really gone.
        this._setState(State.PARTNER_LEFT, { deadline: now + PARTNER_GONE_GRACE_SECONDS });
        return [];
      }
      if (this._state === State.PARTNER_LEFT) return [];
      return this._fail(new PeerGoneError(LEFT_MESSAGE));
    }
    if (event instanceof PartnerAborted) {
      if (this._state === State.PARTNER_LEFT) return [];
      return this._fail(abortError(event.reason));
    }
    if (this._expects(event)) return this._step(event, now);
    if (isKept(event)) this._keep(event); // maybe early: a server may reorder what it relays
    return [];
  }

  _keep(event) {
    this._backlog.push(event);
    if (this._backlog.length > BACKLOG_LIMIT) this._backlog.shift();
  }

  _expects(event) {
    const state = this._state;
    if (event instanceof ConnectionAccepted) return state === State.AWAITING_ACCEPT;
    if (event instanceof PublicKeyReceived) return state === State.AWAITING_KEY;
    if (event instanceof SealedReceived) {
      return (
        (event.kind === "answer" && state === State.AWAITING_ANSWER) ||
        (event.kind === "offer" && state === State.AWAITING_OFFER)
      );
    }
    return false;
  }

  /** Take the first kept event the new state was waiting for, if any. */
  async _fromBacklog(now) {
    if (this._partner === null) return [];
    const index = this._backlog.findIndex((e) => e.peerId === this._partner && this._expects(e));
    if (index < 0) return [];
    const [event] = this._backlog.splice(index, 1);
    return this._step(event, now);
  }

  async _requested(event, now) {
    if (typeof event.peerId !== "string") {
      return this._fail(new SignalingError("the signaling server sent a message without peer_id"));
    }
    // One peer only: the first request takes this code's single attempt.
    this._partner = event.peerId;
    const accept = new Call("accept_connection", { peer_id: this._partner });
    return [accept, ...(await this._startKeys(now))];
  }

  async _step(event, now) {
    if (event instanceof ConnectionAccepted) return this._startKeys(now);
    if (event instanceof PublicKeyReceived) return this._finishKeys(event, now);
    if (this.role === Role.SENDER) return this._answered(event);
    return this._offered(event);
  }

  async _startKeys(now) {
    const code = this._code;
    // The code's peer ID is the side that printed it; the exchange binds both.
    const printedBy = this.waits ? this.role : other(this.role);
    this._exchange = new KeyExchange({
      role: this.role,
      password: code.secret,
      codeId: code.peerId,
      printedBy,
    });
    this._code = null; // the words live on in the SPAKE2 state only, until finish()
    const key = toBase64(this._exchange.message);
    this._setState(State.AWAITING_KEY, { deadline: now + this.connectTimeout });
    return [
      new Call("send_public_key", { peer_id: this._partner, key }),
      ...(await this._fromBacklog(now)),
    ];
  }

  async _finishKeys(event, now) {
    const exchange = this._exchange;
    this._exchange = null; // one attempt, pass or fail
    try {
      this._keys = exchange.finish(fromBase64(event.key, "key"));
    } catch (error) {
      if (error instanceof WrongCodeError) return this._wrongCode(error);
      if (error instanceof SignalingError) return this._fail(error);
      throw error;
    }
    if (this.role === Role.SENDER) {
      this._setState(State.CREATING_OFFERS);
      return [new CreateOffers(this._streams, this._ice())];
    }
    this._setState(State.AWAITING_OFFER, { deadline: now + this.connectTimeout });
    return this._fromBacklog(now);
  }

  async _offered(event) {
    // If the offer does not open, this code has had its one try: tell the sender, end.
    let sdps;
    try {
      ({ sdps, relay: this._peerRelay } = await this._open(event));
    } catch (error) {
      if (error instanceof WrongCodeError) return this._wrongCode(error);
      if (error instanceof SignalingError) return this._fail(error);
      throw error;
    }
    this._setState(State.ANSWERING);
    return [new AnswerOffers(sdps, this._ice())];
  }

  async _answered(event) {
    let sdps;
    try {
      ({ sdps, relay: this._peerRelay } = await this._open(event));
    } catch (error) {
      if (error instanceof WrongCodeError) return this._wrongCode(error);
      if (error instanceof SignalingError) return this._fail(error);
      throw error;
    }
    this._setState(State.OPENING);
    // The receiver's relay, if the offer named ours (an answer naming one unasked is
    // not acted on: the offer decides whether a relay takes part).
    const relay = this._ownRelay !== null ? this._peerRelay : null;
    return [new AcceptAnswers(sdps), new OpenChannel(relay, this._keys)];
  }

  _ice() {
    return this._iceOverride === null ? this._serverIce : this._iceOverride;
  }

  // -- sealed offer/answer --------------------------------------------------------------

  /**
   * Seal the session description(s): the first as `sdp`, any more (striping) as
   * `extra_sdps`, so a peer that knows only one stream still understands it; the
   * relay this side would use as `relay` (a peer that does not know it ignores it).
   */
  async _sealedCall(kind, sdps, relay = null) {
    if (!sdps.length) throw new Error(`an ${kind} needs at least one session description`);
    const message = { type: kind, sdp: sdps[0] };
    if (sdps.length > 1) message.extra_sdps = sdps.slice(1);
    if (relay !== null) message.relay = relay;
    if (this._reconnects) message.reconnect = RECONNECT_VERSION;
    const plaintext = new TextEncoder().encode(JSON.stringify(message));
    const sealed = await sealMessage({ key: this._keys.signalSend, kind, plaintext });
    return new Call(kind, { peer_id: this._partner, sealed: toBase64(sealed) });
  }

  async _open(event) {
    const kind = event.kind;
    const sealed = fromBase64(event.sealed, "sealed");
    const plaintext = await openMessage({ key: this._keys.signalReceive, kind, sealed });
    const malformed = `the other side sent a malformed ${kind}`;
    let message;
    try {
      message = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plaintext));
    } catch (error) {
      throw new SignalingError(malformed, { cause: error });
    }
    const isDict = typeof message === "object" && message !== null && !Array.isArray(message);
    const extra = isDict ? (Object.hasOwn(message, "extra_sdps") ? message.extra_sdps : []) : null;
    if (!isDict || !Array.isArray(extra)) throw new SignalingError(malformed);
    const sdps = [message.sdp, ...extra];
    if (message.type !== kind || sdps.length > MAX_STREAMS) throw new SignalingError(malformed);
    if (!sdps.every((sdp) => typeof sdp === "string")) throw new SignalingError(malformed);
    const relay = Object.hasOwn(message, "relay") ? message.relay : null;
    if (relay !== null && !isRelayUrl(relay)) throw new SignalingError(malformed);
    this._peerReconnects = message.reconnect === RECONNECT_VERSION;
    return { sdps, relay };
  }

  // -- endings --------------------------------------------------------------------------

  _abortCall(reason) {
    return new Call("abort", { peer_id: this._partner, reason }, { bestEffort: true });
  }

  /** Tell the partner the code did not match (best effort: we stop either way). */
  _wrongCode(error) {
    const call = this._abortCall(WRONG_CODE_REASON);
    return [call, ...this._fail(error)];
  }

  _fail(error) {
    this._setState(State.FAILED);
    return [new Fail(error)];
  }
}

function other(role) {
  return role === Role.SENDER ? Role.RECEIVER : Role.SENDER;
}

function abortError(reason) {
  if (reason === WRONG_CODE_REASON) return new WrongCodeError();
  if (reason === CANCELLED_REASON) {
    return new CancelledByPeerError(
      "the other side was cancelled by its user before the connection was set up",
    );
  }
  return new PeerGoneError("the other side gave up before the connection was set up");
}

// Standard base64 with padding, as the server requires and Python writes.
export function toBase64(data) {
  let binary = "";
  for (let i = 0; i < data.length; i += 0x8000) {
    binary += String.fromCharCode(...data.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict standard base64 (Python's b64decode(validate=True)); SignalingError if not. */
export function fromBase64(value, key) {
  if (typeof value !== "string") {
    throw new SignalingError(`the signaling server sent a message without ${key}`);
  }
  if (!BASE64.test(value)) throw new SignalingError(`the signaling server sent a malformed ${key}`);
  const binary = atob(value);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}
