// Where received files go, without holding a large file in memory where the browser
// offers a way not to.  Three methods, best first:
//
// 1. "picker": the File System Access API.  showDirectoryPicker is called from the
//    Accept click, which is the user gesture it needs (a folder even for one file).
//    Each file is written as its chunks come into the command line's own partial
//    copy, `.NAME.sfs-part` beside its record `.NAME.sfs-info`, committed as it grows
//    (PartSink), and moved to NAME only after its SHA-256 checked out: a transfer cut
//    short (a tab closed) leaves the partial copy, and the next one into that folder
//    resumes from it once the sender's SHA-256 of the prefix matched.
// 2. "download": a service-worker download stream.  The page hands ./sw.js a
//    MessagePort with the file's name and size, and navigates a hidden same-origin
//    iframe to /download/<random id>; the worker answers that request with a
//    ReadableStream fed from the port (with backpressure) as an attachment.  The
//    stream is closed only after the SHA-256 checked out; a mismatch errors it, so
//    the browser fails the download instead of completing it.
// 3. "memory": where neither exists (plain http on a LAN address is no secure context:
//    no service worker, no File System Access), the file is kept as Blob parts and
//    offered through an object-URL download link once verified, up to
//    MEMORY_LIMIT_BYTES, a limit the page states before the user accepts.
//
// An offer with folders (a tree) goes into the picked folder as the command line
// places one (a top folder whose name is taken becomes "holiday (1)"); without a
// picker it becomes ONE zip, written as it arrives through method 2 or 3 (client-zip:
// a stream, constant memory, the empty folders as entries).  Each file's entry ends
// only after its SHA-256 checked out, and the zip's directory is written only after
// the last one: a mismatch errors the stream, and no zip that completes holds an
// unverified file.
//
// `?save=picker`, `?save=download` or `?save=memory` in the page's URL forces a method
// (headless browsers in tests cannot answer a native save dialog).  Otherwise the page
// tries them in that order and falls back to the next on any failure.

import { makeZip } from "client-zip";

import { sha256 } from "@noble/hashes/sha2.js";

import { digestsEqual } from "./crypto.js";
import { DiskError, IntegrityError } from "./errors.js";
import { casefold, FIRST_COPY_NUMBER, MAX_COPY_NUMBER, namesTaken, numbered } from "./names.js";
import { AsyncQueue } from "./queue.js";

export const MEMORY_LIMIT_BYTES = 512_000_000;
export const MEMORY_LIMIT_TEXT =
  "this browser can take at most 512 MB here; use https or the sfs command line for more";
export const Method = Object.freeze({ PICKER: "picker", DOWNLOAD: "download", MEMORY: "memory" });
const ORDER = [Method.PICKER, Method.DOWNLOAD, Method.MEMORY];
/** How long the service worker may take to start, or to take a download. */
const WORKER_SECONDS = 5;
/** Bytes handed to the service worker that it has not yet passed on to the download. */
const DOWNLOAD_WINDOW_BYTES = 4 * 1024 * 1024;
/** A service worker with nothing to do is stopped after ~30 s: a download keeps it busy. */
const WORKER_KEEPALIVE_MS = 10_000;
/** Received bytes of one zip entry not yet taken into the zip (then writes wait). */
const ZIP_WINDOW_BYTES = 4 * 1024 * 1024;
/**
 * A partial copy in a picked folder is committed (closed, so it survives the tab) each
 * time this much arrived, or half of what it holds if more: every commit copies the
 * file into the browser's swap file, so commits grow with it (at most ~3x its size
 * copied in all).
 */
const CHECKPOINT_BYTES = 8 * 1024 * 1024;
/** What the command line's partial-copy record says it is (partial.py RECORD_KIND). */
const RECORD_KIND = "sfs partial copy";
const READ_BLOCK_BYTES = 1024 * 1024;
/** The zip's name when the offer is not one folder. */
export const ZIP_NAME = "sfs-files.zip";

/**
 * Whether this browser will save into a folder the user picks (and so can resume a
 * transfer cut short): what SaveOptions.probe finds for the picker, known at once.
 */
export function canPickFolder(requested) {
  return (
    (requested === "auto" || requested === Method.PICKER) &&
    globalThis.isSecureContext === true &&
    typeof globalThis.showDirectoryPicker === "function"
  );
}

/** The method the URL asks for ("auto" if none). */
export function requestedMethod(search) {
  const value = new URLSearchParams(search).get("save");
  return Object.values(Method).includes(value) ? value : "auto";
}

function timeout(seconds, what) {
  return new Promise((_, reject) =>
    setTimeout(
      () => reject(new Error(`${what} did not answer within ${seconds} s`)),
      seconds * 1000,
    ),
  );
}

/**
 * What this browser can do, found out once (the service worker registered) before an
 * offer comes, so the page can state a size limit before the user accepts.
 */
export class SaveOptions {
  /** @param {string} requested  "auto" or a Method */
  static async probe(requested) {
    const options = new SaveOptions(requested);
    const wants = (method) => requested === "auto" || requested === method;
    options.canPick =
      wants(Method.PICKER) &&
      globalThis.isSecureContext === true &&
      typeof globalThis.showDirectoryPicker === "function";
    if (wants(Method.DOWNLOAD)) options.worker = await registerWorker();
    return options;
  }

  constructor(requested) {
    this.requested = requested;
    this.canPick = false;
    /** @type {ServiceWorker|null} the active download worker */
    this.worker = null;
  }

  /** The methods to try, best first. */
  methods() {
    return ORDER.filter(
      (method) =>
        (method === Method.PICKER && this.canPick) ||
        (method === Method.DOWNLOAD && this.worker !== null) ||
        (method === Method.MEMORY && [Method.MEMORY, "auto"].includes(this.requested)),
    );
  }

  /** The most this browser can take of `offer` (null: no limit but the disk). */
  limit() {
    const methods = this.methods();
    return methods.length === 1 && methods[0] === Method.MEMORY ? MEMORY_LIMIT_BYTES : null;
  }

  /**
   * Choose where the files go.  Call it from the Accept click: the file picker needs
   * that user gesture, so nothing may be awaited before it.
   * @param {{files: string[][], folders: string[][], tree: boolean}} plan  where each
   *   file goes (transfer.js planOffer)
   * @param {number|null} total  bytes offered (null: a pipe, size unknown)
   * @returns {Promise<Saving>}
   * @throws {DOMException} "AbortError" when the user closed the picker without choosing
   */
  async choose(plan, total) {
    let methods = this.methods();
    let picked = null;
    if (methods[0] === Method.PICKER) {
      try {
        // A folder even for one file: the partial copy goes beside it, hidden, so
        // that a transfer cut short resumes (a save-file dialog gives only the file).
        picked = await globalThis.showDirectoryPicker({ id: "sfs", mode: "readwrite" });
      } catch (error) {
        // The user closing the dialog is an answer, not a failure: ask again.
        if (error?.name === "AbortError" || this.requested === Method.PICKER) throw error;
      }
      if (picked === null) methods = methods.slice(1); // on any failure, the next method
    }
    if (!methods.length) {
      throw new DiskError(`this browser cannot save files here with ?save=${this.requested}`);
    }
    if (methods[0] === Method.MEMORY && total !== null && total > MEMORY_LIMIT_BYTES) {
      throw new DiskError(MEMORY_LIMIT_TEXT);
    }
    return new Saving({ picked, methods, worker: this.worker, plan });
  }
}

/** The name of the zip a tree arrives as: its one top folder's, else ZIP_NAME. */
export function zipName(plan) {
  const tops = new Set([...plan.folders, ...plan.files].map((parts) => casefold(parts[0])));
  const folder = plan.folders[0]?.[0] ?? plan.files.find((parts) => parts.length > 1)?.[0];
  return tops.size === 1 && folder !== undefined ? `${folder}.zip` : ZIP_NAME;
}

async function registerWorker() {
  if (globalThis.isSecureContext !== true || !globalThis.navigator?.serviceWorker) return null;
  try {
    await Promise.race([
      navigator.serviceWorker.register("/sw.js", { scope: "/" }),
      timeout(WORKER_SECONDS, "the service worker"),
    ]);
    const registration = await Promise.race([
      navigator.serviceWorker.ready,
      timeout(WORKER_SECONDS, "the service worker"),
    ]);
    return registration.active ?? null;
  } catch {
    return null; // private windows and some browsers refuse: the next method takes over
  }
}

/**
 * Where the files of one transfer go: begin() once (a tree's folders, a zip's start),
 * then open(index, name, size) gives a Sink for each file in turn, then finish().  A
 * method that fails is dropped for the next, until the first file of a tree is
 * placed: a tree is never split between two places.
 */
export class Saving {
  /**
   * @param {object} options
   * @param {FileSystemFileHandle|FileSystemDirectoryHandle|null} options.picked
   * @param {string[]} options.methods  best first
   * @param {ServiceWorker|null} options.worker
   * @param {{files: string[][], folders: string[][], tree: boolean}} options.plan
   */
  constructor({ picked, methods, worker, plan }) {
    this._picked = picked;
    this._methods = methods;
    this._worker = worker;
    this._plan = plan;
    this._places = null; // in a picked folder: each file's local path, top renamed
    this._found = null; // in a picked folder: per file {held, handle, whole} found there
    this._given = new Map(); // in a picked folder: folder handle -> names given out
    this._folders = new Map(); // in a picked folder: "a/b" -> its handle
    this._zip = null;
    this._settled = false; // a tree has begun in one place: no falling back now
    this._finished = false;
    this._memoryUsed = 0;
    this._keepalive = null;
    /** Called with (name, url) for each file kept in memory: a link for the user. */
    this.onMemoryFile = null;
  }

  get method() {
    return this._methods[0];
  }

  /** Whether a transfer cut short can go on here (a picked folder holds partial copies). */
  get resumable() {
    return this.method === Method.PICKER;
  }

  /** A new Saving into the same picked folder, for the same offer after a reconnection. */
  again() {
    if (!this.resumable) throw new DiskError("this way of saving cannot continue a transfer");
    return new Saving({
      picked: this._picked,
      methods: [Method.PICKER],
      worker: this._worker,
      plan: this._plan,
    });
  }

  /** Whether the files go into one zip (a tree, and no picked folder). */
  get zips() {
    return this._plan.tree && this.method !== Method.PICKER;
  }

  /** Make the folders (a picked folder), or start the zip (a tree without one). */
  async begin() {
    await this._tryMethods("the folders", async (method) => {
      if (method === Method.PICKER) await this._placeTops();
      else if (this._plan.tree && method !== Method.PICKER) await this._startZip(method);
    });
    this._settled = this._plan.tree;
  }

  /**
   * @param {number} index  the file's position in the offer
   * @param {string} name  its planned path, for messages
   * @param {number|null} size  bytes (null: unknown, a pipe)
   * @param {bigint} [mtimeNs]  when it was last changed (a zip keeps it)
   * @param {number} [offset]  bytes held already (confirm() said so): written from there
   * @returns {Promise<Sink>}
   */
  async open(index, name, size, mtimeNs = 0n, offset = 0) {
    return this._tryMethods(name, async (method) => {
      if (method === Method.PICKER) return this._openPicked(index, offset);
      if (this._zip !== null) return this._zip.file(name, mtimeNs);
      if (method === Method.DOWNLOAD) return this._openDownload(name, size);
      return this._openMemory(name, size);
    });
  }

  async _tryMethods(what, attempt) {
    for (;;) {
      const method = this._methods[0];
      if (method === undefined) throw new DiskError("no way left to save the file here");
      try {
        return await attempt(method);
      } catch (error) {
        if (method === Method.MEMORY || this._methods.length === 1 || this._settled) {
          throw error instanceof DiskError
            ? error
            : new DiskError(`cannot save ${what}: ${error.message}`, { cause: error });
        }
        this._methods.shift(); // on any failure, the next method
      }
    }
  }

  /**
   * Per file, how many of its bytes the picked folder holds already (0 elsewhere): the
   * command line's partial copy (`.NAME.sfs-part` with its record), or a whole file of
   * the offered size at its name, which the sender's SHA-256 must then confirm.
   */
  async held() {
    if (this.method !== Method.PICKER) return this._plan.files.map(() => 0);
    await this._placeTops();
    return this._found.map((found) => found.held);
  }

  /**
   * Check what is held against the sender's RESUME: a prefix whose SHA-256 is the
   * sender's is kept, anything else starts over (a whole file that differs goes to the
   * next free name).
   * @returns {Promise<{offset: number, hash: object|null}[]>}  hash: the running
   *   SHA-256 of the kept prefix
   */
  async confirm(resume, status = () => {}) {
    const starts = [];
    for (const [i, found] of this._found.entries()) {
      const offset = resume.offsets[i] ?? 0;
      if (!found.held || offset !== found.held) {
        starts.push({ offset: 0, hash: null });
        continue;
      }
      status(`Checking what is here of ${this._places[i].join("/")}…`);
      const hash = await hashPrefix(found.handle, offset);
      if (hash !== null && digestsEqual(hash.clone().digest(), resume.sha256[i])) {
        starts.push({ offset, hash });
        continue;
      }
      starts.push({ offset: 0, hash: null });
      if (found.whole) {
        // Another file of that name and size: this one goes beside it.
        const folder = await this._folder(this._places[i].slice(0, -1));
        const name = await freeHere(folder, this._places[i].at(-1), this._taken(folder));
        this._places[i] = [...this._places[i].slice(0, -1), name];
      }
      this._found[i] = { held: 0 };
    }
    return starts;
  }

  /** Names this transfer gives out in `folder` (casefolded, with their partial names). */
  _taken(folder) {
    if (!this._given.has(folder)) this._given.set(folder, new Set());
    return this._given.get(folder);
  }

  /**
   * The local names at the top of the picked folder, as the command line gives them in
   * its output folder: a folder or file whose name is taken there gets the next free
   * one, "holiday (1)", unless it holds a partial copy of this offer (an interrupted
   * transfer), which continues; then every offered folder is made, empty ones included.
   */
  async _placeTops() {
    if (this._places !== null) return;
    const root = this._picked;
    const onDisk = new Set();
    for await (const name of root.keys()) onDisk.add(casefold(name));
    this._folders.set("", root);
    // Files at the top keep their names from the folders' (as tree.py's plan does).
    const reserved = new Set(onDisk);
    for (const parts of this._plan.files) {
      if (parts.length === 1) for (const n of namesTaken(parts[0])) reserved.add(n);
    }
    const tops = new Map();
    const wanted = [...this._plan.folders, ...this._plan.files.filter((p) => p.length > 1)];
    for (const [top] of wanted) {
      if (tops.has(casefold(top))) continue;
      const under = this._plan.files
        .map((parts, i) => [parts, i])
        .filter(([parts]) => parts.length > 1 && casefold(parts[0]) === casefold(top));
      let chosen = null;
      for (const name of candidates(top, { folder: true })) {
        if (!reserved.has(casefold(name))) {
          chosen = name;
          break;
        }
        // A folder here that holds a partial copy of this offer: an interrupted run.
        if (onDisk.has(casefold(name)) && (await this._continues(name, under))) {
          chosen = name;
          break;
        }
      }
      if (chosen === null) throw new DiskError(`no free name for ${top} in the picked folder`);
      reserved.add(casefold(chosen));
      tops.set(casefold(top), chosen);
    }
    const taken = this._taken(root);
    for (const name of tops.values()) taken.add(casefold(name));
    this._places = [];
    this._found = [];
    for (const [i, parts] of this._plan.files.entries()) {
      const local = parts.length > 1 ? [tops.get(casefold(parts[0])), ...parts.slice(1)] : parts;
      const folder = await this._folder(local.slice(0, -1));
      const info = this._plan.infos[i];
      const { name, found } = await this._resumePlace(folder, local.at(-1), info);
      for (const n of namesTaken(name)) this._taken(folder).add(n);
      this._places.push([...local.slice(0, -1), name]);
      this._found.push(found);
    }
    for (const parts of this._plan.folders) {
      await this._folder([tops.get(casefold(parts[0])), ...parts.slice(1)]);
    }
  }

  /** Whether the folder `name` at the top holds a partial copy of one of `under`. */
  async _continues(name, under) {
    let top;
    try {
      top = await this._picked.getDirectoryHandle(name);
    } catch {
      return false; // a file of that name, or unreadable
    }
    for (const [parts, i] of under) {
      const folder = await existingFolder(top, parts.slice(1, -1));
      if (folder && (await readRecord(folder, parts.at(-1))) === record(this._plan.infos[i])) {
        return true;
      }
    }
    return false;
  }

  /**
   * The name for a file `wanted` in `folder` when resuming is possible: the first
   * candidate that is free, holds our partial copy of it, or is a whole file of its
   * size (perhaps it, from an interrupted run); `found` says what is held there.
   */
  async _resumePlace(folder, wanted, info) {
    const given = this._taken(folder);
    for (const name of candidates(wanted)) {
      if (namesTaken(name).some((n) => given.has(n))) continue;
      const [file, part, meta] = await Promise.all(
        [name, `.${name}.sfs-part`, `.${name}.sfs-info`].map((n) => lookUp(folder, n)),
      );
      if (file === null && part === null && meta === null) return { name, found: { held: 0 } };
      if (file?.kind === "file" && !info.stream && info.size > 0) {
        if ((await sizeOf(file)) === info.size) {
          return { name, found: { held: info.size, handle: file, whole: true } };
        }
      }
      if (file === null && meta?.kind === "file" && part?.kind !== "directory") {
        const text = await readRecord(folder, name);
        if (text === record(info) && !info.stream) {
          const held = part === null ? 0 : Math.min(await sizeOf(part), info.size);
          return { name, found: { held, handle: part } };
        }
        // sfs's own partial copy of another version of the file: started over.
        if (text !== null && isRecord(text)) return { name, found: { held: 0 } };
      }
    }
    throw new DiskError(`no free name for ${wanted} in the picked folder`);
  }

  /** The handle of the local folder `parts` inside the picked one, made if missing. */
  async _folder(parts) {
    const key = parts.join("/");
    let handle = this._folders.get(key);
    if (handle === undefined) {
      const parent = await this._folder(parts.slice(0, -1));
      handle = await parent.getDirectoryHandle(parts.at(-1), { create: true });
      this._folders.set(key, handle);
    }
    return handle;
  }

  async _openPicked(index, offset) {
    await this._placeTops();
    const parts = this._places[index];
    const place = parts.join("/");
    if (this._found[index].whole && offset > 0) return new KeptSink(place);
    const folder = await this._folder(parts.slice(0, -1));
    return PartSink.open(folder, parts.at(-1), this._plan.infos[index], offset, place);
  }

  async _startZip(method) {
    const name = zipName(this._plan);
    const out =
      method === Method.DOWNLOAD
        ? await this._openDownload(name, null)
        : this._openMemory(name, null);
    this._zip = new ZipWriter(out);
    for (const parts of this._plan.folders) this._zip.folder(parts.join("/"));
  }

  async _openDownload(name, size) {
    const worker = this._worker;
    if (worker === null || worker.state !== "activated") throw new Error("no download worker");
    const id = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
      b.toString(16).padStart(2, "0"),
    ).join("");
    const { port1, port2 } = new MessageChannel();
    const registered = new Promise((resolve) => {
      port1.onmessage = (event) => {
        if (event.data?.type === "registered") resolve();
      };
    });
    worker.postMessage({ type: "sfs-download", id, name, size }, [port2]);
    await Promise.race([registered, timeout(WORKER_SECONDS, "the download worker")]);
    const sink = new DownloadSink(port1);
    // The worker answers this navigation with the stream; the attachment header turns
    // it into a download with the safe name.
    const frame = document.createElement("iframe");
    frame.hidden = true;
    frame.title = "download";
    frame.src = `/download/${id}`;
    document.body.append(frame);
    sink.frame = frame;
    if (this._keepalive === null) {
      const beat = () => worker.postMessage({ type: "sfs-keepalive" });
      this._keepalive = setInterval(beat, WORKER_KEEPALIVE_MS);
    }
    return sink;
  }

  _openMemory(name, size) {
    if (size !== null && this._memoryUsed + size > MEMORY_LIMIT_BYTES) {
      throw new DiskError(MEMORY_LIMIT_TEXT);
    }
    return new MemorySink(name, this);
  }

  /** Every file is in: a zip's directory is written and the zip completed. */
  async finish() {
    if (this._finished) return;
    this._finished = true;
    try {
      await this._zip?.finish();
    } finally {
      await this.close();
    }
  }

  /**
   * The transfer is over (done, or failed with `reason`): an unfinished zip is
   * failed, and the worker no longer kept awake.
   */
  async close(reason = null) {
    if (!this._finished && this._zip !== null) {
      this._finished = true;
      await this._zip.abort(reason ?? new Error("the transfer stopped"));
    }
    if (this._keepalive !== null) clearInterval(this._keepalive);
    this._keepalive = null;
  }
}

const END = Symbol("end");

/** An async iterable of what `queue` gets, until END; an Error put there is thrown. */
async function* drain(queue, taken = () => {}) {
  for (;;) {
    const item = await queue.get();
    if (item === END) return;
    if (item instanceof Error) throw item;
    taken(item);
    yield item;
  }
}

const asError = (reason) => (reason instanceof Error ? reason : new Error(String(reason)));

/**
 * One zip, written to `out` (a download or memory Sink) as client-zip makes it from
 * the entries put here.  client-zip pulls; the copy below pulls as fast as `out`
 * takes, so memory stays within the entries' and the download's windows.
 */
class ZipWriter {
  constructor(out) {
    this._out = out;
    this._entries = new AsyncQueue();
    this._reader = makeZip(drain(this._entries), { buffersAreUTF8: true }).getReader();
    this._written = this._copy();
    // Rejects when the copy fails (the download cancelled); never resolves otherwise.
    this.failed = this._written.then(() => new Promise(() => {}));
    this._written.catch(() => {});
    this.failed.catch(() => {});
  }

  async _copy() {
    for (;;) {
      const { done, value } = await this._reader.read();
      if (done) return;
      // A copy: client-zip reads its chunks' lengths again after yielding them (for its
      // directory), and a download takes the buffer it is given (transfers it).
      await this._out.write(value.slice());
    }
  }

  folder(path) {
    this._entries.put({ name: `${path}/` });
  }

  file(path, mtimeNs) {
    const entry = new ZipEntry(this, path);
    const lastModified = mtimeNs > 0n ? new Date(Number(mtimeNs / 1_000_000n)) : undefined;
    this._entries.put({ name: path, lastModified, input: entry.chunks() });
    return entry;
  }

  async finish() {
    this._entries.put(END);
    try {
      await this._written;
    } catch (error) {
      await this._out.abort(error);
      throw new DiskError(`cannot write the zip: ${error.message}`, { cause: error });
    }
    await this._out.commit();
  }

  async abort(reason) {
    this._entries.put(asError(reason));
    await this._reader.cancel(String(reason?.message ?? reason)).catch(() => {});
    await this._out.abort(reason);
  }
}

/** One file's entry in a ZipWriter: a Sink whose chunks client-zip pulls. */
class ZipEntry {
  constructor(writer, place) {
    this._writer = writer;
    this._queue = new AsyncQueue();
    this._queued = 0;
    this._drained = null;
    this.place = place;
  }

  chunks() {
    return drain(this._queue, (chunk) => {
      this._queued -= chunk.length;
      if (this._drained !== null && this._queued <= ZIP_WINDOW_BYTES) {
        this._drained();
        this._drained = null;
      }
    });
  }

  async write(data) {
    this._queue.put(data);
    this._queued += data.length;
    if (this._queued > ZIP_WINDOW_BYTES) {
      const drained = new Promise((resolve) => {
        this._drained = resolve;
      });
      await Promise.race([drained, this._writer.failed]);
    }
  }

  /** Its SHA-256 checked out: the entry ends (client-zip writes its CRC and sizes). */
  commit() {
    this._queue.put(END);
  }

  /** Errors the entry, hence the zip: its download fails, its memory is dropped. */
  abort(reason) {
    this._queue.put(asError(reason));
  }
}

/** `wanted`, then "wanted (1)" and on: the names a file or folder may take. */
function* candidates(wanted, { folder = false } = {}) {
  yield wanted;
  for (let n = FIRST_COPY_NUMBER; n < FIRST_COPY_NUMBER + MAX_COPY_NUMBER; n++) {
    yield numbered(wanted, n, { folder });
  }
}

/** The handle at `name` in `folder`: a file's, {kind: "directory"}, or null (none). */
async function lookUp(folder, name) {
  try {
    return await folder.getFileHandle(name);
  } catch (error) {
    if (error?.name === "NotFoundError") return null;
    if (error?.name === "TypeMismatchError") return { kind: "directory" };
    return { kind: "unknown" }; // unreadable: not ours to use
  }
}

async function sizeOf(handle) {
  return (await handle.getFile()).size;
}

/** The first of `wanted`'s names free in `folder`: neither given out nor there. */
async function freeHere(folder, wanted, given) {
  for (const name of candidates(wanted)) {
    if (namesTaken(name).some((n) => given.has(n))) continue;
    const there = await Promise.all(
      [name, `.${name}.sfs-part`, `.${name}.sfs-info`].map((n) => lookUp(folder, n)),
    );
    if (there.every((handle) => handle === null)) return name;
  }
  throw new DiskError(`no free name for ${wanted} in the picked folder`);
}

/** The folder `parts` inside `top` if it exists, else null. */
async function existingFolder(top, parts) {
  let folder = top;
  for (const part of parts) {
    try {
      folder = await folder.getDirectoryHandle(part);
    } catch {
      return null;
    }
  }
  return folder;
}

/**
 * The record of a partial copy, byte for byte as the command line writes it
 * (partial.py: json.dumps, ASCII only), so that either can continue the other's.
 */
export function record(info) {
  const ascii = (text) =>
    JSON.stringify(text).replace(
      /[^\x20-\x7e]/g,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
    );
  return (
    `{"v": 1, "kind": ${ascii(RECORD_KIND)}, "name": ${ascii(info.name)}, ` +
    `"size": ${info.size}, "mtime_ns": ${BigInt(info.mtimeNs)}}`
  );
}

/** Whether `text` is a record sfs wrote (of any file). */
function isRecord(text) {
  try {
    const obj = JSON.parse(text);
    return obj?.v === 1 && obj?.kind === RECORD_KIND;
  } catch {
    return false;
  }
}

/** The text of the record of `name`'s partial copy in `folder`, or null. */
async function readRecord(folder, name) {
  const handle = await lookUp(folder, `.${name}.sfs-info`);
  if (handle?.kind !== "file") return null;
  const file = await handle.getFile();
  return file.size > 16 * 1024 ? null : file.text();
}

/** The running SHA-256 of the first `length` bytes of the file, or null if shorter. */
async function hashPrefix(handle, length) {
  const file = await handle.getFile();
  if (file.size < length) return null;
  const hash = sha256.create();
  for (let at = 0; at < length; at += READ_BLOCK_BYTES) {
    const end = Math.min(at + READ_BLOCK_BYTES, length);
    hash.update(new Uint8Array(await file.slice(at, end).arrayBuffer()));
  }
  return hash;
}

/**
 * A file received into a picked folder, by way of the command line's partial copy:
 * `.NAME.sfs-part` beside its record `.NAME.sfs-info`, committed every
 * CHECKPOINT_BYTES or so (so a closed tab leaves most of it), and moved to NAME only
 * once its SHA-256 checked out.  A failed transfer keeps it to resume; a failed check
 * removes it.
 */
class PartSink {
  static async open(folder, name, info, offset, place) {
    const partName = `.${name}.sfs-part`;
    const metaName = `.${name}.sfs-info`;
    try {
      if (offset === 0) {
        // Record first, then the part: a part without a record would not be ours.
        await folder.removeEntry(partName).catch(() => {});
        const meta = await (await folder.getFileHandle(metaName, { create: true })).createWritable();
        await meta.write(record(info));
        await meta.close();
      }
      const part = await folder.getFileHandle(partName, { create: true });
      const writable = await part.createWritable({ keepExistingData: offset > 0 });
      if (offset > 0) {
        await writable.truncate(offset);
        await writable.seek(offset);
      }
      return new PartSink({ folder, name, part, writable, offset, place });
    } catch (error) {
      throw new DiskError(`cannot write ${place}: ${error.message}`, { cause: error });
    }
  }

  constructor({ folder, name, part, writable, offset, place }) {
    Object.assign(this, { _folder: folder, _name: name, _part: part, _writable: writable });
    this._written = offset;
    this._committed = offset;
    this.place = place;
  }

  async write(data) {
    try {
      await this._writable.write(data);
      this._written += data.length;
      if (this._written - this._committed >= Math.max(CHECKPOINT_BYTES, this._committed / 2)) {
        await this._writable.close();
        this._committed = this._written;
        this._writable = await this._part.createWritable({ keepExistingData: true });
        await this._writable.seek(this._written);
      }
    } catch (error) {
      throw new DiskError(`cannot write ${this.place}: ${error.message}`, { cause: error });
    }
  }

  async commit() {
    const writable = this._writable;
    this._writable = null;
    try {
      await writable.close();
    } catch (error) {
      throw new DiskError(`cannot save ${this.place}: ${error.message}`, { cause: error });
    }
    // Never replace a file that is there (one made since the folder was listed).
    if ((await lookUp(this._folder, this._name)) !== null) {
      throw new DiskError(
        `${this.place} appeared in the folder meanwhile: not replaced (the received copy ` +
          `is .${this._name}.sfs-part)`,
      );
    }
    await placePart(this._folder, this._part, this._name);
    await this._folder.removeEntry(`.${this._name}.sfs-info`).catch(() => {});
  }

  async abort(reason) {
    const writable = this._writable;
    if (writable === null) return;
    this._writable = null;
    if (reason instanceof IntegrityError) {
      await writable.abort().catch(() => {});
      await this._folder.removeEntry(`.${this._name}.sfs-part`).catch(() => {});
      await this._folder.removeEntry(`.${this._name}.sfs-info`).catch(() => {});
      return;
    }
    // What arrived stays for a resume: the next transfer checks it by its SHA-256.
    await writable.close().catch(() => writable.abort().catch(() => {}));
  }
}

/** Move the verified partial copy to its name; where the browser cannot, copy it. */
async function placePart(folder, part, name) {
  try {
    await part.move(name);
    return;
  } catch {
    // No move() for this kind of folder here: a copy, then the part goes.
  }
  try {
    const writable = await (await folder.getFileHandle(name, { create: true })).createWritable();
    await (await part.getFile()).stream().pipeTo(writable);
    await folder.removeEntry(part.name);
  } catch (error) {
    await folder.removeEntry(name).catch(() => {});
    throw new DiskError(`cannot save ${name}: ${error.message}`, { cause: error });
  }
}

/** A whole file already in the picked folder whose SHA-256 the sender confirmed. */
class KeptSink {
  constructor(place) {
    this.place = place;
  }
  write() {
    throw new DiskError(`${this.place} is here whole, yet more of it came`);
  }
  commit() {}
  abort() {}
}

// A Sink: one received file on its way to its place: write(chunk) as chunks come, then
// commit() once its SHA-256 checked out, or abort(reason).

class DownloadSink {
  constructor(port) {
    this._port = port;
    this._unacked = 0;
    this._waiting = null;
    this._failed = null;
    this.frame = null;
    port.onmessage = (event) => {
      const data = event.data;
      if (data?.type === "ack") this._unacked -= data.bytes;
      else if (data?.type === "cancelled") {
        this._failed = new DiskError("the download was cancelled in the browser");
      }
      if (this._waiting && (this._failed || this._unacked <= DOWNLOAD_WINDOW_BYTES)) {
        this._waiting();
        this._waiting = null;
      }
    };
  }

  async write(data) {
    if (this._failed) throw this._failed;
    // The buffer moves to the worker (no copy) when the view is all of it.
    const chunk =
      data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice();
    this._unacked += chunk.byteLength;
    this._port.postMessage({ type: "data", chunk }, [chunk.buffer]);
    if (this._unacked > DOWNLOAD_WINDOW_BYTES) {
      await new Promise((resolve) => {
        this._waiting = resolve;
      });
      if (this._failed) throw this._failed;
    }
  }

  commit() {
    if (this._failed) throw this._failed;
    this._port.postMessage({ type: "end" });
  }

  abort(reason) {
    // Errors the stream: the browser fails the download and removes what it wrote.
    this._port.postMessage({ type: "abort", reason: String(reason?.message ?? reason ?? "") });
  }
}

class MemorySink {
  constructor(name, saving) {
    this._name = name;
    this._saving = saving;
    this._parts = [];
    this._size = 0;
  }

  write(data) {
    if (this._saving._memoryUsed + data.length > MEMORY_LIMIT_BYTES) {
      throw new DiskError(MEMORY_LIMIT_TEXT);
    }
    this._saving._memoryUsed += data.length;
    this._size += data.length;
    this._parts.push(data);
  }

  commit() {
    const url = URL.createObjectURL(new Blob(this._parts, { type: "application/octet-stream" }));
    this._parts = [];
    const link = document.createElement("a");
    link.href = url;
    link.download = this._name;
    link.textContent = `Save ${this._name}`;
    if (this._saving.onMemoryFile) this._saving.onMemoryFile(this._name, link);
    link.click(); // the browser downloads it; the link stays for another try
  }

  abort() {
    this._saving._memoryUsed -= this._size;
    this._parts = [];
  }
}
