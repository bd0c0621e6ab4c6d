// The page's relay (./src/relay.js) and its path choice (./src/opening.js), with a
// fake WebSocket and relay (the end-to-end run in Chromium is
// tests/integration/test_web_relay.py).  Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { hexToBytes } from "@noble/hashes/utils.js";

import { deriveKeys, FrameOpener, FrameSealer, SessionKeys } from "../src/crypto.js";
import { PeerConnectionError, PeerGoneError, RemoteProtocolError } from "../src/errors.js";
import {
  ChoiceBroken,
  ChosenOnDataChannel,
  DataChannelFailed,
  DataChannelOpen,
  GiveUp,
  PathChoice,
  RELAY_HEAD_START_SECONDS,
  RelayFailed,
  RelayReady,
  StartRelay,
  Take,
} from "../src/opening.js";
import {
  connectRelay,
  MAX_HELD_BYTES,
  READ_AHEAD_BYTES,
  refusal,
  relayMode,
  relayRoute,
  relayUrlOf,
  webSocketUrl,
} from "../src/relay.js";
import { CHOSEN, lengthPrefixed } from "../src/tcp.js";

const V = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8")).relay;
const keysOf = (role) =>
  deriveKeys({ pakeKey: hexToBytes(V.pake_key), transcript: hexToBytes(V.transcript), role });

describe("where the relay is (relayUrlOf, webSocketUrl, relayRoute, relayMode)", () => {
  it('"" is the page\'s own origin + /relay; an absolute http(s) URL is itself', () => {
    assert.equal(relayUrlOf("", "http://127.0.0.1:5000"), "http://127.0.0.1:5000/relay");
    assert.equal(relayUrlOf("", "https://sfs.example.org/"), "https://sfs.example.org/relay");
    const node = "https://sfs.example.org/node/2/relay";
    assert.equal(relayUrlOf(node, "https://sfs.example.org"), node);
  });

  it("no relay when the ack has none, names something else, or the mode is never", () => {
    for (const ack of [undefined, null, 5, "ftp://x/relay", "not a url", "x".repeat(513)]) {
      assert.equal(relayUrlOf(ack, "http://h:1"), null, String(ack));
    }
    assert.equal(relayUrlOf("https://u:p@h/relay", "http://h:1"), null);
    assert.equal(relayUrlOf("", "http://h:1", "never"), null);
  });

  it("speaks ws(s) to an http(s) relay, and names its host", () => {
    assert.equal(webSocketUrl("http://127.0.0.1:5000/relay"), "ws://127.0.0.1:5000/relay");
    assert.equal(webSocketUrl("https://a.example/n/2/relay"), "wss://a.example/n/2/relay");
    assert.throws(() => webSocketUrl("ftp://a/relay"), PeerConnectionError);
    assert.equal(relayRoute("https://sfs.example.org/relay"), "relayed by sfs.example.org");
  });

  it("?relay=only|never, else auto", () => {
    assert.equal(relayMode("?relay=only"), "only");
    assert.equal(relayMode("?save=memory&relay=never"), "never");
    assert.equal(relayMode("?relay=bogus"), "auto");
    assert.equal(relayMode(""), "auto");
  });

  it("says a refusal's reason, made printable", () => {
    assert.match(refusal(4408, "no partner"), /did not come to it in time: no partner/);
    assert.match(refusal(4503, "busy\u001b[31m"), /busy/);
    assert.doesNotMatch(refusal(4503, "busy\u001b[31m"), /\u001b/);
  });
});

// -- a fake relay: two WebSockets joined once both presented the same token -----------------

class FakeRelay {
  constructor({ split = (data) => [data] } = {}) {
    this.waiting = new Map();
    this.split = split; // how the relay cuts what it forwards into messages
    this.sockets = [];
  }
  WebSocket = (() => {
    const relay = this;
    return class extends EventTarget {
      constructor(url) {
        super();
        this.url = url;
        this.readyState = 0;
        this.bufferedAmount = 0;
        this.partner = null;
        relay.sockets.push(this);
        setTimeout(() => {
          this.readyState = 1;
          this.dispatchEvent(new Event("open"));
        });
      }
      send(data) {
        const bytes = new Uint8Array(data.buffer ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) : data);
        if (this.partner === null) return relay._token(this, bytes);
        const partner = this.partner;
        for (const piece of relay.split(bytes)) {
          setTimeout(() => partner._deliver(piece.slice().buffer));
        }
      }
      _deliver(data) {
        if (this.readyState === 1) this.dispatchEvent(Object.assign(new Event("message"), { data }));
      }
      close(code = 1000, reason = "") {
        if (this.readyState === 3) return;
        this.readyState = 3;
        setTimeout(() => this.dispatchEvent(Object.assign(new Event("close"), { code, reason })));
        const partner = this.partner;
        if (partner) setTimeout(() => partner.close());
      }
    };
  })();
  _token(ws, token) {
    const key = Buffer.from(token).toString("hex");
    const other = this.waiting.get(key);
    if (!other) {
      this.waiting.set(key, ws);
      return;
    }
    this.waiting.delete(key);
    ws.partner = other;
    other.partner = ws;
    for (const end of [ws, other]) setTimeout(() => end._deliver("paired"));
  }
}

/** Both ends through one fake relay; resolves to [sender link, receiver link]. */
async function pair(relay, { receiverKeys = keysOf("receiver") } = {}) {
  const url = "http://relay.test:5000/relay";
  return Promise.all([
    connectRelay({ relay: url, keys: keysOf("sender"), sender: true, WebSocket: relay.WebSocket }),
    connectRelay({ relay: url, keys: receiverKeys, sender: false, WebSocket: relay.WebSocket }),
  ]);
}

describe("RelayLink (a Channel through the relay)", () => {
  for (const [name, split] of [
    ["whole messages", (data) => [data]],
    ["one byte per message", (data) => Array.from(data, (b) => Uint8Array.of(b))],
    ["messages cut at 7 bytes", (data) => Array.from({ length: Math.ceil(data.length / 7) }, (_, i) => data.subarray(i * 7, i * 7 + 7))],
  ]) {
    it(`proves, chooses and carries frames both ways, sealed under the TCP keys (${name})`, async () => {
      const relay = new FakeRelay({ split });
      const [s, r] = await pair(relay);
      assert.equal(s.route, "relayed by relay.test");
      assert.equal(relay.sockets[0].url, "ws://relay.test:5000/relay");
      await s.stream.proven;
      await r.stream.proven;
      s.stream.choose();
      await r.stream.chosen;
      const sealer = new FrameSealer(keysOf("sender").overTcp().frameSend);
      const opener = new FrameOpener(keysOf("receiver").overTcp().frameReceive);
      const payloads = [new Uint8Array(300).fill(1), new Uint8Array(70_000).fill(2), Uint8Array.of(3)];
      for (const p of payloads) await s.send(await sealer.seal(5, p));
      for (const p of payloads) {
        const [, got] = await opener.open(await r.receive());
        assert.deepEqual(got, p);
      }
      await r.send(Uint8Array.of(9, 9, 9));
      assert.deepEqual(await s.receive(), Uint8Array.of(9, 9, 9));
      s.close();
      await r.waitClosed();
      await assert.rejects(r.receive(), PeerGoneError);
    });
  }

  it("the token goes as the first binary message, never in the URL", async () => {
    const relay = new FakeRelay();
    await pair(relay);
    assert.equal(relay.sockets[0].url.includes(Buffer.from(keysOf("sender").relayToken).toString("hex")), false);
  });

  it("refuses a partner that does not prove this session's keys", async () => {
    const other = deriveKeys({ pakeKey: new Uint8Array(32).fill(5), transcript: hexToBytes(V.transcript), role: "receiver" });
    // Same token (the relay pairs them), other proof keys: an impostor at the relay.
    const o = other;
    const impostor = new SessionKeys(o.role, o.signalSend, o.signalReceive, o.frameSend, o.frameReceive, o.verifier, {
      ...o,
      relayToken: keysOf("receiver").relayToken,
    });
    const relay = new FakeRelay();
    const [s, r] = await pair(relay, { receiverKeys: impostor });
    await assert.rejects(s.stream.proven, /did not prove the session key/);
    await assert.rejects(r.stream.chosen);
  });

  it("a length above MAX_FRAME_BYTES from the other end ends the link", async () => {
    const relay = new FakeRelay();
    const [s, r] = await pair(relay);
    await r.stream.proven;
    s.stream.choose();
    await r.stream.chosen;
    relay.sockets[0].send(Uint8Array.of(0xff, 0xff, 0xff, 0xff));
    await assert.rejects(r.receive(), RemoteProtocolError);
  });

  it("a relay that closes with 4408 is a refusal with its reason", async () => {
    const relay = new FakeRelay();
    relay._token = (ws) => ws.close(4408, "no partner came within 10 s");
    await assert.rejects(
      connectRelay({ relay: "http://h/relay", keys: keysOf("sender"), sender: true, WebSocket: relay.WebSocket }),
      (error) => error instanceof PeerConnectionError && /in time: no partner came/.test(error.message),
    );
  });

  it("a relay that never pairs is given up after pairSeconds", async () => {
    const relay = new FakeRelay();
    await assert.rejects(
      connectRelay({ relay: "http://h/relay", keys: keysOf("sender"), sender: true, WebSocket: relay.WebSocket, pairSeconds: 0.05 }),
      /did not pair us within/,
    );
  });

  it("a send waits while the WebSocket holds more than the high water mark", async () => {
    const relay = new FakeRelay();
    const [s, r] = await pair(relay);
    await r.stream.proven;
    s.stream.choose();
    await r.stream.chosen;
    const ws = relay.sockets[0];
    ws.bufferedAmount = 10 * 1024 * 1024;
    let done = false;
    const sending = s.send(new Uint8Array(10)).then(() => (done = true));
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(done, false);
    ws.bufferedAmount = 0;
    await sending;
    assert.equal(s.unsentBytes(), 0);
  });

  it("lengthPrefixed frames are what goes out", () => {
    assert.deepEqual(lengthPrefixed(Uint8Array.of(7, 8)), Uint8Array.of(0, 0, 0, 2, 7, 8));
    assert.deepEqual(CHOSEN, Uint8Array.of(1));
  });
});

describe("PathChoice (which path carries the transfer)", () => {
  const make = (sender, mode = "auto") => new PathChoice({ sender, mode, now: 100, connectTimeout: 30 });
  const kinds = (actions) => actions.map((a) => (a instanceof Take ? `take ${a.path}` : a.constructor.name));

  it("sender: an open DataChannel within the head start is taken, the relay never started", () => {
    const c = make(true);
    assert.equal(c.nextDeadline(), 100 + RELAY_HEAD_START_SECONDS);
    assert.deepEqual(kinds(c.handleTimer(101)), []);
    assert.deepEqual(kinds(c.handle(new DataChannelOpen())), ["take datachannel"]);
    assert.deepEqual(kinds(c.handleTimer(102)), []);
    assert.equal(c.nextDeadline(), null);
  });

  it("sender: the relay joins after the head start, beside ICE; whichever is first wins", () => {
    const relayFirst = make(true);
    assert.deepEqual(kinds(relayFirst.handleTimer(100 + RELAY_HEAD_START_SECONDS)), ["StartRelay"]);
    assert.deepEqual(kinds(relayFirst.handleTimer(103)), []);
    assert.deepEqual(kinds(relayFirst.handle(new RelayReady())), ["take relay"]);
    assert.deepEqual(kinds(relayFirst.handle(new DataChannelOpen())), []);
    const iceFirst = make(true);
    iceFirst.handleTimer(102);
    assert.deepEqual(kinds(iceFirst.handle(new DataChannelOpen())), ["take datachannel"]);
    assert.deepEqual(kinds(iceFirst.handle(new RelayReady())), []);
  });

  it("ICE failing before the head start starts the relay at once", () => {
    const c = make(true);
    assert.deepEqual(kinds(c.handle(new DataChannelFailed(new Error("ICE failed")))), ["StartRelay"]);
    assert.deepEqual(kinds(c.handleTimer(102)), []);
    assert.deepEqual(kinds(c.handle(new RelayReady())), ["take relay"]);
  });

  it("both failing gives up with both reasons; the relay failing alone waits for ICE", () => {
    const c = make(false);
    c.handleTimer(102);
    assert.deepEqual(kinds(c.handle(new RelayFailed(new Error("relay busy")))), []);
    const [action] = c.handle(new DataChannelFailed(new Error("ICE failed")));
    assert.ok(action instanceof GiveUp);
    assert.match(action.error.message, /ICE failed; and through the relay: relay busy/);
  });

  it("receiver: takes whichever carries CHOSEN first", () => {
    const c = make(false);
    assert.deepEqual(kinds(c.handle(new DataChannelOpen())), []); // open is not chosen
    assert.deepEqual(kinds(c.handleTimer(102)), ["StartRelay"]);
    assert.deepEqual(kinds(c.handle(new ChosenOnDataChannel())), ["take datachannel"]);
    const d = make(false);
    d.handleTimer(102);
    assert.deepEqual(kinds(d.handle(new RelayReady())), ["take relay"]);
  });

  it("receiver: a sender that chooses nothing is given up at the bound", () => {
    const c = make(false);
    c.handleTimer(102);
    assert.equal(c.nextDeadline(), 100 + 30 + RELAY_HEAD_START_SECONDS + 1);
    const [action] = c.handleTimer(c.nextDeadline());
    assert.ok(action instanceof GiveUp);
    assert.match(action.error.message, /chose no connection within 30 s/);
  });

  it("mode only: the relay at once, never the DataChannel", () => {
    const s = make(true, "only");
    assert.deepEqual(kinds(s.handleTimer(100)), ["StartRelay"]);
    assert.deepEqual(kinds(s.handle(new DataChannelOpen())), []);
    assert.deepEqual(kinds(s.handle(new RelayReady())), ["take relay"]);
    const r = make(false, "only");
    r.handleTimer(100);
    assert.ok(r.handle(new ChosenOnDataChannel())[0] instanceof GiveUp);
    const f = make(true, "only");
    f.handleTimer(100);
    assert.ok(f.handle(new RelayFailed(new Error("x")))[0] instanceof GiveUp);
  });

  it("a protocol violation while choosing ends it", () => {
    const c = make(false);
    assert.ok(c.handle(new ChoiceBroken(new RemoteProtocolError("x")))[0] instanceof GiveUp);
    assert.deepEqual(kinds(c.handle(new RelayReady())), []);
  });
});

// -- a fake relay of WebSocketStreams: each end's readable queues what the other sent, and
// `waiting` counts what sits there unread (in a real browser: the TCP windows and the relay)

class FakeStreamRelay {
  constructor() {
    this.waiting = new Map();
    this.ends = [];
  }
  WebSocketStream = (() => {
    const relay = this;
    return class {
      constructor(url) {
        this.url = url;
        this.partner = null;
        this.unread = 0; // bytes delivered to this end and not yet read from its readable
        this.reads = 0;
        relay.ends.push(this);
        let closed;
        this.closed = new Promise((resolve) => (closed = resolve));
        this._closedResolve = closed;
        const end = this;
        this.readable = new ReadableStream(
          {
            start: (controller) => (end._controller = controller),
          },
          { highWaterMark: 0 },
        );
        const reader = this.readable.getReader.bind(this.readable);
        this.readable.getReader = () => {
          const r = reader();
          const read = r.read.bind(r);
          r.read = async () => {
            end.reads++;
            const result = await read();
            if (!result.done) end.unread -= typeof result.value === "string" ? 0 : result.value.byteLength;
            return result;
          };
          return r;
        };
        this.writable = new WritableStream({
          write: (data) => {
            const bytes = new Uint8Array(data.buffer ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) : data);
            if (end.partner === null) return relay._token(end, bytes);
            end.partner._deliver(bytes.buffer);
          },
        });
        this.opened = new Promise((resolve) => setTimeout(() => resolve({ readable: this.readable, writable: this.writable })));
      }
      _deliver(data) {
        if (this._done) return;
        if (typeof data !== "string") this.unread += data.byteLength;
        this._controller.enqueue(data);
      }
      close({ closeCode = 1000, reason = "" } = {}) {
        if (this._done) return;
        this._done = true;
        this._controller.close();
        this._closedResolve({ closeCode, reason });
        this.partner?.close();
      }
    };
  })();
  _token(end, token) {
    const key = Buffer.from(token).toString("hex");
    const other = this.waiting.get(key);
    if (!other) {
      this.waiting.set(key, end);
      return;
    }
    this.waiting.delete(key);
    end.partner = other;
    other.partner = end;
    for (const e of [end, other]) e._deliver("paired");
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("RelayLink over WebSocketStream (backpressure)", () => {
  async function streamPair() {
    const relay = new FakeStreamRelay();
    const url = "http://relay.test:5000/relay";
    const WebSocketStream = relay.WebSocketStream;
    const [s, r] = await Promise.all([
      connectRelay({ relay: url, keys: keysOf("sender"), sender: true, WebSocketStream }),
      connectRelay({ relay: url, keys: keysOf("receiver"), sender: false, WebSocketStream }),
    ]);
    await s.stream.proven;
    await r.stream.proven;
    s.stream.choose();
    await r.stream.chosen;
    return { relay, s, r };
  }

  it("is taken where the browser has WebSocketStream, and carries frames both ways", async () => {
    const { s, r } = await streamPair();
    assert.equal(r.flow, "backpressure");
    await s.send(Uint8Array.of(1, 2, 3));
    assert.deepEqual(await r.receive(), Uint8Array.of(1, 2, 3));
    await r.send(Uint8Array.of(4));
    assert.deepEqual(await s.receive(), Uint8Array.of(4));
    s.close();
    await r.waitClosed();
    await assert.rejects(r.receive(), PeerGoneError);
  });

  it("stops reading once READ_AHEAD_BYTES of frames wait, and reads on as they are taken", async () => {
    const { relay, s, r } = await streamPair();
    const receiving = relay.ends[1]; // the receiver's (connectRelay was called second for it)
    const frame = new Uint8Array(256 * 1024);
    const count = (3 * READ_AHEAD_BYTES) / frame.length; // 12 MiB: three times the read-ahead
    for (let i = 0; i < count; i++) {
      frame[0] = i;
      await s.send(frame);
    }
    for (let i = 0; i < 20; i++) await tick();
    // The page holds READ_AHEAD_BYTES (and at most one read beyond); the rest is unread
    // in the socket, where it holds the sender back.
    assert.ok(r._held >= READ_AHEAD_BYTES && r._held <= READ_AHEAD_BYTES + frame.length + 4, String(r._held));
    assert.ok(receiving.unread >= 2 * READ_AHEAD_BYTES - frame.length, String(receiving.unread));
    const readsWhileHeld = receiving.reads;
    for (let i = 0; i < 20; i++) await tick();
    assert.equal(receiving.reads, readsWhileHeld, "no read while the frames wait");
    for (let i = 0; i < count; i++) {
      const got = await r.receive();
      assert.equal(got.length, frame.length);
      assert.equal(got[0], i);
    }
    assert.equal(r._held, 0);
    assert.ok(r.peakHeld <= READ_AHEAD_BYTES + frame.length + 4, String(r.peakHeld));
  });

  it("hands `paired` to its listener and the first bytes after it to the stream", async () => {
    // The dialer's hello follows `paired` at once: it must reach the RelayStream.
    const relay = new FakeStreamRelay();
    const url = "http://relay.test:5000/relay";
    const [s, r] = await Promise.all([
      connectRelay({ relay: url, keys: keysOf("sender"), sender: true, WebSocketStream: relay.WebSocketStream }),
      connectRelay({ relay: url, keys: keysOf("receiver"), sender: false, WebSocketStream: relay.WebSocketStream }),
    ]);
    await Promise.all([s.stream.proven, r.stream.proven]);
  });

  it("a refusal (close 4408) is a refusal with its reason", async () => {
    const relay = new FakeStreamRelay();
    relay._token = (end) => end.close({ closeCode: 4408, reason: "no partner came within 10 s" });
    await assert.rejects(
      connectRelay({ relay: "http://h/relay", keys: keysOf("sender"), sender: true, WebSocketStream: relay.WebSocketStream }),
      (error) => error instanceof PeerConnectionError && /in time: no partner came/.test(error.message),
    );
  });

  it("a classic WebSocket cannot stop reading: past MAX_HELD_BYTES the page gives up", async () => {
    const relay = new FakeRelay();
    const [s, r] = await pair(relay);
    await r.stream.proven;
    s.stream.choose();
    await r.stream.chosen;
    assert.equal(r.flow, "limit");
    const frame = new Uint8Array(1024 * 1024);
    for (let i = 0; i <= MAX_HELD_BYTES / frame.length; i++) await s.send(frame);
    await r.waitClosed();
    let error;
    for (;;) {
      try {
        await r.receive();
      } catch (e) {
        error = e;
        break;
      }
    }
    assert.match(error.message, /sends faster than this page can take in/);
  });
});
