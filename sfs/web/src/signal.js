// The signaling client: the page's counterpart of sfs/signal/client.py, over
// socket.io-client.
//
// Requests use Socket.IO acknowledgements, so each call resolves to the server's
// answer or rejects with the matching ./errors.js class.  Pushed events land in one
// queue that nextEvent() reads in order; what they mean for the set-up (whose they
// are, which are early, a partner gone) is ./handshake.js's business.
//
// The server takes websocket connections only (long-polling gets HTTP 400: only a
// websocket connection can be dropped at once), so the client never tries polling.

import { io } from "socket.io-client";

import { WrongCodeError } from "./crypto.js";
import {
  CodeNotFoundError,
  CodeUsedUpError,
  PeerGoneError,
  RoomFullError,
  ServerLostError,
  ServerUnreachableError,
  SignalingError,
} from "./errors.js";
import { AsyncQueue } from "./queue.js";

/** The signaling version the page speaks: its register_peer sends {}, which a server
 * reads as version 1 (sfs/signal/messages.py), so a new version needs the page taught. */
export const SIGNALING_PROTOCOL_VERSION = 1;
/** How long reaching the signaling server may take (sfs/signal/client.py has the same). */
export const SIGNAL_CONNECT_TIMEOUT_SECONDS = 10;
export const CALL_TIMEOUT_SECONDS = 10;
/** Server -> client events this client listens for. */
export const PUSHED_EVENTS = [
  "peer_found",
  "connection_request",
  "connection_accepted",
  "receive_public_key",
  "offer",
  "answer",
  "ice_candidate",
  "peer_aborted",
  "peer_disconnected",
];
/** What nextEvent() resolves to once the connection to the server dropped. */
export const SERVER_LOST = "server_lost";
// What docs/PROTOCOL.md allows for the ICE servers of a register_peer answer.
export const MAX_ICE_SERVERS = 8;
export const MAX_ICE_URLS = 8;
const ICE_URL = /^(stuns?|turns?):[^\s]+$/i;

export class SignalClient {
  /**
   * Connect to `sfs serve` at `url` (the page's own origin).
   * @param {string} url
   * @param {object} [options]
   * @param {number} [options.connectTimeout]  seconds
   * @param {Function} [options.connect]  socket.io's io(); tests pass their own
   * @returns {Promise<SignalClient>}
   */
  static async connect(url, { connectTimeout = SIGNAL_CONNECT_TIMEOUT_SECONDS, connect = io } = {}) {
    const socket = connect(url, {
      transports: ["websocket"],
      reconnection: false, // a lost server is the handshake's to handle (a new code)
      forceNew: true,
      timeout: connectTimeout * 1000,
    });
    const client = new SignalClient(socket, url);
    try {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new ServerUnreachableError(
                `the signaling server at ${url} did not answer within ${connectTimeout} s`,
              ),
            ),
          connectTimeout * 1000,
        );
        socket.once("connect", () => {
          clearTimeout(timer);
          resolve();
        });
        socket.once("connect_error", (error) => {
          clearTimeout(timer);
          reject(
            new ServerUnreachableError(
              `cannot reach the signaling server at ${url} (is \`sfs serve\` still running?)`,
              { cause: error },
            ),
          );
        });
      });
    } catch (error) {
      client.leave();
      throw error;
    }
    return client;
  }

  constructor(socket, url) {
    this.url = url;
    this._socket = socket;
    this._events = new AsyncQueue();
    this._left = false;
    for (const name of PUSHED_EVENTS) {
      socket.on(name, (data) => {
        if (typeof data !== "object" || data === null || Array.isArray(data)) return; // malformed
        this._events.put([name, data]);
      });
    }
    socket.on("disconnect", () => this._events.put([SERVER_LOST, {}]));
  }

  /** Disconnect; later server events are ignored (the transfer no longer needs them). */
  leave() {
    if (!this._left) {
      this._left = true;
      this._socket.disconnect();
    }
  }

  /**
   * Send a request and resolve to the server's positive answer.
   * @throws {SignalingError} (or a subclass) when the server refuses
   */
  async call(event, data) {
    if (!this._socket.connected) throw new ServerLostError();
    let reply;
    try {
      reply = await this._socket.timeout(CALL_TIMEOUT_SECONDS * 1000).emitWithAck(event, data);
    } catch (error) {
      if (!this._socket.connected) throw new ServerLostError();
      throw new SignalingError(`the signaling server did not answer ${event}`, { cause: error });
    }
    if (typeof reply !== "object" || reply === null || Array.isArray(reply)) {
      throw new SignalingError(`the signaling server sent a malformed reply to ${event}`);
    }
    if (reply.ok === true) return reply;
    const code = reply.error;
    if (code === "not_paired") throw this._whyPartnerLeft();
    if (code === "unknown_peer") throw new CodeNotFoundError();
    if (code === "busy") throw new RoomFullError();
    if (code === "used_up") throw new CodeUsedUpError();
    if (code === "rate_limited") {
      throw new SignalingError("too many attempts; the server asks you to wait a while");
    }
    const detail = typeof reply.message === "string" ? reply.message : String(code);
    throw new SignalingError(`the signaling server refused ${event}: ${detail.slice(0, 200)}`);
  }

  /** The pairing is gone: find the partner's reason among the events received. */
  _whyPartnerLeft() {
    for (let item = this._events.poll(); item !== undefined; item = this._events.poll()) {
      const [name, data] = item;
      if (name === "peer_aborted" && data.reason === "wrong_code") return new WrongCodeError();
    }
    return new PeerGoneError("the other side left before the connection was set up");
  }

  /**
   * Get a peer ID and the ICE servers that `sfs serve` recommends, as RTCIceServer
   * dictionaries (never a public default: what the server says, or none).
   * `relay` is the ack's, unchecked (./relay.js relayUrlOf reads it).
   * @returns {Promise<{peerId: string, iceServers: RTCIceServer[], relay: unknown}>}
   */
  /** @param {string|null} [rendezvous]  the peer ID to register under (meeting again) */
  async register(rendezvous = null) {
    const reply = await this.call("register_peer", rendezvous === null ? {} : { rendezvous });
    if (typeof reply.peer_id !== "string") {
      throw new SignalingError("the signaling server sent no peer ID");
    }
    return {
      peerId: reply.peer_id,
      iceServers: iceServers(reply.ice_servers ?? []),
      relay: reply.relay,
      // A server that lets a session meet again after an outage (not an embedded one).
      comeBack: reply.rendezvous === true,
    };
  }

  /**
   * The next pushed event, in the order received: [name, data], or [SERVER_LOST, {}]
   * once the connection to the server dropped.
   * @param {{signal?: AbortSignal}} [options]  abort to stop waiting (nothing is lost)
   */
  nextEvent(options) {
    return this._events.get(options);
  }
}

/** The register_peer answer's ICE servers, checked as sfs/signal/messages.py does. */
export function iceServers(list) {
  const bad = (why) => new SignalingError(`the signaling server sent bad ICE servers: ${why}`);
  if (!Array.isArray(list) || list.length > MAX_ICE_SERVERS) throw bad("not a short list");
  return list.map((server) => {
    if (typeof server !== "object" || server === null) throw bad("not an object");
    const { urls, username = null, credential = null } = server;
    if (!Array.isArray(urls) || !urls.length || urls.length > MAX_ICE_URLS) throw bad("urls");
    if (!urls.every((url) => typeof url === "string" && ICE_URL.test(url))) throw bad("a url");
    for (const value of [username, credential]) {
      if (value !== null && typeof value !== "string") throw bad("a credential");
    }
    const turn = urls.some((url) => /^turns?:/i.test(url));
    if (turn && (username === null || credential === null)) throw bad("TURN without credential");
    // null would reach the browser as the string "null": leave the keys out instead.
    const entry = { urls: [...urls] };
    if (username !== null) entry.username = username;
    if (credential !== null) entry.credential = credential;
    return entry;
  });
}
