// The page's codes (src/code.js) and set-up machine (src/handshake.js): the flows and
// failures of sfs/peer/handshake.py, two machines talking through a relay played by
// the test, with the real SPAKE2 and sealing.  Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { Code, loadWordlist, newSecret, parseCode } from "../src/code.js";
import { openMessage, WrongCodeError } from "../src/crypto.js";
import { CancelledByPeerError, PeerGoneError, SignalingError } from "../src/errors.js";
import {
  AcceptAnswers,
  AnswerOffers,
  Call,
  Cancelled,
  ChannelOpen,
  ConnectionAccepted,
  ConnectionRequested,
  CreateOffers,
  Done,
  Fail,
  fromBase64,
  Handshake,
  isRelayUrl,
  Leave,
  LocalDescription,
  OpenChannel,
  PartnerAborted,
  PartnerLeft,
  PublicKeyReceived,
  Reconnect,
  Registered,
  SealedReceived,
  ServerLost,
  ShowCode,
  signalEvent,
  State,
  toBase64,
} from "../src/handshake.js";

const VECTORS = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));

describe("a sealed relay URL (handshake.py's is_relay_url)", () => {
  for (const { url, ok } of VECTORS.relay.urls) {
    it(`${JSON.stringify(url.slice(0, 40))}${url.length > 40 ? "…" : ""} is ${ok ? "taken" : "malformed"}`, () => {
      assert.equal(isRelayUrl(url), ok);
    });
  }
});

const WORDS = loadWordlist(readFileSync(new URL("../../wordlist.txt", import.meta.url), "utf8"));
const RECEIVER_ID = "RCV-001";
const SENDER_ID = "SND-002";
const ICE = [{ urls: ["stun:192.0.2.1:3478"] }];

describe("codes (sfs/code.py)", () => {
  it("loads the 1024 words of sfs/wordlist.txt", () => {
    assert.equal(WORDS.length, 1024);
    assert.equal(new Set(WORDS).size, 1024);
    assert.ok(WORDS.every((w) => /^[a-z]+$/.test(w)));
  });

  it("draws two words, uniformly, from crypto.getRandomValues", () => {
    const secret = newSecret(WORDS);
    assert.match(secret, /^[a-z]+-[a-z]+$/);
    assert.ok(secret.split("-").every((w) => WORDS.includes(w)));
    // With a list that does not divide 2**32 (1024 does), a value past the last whole
    // multiple of its length is drawn again: no modulo bias.
    const thousand = WORDS.slice(0, 1000);
    const values = [0xffffffff, 5, 2 ** 32 - 297];
    const random = (array) => ((array[0] = values.shift()), array);
    assert.equal(newSecret(thousand, { random }), `${thousand[5]}-${thousand[999]}`);
  });

  it("reads what a user types, as parse_code does", () => {
    const [a, b] = [WORDS[0], WORDS[1]];
    assert.deepEqual(parseCode(`  abc-123-${a}-${b} `, WORDS), new Code("ABC-123", `${a}-${b}`));
    assert.equal(String(parseCode(`ABC 123 ${a.toUpperCase()} ${b}`, WORDS)), `ABC-123-${a}-${b}`);
    assert.equal(String(parseCode(`ABC-123-${a}-${b}-`, WORDS)), `ABC-123-${a}-${b}`);
    const cases = [
      ["", /no code given/],
      ["AB-123-x-y", /three letters and three digits/],
      ["ABC-123", /missing its secret words/],
      [`ABC-123-${a}`, /missing its second secret word/],
      [`ABC-123-${a}-nosuchword`, /second secret word .* not an sfs code word/],
    ];
    for (const [text, pattern] of cases) assert.throws(() => parseCode(text, WORDS), pattern);
  });

  it("never shows its secret in a log", () => {
    const code = new Code("ABC-123", "tiger-lamp");
    assert.doesNotMatch(JSON.stringify({ code }), /tiger/);
  });
});

/** The receiver (shows the code) and the sender (typed it), up to their first calls. */
async function start({ senderWords = "tiger-lamp", senderRelay = null, receiverRelay = null } = {}) {
  const receiver = new Handshake("receiver", { connectTimeout: 30, newWords: () => "tiger-lamp" });
  const shown = await receiver.handle(new Registered(RECEIVER_ID, ICE, receiverRelay), 0);
  assert.deepEqual(shown, [new ShowCode(`${RECEIVER_ID}-tiger-lamp`)]);
  const sender = new Handshake("sender", {
    code: new Code(RECEIVER_ID, senderWords),
    connectTimeout: 30,
  });
  const joined = await sender.handle(new Registered(SENDER_ID, ICE, senderRelay), 0);
  assert.deepEqual(
    joined.map((a) => a instanceof Call && a.event),
    ["find_peer", "send_connection_request", false],
  );
  assert.equal(sender.state, State.AWAITING_ACCEPT);
  return { receiver, sender };
}

const call = (actions, event) => actions.find((a) => a instanceof Call && a.event === event);

/** From the pairing to the exchanged keys; resolves to the sender's sealed offer call. */
async function exchangeKeys(receiver, sender) {
  const accepted = await receiver.handle(new ConnectionRequested(SENDER_ID), 1);
  assert.deepEqual(call(accepted, "accept_connection").payload, { peer_id: SENDER_ID });
  const receiverKey = call(accepted, "send_public_key").payload.key;
  const started = await sender.handle(new ConnectionAccepted(RECEIVER_ID), 1);
  const senderKey = call(started, "send_public_key").payload.key;
  assert.equal(fromBase64(senderKey, "key").length, 33);
  const creating = await sender.handle(new PublicKeyReceived(RECEIVER_ID, receiverKey), 2);
  assert.deepEqual(creating, [new CreateOffers(1, ICE)]);
  assert.deepEqual(await receiver.handle(new PublicKeyReceived(SENDER_ID, senderKey), 2), []);
  const offered = await sender.handle(new LocalDescription(["v=0 offer"]), 3);
  assert.equal(sender.state, State.AWAITING_ANSWER);
  return call(offered, "offer");
}

describe("the set-up (sfs/peer/handshake.py)", () => {
  it("pairs, agrees on keys, and trades sealed descriptions", async () => {
    const { receiver, sender } = await start();
    const offer = await exchangeKeys(receiver, sender);
    const answering = await receiver.handle(new SealedReceived(SENDER_ID, "offer", offer.payload.sealed), 4);
    assert.deepEqual(answering, [new AnswerOffers(["v=0 offer"], ICE)]);
    const answered = await receiver.handle(new LocalDescription(["v=0 answer"]), 5);
    assert.ok(answered[1] instanceof OpenChannel);
    const answer = call(answered, "answer");
    const accepting = await sender.handle(new SealedReceived(RECEIVER_ID, "answer", answer.payload.sealed), 6);
    assert.deepEqual(accepting, [new AcceptAnswers(["v=0 answer"]), new OpenChannel()]);
    const [leaveS, doneS] = await sender.handle(new ChannelOpen(), 7);
    const [leaveR, doneR] = await receiver.handle(new ChannelOpen(), 7);
    assert.ok(leaveS instanceof Leave && leaveR instanceof Leave);
    assert.ok(doneS instanceof Done && doneR instanceof Done);
    assert.deepEqual(doneS.keys.frameSend, doneR.keys.frameReceive);
    assert.deepEqual(doneS.keys.signalReceive, doneR.keys.signalSend);
    assert.equal(doneS.keys.verifier, doneR.keys.verifier);
    assert.equal(sender.state, State.DONE);
  });

  it("relay: both sides name one, and the pair meets at the receiver's (the answer's)", async () => {
    const senderRelay = "https://a.example/relay";
    const receiverRelay = "http://b.example:5000/node/2/relay";
    const { receiver, sender } = await start({ senderRelay, receiverRelay });
    const offer = await exchangeKeys(receiver, sender);
    const opened = async (keys, kind, sealed) =>
      JSON.parse(new TextDecoder().decode(await openMessage({ key: keys, kind, sealed: fromBase64(sealed, "s") })));
    await receiver.handle(new SealedReceived(SENDER_ID, "offer", offer.payload.sealed), 4);
    const answered = await receiver.handle(new LocalDescription(["v=0 answer"]), 5);
    assert.equal(answered[1].relay, receiverRelay);
    assert.ok(answered[1].keys.relayToken.length === 32);
    const answer = call(answered, "answer");
    const accepting = await sender.handle(new SealedReceived(RECEIVER_ID, "answer", answer.payload.sealed), 6);
    assert.equal(accepting[1].relay, receiverRelay);
    assert.deepEqual(accepting[1].keys.relayToken, answered[1].keys.relayToken);
    // What went inside the sealed blobs: {"relay": URL} on both.
    const [doneS] = (await sender.handle(new ChannelOpen(), 7)).slice(1);
    const [doneR] = (await receiver.handle(new ChannelOpen(), 7)).slice(1);
    const inOffer = await opened(doneR.keys.signalReceive, "offer", offer.payload.sealed);
    const inAnswer = await opened(doneS.keys.signalReceive, "answer", answer.payload.sealed);
    assert.equal(inOffer.relay, senderRelay);
    assert.equal(inAnswer.relay, receiverRelay);
  });

  it("relay: a receiver answers with one only if the offer had one, and vice versa", async () => {
    for (const [senderRelay, receiverRelay] of [[null, "http://b/relay"], ["http://a/relay", null]]) {
      const { receiver, sender } = await start({ senderRelay, receiverRelay });
      const offer = await exchangeKeys(receiver, sender);
      await receiver.handle(new SealedReceived(SENDER_ID, "offer", offer.payload.sealed), 4);
      const answered = await receiver.handle(new LocalDescription(["v=0 answer"]), 5);
      assert.equal(answered[1].relay, null);
      const answer = call(answered, "answer");
      const accepting = await sender.handle(new SealedReceived(RECEIVER_ID, "answer", answer.payload.sealed), 6);
      assert.equal(accepting[1].relay, null);
    }
  });

  it("a wrong code: the receiver cannot open the offer, aborts wrong_code and fails", async () => {
    const { receiver, sender } = await start({ senderWords: "tiger-lamb" });
    const offer = await exchangeKeys(receiver, sender);
    const actions = await receiver.handle(new SealedReceived(SENDER_ID, "offer", offer.payload.sealed), 4);
    assert.deepEqual(call(actions, "abort").payload, { peer_id: SENDER_ID, reason: "wrong_code" });
    assert.ok(actions.at(-1) instanceof Fail && actions.at(-1).error instanceof WrongCodeError);
    // ...and the sender hears it as a wrong code too.
    const heard = await sender.handle(new PartnerAborted(RECEIVER_ID, "wrong_code"), 5);
    assert.ok(heard[0].error instanceof WrongCodeError);
    assert.equal(receiver.state, State.FAILED);
  });

  it("keeps an early event for its step, and ignores other peers after the pairing", async () => {
    const { receiver, sender } = await start();
    const accepted = await receiver.handle(new ConnectionRequested(SENDER_ID), 1);
    const receiverKey = call(accepted, "send_public_key").payload.key;
    // The key before the acceptance (a server may reorder what it relays).
    assert.deepEqual(await sender.handle(new PublicKeyReceived(RECEIVER_ID, receiverKey), 1), []);
    const started = await sender.handle(new ConnectionAccepted(RECEIVER_ID), 1);
    assert.ok(call(started, "send_public_key"));
    assert.ok(started.at(-1) instanceof CreateOffers);
    assert.deepEqual(await receiver.handle(new PartnerLeft("XYZ-999"), 2), []);
  });

  it("fails in words when a step times out, the partner leaves, or aborts", async () => {
    let { receiver, sender } = await start();
    assert.equal(sender.nextDeadline(), 30);
    assert.deepEqual(sender.handleTimer(29), []);
    const timedOut = sender.handleTimer(30);
    assert.ok(timedOut[0].error instanceof SignalingError);
    assert.match(timedOut[0].error.message, /did not answer within 30 s/);

    ({ receiver, sender } = await start());
    await receiver.handle(new ConnectionRequested(SENDER_ID), 1);
    const left = await receiver.handle(new PartnerLeft(SENDER_ID), 2);
    assert.ok(left[0].error instanceof PeerGoneError);

    ({ receiver, sender } = await start());
    await receiver.handle(new ConnectionRequested(SENDER_ID), 1);
    const aborted = await receiver.handle(new PartnerAborted(SENDER_ID, "cancelled"), 2);
    assert.ok(aborted[0].error instanceof CancelledByPeerError);
  });

  it("tells the partner about a cancel once paired, and comes back with a new code", async () => {
    const { receiver } = await start();
    const lost = await receiver.handle(new ServerLost(), 1);
    assert.equal(lost[0].message, "Lost the signaling server; reconnecting…");
    assert.ok(lost[1] instanceof Reconnect);
    assert.equal(receiver.state, State.RECONNECTING);
    const again = await receiver.handle(new Registered("NEW-003", ICE), 2);
    assert.equal(again.at(-1).code, "NEW-003-tiger-lamp");
    await receiver.handle(new ConnectionRequested(SENDER_ID), 3);
    const cancelled = await receiver.handle(new Cancelled(), 4);
    assert.deepEqual(cancelled[0].payload, { peer_id: SENDER_ID, reason: "cancelled" });
    assert.equal(receiver.state, State.FAILED);
  });

  it("refuses malformed relayed messages in words", async () => {
    const { receiver, sender } = await start();
    await receiver.handle(new ConnectionRequested(SENDER_ID), 1);
    const bad = await receiver.handle(new PublicKeyReceived(SENDER_ID, "not base64!"), 2);
    assert.ok(bad[0].error instanceof SignalingError);
    assert.match(bad[0].error.message, /malformed key/);
    assert.equal(sender.state, State.AWAITING_ACCEPT);
  });

  it("turns server events into handshake events", () => {
    assert.deepEqual(signalEvent("offer", { peer_id: "A", sealed: "x" }), new SealedReceived("A", "offer", "x"));
    assert.equal(signalEvent("ice_candidate", { peer_id: "A", sealed: "x" }), null);
    assert.equal(toBase64(Uint8Array.of(1, 2, 3, 4)), "AQIDBA==");
    assert.deepEqual(fromBase64("AQIDBA==", "k"), Uint8Array.of(1, 2, 3, 4));
    assert.throws(() => fromBase64("AQIDBA", "k"), /malformed k/);
  });
});
