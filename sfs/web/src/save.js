// Where received files go, without holding a large file in memory where the browser
// offers a way not to.  Three methods, best first:
//
// 1. "picker": the File System Access API.  showSaveFilePicker (one file) or
//    showDirectoryPicker (several) is called from the Accept click, which is the user
//    gesture it needs; each file is written through createWritable() as its chunks
//    come.  The browser keeps the bytes in a temporary swap file until close(), which
//    happens only after the SHA-256 checked out; abort() drops them otherwise.
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
// `?save=picker`, `?save=download` or `?save=memory` in the page's URL forces a method
// (headless browsers in tests cannot answer a native save dialog).  Otherwise the page
// tries them in that order and falls back to the next on any failure.

import { DiskError } from "./errors.js";
import { FIRST_COPY_NUMBER, numbered } from "./transfer.js";

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
      typeof globalThis.showSaveFilePicker === "function" &&
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
   * @param {string[]} names  the safe names to suggest, one per file
   * @param {number|null} total  bytes offered (null: a pipe, size unknown)
   * @returns {Promise<Saving>}
   * @throws {DOMException} "AbortError" when the user closed the picker without choosing
   */
  async choose(names, total) {
    let methods = this.methods();
    let picked = null;
    if (methods[0] === Method.PICKER) {
      try {
        picked =
          names.length === 1
            ? await globalThis.showSaveFilePicker({ suggestedName: names[0] })
            : await globalThis.showDirectoryPicker({ id: "sfs", mode: "readwrite" });
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
    return new Saving({ picked, methods, worker: this.worker });
  }
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
 * Where the files of one transfer go: open(index, name, size) gives a Sink for each
 * file in turn; a method that fails to open one is dropped for the next.
 */
export class Saving {
  constructor({ picked, methods, worker }) {
    this._picked = picked; // a FileSystemFileHandle, or a FileSystemDirectoryHandle
    this._methods = methods;
    this._worker = worker;
    this._taken = new Set(); // names used in a picked folder, in this transfer
    this._memoryUsed = 0;
    this._keepalive = null;
    /** Called with (name, url) for each file kept in memory: a link for the user. */
    this.onMemoryFile = null;
  }

  get method() {
    return this._methods[0];
  }

  /**
   * @param {number} index  the file's position in the offer
   * @param {string} name  its safe name
   * @param {number|null} size  bytes (null: unknown, a pipe)
   * @returns {Promise<Sink>}
   */
  async open(index, name, size) {
    for (;;) {
      const method = this._methods[0];
      if (method === undefined) throw new DiskError("no way left to save the file here");
      try {
        if (method === Method.PICKER) return await this._openPicked(index, name);
        if (method === Method.DOWNLOAD) return await this._openDownload(name, size);
        return this._openMemory(name, size);
      } catch (error) {
        if (method === Method.MEMORY || this._methods.length === 1) {
          throw error instanceof DiskError
            ? error
            : new DiskError(`cannot save ${name}: ${error.message}`, { cause: error });
        }
        this._methods.shift(); // on any failure, the next method
      }
    }
  }

  async _openPicked(index, name) {
    const picked = this._picked;
    if (picked.kind === "file") {
      if (index !== 0) throw new Error("one file was picked for several");
      return new WritableSink(await picked.createWritable({ keepExistingData: false }));
    }
    // A folder: never replace a file that is there; "name (1).ext" instead.
    let candidate = name;
    const taken = async (n) => this._taken.has(n.toLowerCase()) || (await exists(picked, n));
    for (let n = FIRST_COPY_NUMBER; await taken(candidate); n++) candidate = numbered(name, n);
    this._taken.add(candidate.toLowerCase());
    const handle = await picked.getFileHandle(candidate, { create: true });
    // An empty file now stands there; abort() removes it again (it is ours).
    const remove = () => picked.removeEntry(candidate).catch(() => {});
    try {
      return new WritableSink(await handle.createWritable({ keepExistingData: false }), remove);
    } catch (error) {
      await remove();
      throw error;
    }
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

  /** The transfer is over (done or failed): stop keeping the worker awake. */
  async close() {
    if (this._keepalive !== null) clearInterval(this._keepalive);
    this._keepalive = null;
  }
}

async function exists(folder, name) {
  try {
    await folder.getFileHandle(name);
    return true;
  } catch (error) {
    if (error?.name === "NotFoundError") return false;
    return true; // a folder of that name (TypeMismatchError), or unreadable: not ours to use
  }
}

/**
 * One received file on its way to its place: write(chunk) as chunks come, then
 * commit() once its SHA-256 checked out, or abort(reason).
 */
class WritableSink {
  constructor(writable, onAbort = null) {
    this._writable = writable;
    this._onAbort = onAbort;
  }
  async write(data) {
    try {
      await this._writable.write(data);
    } catch (error) {
      throw new DiskError(`cannot write the file: ${error.message}`, { cause: error });
    }
  }
  async commit() {
    try {
      await this._writable.close(); // the swap file takes the file's place only now
    } catch (error) {
      throw new DiskError(`cannot save the file: ${error.message}`, { cause: error });
    }
  }
  async abort() {
    try {
      await this._writable.abort();
    } catch {
      // already closed or failed: nothing of it was kept
    }
    if (this._onAbort) await this._onAbort();
  }
}

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
