// The set-up scripts of vectors.json (tests/web_vectors.py), run against the page's
// machine (src/handshake.js); tests/unit/test_handshake_vectors.py runs the same
// scripts against sfs/peer/proto/handshake.py.  The other side is played here with the
// crypto primitives, not a second Handshake: a KeyExchange of the other role on the
// script's peer.words and peer.code_id, finished with the machine's own
// send_public_key.  It supplies the SPAKE2 message of a key_from_peer input, seals each
// seal (a JSON value) or seal_text input, and opens every offer or answer the machine
// sends, so what is compared is plaintexts and events.
// Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { Code } from "../src/code.js";
import { KeyExchange, openMessage, sealMessage, WrongCodeError } from "../src/crypto.js";
import * as hs from "../src/handshake.js";
import { fromBase64, Handshake, toBase64 } from "../src/handshake.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const H = vectors.handshakes;
const KEY = "spake2-message";
const MATCH = "the peer's";

/** The other side: its SPAKE2 half, and the keys once the machine's message came. */
class Peer {
  constructor(script) {
    const other = script.side === "sender" ? "receiver" : "sender";
    const waits = !("code" in script);
    this.exchange = new KeyExchange({
      role: other,
      password: script.peer.words,
      codeId: script.peer.code_id,
      printedBy: waits ? script.side : other,
    });
    this.message = toBase64(this.exchange.message);
    this.keys = null;
  }

  async seal(kind, text) {
    assert.ok(this.keys, "the script seals before the machine sent its key");
    const plaintext = new TextEncoder().encode(text);
    return toBase64(await sealMessage({ key: this.keys.signalSend, kind, plaintext }));
  }
}

async function buildEvent(given, peer) {
  switch (given.event) {
    case "Registered":
      return new hs.Registered(given.peer_id, given.ice_servers ?? [], given.relay ?? null);
    case "PublicKeyReceived":
      return new hs.PublicKeyReceived(given.peer_id, given.key_from_peer ? peer.message : given.key);
    case "SealedReceived": {
      const text = "seal" in given ? JSON.stringify(given.seal) : given.seal_text;
      return new hs.SealedReceived(given.peer_id, given.kind, await peer.seal(given.kind, text));
    }
    case "LocalDescription":
      return new hs.LocalDescription(given.sdps);
    case "PartnerAborted":
      return new hs.PartnerAborted(given.peer_id, given.reason);
    default: {
      const Class = hs[given.event];
      assert.ok(typeof Class === "function", `no event ${given.event}`);
      return "peer_id" in given ? new Class(given.peer_id) : new Class();
    }
  }
}

const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

function mirrored(keys, peer) {
  return (
    peer !== null &&
    same(keys.signalSend, peer.signalReceive) &&
    same(keys.signalReceive, peer.signalSend) &&
    same(keys.frameSend, peer.frameReceive) &&
    same(keys.frameReceive, peer.frameSend) &&
    keys.verifier === peer.verifier
  );
}

/** An action as the scripts write it (the peer finishes its keys on the way). */
async function describeAction(action, peer) {
  const kind = action.constructor.name;
  if (action instanceof hs.Call) {
    const payload = { ...action.payload };
    if (action.event === "send_public_key") {
      const message = fromBase64(payload.key, "key");
      assert.equal(message.length, 33);
      peer.keys = peer.exchange.finish(message);
      payload.key = KEY;
    }
    if (action.event === "offer" || action.event === "answer") {
      assert.ok(peer.keys);
      try {
        const plaintext = await openMessage({
          key: peer.keys.signalReceive,
          kind: action.event,
          sealed: fromBase64(payload.sealed, "sealed"),
        });
        payload.sealed = JSON.parse(new TextDecoder().decode(plaintext));
      } catch (error) {
        if (!(error instanceof WrongCodeError)) throw error;
        payload.sealed = "does not open";
      }
    }
    return { kind, event: action.event, payload, best_effort: action.bestEffort };
  }
  if (action instanceof hs.ShowCode) return { kind, code: action.code };
  if (action instanceof hs.Status) return { kind, message: action.message };
  if (action instanceof hs.CreateOffers) {
    return { kind, count: action.count, ice_servers: action.iceServers };
  }
  if (action instanceof hs.AnswerOffers) {
    return { kind, sdps: [...action.sdps], ice_servers: action.iceServers };
  }
  if (action instanceof hs.AcceptAnswers) return { kind, sdps: [...action.sdps] };
  if (action instanceof hs.Done) return { kind, keys: mirrored(action.keys, peer.keys) ? MATCH : "other" };
  if (action instanceof hs.Fail) return { kind, error: action.error.name };
  return { kind }; // Reconnect, OpenChannel, Leave
}

function compare(described, expected, actions, where) {
  // `says` is a part of the message, where the script names one.
  const says = actions.filter((a) => a instanceof hs.Fail).map((a) => a.error.message);
  const wanted = expected.map((action) => {
    if (action.kind !== "Fail" || !("says" in action)) return action;
    assert.ok(says.some((m) => m.includes(action.says)), `${where}: ${says} lacks ${action.says}`);
    const { says: _, ...rest } = action;
    return rest;
  });
  assert.deepEqual(described, wanted, where);
}

function makeMachine(script, Machine = Handshake) {
  const words = [...(script.words ?? [])];
  let code = null;
  if ("code" in script) {
    // A code is PEER-ID-word-word: the peer ID is its first two parts.
    const parts = script.code.split("-");
    code = new Code(parts.slice(0, 2).join("-"), parts.slice(2).join("-"));
  }
  return new Machine(script.side, {
    code,
    connectTimeout: H.connect_timeout,
    streams: script.streams ?? 1,
    newWords: () => words.shift(),
  });
}

/** Drive one script through a fresh machine, asserting every step. */
export async function runScript(script, Machine = Handshake) {
  const machine = makeMachine(script, Machine);
  const peer = new Peer(script);
  for (const [index, step] of script.steps.entries()) {
    const where = `${script.name}, step ${index}: ${JSON.stringify(step.input)}`;
    const { at, input } = step;
    if (step.glue_error) {
      const bug = /in state|after the handshake is over/;
      await assert.rejects(machine.handle(await buildEvent(input, peer), at), bug, where);
      continue;
    }
    const actions = input.timer
      ? machine.handleTimer(at)
      : await machine.handle(await buildEvent(input, peer), at);
    const described = [];
    for (const action of actions) described.push(await describeAction(action, peer));
    compare(described, step.actions, actions, where);
    assert.equal(machine.state, step.state, where);
    assert.equal(machine.nextDeadline(), step.deadline, where);
  }
}

describe("the page's set-up (src/handshake.js) follows the scripts Python follows", () => {
  it("uses Python's grace", () => {
    assert.equal(hs.PARTNER_GONE_GRACE_SECONDS, H.partner_gone_grace_seconds);
    assert.ok(H.scripts.length >= 10);
  });

  for (const script of H.scripts) {
    it(script.name, () => runScript(script));
  }

  it("a machine that lets a wrong code pass quietly fails the scripts", async () => {
    class Quiet extends Handshake {
      _wrongCode(error) {
        return this._fail(error); // no abort to the partner
      }
    }
    const wrong = H.scripts.find((s) => s.name.includes("does not open, one guess"));
    await assert.rejects(runScript(wrong, Quiet), assert.AssertionError);
  });
});
