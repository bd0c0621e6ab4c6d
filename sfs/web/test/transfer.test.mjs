// Moving files (src/transfer.js) over an in-memory channel pair, as tests/unit/
// test_transfer.py does for Python; Python's own frames replayed into the page's
// receiver, whose answers must be Python's bytes; the DataChannel link
// (src/connection.js) on a fake RTCDataChannel; names and sizes as Python writes them.
// Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

import { DataChannelLink, routeOf } from "../src/connection.js";
import { SessionKeys } from "../src/crypto.js";
import {
  CancelledByPeerError,
  CancelledError,
  IntegrityError,
  PeerGoneError,
  RejectedError,
  RemoteProtocolError,
} from "../src/errors.js";
import {
  Chunk,
  FileDone,
  FileInfo,
  Offer,
  Resume,
  Role,
  TransferProtocol,
} from "../src/protocol.js";
import { AsyncQueue } from "../src/queue.js";
import { DECLINED_REASON } from "../src/reasons.js";
import { printable } from "../src/text.js";
import {
  Departures,
  finalLine,
  formatSize,
  planNames,
  receiveFiles,
  safeName,
  sendFiles,
} from "../src/transfer.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const P = vectors.protocol;
const sha256 = (data) => createHash("sha256").update(data).digest();

function keys(role) {
  const k = P[`${role}_keys`];
  const b = hexToBytes;
  return new SessionKeys(role, b(k.signal_send), b(k.signal_receive), b(k.frame_send), b(k.frame_receive), k.verifier);
}

const CLOSED = Symbol("closed");

/** One end of an in-memory, message-preserving channel pair (a Channel). */
class MemoryChannel {
  constructor() {
    this.inbox = new AsyncQueue();
    this.peer = null;
    this.closed = false;
    this.sent = [];
    this.closeWaiters = [];
    this.lastSent = performance.now();
  }
  static pair() {
    const [a, b] = [new MemoryChannel(), new MemoryChannel()];
    [a.peer, b.peer] = [b, a];
    return [a, b];
  }
  async send(frame) {
    if (this.closed) throw new PeerGoneError();
    this.sent.push(frame);
    this.lastSent = performance.now();
    if (this.onSend) this.onSend(frame);
    else this.peer?.inbox.put(frame.slice());
  }
  async receive({ signal } = {}) {
    const item = await this.inbox.get({ signal });
    if (item === CLOSED) {
      this.inbox.unget(CLOSED);
      throw new PeerGoneError();
    }
    return item;
  }
  poll() {
    const item = this.inbox.poll();
    if (item === CLOSED) {
      this.inbox.unget(CLOSED);
      throw new PeerGoneError();
    }
    return item;
  }
  waitClosed() {
    return this.closed ? Promise.resolve() : new Promise((r) => this.closeWaiters.push(r));
  }
  secondsSinceSend() {
    return (performance.now() - this.lastSent) / 1000;
  }
  secondsSinceReceive() {
    return 0; // in memory, the peer is there until the channel closes
  }
  unsentBytes() {
    return 0;
  }
  close() {
    for (const end of [this, this.peer]) {
      if (!end || end.closed) continue;
      end.closed = true;
      end.inbox.put(CLOSED);
      end.closeWaiters.splice(0).forEach((r) => r());
    }
  }
}

/** A Saving that keeps each file in memory, and remembers what happened to it. */
class MemorySaving {
  constructor() {
    this.files = [];
    this.closed = false;
  }
  async open(index, name, size) {
    const file = { index, name, size, parts: [], committed: false, aborted: false };
    this.files.push(file);
    return {
      write: async (data) => {
        file.parts.push(data.slice());
      },
      commit: async () => {
        file.committed = true;
      },
      abort: async () => {
        file.aborted = true;
      },
    };
  }
  async held() {
    return [];
  }
  async begin() {
    this.begun = true;
  }
  async finish() {
    this.finished = true;
  }
  async close() {
    this.closed = true;
  }
  bytes(i) {
    return Buffer.concat(this.files[i].parts);
  }
}

const random = (n) => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
};

describe("sendFiles and receiveFiles over an in-memory channel", () => {
  it("move files of 0 B, 1 B, 16 KiB - 1 and 300 KiB, each checked", async () => {
    const [a, b] = MemoryChannel.pair();
    const contents = [new Uint8Array(0), Uint8Array.of(7), random(16 * 1024 - 1), random(300 * 1024)];
    const names = ["empty.bin", "one.bin", "../under-16k.bin", "résumé ✓ 日本.txt"];
    const files = contents.map((data, i) => new File([data], names[i], { lastModified: 1_700_000_000_123 }));
    const saving = new MemorySaving();
    let offered = null;
    const [sent, received] = await Promise.all([
      sendFiles(a, new TransferProtocol(Role.SENDER, keys("sender")), files, {
        sender: "alice",
        chunkSize: 4096,
      }),
      receiveFiles(b, new TransferProtocol(Role.RECEIVER, keys("receiver")), {
        decide: async (offer, planned) => {
          offered = { offer, planned };
          return { saving };
        },
      }),
    ]);
    assert.equal(offered.offer.sender, "alice");
    assert.equal(offered.offer.files[2].mtimeNs, 1_700_000_000_123_000_000n);
    assert.deepEqual(offered.planned, ["empty.bin", "one.bin", "under-16k.bin", "résumé ✓ 日本.txt"]);
    contents.forEach((data, i) => {
      assert.deepEqual(new Uint8Array(saving.bytes(i)), data);
      assert.ok(saving.files[i].committed && !saving.files[i].aborted);
    });
    const total = contents.reduce((n, d) => n + d.length, 0);
    assert.equal(sent.totalBytes, total);
    assert.equal(received.totalBytes, total);
    assert.match(finalLine("Sent", sent), /^Sent 4 files \(323\.6 kB\) in \d+\.\d s, .*\/s$/);
    assert.match(finalLine("Received", received), /^Received 4 files \(323\.6 kB\)/);
  });

  it("a decline reaches the sender as 'declined' and nothing is saved", async () => {
    const [a, b] = MemoryChannel.pair();
    const sending = sendFiles(a, new TransferProtocol(Role.SENDER, keys("sender")), [new File(["x"], "x.txt")], {
      sender: "",
      chunkSize: 4096,
    });
    // The sender closes once it has read the REJECT (a timer could fire before that
    // on a busy machine, and the sender would see only a closed channel).
    sending.catch(() => {}).finally(() => a.close());
    const receiving = receiveFiles(b, new TransferProtocol(Role.RECEIVER, keys("receiver")), {
      decide: async () => null,
    });
    await assert.rejects(sending, (e) => e instanceof RejectedError && /declined the transfer \(declined by the receiver\)/.test(e.message));
    await assert.rejects(receiving, (e) => e instanceof RejectedError && /You declined/.test(e.message));
  });

  it("a sender that stops while the receiver decides ends the question", async () => {
    const [a, b] = MemoryChannel.pair();
    const cancel = new AbortController();
    let asked = null;
    const sending = sendFiles(a, new TransferProtocol(Role.SENDER, keys("sender")), [new File(["x"], "x.txt")], {
      sender: "",
      chunkSize: 4096,
      onWaiting: () => setTimeout(() => cancel.abort(new CancelledError()), 20),
      cancel: cancel.signal,
    });
    const receiving = receiveFiles(b, new TransferProtocol(Role.RECEIVER, keys("receiver")), {
      decide: (offer, names, signal) =>
        new Promise((resolve) => {
          asked = signal;
          signal.addEventListener("abort", () => {
            b.close(); // the receiver closes after the sender's last word
            resolve(null);
          });
        }),
    });
    await assert.rejects(receiving, (e) => e instanceof CancelledByPeerError && /cancelled by the user/.test(e.message));
    await assert.rejects(sending, CancelledError);
    assert.ok(asked.aborted);
  });
});

/** A channel that plays Python's side of a recorded session, frame by frame. */
function replay(session, side) {
  const mine = side; // the side under test ("receiver")
  const channel = new MemoryChannel();
  const steps = session.steps;
  let at = 0;
  const expected = [];
  const release = () => {
    // Python's frames up to the page's next turn go in; the page's are expected then.
    while (at < steps.length && steps[at].from !== mine) {
      for (const frame of steps[at].frames) channel.inbox.put(hexToBytes(frame));
      at++;
    }
    while (at < steps.length && steps[at].from === mine) {
      expected.push(...steps[at].frames);
      at++;
    }
  };
  channel.onSend = (frame) => {
    assert.equal(bytesToHex(frame), expected.shift(), "the page's frame differs from Python's");
    if (!expected.length) release();
  };
  release();
  channel.done = () => expected.length === 0 && at === steps.length;
  return channel;
}

describe("the page's receiver against Python's recorded senders", () => {
  const session = (name) => P.sessions.find((s) => s.name === name);

  for (const name of ["v1 three files, one empty, a name to reduce", "v3 pipe"]) {
    it(`answers with Python's bytes: ${name}`, async () => {
      const channel = replay(session(name), "receiver");
      const saving = new MemorySaving();
      const result = await receiveFiles(channel, new TransferProtocol(Role.RECEIVER, keys("receiver")), {
        decide: async () => ({ saving }),
      });
      assert.ok(channel.done());
      assert.ok(saving.files.every((f) => f.committed));
      assert.ok(result.files.length >= 1);
    });
  }

  it("shows a text message instead of saving it", async () => {
    const channel = replay(session("v3 text message"), "receiver");
    const result = await receiveFiles(channel, new TransferProtocol(Role.RECEIVER, keys("receiver")), {
      decide: async (offer) => {
        assert.ok(offer.text);
        return { saving: null };
      },
    });
    assert.equal(result.text, "Hello from sfs: café ☕\nSecond line\n");
    assert.equal(finalLine("Received", result).split(" (")[0], "Received a text message");
  });

  it("takes folders as Python's receiver plans them, with Python's bytes", async () => {
    const channel = replay(session("v2 folders"), "receiver");
    const saving = new MemorySaving();
    let planned = null;
    const result = await receiveFiles(channel, new TransferProtocol(Role.RECEIVER, keys("receiver")), {
      decide: async (offer, names, signal, plan) => {
        planned = { names, plan };
        return { saving };
      },
    });
    assert.ok(channel.done());
    assert.deepEqual(planned.names, ["docs/readme.txt", "run.sh"]);
    assert.deepEqual(planned.plan.folders, [["docs"], ["empty", "inner"]]);
    assert.ok(planned.plan.tree);
    assert.ok(saving.begun && saving.finished);
    assert.equal(saving.bytes(0).toString(), "abc");
    assert.equal(saving.bytes(1).toString(), "#!/sh");
    assert.equal(finalLine("Received", result).split(" (")[0], "Received 2 files in 2 folders");
  });

  it("declines with the words Python recorded", async () => {
    const channel = replay(session("v1 declined"), "receiver");
    const saving = new MemorySaving();
    setTimeout(() => channel.close(), 20); // Python's sender closes on the REJECT
    await assert.rejects(
      receiveFiles(channel, new TransferProtocol(Role.RECEIVER, keys("receiver")), {
        decide: async () => null,
      }),
      RejectedError,
    );
    assert.ok(channel.done(), DECLINED_REASON);
    assert.equal(saving.files.length, 0);
  });
});

describe("integrity", () => {
  it("a SHA-256 that does not match: the save is aborted, never committed, and the sender told", async () => {
    const channel = new MemoryChannel();
    const sender = new TransferProtocol(Role.SENDER, keys("sender"));
    const replies = [];
    channel.onSend = async (frame) => replies.push(frame);
    const put = async (event) => {
      for (const frame of sender.sendFrames(event)) channel.inbox.put(await frame);
    };
    const saving = new MemorySaving();
    const receiving = receiveFiles(channel, new TransferProtocol(Role.RECEIVER, keys("receiver")), {
      decide: async () => ({ saving }),
    });
    await put(new Offer({ files: [new FileInfo({ name: "a.bin", size: 3 })], chunkSize: 4096 }));
    while (!replies.length) await new Promise((r) => setTimeout(r, 1));
    await sender.receive(replies[0]); // ACCEPT
    await put(new Resume([0]));
    await put(new Chunk(Uint8Array.of(1, 2, 3)));
    await put(new FileDone(sha256(Uint8Array.of(1, 2, 4))));
    setTimeout(() => channel.close(), 20);
    await assert.rejects(receiving, (e) => e instanceof IntegrityError && /SHA-256 mismatch/.test(e.message));
    assert.ok(saving.files[0].aborted);
    assert.ok(!saving.files[0].committed);
    const cancel = await sender.receive(replies.at(-1));
    assert.equal(cancel.reason, "the received data failed its integrity check");
  });
});

describe("a hostile folder offer, towards the page", () => {
  for (const [why, files] of [
    ["a parent", [new FileInfo({ name: "x", size: 1, folder: [".."] })]],
    ["a file where a folder goes", [
      new FileInfo({ name: "b", size: 1, folder: ["a"] }),
      new FileInfo({ name: "a", size: 1 }),
      new FileInfo({ name: "c", size: 1, folder: ["a", "b"] }),
    ]],
  ]) {
    it(`is refused before anyone is asked: ${why}`, async () => {
      const channel = new MemoryChannel();
      const sender = new TransferProtocol(Role.SENDER, keys("sender"));
      channel.onSend = async () => {};
      let asked = false;
      const receiving = receiveFiles(channel, new TransferProtocol(Role.RECEIVER, keys("receiver")), {
        decide: async () => {
          asked = true;
          return { saving: new MemorySaving() };
        },
      });
      for (const frame of sender.sendFrames(new Offer({ files, chunkSize: 4096 }))) {
        channel.inbox.put(await frame);
      }
      setTimeout(() => channel.close(), 20);
      await assert.rejects(receiving, RemoteProtocolError);
      assert.ok(!asked);
    });
  }
});

describe("the DataChannel link (src/connection.js)", () => {
  class FakeChannel extends EventTarget {
    constructor() {
      super();
      this.readyState = "open";
      this.bufferedAmount = 0;
      this.sent = [];
    }
    send(frame) {
      this.sent.push(frame);
      this.bufferedAmount += frame.length;
    }
    drain() {
      this.bufferedAmount = 0;
      this.dispatchEvent(new Event("bufferedamountlow"));
    }
    deliver(bytes) {
      const event = new Event("message");
      event.data = bytes.buffer;
      this.dispatchEvent(event);
    }
  }

  it("holds a sender back above the high-water mark until the buffer drains", async () => {
    const channel = new FakeChannel();
    const link = new DataChannelLink(channel, { maxMessageSize: 262144, highWater: 100 });
    await link.send(new Uint8Array(60));
    let done = false;
    const waiting = link.send(new Uint8Array(60)).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(done, false);
    channel.drain();
    await waiting;
    assert.equal(channel.bufferedAmountLowThreshold, 50);
  });

  it("delivers frames in order, and says the peer is gone once it is silent too long", async () => {
    const channel = new FakeChannel();
    const link = new DataChannelLink(channel, { maxMessageSize: 262144, idleTimeout: 0.2 });
    channel.deliver(Uint8Array.of(1));
    channel.deliver(Uint8Array.of(2));
    assert.deepEqual(await link.receive(), Uint8Array.of(1));
    assert.deepEqual(link.poll(), Uint8Array.of(2));
    await assert.rejects(link.receive(), /lost the connection: nothing from the other side for 0.2 s/);
  });

  it("gives up a read on request without losing the frame that comes after", async () => {
    const channel = new FakeChannel();
    const link = new DataChannelLink(channel, { maxMessageSize: 262144 });
    const stop = new AbortController();
    const reading = link.receive({ signal: stop.signal });
    stop.abort("decided");
    await assert.rejects(reading, (e) => e === "decided");
    channel.deliver(Uint8Array.of(9));
    assert.deepEqual(await link.receive(), Uint8Array.of(9));
    channel.dispatchEvent(new Event("close"));
    await assert.rejects(link.receive(), PeerGoneError);
    await link.waitClosed();
  });
});

describe("names and sizes as sfs/peer/transfer.py writes them", () => {
  for (const [offered, expected] of vectors.names.safe_names) {
    it(`safe_name(${JSON.stringify(offered).slice(0, 40)})`, () => {
      if (expected === null) assert.throws(() => safeName(offered), /empty or unusable/);
      else assert.equal(safeName(offered), expected);
    });
  }

  it("formats sizes and shown text the same", () => {
    for (const [n, text] of vectors.names.sizes) assert.equal(formatSize(n), text, String(n));
    for (const [text, shown, cut] of vectors.names.printable) {
      assert.equal(printable(text), shown);
      assert.equal(printable(text, 20), cut);
    }
  });

  it("never gives two files one name", () => {
    const offer = new Offer({
      files: ["a.txt", "A.TXT", "dir/a.txt", "b"].map((name) => new FileInfo({ name, size: 1 })),
    });
    assert.deepEqual(planNames(offer), ["a.txt", "A (1).TXT", "a (2).txt", "b"]);
  });
});


describe("the sender's progress counts what has left (Departures, as transfer.py's)", () => {
  class Recorder {
    constructor() {
      this.calls = [];
      this.shown = 0;
    }
    start(name) {
      this.calls.push(["start", name]);
    }
    advance(n) {
      assert.ok(n >= 0);
      this.shown += n;
    }
    finish() {
      this.calls.push(["finish", this.shown]);
    }
  }

  it("a file is done only when its last byte has left, not when it was queued", () => {
    const shown = new Recorder();
    const d = new Departures(shown);
    d.file("a.bin", 10_000_000);
    d.handed(10_000_000);
    d.left(4_000_000);
    assert.equal(shown.shown, 6_000_000);
    d.handedAll();
    assert.deepEqual(shown.calls, [["start", "a.bin"]]); // 4 MB still buffered
    d.left(1_000_000);
    assert.equal(shown.shown, 9_000_000);
    d.allAcknowledged();
    assert.deepEqual(shown.calls.at(-1), ["finish", 10_000_000]);
  });

  it("the next file starts when the last one's bytes have left", () => {
    const shown = new Recorder();
    const d = new Departures(shown);
    d.file("a", 100);
    d.handed(100);
    d.handedAll();
    d.file("b", 50);
    d.handed(50);
    d.left(120);
    assert.deepEqual(shown.calls, [["start", "a"]]);
    assert.equal(shown.shown, 30);
    d.left(40);
    assert.deepEqual(shown.calls, [["start", "a"], ["finish", 100], ["start", "b"]]);
    assert.equal(shown.shown, 110);
    d.left(60); // never backwards
    assert.equal(shown.shown, 110);
    d.handedAll();
    d.allAcknowledged();
    assert.deepEqual(shown.calls.at(-1), ["finish", 150]);
    d.close();
    assert.equal(shown.calls.length, 4);
  });
});

describe("the page's route label (routeOf): from what is known, 'direct' when unsure", () => {
  const LOCAL = "direct on the local network";
  const NAT = "direct through NAT";
  const cases = [
    // [local type, remote type, remote address, label]
    ["host", "host", "10.203.0.2", LOCAL],
    ["host", "prflx", "192.168.1.30", LOCAL], // the CLI learnt from its checks, same LAN
    ["host", "host", "1f0e8c2a-77aa.local", LOCAL],
    ["host", "host", "fd00::30", LOCAL],
    ["host", "prflx", "172.20.0.5", LOCAL],
    ["host", "srflx", "203.0.113.7", NAT],
    ["srflx", "host", "203.0.113.7", NAT],
    ["prflx", "host", "10.203.0.2", LOCAL], // Chromium's own mDNS-hidden address, named by the peer
    ["prflx", "host", "203.0.113.7", "direct"],
    ["host", "host", "203.0.113.7", "direct"], // a public address: routed, no NAT seen
    ["host", "prflx", "203.0.113.7", "direct"],
    ["host", "prflx", "100.64.0.9", "direct"], // a carrier's NAT range is not ours
    ["host", "host", "", "direct"],
    ["relay", "host", "10.0.0.1", "relayed by TURN"],
    ["host", "relay", "198.51.100.9", "relayed by the other side's TURN"],
  ];
  for (const [local, remote, address, label] of cases) {
    it(`${local} / ${remote} ${address || "(no address)"}: ${label}`, () => {
      assert.equal(routeOf(local, remote, address), label);
    });
  }
});
