// Moving files over a Channel: the page's port of the relevant parts of
// sfs/peer/transfer.py (send_files, receive_files, safe_name and their helpers).
//
// It knows nothing of WebRTC: a Channel is anything with send(frame),
// receive({signal}), poll(), waitClosed(), secondsSinceReceive() and unsentBytes()
// (./connection.js DataChannelLink), and where received files go is a Saving from
// ./save.js.  What the page does differently from the command line:
//
// * As sender it offers files and folders (version 1, 2 with folders, 3 beyond 1000
//   files), a picked or dropped folder as the command line sends one, and resumes
//   as the command line does: the files the user picks again are read for the
//   prefixes the receiver holds (its partial copies of an interrupted transfer), and
//   only what follows is sent.
// * As receiver it holds nothing (ACCEPT {"held": []}), never takes zstd, places an
//   offer with folders by the command line's rules (./names.js planTree) into a
//   picked folder or one zip (./save.js), shows a text message instead of saving it,
//   and acknowledges each file once its SHA-256 checked out and its saving finished.
// * Sealing and opening are asynchronous (WebCrypto): the machine hands out frames as
//   promises, in the order it numbered them, and the Pump below sends them in that
//   order.
//
// What to say and when (offer, answers, acknowledgements, keepalive PINGs, the idle
// deadline, what a CANCEL or REJECT means) is the machine's: ./conversation.js, the
// port of sfs/peer/proto/conversation.py.  This file only pumps it (Pump) between the
// Channel, the files and the UI, as sfs/peer/transfer.py does.

import { sha256 } from "@noble/hashes/sha2.js";

import { digestsEqual } from "./crypto.js";
import { anySignal } from "./connection.js";
import {
  Acknowledged,
  AskUser,
  ConfirmPrefixes,
  HashPrefixes,
  Receiver,
  SendFiles,
  Sender,
} from "./conversation.js";
import { cancel } from "./reasons.js";
import {
  IntegrityError,
  PeerGoneError,
  RejectedError,
  RemoteProtocolError,
  SourceError,
} from "./errors.js";
import { FIRST_COPY_NUMBER, numbered, planTree, safeName } from "./names.js";
import { Chunk, FileDone, FileInfo, Offer } from "./protocol.js";

/** How long a side that sends the last frame (reject, cancel) waits for the peer to close. */
export const LAST_WORD_GRACE_SECONDS = 3;
/** After its last acknowledgement, the receiver waits this long for the sender to close. */
export const CLOSE_GRACE_SECONDS = 5;
/** Files are read this much at a time (File.slice), then cut into chunks. */
export const READ_BLOCK_BYTES = 1024 * 1024;
/** Of an offered name, at most this much is repeated back in a status line. */
export const MAX_SHOWN_NAME_CHARS = 80;

const now = () => performance.now() / 1000;

// -- names (./names.js: the rules; here, the flat plan) ------------------------------------

export { FIRST_COPY_NUMBER, MAX_NAME_BYTES, numbered, safeName } from "./names.js";

/**
 * The names to save the offered files under: each safe, and two files never one name
 * (the second becomes "name (1).ext"), as the command line plans a flat offer.
 * Compared without case, as the file systems of most phones and desktops do.
 */
export function planNames(offer) {
  const taken = new Set();
  const key = (name) => name.toLowerCase();
  return offer.files.map((info) => {
    const first = safeName(info.name);
    let name = first;
    for (let n = FIRST_COPY_NUMBER; taken.has(key(name)); n++) name = numbered(first, n);
    taken.add(key(name));
    return name;
  });
}

/** The name of a text or pipe, only ever shown: its safe form, or "-". */
export function shownName(offered) {
  try {
    return safeName(offered);
  } catch {
    return "-";
  }
}

/** An offer with folders (version 2 or 3): placed as a tree, by planTree. */
export function isTree(offer) {
  return offer.folders.length > 0 || offer.files.some((info) => info.folder.length > 0);
}

/**
 * Where each offered file goes, relative to the place the user chooses:
 * {files: [parts...] per file, folders: [parts...] per offered folder, tree, infos:
 * the offered FileInfos}.  A flat
 * offer's files are each one name (planNames); a tree's are paths, by the command
 * line's rules (names.js planTree: the same names, the same refusals).
 * @throws {RemoteProtocolError} a path that cannot be placed
 */
export function planOffer(offer) {
  if (!isTree(offer)) {
    const files = planNames(offer).map((name) => [name]);
    return { files, folders: [], tree: false, infos: offer.files };
  }
  const entries = [
    ...offer.folders.map((folder) => [folder, true]),
    ...offer.files.map((info) => [[...info.folder, info.name], false]),
  ];
  const local = planTree(entries);
  return {
    files: local.slice(offer.folders.length),
    folders: local.slice(0, offer.folders.length),
    tree: true,
    infos: offer.files,
  };
}

/** "3 files", "a text message": for messages. */
export function describeOffer(offer) {
  if (offer.text) return "a text message";
  const n = offer.files.length;
  let what = `${n} file${n === 1 ? "" : "s"}`;
  if (offer.folders.length) {
    what += ` in ${offer.folders.length} folder${offer.folders.length === 1 ? "" : "s"}`;
  }
  return what;
}

/** "1.2 MB" style, decimal units as file managers show them (sfs format_size). */
export function formatSize(n) {
  for (const unit of ["B", "kB", "MB", "GB", "TB"]) {
    if (Math.abs(n) < 1000 || unit === "TB") {
      return unit === "B" ? `${Math.round(n)} B` : `${fixed1(n)} ${unit}`;
    }
    n /= 1000;
  }
  throw new Error("unreachable");
}

/** Python's f"{x:.1f}": an exact tie (1.25) rounds to even, where toFixed rounds up. */
function fixed1(x) {
  if (Number.isInteger(x * 4) && !Number.isInteger(x * 2)) {
    const low = Math.floor(x * 10); // x * 4 is exact: x is k/4, a tie at one decimal
    return ((low % 2 === 0 ? low : low + 1) / 10).toFixed(1);
  }
  return x.toFixed(1);
}

/** What moved: file names, bytes, seconds. */
export class TransferResult {
  constructor() {
    this.files = [];
    this.totalBytes = 0;
    this.received = 0;
    /** Files resumed, and their bytes not sent again (what the receiver had). */
    this.resumedFiles = 0;
    this.resumedBytes = 0;
    /** Folders sent (the final line counts files "in N folders"). */
    this.folders = 0;
    /** What was sent was a text message. */
    this.sentText = false;
    /** A text message received (`sfs send --text`). */
    this.text = null;
    this.started = now();
    this.elapsed = 0;
    this.route = "";
    /** How often the connection broke and the two sides met again. */
    this.reconnects = 0;
  }

  finish() {
    this.elapsed = Math.max(now() - this.started, 1e-6);
    return this;
  }
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** The last line, as the command line prints it: "Received x.pdf (1.2 MB) in 0.4 s, 3.1 MB/s". */
export function finalLine(verb, result) {
  let what;
  if (result.text !== null || result.sentText) what = "a text message";
  else if (result.files.length === 1 && !result.folders) what = result.files[0];
  else what = plural(result.files.length, "file");
  if (result.folders) what += ` in ${plural(result.folders, "folder")}`;
  const rate = (result.totalBytes - result.resumedBytes) / result.elapsed;
  let line =
    `${verb} ${what} (${formatSize(result.totalBytes)}) ` +
    `in ${result.elapsed.toFixed(1)} s, ${formatSize(rate)}/s`;
  if (result.resumedFiles) line += `, ${plural(result.resumedFiles, "file")} resumed`;
  if (result.resumedBytes) line += `, ${formatSize(result.resumedBytes)} not sent again`;
  if (result.route) line += `, ${result.route}`;
  if (result.reconnects) line += `, ${plural(result.reconnects, "reconnect")}`;
  return line;
}

/** Whether two offers offer the same (an offer again after a reconnection). */
export function sameOffer(a, b) {
  const shape = (offer) =>
    JSON.stringify({
      files: offer.files.map((f) => [f.name, f.size, String(f.mtimeNs), f.folder, f.executable, f.stream]),
      folders: offer.folders,
      sender: offer.sender,
      text: offer.text,
    });
  return shape(a) === shape(b);
}

// -- the driver: frames out in order, one timer -----------------------------------------------

/**
 * Carries a conversation's frames between the machine (./conversation.js) and a
 * Channel, and keeps its clock: transfer.py's Pump for the page.
 *
 * Order: the machine numbers frames when it queues them (framesToSend() gives them in
 * that order, as promises: sealing is WebCrypto's, asynchronous), and this is the one
 * place that sends, through one chain: each batch goes out after everything before
 * it, even while a send waits on backpressure and the timer queues a PING meanwhile.
 * That chain is all that is left of the Outbox; what to send and when is the machine's.
 *
 * Time: one setTimeout at the machine's nextDeadline(), re-armed after every batch and
 * every tick.  A tick tells the machine what the transport heard (read or not), lets
 * it judge the silence, and sends the PING it may queue; a PeerGoneError it raises
 * aborts `signal`, so the read (or the decision) under way fails with it.
 */
export class Pump {
  constructor(channel, machine, { cancel } = {}) {
    this.channel = channel;
    this.machine = machine;
    this._chain = Promise.resolve();
    this._failed = new AbortController();
    /** Aborts when the user cancels or the machine gives the peer up. */
    this.signal = anySignal(cancel, this._failed.signal);
    this._timer = null;
    this._stopped = false;
    // Frames are decrypted as they arrive, ahead of their turn (FrameOpener.warm).
    if ("onArrival" in channel) channel.onArrival = (frame) => machine.proto.warm(frame);
    this._arm();
  }

  /** Send what the machine has queued; settles once it is on the channel. */
  flush() {
    const frames = this.machine.framesToSend(now());
    this._arm();
    return frames.length ? this._send(frames) : Promise.resolve();
  }

  /** Seal one chunk now and send it after everything before it (the hot path). */
  sendChunk(chunk) {
    return this._send([this.machine.sendChunk(chunk, now())]);
  }

  _send(frames) {
    const sent = this._chain.then(async () => {
      for (const frame of frames) await this.channel.send(await frame);
    });
    this._chain = sent.catch(() => {}); // each caller sees its own failure
    return sent;
  }

  _arm() {
    clearTimeout(this._timer);
    const deadline = this.machine.nextDeadline();
    if (this._stopped || deadline === null) return;
    this._timer = setTimeout(() => this.tick(now()), Math.max(0, deadline - now()) * 1000);
  }

  /** The deadline passed (or may have): judge the silence, send a PING if due. */
  tick(at) {
    if (this._stopped) return;
    this.machine.heard(at - this.channel.secondsSinceReceive());
    try {
      this.machine.handleTimer(at);
    } catch (error) {
      this._failed.abort(error);
      return;
    }
    this.flush().catch(() => {}); // a dead channel shows on the next read
  }

  /** No more timers (the transfer ended, or is about to say its last word). */
  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
  }

  async _received(frame) {
    const at = now();
    const action = await this.machine.frameReceived(frame, at);
    // Frames may come faster than the timer gets its turn: the keepalive is due all the same.
    const deadline = this.machine.nextDeadline();
    if (deadline !== null && at >= deadline) this.tick(at);
    return action;
  }

  /** Read frames until one asks something of this side. */
  async nextAction() {
    for (;;) {
      const action = await this._received(await this.channel.receive({ signal: this.signal }));
      if (action !== null) return action;
    }
  }

  /** The next action, which must be a `Kind` (the framing allows no other). */
  async expect(Kind) {
    const action = await this.nextAction();
    if (!(action instanceof Kind)) {
      throw new RemoteProtocolError(`unexpected ${action.constructor.name} from the other side`);
    }
    return action;
  }

  /** Handle the frames already here (never waits for one): a CANCEL stops us at once.
   * @returns {Promise<object[]>} the actions they asked for */
  async poll() {
    const actions = [];
    for (let frame = this.channel.poll(); frame !== undefined; frame = this.channel.poll()) {
      const action = await this._received(frame);
      if (action !== null) actions.push(action);
    }
    return actions;
  }

  /**
   * `decide(signal)` while reading the channel.  Until the answer the peer may only
   * PING or CANCEL (the machine's framing refuses anything else), and a CANCEL ends
   * the question (`signal` aborts) instead of waiting for the user.
   */
  async serveListening(decide) {
    const stop = new AbortController();
    const listening = (async () => {
      for (;;) {
        let frame;
        try {
          frame = await this.channel.receive({ signal: anySignal(this.signal, stop.signal) });
        } catch (error) {
          if (error === DECIDED) return;
          throw error;
        }
        if ((await this._received(frame)) !== null) {
          throw new RemoteProtocolError("the other side did not wait for an answer");
        }
      }
    })();
    try {
      return await Promise.race([decide(stop.signal), listening.then(() => null)]);
    } finally {
      stop.abort(DECIDED);
      await listening; // a frame being read when the answer came is checked all the same
    }
  }

  /** Send what is queued (a REJECT) and give the peer time to read it. */
  async lastWord() {
    this.stop();
    await this.flush();
    await linger(this.channel, LAST_WORD_GRACE_SECONDS);
  }

  /** Tell the peer why we stop, if the protocol still allows a word and the peer is
   * still there to read it. */
  async abort(error) {
    this.stop();
    if (error instanceof PeerGoneError || !this.machine.abort(error)) return;
    let timer;
    try {
      await Promise.race([
        this.flush(),
        new Promise((_, fail) => {
          timer = setTimeout(() => fail(new Error("timed out")), 2000);
        }),
      ]);
    } catch {
      return; // could not deliver the cancel frame
    } finally {
      clearTimeout(timer);
    }
    await linger(this.channel, LAST_WORD_GRACE_SECONDS);
  }

  /** Best effort, for the page's tab closing: the CANCEL of `code`, sent at once. */
  goodbye(code) {
    this.stop();
    if (this.machine.abort(null, cancel(code))) this.flush().catch(() => {});
  }
}

const DECIDED = Symbol("decided");

/** Give the peer time to read our last frame and close first (at most `seconds`). */
export async function linger(channel, seconds) {
  let timer;
  await Promise.race([
    channel.waitClosed(),
    new Promise((resolve) => {
      timer = setTimeout(resolve, seconds * 1000);
    }),
  ]);
  clearTimeout(timer);
}

// -- sending ------------------------------------------------------------------------------

/** No progress display: the default. */
export const NULL_PROGRESS = Object.freeze({
  begin() {},
  start() {},
  advance() {},
  finish() {},
});

/** How often the progress looks again at the channel's buffer while only the
 * acknowledgements are awaited (a display refresh, not a wait). */
export const PROGRESS_TICK_MS = 250;

/**
 * A sender's progress as what has left for the receiver, not what was queued
 * (transfer.py's Departures, line for line).  The channel buffers megabytes
 * (unsentBytes()), and the next file's bytes are handed over while the last one's
 * are still buffered; so a file is shown started, advanced and finished as its
 * bytes leave, in order, and at the last acknowledgement everything counts.
 */
export class Departures {
  constructor(progress) {
    this._progress = progress;
    this._files = [];
    this._head = 0; // the first file not yet shown finished
    this._beforeHead = 0; // bytes of the files before it (kept: summing is O(files))
    this._handed = 0;
    this._gone = 0;
  }

  /** The next file. */
  file(name, size) {
    this._files.push({ name, size, plain: 0, handedAll: false, started: false, shown: 0 });
    this._walk();
  }

  /** `n` bytes of the current file went into the channel. */
  handed(n) {
    this._files[this._files.length - 1].plain += n;
    this._handed += n;
  }

  /** The current file's last byte went into the channel. */
  handedAll() {
    this._files[this._files.length - 1].handedAll = true;
    this._walk();
  }

  /** The channel still holds `unsent` bytes: the rest has left. */
  left(unsent) {
    this._gone = Math.min(this._handed, Math.max(this._gone, this._handed - unsent));
    this._walk();
  }

  /** The receiver acknowledged every file. */
  allAcknowledged() {
    this._gone = this._handed;
    this._walk();
  }

  /** The transfer ended (or failed): take down what is still shown. */
  close() {
    if (this._head < this._files.length && this._files[this._head].started) {
      this._progress.finish();
    }
    this._head = this._files.length;
  }

  _walk() {
    let before = this._beforeHead;
    while (this._head < this._files.length) {
      const f = this._files[this._head];
      if (!f.started) {
        f.started = true;
        this._progress.start(f.name, f.size);
      }
      const now = Math.min(f.plain, Math.max(0, this._gone - before));
      if (now > f.shown) {
        this._progress.advance(now - f.shown);
        f.shown = now;
      }
      if (!(f.handedAll && f.shown === f.plain)) return;
      this._progress.finish();
      before += f.plain;
      this._beforeHead = before;
      this._head += 1;
    }
  }
}

/**
 * Offer `files`, stream them if accepted, and resolve after the last acknowledgement.
 *
 * @param {object} channel  see the top of this file
 * @param {import("./protocol.js").TransferProtocol} proto  a sender's
 * @param {File[]} files  what the user picked (or dropped)
 * @param {object} options
 * @param {string} options.sender  the name the receiver is shown
 * @param {number} options.chunkSize
 * @param {object} [options.progress]  begin(files, total), start(name, size), advance(n), finish()
 * @param {() => void} [options.onWaiting]  the offer is out; the receiver is asked
 * @param {(message: string) => void} [options.status]
 * @param {(pump: Pump) => void} [options.started]  the page's tab-close handler needs it (goodbye)
 * @param {AbortSignal} [options.cancel]  the user stops it (its reason is thrown)
 * @returns {Promise<TransferResult>}
 */
export async function sendFiles(
  channel,
  proto,
  picked,
  {
    sender,
    chunkSize,
    folders = [],
    text = null,
    progress = NULL_PROGRESS,
    onWaiting,
    status = () => {},
    started,
    cancel,
  },
) {
  // A File at the top, or {file, folder} for one inside a picked folder (folder: the
  // folders it is in, inside the transfer); `folders` lists every folder of the
  // transfer, empty ones included, as the command line's version 2 offer does.
  // `text`: a text message instead (`sfs send --text`): one nameless file of its UTF-8.
  const items =
    text === null
      ? picked.map((item) => (item instanceof Blob ? { file: item, folder: [] } : item))
      : [{ file: new File([new TextEncoder().encode(text)], ""), folder: [] }];
  const files = items.map((item) => item.file);
  const result = new TransferResult();
  const machine = new Sender(proto, now());
  const pump = new Pump(channel, machine, { cancel });
  started?.(pump);
  try {
    const offer = new Offer({
      files: items.map(
        ({ file, folder }) =>
          new FileInfo({
            name: file.name,
            size: file.size,
            // What a later resume would recognise the file by; milliseconds are all a
            // browser knows.
            mtimeNs: BigInt(Math.trunc(file.lastModified || 0)) * 1_000_000n,
            folder,
          }),
      ),
      sender,
      chunkSize,
      folders,
      text: text !== null,
    });
    machine.offer(offer);
    await pump.flush();
    onWaiting?.();
    const { held } = await pump.expect(HashPrefixes);
    status("The receiver accepted.");
    result.started = now();
    // What the receiver holds of each file (an interrupted transfer's partial copy):
    // hashed here, so that it can check its bytes are these before we skip them.
    const prefixes = await hashPrefixes(files, held, pump.signal, status);
    let go = machine.prefixesHashed(
      prefixes.map((p) => p.offset),
      prefixes.map((p) => p.digest),
    );
    await pump.flush();
    if (go === null) go = await pump.expect(SendFiles); // the receiver's START
    progress.begin(files.length, offer.totalSize);
    const departures = new Departures(progress);
    try {
      for (const [i, file] of files.entries()) {
        const from = go.offsets[i] ?? 0;
        // Resumed only where the receiver confirmed our prefix; else from the start.
        const hash = from && from === prefixes[i].offset ? prefixes[i].hash : null;
        result.totalBytes += await sendOne(pump, file, { chunkSize, departures, from, hash });
        if (hash !== null) {
          result.resumedFiles += 1;
          result.resumedBytes += from;
        }
        result.files.push(file.name);
      }
      result.folders = folders.length;
      result.sentText = text !== null;
      // The buffer drains while the acknowledgements come: the bar follows it.
      const follow = setInterval(() => departures.left(channel.unsentBytes()), PROGRESS_TICK_MS);
      try {
        while (!machine.over) await pump.expect(Acknowledged);
      } finally {
        clearInterval(follow);
      }
      departures.allAcknowledged();
    } finally {
      departures.close();
    }
    return result.finish();
  } catch (error) {
    await pump.abort(error);
    throw error;
  } finally {
    pump.stop();
  }
}

/**
 * The SHA-256 of the first held[i] bytes of each file, for a resume: {offset, digest,
 * hash}, `hash` the running SHA-256 to go on with from there (none held, or more than
 * the file has: offset 0).
 */
async function hashPrefixes(files, held, signal, status) {
  const prefixes = [];
  for (const [i, file] of files.entries()) {
    const offset = held[i] > 0 && held[i] <= file.size ? held[i] : 0;
    const hash = sha256.create();
    if (offset) status(`Checking what the receiver already has of ${file.name}…`);
    for (let at = 0; at < offset; at += READ_BLOCK_BYTES) {
      signal.throwIfAborted();
      hash.update(await readBlock(file, at, Math.min(at + READ_BLOCK_BYTES, offset)));
    }
    prefixes.push({ offset, digest: offset ? hash.clone().digest() : new Uint8Array(0), hash });
  }
  return prefixes;
}

/**
 * Send one file from byte `from` (a resume: `hash` has the bytes before it); resolve
 * to its size.
 */
async function sendOne(pump, file, { chunkSize, departures, from = 0, hash = null }) {
  const { channel, machine } = pump;
  const digest = hash ?? sha256.create();
  const start = hash === null ? 0 : from;
  const size = file.size;
  departures.file(file.name, size);
  departures.handed(start); // the receiver has these: shown as arrived at once
  const blockSize = Math.max(chunkSize, Math.floor(READ_BLOCK_BYTES / chunkSize) * chunkSize);
  const read = (at) => {
    const reading = readBlock(file, at, Math.min(at + blockSize, size));
    reading.catch(() => {}); // awaited below, or dropped once something else failed
    return reading;
  };
  // The next block is read while this one is sealed and sent.
  let next = start < size ? read(start) : null;
  for (let at = start; at < size; at += blockSize) {
    pump.signal.throwIfAborted(); // the user's cancel, or the peer gone silent
    const block = await next;
    next = at + blockSize < size ? read(at + blockSize) : null;
    digest.update(block);
    const sends = [];
    for (let i = 0; i < block.length; i += chunkSize) {
      sends.push(pump.sendChunk(new Chunk(block.subarray(i, i + chunkSize))));
    }
    await Promise.all(sends); // backpressure: the channel holds at most its high water
    departures.handed(block.length);
    departures.left(channel.unsentBytes());
    // What the receiver sent meanwhile (acknowledgements; a CANCEL throws at once).
    await pump.poll();
  }
  machine.fileDone(digest.digest());
  await pump.flush();
  departures.handedAll();
  departures.left(channel.unsentBytes());
  return size;
}

async function readBlock(file, start, end) {
  let buffer;
  try {
    buffer = await file.slice(start, end).arrayBuffer();
  } catch (error) {
    // Browsers refuse to read a file that changed on disk after it was picked.
    throw new SourceError(`cannot read ${file.name}: it changed or became unreadable`, {
      cause: error,
    });
  }
  if (buffer.byteLength !== end - start) {
    throw new SourceError(`${file.name} changed while it was being sent`);
  }
  return new Uint8Array(buffer);
}

// -- receiving ----------------------------------------------------------------------------

/**
 * Wait for an offer, ask `decide`, then receive every file into the Saving it gives.
 *
 * An offer with folders is planned as the command line plans one (planOffer); a path
 * that cannot be placed safely ends the transfer before anyone is asked.  A text
 * message is not saved: it ends up in the result's `text`.  Every file's bytes are
 * hashed as they come, and the SHA-256 is compared with the sender's BEFORE the file
 * is committed to its place; a mismatch aborts the save (IntegrityError).
 *
 * @param {object} channel
 * @param {import("./protocol.js").TransferProtocol} proto  a receiver's
 * @param {object} options
 * @param {(offer: Offer, names: string[], signal: AbortSignal, plan: object) =>
 *   Promise<object|null>} options.decide  null to decline; else {saving} (saving: a
 *   ./save.js Saving, or null for a text message).  `names` are the planned paths
 *   ("holiday/day 2/a.jpg"), `plan` is planOffer's.  `signal` aborts when the sender
 *   cancels meanwhile.
 * @param {object} [options.progress]
 * @param {(message: string) => void} [options.status]
 * @param {(pump: Pump) => void} [options.started]
 * @param {AbortSignal} [options.cancel]  the user stops it (its reason is thrown)
 * @returns {Promise<TransferResult>}
 */
export async function receiveFiles(
  channel,
  proto,
  { decide, progress = NULL_PROGRESS, status = () => {}, started, cancel },
) {
  const result = new TransferResult();
  const machine = new Receiver(proto, now());
  const pump = new Pump(channel, machine, { cancel });
  started?.(pump);
  let sink = null;
  let saving = null;
  try {
    const { offer } = await pump.expect(AskUser);
    const plan = offer.text
      ? { files: [["text"]], folders: [], tree: false, infos: offer.files }
      : planOffer(offer);
    const names = plan.files.map((parts) => parts.join("/"));
    const answer = await pump.serveListening((signal) => decide(offer, names, signal, plan));
    if (answer === null) {
      machine.refuse();
      await pump.lastWord();
      throw new RejectedError("You declined the transfer.");
    }
    saving = answer.saving;
    // What a picked folder holds of each file (an interrupted transfer); takes no zstd.
    const held = saving === null ? [] : await saving.held();
    machine.accept(held, false);
    await pump.flush();
    result.started = now();
    const { resume } = await pump.expect(ConfirmPrefixes);
    // Where each file starts: what is held, where its SHA-256 is the sender's.
    const starts = held.some((h) => h > 0)
      ? await saving.confirm(resume, status)
      : offer.files.map(() => ({ offset: 0, hash: null }));
    machine.prefixesConfirmed(starts.map(({ offset }) => offset));
    await pump.flush();
    await saving?.begin(); // the folders, empty ones included; a zip's start
    progress.begin(offer.files.length, offer.stream ? null : offer.totalSize);
    for (const [index, info] of offer.files.entries()) {
      const name = names[index];
      const declared = info.stream ? null : info.size;
      const { offset, hash } = starts[index];
      sink = offer.text
        ? new TextSink()
        : await saving.open(index, name, declared, info.mtimeNs, offset);
      const digest = hash ?? sha256.create();
      let size = offset;
      progress.start(name, info.stream ? null : info.size);
      if (offset) {
        progress.advance(offset);
        result.resumedFiles += 1;
        result.resumedBytes += offset;
      }
      let done;
      try {
        for (;;) {
          const action = await pump.nextAction();
          if (action instanceof Chunk) {
            const n = action.data.length; // before write(): a sink may take the buffer over
            digest.update(action.data);
            await sink.write(action.data);
            size += n;
            result.received += n;
            progress.advance(n);
          } else if (action instanceof FileDone) {
            done = action;
            break;
          } else {
            throw new RemoteProtocolError(
              `unexpected ${action.constructor.name} from the other side`,
            );
          }
        }
      } finally {
        progress.finish();
      }
      if (!digestsEqual(digest.digest(), done.sha256)) {
        throw new IntegrityError(
          "integrity check failed: the data received does not match what was sent " +
            "(SHA-256 mismatch); it was not kept",
        );
      }
      // Only now does the file take its place (or start its download for real).
      await sink.commit();
      const placed = sink.place; // where a picked folder has it ("holiday (1)/a.jpg")
      if (offer.text) result.text = sink.text();
      sink = null;
      result.files.push(offer.text ? "a text message" : name);
      result.totalBytes += size;
      // A zip is whole (its directory written) before the sender hears of its last file.
      if (index === offer.files.length - 1) await saving?.finish();
      machine.filesPlaced(1);
      await pump.flush();
      if (!offer.text && offer.files.length <= 1000) {
        status(savedLine(placed ?? name, plan.files[index].at(-1), info.name));
      }
    }
    await saving?.finish(); // (an offer of empty folders only)
    result.folders = plan.folders.length;
    return result.finish();
  } catch (error) {
    pump.stop();
    await sink?.abort(error);
    await saving?.close(error);
    await pump.abort(error);
    throw error;
  } finally {
    pump.stop();
  }
}

/** The line for a file now saved, saying when its name is not the offered one. */
function savedLine(place, name, offered) {
  let line = `Saved ${place}`;
  if (name !== offered) {
    line += ` (offered as ${JSON.stringify(offered.slice(0, MAX_SHOWN_NAME_CHARS))})`;
  }
  return line;
}

/** A text message: held in memory (at most 1 MiB), shown rather than saved. */
class TextSink {
  constructor() {
    this._parts = [];
    this._size = 0;
  }
  write(data) {
    this._parts.push(data);
    this._size += data.length;
  }
  commit() {}
  abort() {
    this._parts = [];
  }
  text() {
    const all = new Uint8Array(this._size);
    let at = 0;
    for (const part of this._parts) {
      all.set(part, at);
      at += part.length;
    }
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(all);
    } catch (error) {
      throw new RemoteProtocolError("the text message is not valid UTF-8", { cause: error });
    }
  }
}
