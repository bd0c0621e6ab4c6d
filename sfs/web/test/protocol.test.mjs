// The page's transfer protocol (src/protocol.js) against sessions that the Python
// TransferProtocol wrote (vectors.json, `python -m tests.web_vectors`): the page must
// seal the same bytes and read Python's frames as Python does, and refuse what
// Python refuses.  Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

import { CryptoError, FrameSealer, SessionKeys } from "../src/crypto.js";
import { LocalProtocolError, RemoteProtocolError, UpgradeError } from "../src/errors.js";
import { encodeJson, JsonError, JsonFloat, parseJson } from "../src/json.js";
import { buildEvent, describeEvent, manyFiles, unrows } from "./events.mjs";
import {
  Accept,
  Cancel,
  Chunk,
  decodeOffer,
  encodeOffer,
  FileAck,
  FileDone,
  FileInfo,
  FrameType,
  MAX_CONTROL_BYTES,
  MAX_MESSAGE_BYTES,
  Offer,
  Partial,
  Ping,
  Reject,
  Resume,
  Role,
  Start,
  State,
  TransferProtocol,
} from "../src/protocol.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const P = vectors.protocol;
const hex = bytesToHex;
const bytes = hexToBytes;
const sha256hex = (data) => createHash("sha256").update(data).digest("hex");
const text = (s) => new TextEncoder().encode(s);

function keys(role) {
  const k = P[`${role}_keys`];
  return new SessionKeys(
    role,
    bytes(k.signal_send),
    bytes(k.signal_receive),
    bytes(k.frame_send),
    bytes(k.frame_receive),
    k.verifier,
  );
}

describe("protocol sessions written by sfs/peer/protocol.py", () => {
  for (const session of P.sessions) {
    it(`seals Python's bytes and reads Python's frames: ${session.name}`, async () => {
      const sides = {
        sender: new TransferProtocol(Role.SENDER, keys("sender")),
        receiver: new TransferProtocol(Role.RECEIVER, keys("receiver")),
      };
      for (const step of session.steps) {
        const from = sides[step.from];
        const to = sides[step.from === "sender" ? "receiver" : "sender"];
        const ours = await Promise.all(from.sendFrames(buildEvent(step.event)));
        let theirs;
        if (step.frames) {
          assert.deepEqual(ours.map(hex), step.frames, `frames of ${step.event.type}`);
          theirs = step.frames.map(bytes); // read exactly what Python sealed
        } else {
          assert.deepEqual(ours.map(sha256hex), step.frames_sha256);
          assert.deepEqual(ours.map((f) => f.length), step.frames_length);
          theirs = ours; // byte for byte Python's, as the digests show
        }
        const received = [];
        for (const frame of theirs) received.push(describeEvent(await to.receive(frame)));
        assert.deepEqual(received, step.received);
        assert.deepEqual({ sender: sides.sender.state, receiver: sides.receiver.state }, step.states);
      }
    });
  }

  it("writes version 1 for plain files, 3 for text, pipes and more than 1000 files", () => {
    const file = (name, size = 1) => new FileInfo({ name, size });
    assert.equal(new Offer({ files: [file("a"), file("b")] }).version, 1);
    assert.equal(new Offer({ files: [file("a")], text: true }).version, 3);
    assert.equal(new Offer({ files: [new FileInfo({ name: "-", size: 0, stream: true })] }).version, 3);
    assert.equal(new Offer({ files: manyFiles() }).version, 3);
    assert.equal(new Offer({ files: [file("a")], folders: [["d"]] }).version, 2);
  });
});

// -- what a receiver refuses ----------------------------------------------------------------

/** A JS receiver, and a raw sealer of the sender's frames to feed it anything. */
function receiverUnderTest() {
  return {
    proto: new TransferProtocol(Role.RECEIVER, keys("receiver")),
    raw: new FrameSealer(keys("sender").frameSend),
  };
}

function offerPayload(overrides = {}, files = [{ name: "a.txt", size: 3, mtime_ns: 0 }]) {
  return text(JSON.stringify({ v: 1, sender: "x", chunk_size: 4, files, ...overrides }));
}

/** A receiver in RECEIVING for one file of `size` bytes (chunk size 4). */
async function receiving(size = 3) {
  const t = receiverUnderTest();
  await t.proto.receive(await t.raw.seal(FrameType.OFFER, offerPayload({}, [{ name: "a", size, mtime_ns: 0 }])));
  await Promise.all(t.proto.sendFrames(new Accept()));
  await t.proto.receive(await t.raw.seal(FrameType.RESUME, text('{"offsets":[0]}')));
  assert.equal(t.proto.state, State.RECEIVING);
  return t;
}

async function refuses(t, type, payload, pattern, ErrorClass = RemoteProtocolError) {
  const frame = await t.raw.seal(type, payload);
  await assert.rejects(t.proto.receive(frame), (error) => {
    assert.ok(error instanceof ErrorClass, `${error.name}: ${error.message}`);
    assert.match(error.message, pattern);
    return true;
  });
}

describe("a receiver refuses what sfs/peer/protocol.py refuses", () => {
  it("takes only an offer first, and nothing but PING or CANCEL while deciding", async () => {
    let t = receiverUnderTest();
    await refuses(t, FrameType.CHUNK, text("x"), /unexpected CHUNK frame in state idle/);
    t = receiverUnderTest();
    await t.proto.receive(await t.raw.seal(FrameType.OFFER, offerPayload()));
    assert.ok((await t.proto.receive(await t.raw.seal(FrameType.PING, new Uint8Array()))) instanceof Ping);
    await refuses(t, FrameType.RESUME, text('{"offsets":[0]}'), /unexpected RESUME frame in state deciding/);
  });

  const badOffers = [
    ["not JSON", text("{"), /not valid JSON/],
    ["a JSON list", text("[]"), /not a JSON object/],
    ["a byte-order mark", text('\ufeff{"v":1}'), /not valid JSON/],
    ["invalid UTF-8", Uint8Array.of(0x7b, 0xff, 0x7d), /not valid JSON/],
    ["a float chunk size", text('{"v":1,"sender":"","chunk_size":4.0,"files":[{"name":"a","size":1,"mtime_ns":0}]}'), /chunk_size/],
    ["a chunk size above the frame limit", offerPayload({ chunk_size: MAX_MESSAGE_BYTES - 27 }), /chunk_size/],
    ["a boolean size", offerPayload({}, [{ name: "a", size: true, mtime_ns: 0 }]), /'size'/],
    ["a negative size", offerPayload({}, [{ name: "a", size: -1, mtime_ns: 0 }]), /'size'/],
    ["no files", offerPayload({}, []), /1 to 1000 files/],
    ["a version as text", offerPayload({ v: "1" }), /protocol "1", not 1 to 3/],
    ["a lone surrogate in a name", text('{"v":1,"chunk_size":4,"files":[{"name":"\\ud800","size":1,"mtime_ns":0}]}'), /not valid Unicode/],
    ["a name of 4097 characters", offerPayload({}, [{ name: "n".repeat(4097), size: 1, mtime_ns: 0 }]), /'name'/],
    ["a sender name of 65 characters", offerPayload({ sender: "s".repeat(65) }), /'sender'/],
    ["a pipe in version 1", offerPayload({}, [{ name: "a", size: null, mtime_ns: 0 }]), /'size'/],
    ["an mtime above 2**63", text('{"v":1,"chunk_size":4,"files":[{"name":"a","size":1,"mtime_ns":9223372036854775808}]}'), /mtime_ns/],
    ["a file above 2**53 bytes", offerPayload({}, [{ name: "a", size: 2 ** 53, mtime_ns: 0 }]), /too large/],
  ];
  for (const [what, payload, pattern] of badOffers) {
    it(`refuses an offer with ${what}`, async () => {
      await refuses(receiverUnderTest(), FrameType.OFFER, payload, pattern);
    });
  }

  it("says to upgrade for an offer of a newer version", async () => {
    await refuses(receiverUnderTest(), FrameType.OFFER, offerPayload({ v: 4 }), /newer sfs/, UpgradeError);
  });

  it("reads what Python reads: v true, a 4096-character name of astral characters, exact mtimes", async () => {
    const t = receiverUnderTest();
    const name = "😀".repeat(4096); // 8192 UTF-16 units, 4096 characters as Python counts
    const payload = text(
      `{"v":true,"sender":"x","chunk_size":4,"files":[{"name":"${name}","size":1,"mtime_ns":1700000000123456789}],"extra":[1.5,NaN]}`,
    );
    const offer = await t.proto.receive(await t.raw.seal(FrameType.OFFER, payload));
    assert.equal(offer.files[0].name, name);
    assert.equal(offer.files[0].mtimeNs, 1700000000123456789n);
    assert.equal(t.proto.version, 1);
  });

  it("refuses more bytes than declared", async () => {
    const t = await receiving(3);
    await t.proto.receive(await t.raw.seal(FrameType.CHUNK, text("ab")));
    await refuses(t, FrameType.CHUNK, text("cd"), /more bytes than it declared/);
  });

  it("refuses a FILE_DONE before all bytes, or with a short hash", async () => {
    let t = await receiving(3);
    await t.proto.receive(await t.raw.seal(FrameType.CHUNK, text("ab")));
    await refuses(t, FrameType.FILE_DONE, new Uint8Array(32), /1 bytes short/);
    t = await receiving(0);
    await refuses(t, FrameType.FILE_DONE, new Uint8Array(31), /32-byte SHA-256/);
  });

  it("refuses an empty chunk, a chunk above the chunk size, and any ZCHUNK", async () => {
    await refuses(await receiving(3), FrameType.CHUNK, new Uint8Array(), /empty chunk/);
    await refuses(await receiving(10), FrameType.CHUNK, text("abcde"), /larger than the announced chunk size/);
    await refuses(await receiving(3), FrameType.ZCHUNK, text("abc"), /compressed chunk/);
  });

  it("refuses a resume of what it does not hold", async () => {
    const t = receiverUnderTest();
    await t.proto.receive(await t.raw.seal(FrameType.OFFER, offerPayload()));
    await Promise.all(t.proto.sendFrames(new Accept()));
    await refuses(t, FrameType.RESUME, text('{"offsets":[2],"sha256":["' + "0".repeat(64) + '"]}'), /not what the receiver holds/);
  });

  it("refuses MORE outside version 3, unknown types, and PING with a payload", async () => {
    await refuses(receiverUnderTest(), FrameType.MORE, text("{"), /MORE frame outside a version 3 session/);
    await refuses(receiverUnderTest(), 99, new Uint8Array(), /unknown frame type 99/);
    await refuses(receiverUnderTest(), FrameType.PING, text("x"), /PING carries nothing/);
  });

  it("joins MORE pieces around a PING, and refuses a CHUNK among them", async () => {
    const t = receiverUnderTest();
    const header = text('{"v":3,"sender":"","chunk_size":4,"text":false}');
    assert.ok((await t.proto.receive(await t.raw.seal(FrameType.OFFER, header))) instanceof Partial);
    const listing = text('{"files":[{"name":"a","size":1,"mtime_ns":0,"folder":[],"x":false}],"folders":[]}');
    await t.proto.receive(await t.raw.seal(FrameType.MORE, listing.subarray(0, 10)));
    await t.proto.receive(await t.raw.seal(FrameType.PING, new Uint8Array()));
    const offer = await t.proto.receive(await t.raw.seal(FrameType.LISTING, listing.subarray(10)));
    assert.equal(offer.files[0].name, "a");
    assert.equal(t.proto.state, State.DECIDING);

    const u = receiverUnderTest();
    await u.proto.receive(await u.raw.seal(FrameType.OFFER, header));
    await u.proto.receive(await u.raw.seal(FrameType.MORE, listing.subarray(0, 10)));
    await refuses(u, FrameType.CHUNK, text("a"), /CHUNK frame in the middle of a control payload/);
  });

  it("refuses a text message over 1 MiB, or offered with another file", async () => {
    const header = text('{"v":3,"sender":"","chunk_size":4,"text":true}');
    const file = (size) => ({ name: "t", size, mtime_ns: 0, folder: [], x: false });
    for (const [files, pattern] of [
      [[file(1024 * 1024 + 1)], /at most 1048576 bytes/],
      [[file(1), file(1)], /offered alone/],
    ]) {
      const t = receiverUnderTest();
      await t.proto.receive(await t.raw.seal(FrameType.OFFER, header));
      await refuses(t, FrameType.LISTING, text(JSON.stringify({ files, folders: [] })), pattern);
    }
  });

  it("refuses a replayed, tampered or oversized frame, and anything after CANCEL", async () => {
    const t = receiverUnderTest();
    const offer = await t.raw.seal(FrameType.OFFER, offerPayload());
    await t.proto.receive(offer);
    await assert.rejects(t.proto.receive(offer), CryptoError);
    const ping = await t.raw.seal(FrameType.PING, new Uint8Array());
    ping[20] ^= 1;
    await assert.rejects(t.proto.receive(ping), CryptoError);
    await assert.rejects(t.proto.receive(new Uint8Array(MAX_MESSAGE_BYTES + 1)), /exceeds the limit/);
    t.raw._counter = 1n; // the tampered frame never counted: 1 is still due
    const cancel = await t.raw.seal(FrameType.CANCEL, text('{"reason":"stop"}'));
    assert.deepEqual(await t.proto.receive(cancel), new Cancel("stop"));
    assert.equal(t.proto.state, State.CLOSED);
    await assert.rejects(t.proto.receive(await t.raw.seal(FrameType.PING, new Uint8Array())), /after the transfer was closed/);
  });
});

describe("a sender refuses what sfs/peer/protocol.py refuses", () => {
  async function offered(files = [new FileInfo({ name: "a", size: 3 })]) {
    const proto = new TransferProtocol(Role.SENDER, keys("sender"));
    const raw = new FrameSealer(keys("receiver").frameSend);
    await Promise.all(proto.sendFrames(new Offer({ files, chunkSize: 4 })));
    return { proto, raw };
  }

  it("refuses an ACCEPT that holds too much, or one offset for two files", async () => {
    await refuses(await offered(), FrameType.ACCEPT, text('{"held":[4]}'), /from 0 to the file's size/);
    const two = [new FileInfo({ name: "a", size: 3 }), new FileInfo({ name: "b", size: 3 })];
    await refuses(await offered(two), FrameType.ACCEPT, text('{"held":[1]}'), /one held offset per offered file/);
  });

  it("refuses an acknowledgement of a file not sent, and a counted one before version 3", async () => {
    const t = await offered();
    await t.proto.receive(await t.raw.seal(FrameType.ACCEPT, text('{"held":[]}')));
    await Promise.all(t.proto.sendFrames(new Resume([0])));
    await refuses(t, FrameType.FILE_ACK, new Uint8Array(), /a file that was not sent/);
    const u = await offered();
    await u.proto.receive(await u.raw.seal(FrameType.ACCEPT, text("{}")));
    await Promise.all(u.proto.sendFrames(new Resume([0])));
    await u.proto.send(new Chunk(text("abc")));
    await u.proto.send(new FileDone(new Uint8Array(32)));
    await refuses(u, FrameType.FILE_ACK, Uint8Array.of(0, 0, 0, 1), /a count in version 3/);
  });

  it("will not send what the receiver would refuse", async () => {
    const t = await offered();
    assert.throws(() => t.proto.send(new Chunk(text("a"))), LocalProtocolError); // not accepted yet
    await t.proto.receive(await t.raw.seal(FrameType.ACCEPT, text('{"held":[]}')));
    assert.throws(() => t.proto.sendFrames(new Resume([1])), /not what the receiver holds/);
    await Promise.all(t.proto.sendFrames(new Resume([0])));
    assert.throws(() => t.proto.send(new Chunk(text("abcd"))), /does not fit/);
    await t.proto.send(new Chunk(text("ab")));
    assert.throws(() => t.proto.send(new FileDone(new Uint8Array(32))), LocalProtocolError);
    assert.throws(() => t.proto.send(new Cancel("r".repeat(201))), /at most 200/);
    const proto = new TransferProtocol(Role.SENDER, keys("sender"));
    assert.throws(
      () => proto.sendFrames(new Offer({ files: [new FileInfo({ name: "\ud800", size: 1 })] })),
      /not valid Unicode/,
    );
  });

  it("cuts a large version 3 control payload into MORE pieces", async () => {
    const proto = new TransferProtocol(Role.SENDER, keys("sender"));
    const frames = await Promise.all(proto.sendFrames(new Offer({ files: manyFiles() })));
    assert.equal(frames.length, 3);
    assert.equal(frames[1][1], FrameType.MORE);
    assert.equal(frames[1].length, MAX_CONTROL_BYTES + 28);
    assert.equal(frames[2][1], FrameType.LISTING);
  });
});

describe("JSON as Python reads and writes it", () => {
  it("keeps integers exact and floats apart", () => {
    const obj = parseJson('{"a":1,"b":1.0,"c":1e3,"d":12345678901234567890,"__proto__":5}');
    assert.equal(obj.a, 1);
    assert.ok(obj.b instanceof JsonFloat && obj.c instanceof JsonFloat);
    assert.equal(obj.d, 12345678901234567890n);
    assert.equal(Object.getPrototypeOf(obj), null);
    assert.equal(obj.__proto__, 5);
  });

  for (const bad of ["01", "[1,]", '{"a":1,}', '"\u0001"', '"\\x"', "1 2", "-", "", "[", '{"a"}', "tru"]) {
    it(`refuses ${JSON.stringify(bad)} as json.loads does`, () => {
      assert.throws(() => parseJson(bad), JsonError);
    });
  }

  it("writes what json.dumps(separators=(',', ':'), ensure_ascii=False) writes", () => {
    assert.equal(
      encodeJson({ n: "é\n\u0001\"\\\u2028", t: [true, null, 2n ** 63n - 1n, 0] }),
      '{"n":"é\\n\\u0001\\"\\\\\u2028","t":[true,null,9223372036854775807,0]}',
    );
  });
});

describe("an offer says whether its sender can resume", () => {
  it("false only when said, as sfs/peer/protocol.py reads it", () => {
    const files = [new FileInfo({ name: "a", size: 1 })];
    const page = encodeOffer(new Offer({ files, resumes: false }));
    assert.equal(JSON.parse(new TextDecoder().decode(page)).resumes, false);
    assert.equal(decodeOffer(page).resumes, false);
    const plain = encodeOffer(new Offer({ files }));
    assert.equal("resumes" in JSON.parse(new TextDecoder().decode(plain)), false);
    assert.equal(decodeOffer(plain).resumes, true);
  });
});
