// The page's port of the direct TCP path's stream protocol (./src/tcp.js), which it
// speaks through sfs serve's relay, against the Python known answers (vectors.json
// "relay", from sfs/peer/transport/tcp.py and SessionKeys.over_tcp).
// Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

import { CryptoError, deriveKeys, FrameOpener, reconnectCode } from "../src/crypto.js";
import { RemoteProtocolError } from "../src/errors.js";
import {
  CHOSEN,
  lengthPrefixed,
  MAX_FRAME_BYTES,
  Prover,
  Stage,
  StreamReader,
} from "../src/tcp.js";

const V = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8")).relay;
const hex = bytesToHex;
const bytes = hexToBytes;

const keysOf = (role) =>
  deriveKeys({ pakeKey: bytes(V.pake_key), transcript: bytes(V.transcript), role });

function tcpHex(keys) {
  const over = keys.overTcp();
  return {
    tcp_send: hex(keys.tcpSend),
    tcp_receive: hex(keys.tcpReceive),
    proof_send: hex(keys.proofSend),
    proof_receive: hex(keys.proofReceive),
    relay_token: hex(keys.relayToken),
    reconnect: hex(keys.reconnect),
    over_tcp_frame_send: hex(over.frameSend),
    over_tcp_frame_receive: hex(over.frameReceive),
  };
}

const sender = keysOf("sender");
const receiver = keysOf("receiver");
const dialer = (nonce = bytes(V.proof.dialer_nonce), keys = sender) =>
  new Prover({ dialer: true, ownKey: keys.proofSend, peerKey: keys.proofReceive, nonce });
const listener = (nonce = bytes(V.proof.listener_nonce), keys = receiver) =>
  new Prover({ dialer: false, ownKey: keys.proofSend, peerKey: keys.proofReceive, nonce });

describe("the TCP path's keys (SessionKeys.over_tcp, relay_token)", () => {
  it("derives Python's TCP frame keys, proof keys and relay token for both roles", () => {
    assert.deepEqual(tcpHex(sender), V.sender_keys);
    assert.deepEqual(tcpHex(receiver), V.receiver_keys);
  });

  it("derives Python's rendezvous and password for meeting again (reconnect_code)", () => {
    assert.deepEqual(reconnectCode(sender.reconnect), V.reconnect_code);
    assert.deepEqual(reconnectCode(receiver.reconnect), V.reconnect_code);
    assert.throws(() => reconnectCode(new Uint8Array(0)), /cannot reconnect/);
  });

  it("gives both sides one relay token, and TCP frame keys unlike the DataChannel's", () => {
    assert.equal(hex(sender.relayToken), hex(receiver.relayToken));
    assert.notEqual(hex(sender.overTcp().frameSend), hex(sender.frameSend));
    assert.equal(String(sender.overTcp()), "SessionKeys(<redacted>)");
  });
});

describe("Prover (tcp.Prover)", () => {
  it("runs Python's exchange byte for byte: the sender dials, the receiver listens", () => {
    const d = dialer();
    const l = listener();
    assert.equal(hex(d.hello()), V.proof.hello);
    assert.equal(l.hello().length, 0);
    const reply = l.receive(d.hello());
    assert.equal(hex(reply), V.proof.listener_reply);
    const proof = d.receive(reply);
    assert.equal(hex(proof), V.proof.dialer_proof);
    assert.ok(d.proven);
    assert.equal(l.receive(proof).length, 0);
    assert.ok(l.proven);
    assert.equal(l.wanted, 0);
  });

  it("refuses a listener that proves with other keys (another session)", () => {
    const other = deriveKeys({
      pakeKey: new Uint8Array(32).fill(7),
      transcript: bytes(V.transcript),
      role: "receiver",
    });
    const d = dialer();
    const reply = listener(undefined, other).receive(d.hello());
    assert.throws(() => d.receive(reply), CryptoError);
  });

  it("refuses a reflected proof (the dialer's own key, or its own side)", () => {
    // A listener holding the sender's keys answers with the sender's proof key.
    const d = dialer();
    const reflected = listener(undefined, sender).receive(d.hello());
    assert.throws(() => d.receive(reflected), CryptoError);
  });

  it("refuses a replayed dialer proof under a fresh listener nonce", () => {
    const l = listener(new Uint8Array(16).fill(9));
    l.receive(bytes(V.proof.hello));
    assert.throws(() => l.receive(bytes(V.proof.dialer_proof)), CryptoError);
  });

  it("refuses a stream that does not start with the magic", () => {
    const hello = bytes(V.proof.hello);
    hello[0] ^= 1;
    assert.throws(() => listener().receive(hello), CryptoError);
  });

  it("takes exactly the bytes it wants", () => {
    assert.throws(() => listener().receive(new Uint8Array(3)), RangeError);
  });
});

/** Split `data` into pieces of the given sizes (the rest as the last piece). */
function split(data, sizes) {
  const pieces = [];
  let at = 0;
  for (const size of sizes) {
    pieces.push(data.subarray(at, at + size));
    at += size;
  }
  pieces.push(data.subarray(at));
  return pieces;
}

/** Feed the listener's incoming stream in `pieces`; what came out, merged. */
function listen(pieces) {
  const reader = new StreamReader(listener(), { awaitsChoice: true });
  const out = { reply: [], frames: [], proven: 0, chosen: 0 };
  for (const piece of pieces) {
    const step = reader.feed(piece);
    out.reply.push(...step.reply);
    out.frames.push(...step.frames);
    out.proven += step.proven;
    out.chosen += step.chosen;
  }
  return { reader, out };
}

async function openAll(frames) {
  const opener = new FrameOpener(receiver.overTcp().frameReceive);
  const opened = [];
  for (const frame of frames) {
    const [type, payload] = await opener.open(frame);
    opened.push({ type, payload: hex(payload) });
  }
  return opened;
}

const expectedFrames = V.stream.frames.map(({ type, payload }) => ({ type, payload }));

describe("StreamReader (the stream after the relay pairs)", () => {
  const stream = bytes(V.stream.to_listener);

  it("reads Python's stream in one piece: proof, CHOSEN, frames under the TCP keys", async () => {
    const { reader, out } = listen([stream]);
    assert.deepEqual(out.reply.map(hex), [V.proof.listener_reply]);
    assert.equal(out.proven, 1);
    assert.equal(out.chosen, 1);
    assert.deepEqual(out.frames.map(hex), V.stream.frames.map((f) => f.sealed));
    assert.deepEqual(await openAll(out.frames), expectedFrames);
    assert.equal(reader.stage, Stage.FRAMES);
    assert.equal(reader.midway, false);
  });

  it("reads it byte by byte, and in pieces cut anywhere (message boundaries mean nothing)", async () => {
    const bytewise = listen(Array.from(stream, (b) => Uint8Array.of(b)));
    assert.deepEqual(bytewise.out.frames.map(hex), V.stream.frames.map((f) => f.sealed));
    for (const sizes of [[23, 2, 33], [24, 32, 1, 4], [57, 3], [60, 100, 1000], [1, 1, 1, 200]]) {
      const { out } = listen(split(stream, sizes));
      assert.deepEqual(await openAll(out.frames), expectedFrames, `pieces ${sizes}`);
      assert.equal(out.chosen, 1);
    }
  });

  it("joins frames from pieces and writes them as Python does", () => {
    const frames = V.stream.frames.map((f) => bytes(f.sealed));
    const joined = frames.map(lengthPrefixed);
    const prefix = bytes(V.proof.hello).length + bytes(V.proof.dialer_proof).length + 1;
    const tail = stream.subarray(prefix);
    assert.equal(hex(joined.reduce((a, b) => new Uint8Array([...a, ...b]))), hex(tail));
    assert.equal(hex(stream.subarray(prefix - 1, prefix)), V.chosen);
    assert.equal(hex(CHOSEN), V.chosen);
  });

  it("keeps a partial frame until the rest comes", () => {
    const { reader, out } = listen([stream.subarray(0, stream.length - 5)]);
    assert.equal(out.frames.length, V.stream.frames.length - 1);
    assert.ok(reader.midway);
    assert.equal(reader.feed(stream.subarray(stream.length - 5)).frames.length, 1);
  });

  it("refuses a zero length and one above MAX_FRAME_BYTES", () => {
    assert.equal(MAX_FRAME_BYTES, V.max_frame_bytes);
    const prefix = bytes(V.proof.hello).length + bytes(V.proof.dialer_proof).length + 1;
    for (const length of [0, MAX_FRAME_BYTES + 1, 0xffffffff]) {
      const head = new Uint8Array(4);
      new DataView(head.buffer).setUint32(0, length);
      const reader = new StreamReader(listener(), { awaitsChoice: true });
      reader.feed(stream.subarray(0, prefix));
      assert.throws(() => reader.feed(head), RemoteProtocolError, `length ${length}`);
      assert.equal(reader.stage, Stage.CLOSED);
    }
    assert.throws(() => lengthPrefixed(new Uint8Array(0)), RangeError);
  });

  it("refuses anything but CHOSEN after the proof, on the receiver's end", () => {
    const bad = stream.slice();
    const at = bytes(V.proof.hello).length + bytes(V.proof.dialer_proof).length;
    bad[at] = 0x02;
    assert.throws(() => listen([bad]), RemoteProtocolError);
  });

  it("the sender's end proves, sends its proof, then reads frames (no choice)", () => {
    const reader = new StreamReader(dialer(), { awaitsChoice: false });
    assert.equal(hex(reader.hello()), V.proof.hello);
    const step = reader.feed(bytes(V.proof.listener_reply));
    assert.deepEqual(step.reply.map(hex), [V.proof.dialer_proof]);
    assert.ok(step.proven);
    assert.equal(reader.stage, Stage.FRAMES);
  });
});
