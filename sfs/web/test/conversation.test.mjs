// The conversation scripts of vectors.json (tests/web_vectors.py), run against the
// page's machine (src/conversation.js); tests/unit/test_conversation_vectors.py runs
// the same scripts against sfs/peer/proto/conversation.py.  Each script drives one
// side's machine, created at time 0, with a peer TransferProtocol of the other role
// that seals each frame input and opens every frame the machine queues.
// Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { hexToBytes } from "@noble/hashes/utils.js";

import {
  Acknowledged,
  AskUser,
  ConfirmPrefixes,
  HashPrefixes,
  IDLE_TIMEOUT_SECONDS,
  PING_INTERVAL_SECONDS,
  Receiver,
  Sender,
  SendFiles,
} from "../src/conversation.js";
import { SessionKeys } from "../src/crypto.js";
import * as errors from "../src/errors.js";
import { Chunk, FileDone, Role, TransferProtocol } from "../src/protocol.js";
import { cancelFor, reject } from "../src/reasons.js";
import { buildEvent, describeEvent } from "./events.mjs";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const C = vectors.conversations;

function keys(role) {
  const k = C[`${role}_keys`];
  const b = hexToBytes;
  return new SessionKeys(role, b(k.signal_send), b(k.signal_receive), b(k.frame_send), b(k.frame_receive), k.verifier);
}

/** An action as the scripts write it. */
function describeAction(action) {
  if (action === null || action === undefined) return null;
  if (action instanceof AskUser) return { kind: "AskUser", offer: describeEvent(action.offer) };
  if (action instanceof HashPrefixes) return { kind: "HashPrefixes", held: [...action.held] };
  if (action instanceof ConfirmPrefixes) {
    return { kind: "ConfirmPrefixes", resume: describeEvent(action.resume) };
  }
  if (action instanceof SendFiles) {
    return { kind: "SendFiles", offsets: [...action.offsets], restarted: [...action.restarted] };
  }
  if (action instanceof Acknowledged) {
    return { kind: "Acknowledged", count: action.count, done: action.done };
  }
  if (action instanceof Chunk || action instanceof FileDone) {
    const { type, ...fields } = describeEvent(action);
    return { kind: type, ...fields };
  }
  throw new TypeError(`no action ${action}`);
}

const camel = (name) => name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

/** A call of the machine's, by its Python name. */
function call(machine, name, args, at) {
  switch (name) {
    case "offer":
      return machine.offer(buildEvent(args.offer));
    case "prefixes_hashed":
      return machine.prefixesHashed(args.offsets, args.digests.map(hexToBytes));
    case "send_chunk":
      return machine.sendChunk(new Chunk(hexToBytes(args.data)), at);
    case "file_done":
      return machine.fileDone(hexToBytes(args.sha256));
    case "accept":
      return machine.accept(args.held, args.zstd);
    case "refuse":
      return machine.refuse(reject(args.code));
    case "prefixes_confirmed":
      return machine.prefixesConfirmed(args.offsets);
    case "files_placed":
      return machine.filesPlaced(args.count);
    case "abort":
      return machine.abort(new errors[args.error]());
    default:
      throw new TypeError(`no call ${name}`);
  }
}

/** Drive one script through a fresh machine, asserting every step. */
export async function runScript(script, { Sender: S = Sender, Receiver: R = Receiver } = {}) {
  const senderSide = script.side === "sender";
  const proto = new TransferProtocol(senderSide ? Role.SENDER : Role.RECEIVER, keys(script.side));
  const peerRole = senderSide ? "receiver" : "sender";
  const peer = new TransferProtocol(senderSide ? Role.RECEIVER : Role.SENDER, keys(peerRole));
  const machine = senderSide ? new S(proto, 0) : new R(proto, 0);
  for (const [index, step] of script.steps.entries()) {
    const where = `${script.name}, step ${index}: ${JSON.stringify(step.input)}`;
    const { at, input } = step;
    let action = null;
    let returned;
    try {
      if (input.frame) {
        const frames = peer.sendFrames(buildEvent(input.frame));
        assert.equal(frames.length, 1, where);
        action = await machine.frameReceived(await frames[0], at);
      } else if (input.timer) {
        machine.handleTimer(at);
      } else if (input.heard) {
        machine.heard(at);
      } else {
        assert.ok(typeof machine[camel(input.call)] === "function", where);
        returned = call(machine, input.call, input.args, at);
      }
    } catch (error) {
      if (!step.error || !(error instanceof errors.SfsError)) throw error;
      assert.equal(error.name, step.error.kind, where);
      assert.equal(cancelFor(error).code, step.error.code, where);
      continue;
    }
    assert.ok(!step.error, `${where}: expected ${JSON.stringify(step.error)}`);
    if (returned instanceof Promise) {
      returned = describeEvent(await peer.receive(await returned)); // sendChunk's frame
    } else if (returned instanceof SendFiles) {
      [action, returned] = [returned, undefined]; // prefixesHashed's
    }
    if ("returned" in step) assert.deepEqual(returned, step.returned, where);
    assert.deepEqual(describeAction(action), step.action ?? null, where);
    const sent = [];
    for (const frame of machine.framesToSend(at)) sent.push(describeEvent(await peer.receive(await frame)));
    assert.deepEqual(sent, step.sent, where);
    assert.equal(machine.nextDeadline(), step.deadline, where);
  }
}

describe("the page's conversation (src/conversation.js) follows the scripts Python follows", () => {
  it("uses Python's timers", () => {
    assert.equal(PING_INTERVAL_SECONDS, C.ping_interval_seconds);
    assert.equal(IDLE_TIMEOUT_SECONDS, C.idle_timeout_seconds);
    assert.ok(C.scripts.length >= 7);
  });

  for (const script of C.scripts) {
    it(script.name, () => runScript(script));
  }

  it("a machine that forgets the keepalive fails the scripts", async () => {
    class Silent extends Receiver {
      handleTimer(now) {
        if (now - this._lastHeard >= IDLE_TIMEOUT_SECONDS) super.handleTimer(now);
      }
    }
    const keepalive = C.scripts.find((s) => s.name.startsWith("keepalive"));
    await assert.rejects(runScript(keepalive, { Receiver: Silent }), assert.AssertionError);
  });
});
