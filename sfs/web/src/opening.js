// Opening the transport of a transfer when both sides named a relay: the DataChannel
// or the relay (./relay.js), as the sender chose and said with CHOSEN (the page's
// counterpart of sfs/peer/transport/opening.py; the page cannot dial TCP, so its
// "direct path" is the relay alone).
//
// PathChoice is the rule, sans I/O (events and `now` in, actions out); openTransport
// pumps it between the peer connection and the relay.
//
//   sender:   the DataChannel if it opens; the relay joins after a head start
//             (RELAY_HEAD_START_SECONDS, or at once when ICE failed first), not after
//             ICE gave up; whichever is open (DataChannel) or proven (relay) first is
//             taken, and CHOSEN goes on it.
//   receiver: the relay joins after the same head start; whichever carries CHOSEN
//             first is taken (a first DataChannel message other than CHOSEN is a
//             protocol error).
//   mode "only" (`?relay=only`): the relay at once, never the DataChannel.
//   Both failed, or nothing chosen within the bound: give up, saying why.

import { PeerConnectionError, RemoteProtocolError } from "./errors.js";
import { AsyncQueue } from "./queue.js";
import { connectRelay } from "./relay.js";
import { CHOSEN } from "./tcp.js";

/** How long the DataChannel has on its own before the relay joins (seconds). */
export const RELAY_HEAD_START_SECONDS = 1.5;
/** (Receiver) how much longer than connectTimeout a sender may take to choose. */
export const CHOICE_MARGIN_SECONDS = RELAY_HEAD_START_SECONDS + 1;

// -- events ---------------------------------------------------------------------------------

/** (Sender) the DataChannel is open. */
export class DataChannelOpen {}
/** (Receiver) the DataChannel's first message was CHOSEN. */
export class ChosenOnDataChannel {}
/** The DataChannel will not open (ICE failed, timed out). */
export class DataChannelFailed {
  constructor(error) {
    this.error = error;
  }
}
/** The relayed stream is proven (sender) or carried CHOSEN (receiver). */
export class RelayReady {}
/** The relay refused, never paired us, or the other end did not prove itself. */
export class RelayFailed {
  constructor(error) {
    this.error = error;
  }
}
/** The other side broke the protocol while choosing: nothing more to wait for. */
export class ChoiceBroken {
  constructor(error) {
    this.error = error;
  }
}

// -- actions --------------------------------------------------------------------------------

/** Connect to the relay now. */
export class StartRelay {}
/** Take this path ("datachannel" or "relay"); a sender says CHOSEN on it. */
export class Take {
  constructor(path) {
    this.path = path;
  }
}
export class GiveUp {
  constructor(error) {
    this.error = error;
  }
}

/** The choice between the DataChannel and the relay, sans I/O (see the top). */
export class PathChoice {
  /**
   * @param {object} options
   * @param {boolean} options.sender
   * @param {"auto"|"only"} options.mode
   * @param {number} options.now  seconds
   * @param {number} options.connectTimeout  the DataChannel's own bound (seconds)
   */
  constructor({ sender, mode, now, connectTimeout }) {
    this.sender = sender;
    this.only = mode === "only";
    this._relayAt = this.only ? now : now + RELAY_HEAD_START_SECONDS;
    this._giveUpAt = now + connectTimeout + CHOICE_MARGIN_SECONDS;
    this._connectTimeout = connectTimeout;
    this._relayStarted = false;
    this._dcError = null;
    this._relayError = null;
    this.taken = null;
  }

  get over() {
    return this.taken !== null;
  }

  /** When handleTimer() must be called next (seconds), or null. */
  nextDeadline() {
    if (this.over) return null;
    return this._relayStarted ? this._giveUpAt : Math.min(this._relayAt, this._giveUpAt);
  }

  handleTimer(now) {
    if (this.over) return [];
    if (now >= this._giveUpAt) {
      return this._giveUp(
        new PeerConnectionError(`the sender chose no connection within ${this._connectTimeout} s`),
      );
    }
    if (now >= this._relayAt) return this._startRelay();
    return [];
  }

  handle(event) {
    if (this.over) return [];
    if (event instanceof ChoiceBroken) return this._giveUp(event.error);
    if (event instanceof RelayReady) return this._take("relay");
    if (event instanceof DataChannelOpen) {
      // The sender takes an open DataChannel, unless told to relay only.
      return this.sender && !this.only ? this._take("datachannel") : [];
    }
    if (event instanceof ChosenOnDataChannel) {
      if (!this.only) return this._take("datachannel");
      return this._giveUp(
        new PeerConnectionError("the sender chose WebRTC, and this page takes only the relay"),
      );
    }
    if (event instanceof DataChannelFailed) {
      this._dcError = event.error;
      if (this._relayError !== null) return this._bothFailed();
      return this._startRelay(); // no reason to wait out the head start
    }
    if (event instanceof RelayFailed) {
      this._relayError = event.error;
      if (this.only) return this._giveUp(event.error);
      if (this._dcError !== null) return this._bothFailed();
      return [];
    }
    throw new TypeError(`not a path event: ${event?.constructor?.name}`);
  }

  _startRelay() {
    if (this._relayStarted) return [];
    this._relayStarted = true;
    return [new StartRelay()];
  }

  _take(path) {
    this.taken = path;
    return [new Take(path)];
  }

  _bothFailed() {
    const message = `${this._dcError.message}; and through the relay: ${this._relayError.message}`;
    return this._giveUp(new PeerConnectionError(message, { cause: this._relayError }));
  }

  _giveUp(error) {
    this.taken = "none";
    return [new GiveUp(error)];
  }
}

const clock = () => performance.now() / 1000;

/**
 * Open the transport when both sides named a relay: pump a PathChoice between the
 * peer connection and the relay.  Resolves to {link, keys}: the DataChannelLink (with
 * `keys`) or the RelayLink (with keys.overTcp()); closes whichever was not taken.
 * @param {object} options
 * @param {boolean} options.sender
 * @param {"auto"|"only"} options.mode
 * @param {string} options.relay  the relay both meet at (the receiver's)
 * @param {import("./crypto.js").SessionKeys} options.keys
 * @param {import("./connection.js").PeerLink} options.peer
 * @param {number} options.connectTimeout
 * @param {AbortSignal} [options.cancel]
 * @param {Function} [options.connect]  tests pass their own connectRelay
 */
export async function openTransport({
  sender,
  mode,
  relay,
  keys,
  peer,
  connectTimeout,
  cancel,
  connect = connectRelay,
}) {
  const choice = new PathChoice({ sender, mode, now: clock(), connectTimeout });
  const events = new AsyncQueue();
  const stopRelay = new AbortController();
  let dcLink = null;
  let relayLink = null;

  peer.open(connectTimeout).then(
    (link) => {
      dcLink = link;
      if (sender) events.put(new DataChannelOpen());
      else if (mode !== "only") readChoice(link, events);
    },
    (error) => events.put(new DataChannelFailed(error)),
  );

  const startRelay = () => {
    connect({ relay, keys, sender, signal: stopRelay.signal }).then(
      (link) => {
        relayLink = link;
        (sender ? link.stream.proven : link.stream.chosen).then(
          () => events.put(new RelayReady()),
          (error) => events.put(new RelayFailed(error)),
        );
      },
      (error) => events.put(new RelayFailed(error)),
    );
  };

  const onCancel = () => events.put(new ChoiceBroken(cancel.reason));
  cancel?.addEventListener("abort", onCancel, { once: true });
  try {
    let actions = choice.handleTimer(clock());
    for (;;) {
      for (const action of actions) {
        if (action instanceof StartRelay) {
          startRelay();
        } else if (action instanceof Take && action.path === "datachannel") {
          stopRelay.abort();
          relayLink?.close();
          if (sender) await dcLink.send(CHOSEN);
          return { link: dcLink, keys };
        } else if (action instanceof Take) {
          if (sender) relayLink.stream.choose();
          peer.close();
          return { link: relayLink, keys: keys.overTcp() };
        } else if (action instanceof GiveUp) {
          throw action.error;
        }
      }
      const event = await nextEvent(events, choice.nextDeadline());
      actions = event === null ? choice.handleTimer(clock()) : choice.handle(event);
    }
  } catch (error) {
    stopRelay.abort();
    relayLink?.close();
    throw error;
  } finally {
    cancel?.removeEventListener("abort", onCancel);
  }
}

/** (Receiver) the DataChannel's first message says whether the sender chose it. */
function readChoice(link, events) {
  link.receive().then(
    (first) => {
      if (first.length === CHOSEN.length && first[0] === CHOSEN[0]) {
        events.put(new ChosenOnDataChannel());
      } else {
        const error = new RemoteProtocolError(
          "the other side sent a frame before choosing a transport",
        );
        events.put(new ChoiceBroken(error));
      }
    },
    (error) => events.put(new DataChannelFailed(error)),
  );
}

/** The next event, or null once `deadline` (seconds) passed. */
async function nextEvent(events, deadline) {
  const withdraw = new AbortController();
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(resolve, Math.max(0, deadline - clock()) * 1000, null);
  });
  try {
    return await Promise.race([events.get({ signal: withdraw.signal }), timeout]);
  } finally {
    withdraw.abort();
    clearTimeout(timer);
  }
}
