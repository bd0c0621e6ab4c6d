// The page's jobs as async functions: receive and send (the counterpart of sfs/app.py).
//
// They wire the pieces together and decide nothing themselves: the set-up (pairing,
// SPAKE2, the sealed offer/answer) is ./handshake.js's Handshake, which setUp() only
// pumps between the signaling client and the peer connection; then ./transfer.js
// moves the files.  What the user sees goes through a `ui` object (./app.js):
//
//   ui.status(message)        one line of what is happening
//   ui.showCode(code)         the receiver's code, to give to the sender
//   ui.pairing()              someone came with the code: the set-up runs
//   ui.connected(verifier, route)  the DataChannel or the relay is open ("relayed by HOST")
//   ui.waiting()              the offer is out; the receiver is asked
//   ui.progress               begin/start/advance/finish (see transfer.js)
//   ui.decide(offer, names, signal) -> {saving} | null
//   ui.started(pump)          the transfer runs (the page's tab-close handler needs it)

import { Code, loadWordlist, newSecret } from "./code.js";
import { anySignal } from "./connection.js";
import { FRAME_OVERHEAD_BYTES, reconnectCode } from "./crypto.js";
import {
  CancelledByPeerError,
  CancelledError,
  PeerConnectionError,
  PeerGoneError,
  RemoteProtocolError,
  ServerUnreachableError,
} from "./errors.js";
import { sleep } from "./queue.js";
import {
  AcceptAnswers,
  AnswerOffers,
  Call,
  Cancelled,
  ChannelOpen,
  CreateOffers,
  Done,
  Fail,
  Handshake,
  Leave,
  LocalDescription,
  OpenChannel,
  Reconnect,
  Registered,
  ServerLost,
  ShowCode,
  signalEvent,
  Status,
} from "./handshake.js";
import { PeerLink } from "./connection.js";
import { openTransport } from "./opening.js";
import { relayUrlOf } from "./relay.js";
import { DEFAULT_CHUNK_BYTES, Role, TransferProtocol } from "./protocol.js";
import { SERVER_LOST, SignalClient } from "./signal.js";
import { CLOSE_GRACE_SECONDS, linger, receiveFiles, sameOffer, sendFiles } from "./transfer.js";

/** How long each step of the other side may take during set-up, and ICE after it. */
export const PEER_CONNECT_TIMEOUT_SECONDS = 30;
/** How long a waiting receiver keeps trying to reach a server that went away. */
export const RECONNECT_SECONDS = 300;
/** How long a side cancelled during set-up tries to tell its partner. */
export const ABORT_NOTICE_SECONDS = 2;

const clock = () => performance.now() / 1000;

/**
 * Pump `handshake` between the signaling server at `url` and the peer connection.
 * @param {Handshake} handshake
 * @param {object} options
 * @param {string} options.url  the signaling server (the page's own origin)
 * @param {object} options.ui
 * @param {AbortSignal} [options.cancel]  the user gave up
 * @param {"auto"|"never"|"only"} [options.relayMode]  `?relay=` in the page's address
 * @returns {Promise<{link, keys: SessionKeys, transferKeys: SessionKeys, peer: PeerLink}>}
 *   `link` is a DataChannelLink or a RelayLink; `transferKeys` the keys its frames
 *   are sealed under (the TCP path's through the relay)
 */
export async function setUp(handshake, { url, ui, cancel, relayMode = "auto" }) {
  let signal = await SignalClient.connect(url);
  let peer = null;
  let opening = null;
  try {
    let { peerId, iceServers, relay, comeBack } = await signal.register(handshake.rendezvous);
    // Through a server that will not be there after an outage (a LAN peer's embedded
    // one), this page does not offer to meet again.
    if (!comeBack) handshake.reconnects = false;
    const registered = () => new Registered(peerId, iceServers, relayUrlOf(relay, url, relayMode));
    const pending = [registered()];
    for (;;) {
      let actions;
      if (pending.length) {
        actions = await handshake.handle(pending.shift(), clock());
      } else {
        const event = await nextInput(signal, opening, handshake.nextDeadline(), cancel);
        actions =
          event === null ? handshake.handleTimer(clock()) : await handshake.handle(event, clock());
      }
      for (const action of actions) {
        if (action instanceof Call) {
          if (action.event === "accept_connection" || action.event === "send_connection_request") {
            ui.pairing?.();
          }
          await call(signal, action);
        } else if (action instanceof ShowCode) {
          ui.showCode(action.code);
        } else if (action instanceof Status) {
          ui.status(action.message);
        } else if (action instanceof Reconnect) {
          // How to get back (retries, pauses) is I/O policy, so it lives here; that
          // the old code is dead and a new one is shown is the handshake's.
          signal = await reconnect(url, cancel);
          ({ peerId, iceServers, relay } = await signal.register(handshake.rendezvous));
          pending.push(registered());
        } else if (action instanceof CreateOffers) {
          peer = new PeerLink({ iceServers: action.iceServers });
          pending.push(new LocalDescription([await peer.createOffer()]));
        } else if (action instanceof AnswerOffers) {
          // One stream: the first description is answered, extra ones (striping) are
          // not, which tells a striping sender to use one.
          peer = new PeerLink({ iceServers: action.iceServers });
          pending.push(new LocalDescription([await peer.answerOffer(action.sdps[0])]));
        } else if (action instanceof AcceptAnswers) {
          if (action.sdps.length !== 1) {
            throw new PeerConnectionError("the other side answered with a wrong number of streams");
          }
          await peer.acceptAnswer(action.sdps[0]);
        } else if (action instanceof OpenChannel) {
          opening =
            action.relay === null
              ? peer.open(handshake.connectTimeout).then((link) => ({ link, keys: null }))
              : openTransport({
                  sender: handshake.role === Role.SENDER,
                  mode: relayMode === "only" ? "only" : "auto",
                  relay: action.relay,
                  keys: action.keys,
                  peer,
                  connectTimeout: handshake.connectTimeout,
                  cancel,
                });
          opening.catch(() => {}); // read in nextInput
        } else if (action instanceof Leave) {
          // From here on the peers talk directly; a server that goes away now cannot
          // disturb the transfer.
          signal.leave();
        } else if (action instanceof Done) {
          const { link, keys } = await opening;
          const reconnects = handshake.canReconnect;
          return { link, keys: action.keys, transferKeys: keys ?? action.keys, peer, reconnects };
        } else if (action instanceof Fail) {
          throw action.error;
        }
      }
    }
  } catch (error) {
    if (error instanceof CancelledError) {
      await tellPartner(signal, await handshake.handle(new Cancelled(), clock()));
    }
    peer?.close();
    throw error;
  } finally {
    signal.leave();
  }
}

/**
 * The next thing that happened: a server event, the channel opening, or null when
 * the deadline came first (or the server said something set-up does not use).
 */
async function nextInput(signal, opening, deadline, cancel) {
  const withdraw = new AbortController();
  const waits = [
    signal.nextEvent({ signal: withdraw.signal }).then(([name, data]) =>
      name === SERVER_LOST ? new ServerLost() : signalEvent(name, data),
    ),
  ];
  if (opening !== null) waits.push(opening.then(() => new ChannelOpen()));
  let timer;
  if (deadline !== null) {
    waits.push(
      new Promise((resolve) => {
        timer = setTimeout(() => resolve(null), Math.max(0, deadline - clock()) * 1000);
      }),
    );
  }
  let onCancel;
  if (cancel) {
    waits.push(
      new Promise((_, reject) => {
        onCancel = () => reject(new CancelledError());
        if (cancel.aborted) onCancel();
        cancel.addEventListener("abort", onCancel, { once: true });
      }),
    );
  }
  try {
    return await Promise.race(waits);
  } finally {
    // An event not yet taken stays in the client's queue for the next call.
    withdraw.abort();
    waits[0].catch(() => {});
    clearTimeout(timer);
    if (onCancel) cancel.removeEventListener("abort", onCancel);
  }
}

async function call(signal, action) {
  if (!action.bestEffort) {
    await signal.call(action.event, action.payload);
    return;
  }
  try {
    await signal.call(action.event, action.payload);
  } catch {
    // could not tell the other side; the session ends either way
  }
}

/** A cancel during set-up reaches the partner at once, through the server. */
async function tellPartner(signal, actions) {
  for (const action of actions) {
    if (!(action instanceof Call)) continue;
    let timer;
    try {
      await Promise.race([
        signal.call(action.event, action.payload),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("timed out")), ABORT_NOTICE_SECONDS * 1000);
        }),
      ]);
    } catch {
      // best effort
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Connect again, retrying with growing pauses for up to RECONNECT_SECONDS. */
async function reconnect(url, cancel) {
  const deadline = clock() + RECONNECT_SECONDS;
  let pause = 0.5;
  for (;;) {
    if (cancel?.aborted) throw new CancelledError();
    try {
      return await SignalClient.connect(url);
    } catch (error) {
      if (!(error instanceof ServerUnreachableError) || clock() + pause > deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, pause * 1000));
    pause = Math.min(pause * 2, 5);
  }
}

/**
 * Show a code, wait for the sender, and receive what it offers.
 * @param {object} options
 * @param {object} options.ui  see the top of this file
 * @param {string} options.wordlist  the text of sfs/wordlist.txt
 * @param {string} [options.url]
 * @param {AbortSignal} [options.cancel]
 * @returns {Promise<import("./transfer.js").TransferResult>}
 */
export async function receive({
  ui,
  wordlist,
  url = location.origin,
  cancel,
  relayMode,
  code = null,
  reconnects = false,
}) {
  const words = loadWordlist(wordlist);
  // With `code` (a sender that printed it: `sfs send --print-code`), this side joins
  // that sender instead of waiting with a code of its own.
  const handshake = new Handshake(Role.RECEIVER, {
    code,
    connectTimeout: PEER_CONNECT_TIMEOUT_SECONDS,
    newWords: () => newSecret(words),
    reconnects,
  });
  const options = { url, ui, cancel, relayMode };
  let accepted = null; // {offer, saving}: what the user accepted, continued after an outage
  return surviving(Role.RECEIVER, await setUp(handshake, options), options, async (setup, again) => {
    const { link, keys, transferKeys } = setup;
    if (again) ui.reconnected?.(link.route);
    else ui.connected(keys.verifier, link.route);
    const proto = new TransferProtocol(Role.RECEIVER, transferKeys);
    const result = await receiveFiles(link, proto, {
      decide: async (offer, names, signal, plan) => {
        if (accepted === null) {
          const answer = await ui.decide(offer, names, signal, plan);
          if (answer !== null) accepted = { offer, saving: answer.saving };
          return answer;
        }
        // After an outage: the offer the user accepted, again, into the same place.
        if (!sameOffer(offer, accepted.offer)) {
          throw new RemoteProtocolError("after reconnecting, the other side offered something else");
        }
        return { saving: accepted.saving?.again() ?? null };
      },
      progress: ui.progress,
      status: ui.status,
      started: (pump) => ui.started?.(pump),
      cancel,
    });
    result.route = link.route;
    // Having sent the last acknowledgement, wait for the sender to close first.
    await linger(link, CLOSE_GRACE_SECONDS);
    return result;
  }, () => accepted === null || accepted.saving === null || accepted.saving.resumable);
}

/**
 * Send `files` to the receiver that showed `code`.
 * @param {object} options
 * @param {import("./code.js").Code} options.code
 * @param {(File|{file: File, folder: string[]})[]} options.files  a file inside a
 *   picked folder comes with the folders it is in
 * @param {string[][]} [options.folders]  every folder of the transfer, empty ones too
 * @param {string|null} [options.text]  a text message to send instead of files
 * @param {string} options.sender  the name the receiver is shown
 * @param {object} options.ui
 * @param {string} [options.url]
 * @param {AbortSignal} [options.cancel]
 */
export async function send({
  code,
  files,
  folders = [],
  text = null,
  sender,
  ui,
  url = location.origin,
  cancel,
  relayMode,
}) {
  // The files stay picked while the tab is open: after an outage they are read again.
  const handshake = new Handshake(Role.SENDER, {
    code,
    connectTimeout: PEER_CONNECT_TIMEOUT_SECONDS,
    reconnects: true,
  });
  const options = { url, ui, cancel, relayMode };
  return surviving(Role.SENDER, await setUp(handshake, options), options, async (setup, again) => {
    const { link, keys, transferKeys } = setup;
    if (again) ui.reconnected?.(link.route);
    else ui.connected(keys.verifier, link.route);
    const proto = new TransferProtocol(Role.SENDER, transferKeys);
    // Frames no larger than the receiver takes: 64 KiB on a DataChannel, as the
    // command line sends; 256 KiB through a relay, as on the direct TCP path.
    const preferred = link.preferredChunkSize ?? DEFAULT_CHUNK_BYTES;
    const chunkSize = Math.min(preferred, link.maxMessageSize - FRAME_OVERHEAD_BYTES);
    const result = await sendFiles(link, proto, files, {
      folders,
      text,
      sender,
      chunkSize,
      progress: ui.progress,
      onWaiting: ui.waiting,
      status: ui.status,
      started: (pump) => ui.started?.(pump),
      cancel,
    });
    result.route = link.route;
    return result;
  });
}

// -- sessions that survive an outage (sfs/reconnect.py) -----------------------------------

/** After an outage, how long both sides look for each other (the CLI's default). */
export const RECONNECT_WINDOW_SECONDS = 300;
const FIRST_PAUSE_SECONDS = 0.5;
const LAST_PAUSE_SECONDS = 5;

/**
 * Run `transfer(setup, again)` over the first session, and after each outage over one
 * set up again at the rendezvous, while both sides said they reconnect and
 * `resumable()` holds; the result counts the reconnections.
 */
async function surviving(role, first, options, transfer, resumable = () => true) {
  const secret = first.reconnects ? first.keys.reconnect : null;
  const started = performance.now() / 1000;
  let setup = first;
  let outages = 0;
  for (;;) {
    try {
      const result = await transfer(setup, outages > 0);
      if (outages) {
        result.started = started;
        result.reconnects = outages;
        result.resumedFiles = result.resumedBytes = 0;
        result.finish();
      }
      return result;
    } catch (error) {
      if (!(error instanceof PeerGoneError) || secret === null || !resumable()) throw error;
    } finally {
      // Having received the last message (the final acknowledgement), the sender
      // closes first; the receiver waits for that (transfer lingers).
      setup.link.close();
      setup.peer.close();
    }
    options.ui.reconnecting?.(RECONNECT_WINDOW_SECONDS);
    setup = await meetAgain(role, secret, options);
    outages += 1;
  }
}

/** Find the other side again at the rendezvous and set up a new session with it. */
async function meetAgain(role, secret, { url, ui, cancel, relayMode }) {
  const { rendezvous, password } = reconnectCode(secret);
  const code = new Code(rendezvous, password);
  const deadline = clock() + RECONNECT_WINDOW_SECONDS;
  const quiet = { ...ui, status: () => {}, showCode: () => {}, pairing: () => {} };
  let pause = FIRST_PAUSE_SECONDS;
  for (;;) {
    const left = deadline - clock();
    if (left <= 0) {
      throw new PeerGoneError(
        "lost the connection, and the other side did not come back within 5 min",
      );
    }
    const handshake = new Handshake(role, {
      code: role === Role.SENDER ? code : null,
      rendezvous: role === Role.RECEIVER ? code : null,
      connectTimeout: Math.min(PEER_CONNECT_TIMEOUT_SECONDS, left),
      reconnects: true,
    });
    const window = new AbortController();
    const timer = setTimeout(() => window.abort(), left * 1000);
    try {
      return await setUp(handshake, {
        url,
        ui: quiet,
        cancel: anySignal(cancel, window.signal),
        relayMode,
      });
    } catch (error) {
      if (cancel?.aborted || error instanceof CancelledByPeerError) throw error;
      // Not there yet, the network still down, or someone else at the rendezvous.
    } finally {
      clearTimeout(timer);
    }
    await sleep(Math.min(pause, Math.max(0, deadline - clock())) * 1000, cancel);
    pause = Math.min(pause * 2, LAST_PAUSE_SECONDS);
  }
}
