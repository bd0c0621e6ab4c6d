// Outside a secure context (a page over plain http on a LAN address) there is no
// WebCrypto: the page falls back to @noble/ciphers.  The same Python known answers
// must hold there.  (A file of its own: node --test runs each file in its own process,
// so the switch below does not reach crypto.test.mjs.)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

import {
  CryptoError,
  FrameOpener,
  FrameSealer,
  openMessage,
  sealMessage,
  useNobleAesForTests,
  WrongCodeError,
} from "../src/crypto.js";

useNobleAesForTests();
const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));

describe("AES-GCM from @noble/ciphers (no WebCrypto)", () => {
  for (const [direction, { key, frames }] of Object.entries(vectors.frames)) {
    it(`seals and opens Python's frames byte for byte: ${direction}`, async () => {
      const sealer = new FrameSealer(hexToBytes(key));
      const opener = new FrameOpener(hexToBytes(key));
      for (const f of frames) {
        sealer._counter = BigInt(f.counter);
        opener._counter = BigInt(f.counter);
        assert.equal(bytesToHex(await sealer.seal(f.type, hexToBytes(f.payload))), f.frame);
        const [type, payload] = await opener.open(hexToBytes(f.frame));
        assert.equal(type, f.type);
        assert.equal(bytesToHex(payload), f.payload);
      }
    });
  }

  it("opens Python's sealed signaling messages, and refuses a flipped bit", async () => {
    for (const s of vectors.signals) {
      const key = hexToBytes(s.key);
      const sealed = hexToBytes(s.sealed);
      assert.equal(bytesToHex(await openMessage({ key, kind: s.kind, sealed })), s.plaintext);
      const again = await sealMessage({ key, kind: s.kind, plaintext: hexToBytes(s.plaintext) });
      assert.equal(bytesToHex(await openMessage({ key, kind: s.kind, sealed: again })), s.plaintext);
      sealed[sealed.length - 1] ^= 1;
      await assert.rejects(openMessage({ key, kind: s.kind, sealed }), WrongCodeError);
    }
  });

  it("refuses a tampered frame", async () => {
    const { key, frames } = vectors.frames.sender_to_receiver;
    const frame = hexToBytes(frames[0].frame);
    frame[frame.length - 1] ^= 1;
    await assert.rejects(new FrameOpener(hexToBytes(key)).open(frame), CryptoError);
  });
});
