// The page's crypto against the Python CLI's known answers (vectors.json, written by
// `python -m tests.web_vectors`).  Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

import {
  CryptoError,
  deriveKeys,
  digestsEqual,
  FrameOpener,
  FrameSealer,
  KeyExchange,
  MAX_COUNTER,
  openMessage,
  sealMessage,
  WrongCodeError,
} from "../src/crypto.js";
import {
  M,
  N,
  OffSides,
  passwordToScalar,
  ReflectionThwarted,
  SPAKE2_A,
  SPAKE2_B,
} from "../src/spake2.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const hex = bytesToHex;
const bytes = hexToBytes;
const text = (s) => new TextEncoder().encode(s);

/** Replays the entropy Python drew, and checks it is drawn exactly as Python did. */
function replay(hexBytes) {
  let rest = bytes(hexBytes);
  const entropy = (n) => {
    assert.ok(n <= rest.length, `asked for ${n} bytes, only ${rest.length} recorded`);
    const out = rest.slice(0, n);
    rest = rest.slice(n);
    return out;
  };
  entropy.remaining = () => rest.length;
  return entropy;
}

function keysHex(keys) {
  return {
    signal_send: hex(keys.signalSend),
    signal_receive: hex(keys.signalReceive),
    frame_send: hex(keys.frameSend),
    frame_receive: hex(keys.frameReceive),
    verifier: keys.verifier,
  };
}

function flipBit(data, index, bit = 0) {
  const copy = data.slice();
  copy[index] ^= 1 << bit;
  return copy;
}

describe("SPAKE2 (python-spake2 compatible)", () => {
  it("derives M and N as python-spake2 does", () => {
    assert.equal(M.toHex(), vectors.spake2.M);
    assert.equal(N.toHex(), vectors.spake2.N);
  });

  it("turns passwords into the same scalars", () => {
    for (const { password, scalar } of vectors.spake2.password_scalars) {
      const le = bytes(scalar).reverse(); // python-spake2 writes scalars little-endian
      assert.equal(passwordToScalar(bytes(password)), BigInt("0x" + (hex(le) || "0")));
    }
  });

  for (const v of vectors.exchanges) {
    it(`gives Python's messages and keys: ${v.name}`, () => {
      const entropyA = replay(v.sender_entropy);
      const entropyB = replay(v.receiver_entropy);
      const ids = { idA: bytes(v.id_a), idB: bytes(v.id_b) };
      const a = new SPAKE2_A(bytes(v.sender_password), { ...ids, entropy: entropyA });
      const b = new SPAKE2_B(bytes(v.receiver_password), { ...ids, entropy: entropyB });
      const messageA = a.start();
      const messageB = b.start();
      assert.equal(entropyA.remaining(), 0);
      assert.equal(entropyB.remaining(), 0);
      assert.equal(hex(messageA), v.sender_message);
      assert.equal(hex(messageB), v.receiver_message);
      assert.equal(hex(a.finish(messageB)), v.sender_pake_key);
      assert.equal(hex(b.finish(messageA)), v.receiver_pake_key);
    });
  }

  it("refuses a message from its own side, a reflection, and bad elements", () => {
    const v = vectors.exchanges[0];
    const fresh = () => new SPAKE2_A(text("pw"), { entropy: replay(v.sender_entropy) });
    const a1 = fresh();
    a1.start();
    assert.throws(() => a1.finish(bytes(v.sender_message)), OffSides);
    const a2 = fresh();
    const own = a2.start();
    assert.throws(() => a2.finish(Uint8Array.of(0x42, ...own.subarray(1))), ReflectionThwarted);
    const identity = new Uint8Array(32);
    identity[0] = 1;
    const order2 = identity.slice();
    order2[0] = 0xec; // y = -1: (0, -1) has order 2
    order2.fill(0xff, 1, 31);
    order2[31] = 0x7f;
    const offCurve = new Uint8Array(32);
    offCurve[0] = 2; // no x satisfies the curve equation for y = 2
    for (const element of [identity, order2, offCurve, new Uint8Array(31), new Uint8Array(33)]) {
      const a = fresh();
      a.start();
      const message = Uint8Array.of(0x42, ...element);
      assert.throws(() => a.finish(message), /Zero|right group|bytes|curve/);
    }
    const a3 = fresh();
    a3.start();
    a3.finish(bytes(v.receiver_message));
    assert.throws(() => a3.finish(bytes(v.receiver_message)), /only be called once/);
  });
});

describe("KeyExchange and session keys", () => {
  for (const v of vectors.exchanges) {
    it(`matches sfs.peer.proto.crypto: ${v.name}`, () => {
      const common = { codeId: v.code_id, printedBy: v.printed_by };
      const sender = new KeyExchange({
        role: "sender",
        password: bytes(v.sender_password),
        entropy: replay(v.sender_entropy),
        ...common,
      });
      const receiver = new KeyExchange({
        role: "receiver",
        password: bytes(v.receiver_password),
        entropy: replay(v.receiver_entropy),
        ...common,
      });
      assert.equal(hex(sender.message), v.sender_message);
      assert.equal(hex(receiver.message), v.receiver_message);
      assert.deepEqual(keysHex(sender.finish(receiver.message)), v.sender_keys);
      assert.deepEqual(keysHex(receiver.finish(sender.message)), v.receiver_keys);
      assert.throws(() => sender.finish(receiver.message), /already finished/);
    });
  }

  it("takes the password as a string too (UTF-8)", () => {
    const v = vectors.exchanges.find((e) => e.name.includes("UTF-8"));
    const exchange = new KeyExchange({
      role: "sender",
      password: new TextDecoder().decode(bytes(v.sender_password)),
      codeId: v.code_id,
      printedBy: v.printed_by,
      entropy: replay(v.sender_entropy),
    });
    assert.equal(hex(exchange.message), v.sender_message);
  });

  it("gives different keys for a wrong password, and agrees on the right one", () => {
    const v = vectors.exchanges.find((e) => e.name === "wrong password");
    assert.notEqual(v.sender_keys.signal_send, v.receiver_keys.signal_receive);
    const codeId = "ABC-123";
    const sender = new KeyExchange({ role: "sender", password: "tiger-lamb", codeId });
    const receiver = new KeyExchange({ role: "receiver", password: "tiger-lamp", codeId });
    const keysS = sender.finish(receiver.message);
    const keysR = receiver.finish(sender.message);
    assert.notEqual(hex(keysS.signalSend), hex(keysR.signalReceive));
    assert.notEqual(keysS.verifier, keysR.verifier);
    const right = ["sender", "receiver"].map(
      (role) => new KeyExchange({ role, password: "x-y", codeId: "ID" }),
    );
    const [keysA, keysB] = [right[0].finish(right[1].message), right[1].finish(right[0].message)];
    assert.equal(hex(keysA.frameSend), hex(keysB.frameReceive));
    assert.equal(keysA.verifier, keysB.verifier);
  });

  it("never lets the two flows share keys", () => {
    const v = vectors.exchanges[0];
    const other = new KeyExchange({
      role: "sender",
      password: bytes(v.sender_password),
      codeId: v.code_id,
      printedBy: "sender",
      entropy: replay(v.sender_entropy),
    });
    // Same password and randomness, so the same message; but the identities differ.
    assert.equal(hex(other.message), v.sender_message);
    const keys = keysHex(other.finish(bytes(v.receiver_message)));
    assert.notEqual(keys.signal_send, v.sender_keys.signal_send);
    assert.notEqual(keys.verifier, v.sender_keys.verifier);
  });

  it("derives the same keys from the raw SPAKE2 key", () => {
    const v = vectors.exchanges[1];
    const pakeKey = bytes(v.receiver_pake_key);
    const keys = deriveKeys({ pakeKey, transcript: text(v.code_id), role: "receiver" });
    assert.deepEqual(keysHex(keys), v.receiver_keys);
    assert.equal(String(keys), "SessionKeys(<redacted>)");
    assert.equal(JSON.stringify({ keys }), '{"keys":"SessionKeys(<redacted>)"}');
  });

  it("turns a malformed peer message into WrongCodeError", () => {
    const fromSideA = Uint8Array.of(0x41, ...new Uint8Array(32));
    for (const message of [new Uint8Array(0), new Uint8Array(33), fromSideA]) {
      const receiver = new KeyExchange({ role: "receiver", password: "a-b", codeId: "ID" });
      assert.throws(() => receiver.finish(message), WrongCodeError);
    }
  });
});

describe("sealed signaling messages", () => {
  for (const s of vectors.signals) {
    it(`opens Python's sealed ${s.kind}, and seals it byte for byte`, async () => {
      assert.equal(hex(Buffer.from(s.sealed_base64, "base64")), s.sealed);
      const key = bytes(s.key);
      const opened = await openMessage({ key, kind: s.kind, sealed: bytes(s.sealed) });
      assert.equal(hex(opened), s.plaintext);
      const plaintext = bytes(s.plaintext);
      const sealed = await sealMessage({ key, kind: s.kind, plaintext, entropy: replay(s.nonce) });
      assert.equal(hex(sealed), s.sealed);
    });
  }

  it("round-trips with a random nonce and refuses any change", async () => {
    const key = bytes(vectors.signals[0].key);
    const plaintext = text('{"type":"offer","sdp":"v=0"}');
    const sealed = await sealMessage({ key, kind: "offer", plaintext });
    const again = await sealMessage({ key, kind: "offer", plaintext });
    assert.notEqual(hex(sealed), hex(again)); // fresh nonce each time
    assert.deepEqual(await openMessage({ key, kind: "offer", sealed }), plaintext);
    assert.deepEqual(await openMessage({ key, kind: "offer", sealed: sealed.buffer }), plaintext);
    const wrongKey = flipBit(key, 0);
    for (const [k, kind, data] of [
      [key, "offer", flipBit(sealed, 0)], // nonce
      [key, "offer", flipBit(sealed, 20, 7)], // ciphertext
      [key, "offer", flipBit(sealed, sealed.length - 1)], // tag
      [key, "answer", sealed], // another kind
      [wrongKey, "offer", sealed], // another key: a wrong code
      [key, "offer", sealed.subarray(0, 27)], // too short
    ]) {
      await assert.rejects(openMessage({ key: k, kind, sealed: data }), WrongCodeError);
    }
  });
});

describe("DataChannel frames", () => {
  for (const [direction, { key, frames }] of Object.entries(vectors.frames)) {
    it(`seals and opens Python's frames byte for byte: ${direction}`, async () => {
      const sealer = new FrameSealer(bytes(key));
      const opener = new FrameOpener(bytes(key));
      for (const f of frames) {
        // Tests reach into the counters to exercise a counter above 2**32.
        sealer._counter = BigInt(f.counter);
        opener._counter = BigInt(f.counter);
        assert.equal(hex(await sealer.seal(f.type, bytes(f.payload))), f.frame);
        const [type, payload] = await opener.open(bytes(f.frame));
        assert.equal(type, f.type);
        assert.equal(hex(payload), f.payload);
      }
    });
  }

  const { key, frames } = vectors.frames.sender_to_receiver;
  const [frame0, frame1, frame2] = frames.map((f) => bytes(f.frame));

  it("numbers concurrent seals in call order, and settles them in order", async () => {
    const sealer = new FrameSealer(bytes(key));
    const settled = [];
    const payloads = frames.slice(0, 3).map((f) => bytes(f.payload));
    const pending = payloads.map((payload, i) =>
      sealer.seal(frames[i].type, payload).then((frame) => {
        settled.push(i);
        return frame;
      }),
    );
    for (const payload of payloads) payload.fill(0); // the caller may reuse its buffers at once
    const sealed = await Promise.all(pending);
    assert.deepEqual(sealed.map(hex), frames.slice(0, 3).map((f) => f.frame));
    assert.deepEqual(settled, [0, 1, 2]);
  });

  it("opens frames handed over without awaiting, in order", async () => {
    const opener = new FrameOpener(bytes(key));
    const opened = await Promise.all([frame0, frame1.buffer, frame2].map((f) => opener.open(f)));
    assert.deepEqual(opened.map(([type]) => type), [1, 4, 5]);
  });

  it("opens frames warmed ahead of their turn as it opens the others", async () => {
    const opener = new FrameOpener(bytes(key));
    for (const f of [frame2, frame1, frame0]) opener.warm(f); // any order: nothing is decided
    const opened = await Promise.all([frame0, frame1, frame2].map((f) => opener.open(f)));
    assert.deepEqual(opened.map(([type]) => type), [1, 4, 5]);
    assert.deepEqual(
      opened.map(([, payload]) => hex(payload)),
      frames.slice(0, 3).map((f) => f.payload),
    );
  });

  it("checks a warmed frame in turn: reordered, replayed or tampered, it is refused", async () => {
    const opener = new FrameOpener(bytes(key));
    const flipped = flipBit(frame0, 40);
    for (const f of [frame1, flipped, frame0]) opener.warm(f);
    await assert.rejects(opener.open(frame1), /frame 1 arrived where frame 0 was due/);
    await assert.rejects(opener.open(flipped), /integrity check/);
    assert.equal((await opener.open(frame0))[0], 1);
    await assert.rejects(opener.open(frame0), /frame 0 arrived where frame 1 was due/);
    opener.warm(frame0.subarray(0, 27)); // too short to hold a frame: left to open() to refuse
    await assert.rejects(opener.open(frame0.subarray(0, 27)), /too short/);
    assert.equal((await opener.open(frame1))[0], 4);
  });

  it("refuses a flipped bit anywhere", async () => {
    for (const index of [0, 1, 2, 4, 11, 12, 40, frame0.length - 1]) {
      const opener = new FrameOpener(bytes(key));
      const flipped = flipBit(frame0, index);
      await assert.rejects(opener.open(flipped), CryptoError, `bit flipped in byte ${index}`);
      // A failure does not move the counter, as in Python: the genuine frame still opens.
      assert.equal((await opener.open(frame0))[0], 1);
    }
  });

  it("refuses a replayed, reordered or dropped frame", async () => {
    const opener = new FrameOpener(bytes(key));
    await assert.rejects(opener.open(frame1), /frame 1 arrived where frame 0 was due/); // reordered
    await opener.open(frame0);
    await assert.rejects(opener.open(frame0), /frame 0 arrived where frame 1 was due/); // replayed
    await assert.rejects(opener.open(frame2), CryptoError); // frame 1 dropped
    await opener.open(frame1);
    await opener.open(frame2);
  });

  it("refuses a frame whose type was changed, or from the other direction", async () => {
    const retyped = frame0.slice();
    retyped[1] = 4; // OFFER -> CHUNK: the header is the AAD
    await assert.rejects(new FrameOpener(bytes(key)).open(retyped), /integrity check/);
    const other = bytes(vectors.frames.receiver_to_sender.frames[0].frame);
    await assert.rejects(new FrameOpener(bytes(key)).open(other), CryptoError);
  });

  it("refuses short frames and other versions", async () => {
    const short = frame0.subarray(0, 27);
    await assert.rejects(new FrameOpener(bytes(key)).open(short), /frame too short \(27 bytes\)/);
    const v2 = frame0.slice();
    v2[0] = 2;
    await assert.rejects(new FrameOpener(bytes(key)).open(v2), /unsupported frame version 2/);
    const reserved = frame0.slice();
    reserved[3] = 1;
    await assert.rejects(new FrameOpener(bytes(key)).open(reserved), CryptoError);
  });

  it("stops after 2**64 frames", async () => {
    const sealer = new FrameSealer(bytes(key));
    sealer._counter = MAX_COUNTER;
    const last = await sealer.seal(9, new Uint8Array(0));
    assert.equal(hex(last.subarray(0, 12)), "01090000ffffffffffffffff");
    await assert.rejects(sealer.seal(9, new Uint8Array(0)), /too many frames for one session/);
  });
});

describe("digestsEqual", () => {
  it("compares bytes", () => {
    assert.equal(digestsEqual(text("abc"), text("abc")), true);
    assert.equal(digestsEqual(text("abc"), text("abd")), false);
    assert.equal(digestsEqual(text("abc"), text("ab")), false);
    assert.equal(digestsEqual(new Uint8Array(0), new Uint8Array(0)), true);
  });
});
