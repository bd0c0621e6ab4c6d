// Where received files go (src/save.js), with stand-ins for the browser APIs a node
// process lacks: a picked folder never loses a file that is there, an aborted file
// leaves nothing, memory stays within its stated limit, and the URL chooses the method.
// Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { DiskError } from "../src/errors.js";
import { MEMORY_LIMIT_BYTES, Method, requestedMethod, SaveOptions, Saving } from "../src/save.js";

/** A FileSystemWritableFileStream: bytes land in `file.data` only on close(). */
class FakeWritable {
  constructor(file) {
    this.file = file;
    this.swap = [];
  }
  async write(data) {
    this.swap.push(Buffer.from(data));
  }
  async close() {
    this.file.data = Buffer.concat(this.swap);
  }
  async abort() {
    this.swap = [];
  }
}

class FakeFileHandle {
  constructor(name) {
    this.kind = "file";
    this.name = name;
    this.data = null;
  }
  async createWritable() {
    return new FakeWritable(this);
  }
}

class FakeFolder {
  constructor(names = []) {
    this.kind = "directory";
    this.entries = new Map(names.map((n) => [n, new FakeFileHandle(n)]));
  }
  async *keys() {
    yield* this.entries.keys();
  }
  async getFileHandle(name, { create = false } = {}) {
    const entry = this.entries.get(name);
    if (entry?.kind === "directory") {
      throw Object.assign(new Error("a folder"), { name: "TypeMismatchError" });
    }
    if (entry === undefined) {
      if (!create) throw Object.assign(new Error("no such file"), { name: "NotFoundError" });
      this.entries.set(name, new FakeFileHandle(name));
    }
    return this.entries.get(name);
  }
  async getDirectoryHandle(name, { create = false } = {}) {
    const entry = this.entries.get(name);
    if (entry?.kind === "file") {
      throw Object.assign(new Error("a file"), { name: "TypeMismatchError" });
    }
    if (entry === undefined) {
      if (!create) throw Object.assign(new Error("no such folder"), { name: "NotFoundError" });
      this.entries.set(name, new FakeFolder());
    }
    return this.entries.get(name);
  }
  async removeEntry(name) {
    this.entries.delete(name);
  }
  /** "a/b/c" -> its handle, or undefined. */
  at(path) {
    let entry = this;
    for (const part of path.split("/")) entry = entry?.entries?.get(part);
    return entry;
  }
}

/** A flat offer's plan: one name per file. */
const flat = (...names) => ({ files: names.map((n) => [n]), folders: [], tree: false });

/** Unzip (stored entries, as client-zip writes them): {name: bytes}, folders as null. */
function unzip(zip) {
  const entries = {};
  const view = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  let end = zip.length - 22;
  while (view.getUint32(end, true) !== 0x06054b50) end--;
  let count = view.getUint16(end + 10, true);
  let at = view.getUint32(end + 16, true);
  for (; count > 0; count--) {
    assert.equal(view.getUint32(at, true), 0x02014b50);
    const size = view.getUint32(at + 24, true);
    const nameLength = view.getUint16(at + 28, true);
    const extra = view.getUint16(at + 30, true);
    const comment = view.getUint16(at + 32, true);
    const local = view.getUint32(at + 42, true);
    const name = new TextDecoder().decode(zip.subarray(at + 46, at + 46 + nameLength));
    const localName = view.getUint16(local + 26, true);
    const localExtra = view.getUint16(local + 28, true);
    const data = local + 30 + localName + localExtra;
    entries[name] = name.endsWith("/") ? null : Buffer.from(zip.subarray(data, data + size));
    at += 46 + nameLength + extra + comment;
  }
  return entries;
}

describe("saving received files", () => {
  it("reads the method from the URL", () => {
    assert.equal(requestedMethod("?save=download"), Method.DOWNLOAD);
    assert.equal(requestedMethod("?save=memory&x=1"), Method.MEMORY);
    assert.equal(requestedMethod("?save=elsewhere"), "auto");
    assert.equal(requestedMethod(""), "auto");
  });

  it("into a picked folder: numbers a name that is taken, commits only on close", async () => {
    const folder = new FakeFolder(["report.pdf", "report (1).pdf"]);
    const plan = flat("report.pdf", "report (1).pdf");
    const saving = new Saving({ picked: folder, methods: [Method.PICKER], worker: null, plan });
    await saving.begin();
    const first = await saving.open(0, "report.pdf", 3);
    await first.write(Uint8Array.of(1, 2, 3));
    assert.equal(folder.entries.get("report (2).pdf").data, null); // not before the hash checks
    await first.commit();
    assert.equal(first.place, "report (2).pdf");
    assert.deepEqual([...folder.entries.get("report (2).pdf").data], [1, 2, 3]);
    assert.equal(folder.entries.get("report.pdf").data, null); // the file that was there: untouched
    // The second file's planned name is taken here too: its next free one, as the CLI says.
    const second = await saving.open(1, "report (1).pdf", 0);
    assert.equal(second.place, "report (1) (1).pdf");
    await second.abort();
    assert.ok(!folder.entries.has("report (1) (1).pdf"), "an aborted file leaves nothing");
  });

  it("a tree into a picked folder: a top folder that is there is left alone, empty folders made", async () => {
    const folder = new FakeFolder(["holiday"]);
    folder.entries.set("holiday", new FakeFolder(["mine.txt"]));
    const plan = {
      files: [["holiday", "day 2", "a.jpg"], ["holiday", "b.jpg"], ["top.txt"]],
      folders: [["holiday"], ["holiday", "day 2"], ["holiday", "empty"]],
      tree: true,
    };
    const saving = new Saving({ picked: folder, methods: [Method.PICKER], worker: null, plan });
    await saving.begin();
    assert.ok(folder.at("holiday (1)/empty") instanceof FakeFolder, "an empty folder is made");
    for (const [i, data] of ["aa", "bbb", "t"].entries()) {
      const sink = await saving.open(i, plan.files[i].join("/"), data.length);
      await sink.write(Buffer.from(data));
      await sink.commit();
    }
    await saving.finish();
    assert.equal(folder.at("holiday (1)/day 2/a.jpg").data.toString(), "aa");
    assert.equal(folder.at("holiday (1)/b.jpg").data.toString(), "bbb");
    assert.equal(folder.at("top.txt").data.toString(), "t");
    assert.deepEqual([...folder.at("holiday").entries.keys()], ["mine.txt"]);
  });

  it("a tree without a picker: one zip, entries ended only when committed", async () => {
    const plan = {
      files: [["holiday", "day 2", "a.jpg"], ["holiday", "b.jpg"]],
      folders: [["holiday"], ["holiday", "day 2"], ["holiday", "empty"]],
      tree: true,
    };
    let link = null;
    const saving = new Saving({ picked: null, methods: [Method.MEMORY], worker: null, plan });
    saving.onMemoryFile = (name, made) => (link = { name, made });
    globalThis.document ??= { createElement: () => ({ click() {} }) };
    const blobs = [];
    const createObjectURL = URL.createObjectURL;
    URL.createObjectURL = (blob) => (blobs.push(blob), "blob:x");
    try {
      await saving.begin();
      assert.ok(saving.zips);
      for (const [i, data] of ["aa", "b".repeat(300_000)].entries()) {
        const sink = await saving.open(i, plan.files[i].join("/"), data.length, 1_600_000_000_000_000_000n);
        await sink.write(Buffer.from(data));
        await sink.commit();
      }
      await saving.finish();
    } finally {
      URL.createObjectURL = createObjectURL;
    }
    assert.equal(link.name, "holiday.zip");
    const entries = unzip(new Uint8Array(await blobs[0].arrayBuffer()));
    assert.deepEqual(Object.keys(entries).sort(), [
      "holiday/",
      "holiday/b.jpg",
      "holiday/day 2/",
      "holiday/day 2/a.jpg",
      "holiday/empty/",
    ]);
    assert.equal(entries["holiday/day 2/a.jpg"].toString(), "aa");
    assert.equal(entries["holiday/b.jpg"].length, 300_000);
  });

  it("a zip whose file failed its check never completes", async () => {
    const plan = { files: [["d", "a"], ["d", "b"]], folders: [["d"]], tree: true };
    const saving = new Saving({ picked: null, methods: [Method.MEMORY], worker: null, plan });
    let linked = false;
    saving.onMemoryFile = () => (linked = true);
    await saving.begin();
    const first = await saving.open(0, "d/a", 1);
    await first.write(Buffer.from("x"));
    await first.commit();
    const second = await saving.open(1, "d/b", 1);
    await second.write(Buffer.from("y"));
    const failure = new Error("SHA-256 mismatch");
    await second.abort(failure);
    await saving.close(failure);
    assert.ok(!linked, "no zip is offered");
    assert.equal(saving._memoryUsed, 0);
  });

  it("into one picked file: the first file only", async () => {
    const file = new FakeFileHandle("x.bin");
    const saving = new Saving({ picked: file, methods: [Method.PICKER], worker: null, plan: flat("x.bin") });
    const sink = await saving.open(0, "x.bin", 1);
    await sink.write(Uint8Array.of(9));
    await sink.commit();
    assert.deepEqual([...file.data], [9]);
  });

  it("falls back to the next method when one fails, and says the memory limit", async () => {
    const saving = new Saving({
      picked: null,
      methods: [Method.DOWNLOAD, Method.MEMORY],
      worker: null, // no worker: the download method fails to open
      plan: flat("a.bin", "b.bin", "stdin"),
    });
    const sink = await saving.open(0, "a.bin", 10);
    assert.equal(saving.method, Method.MEMORY);
    await sink.write(new Uint8Array(10));
    await assert.rejects(saving.open(1, "b.bin", MEMORY_LIMIT_BYTES), (e) => e instanceof DiskError && /at most 512 MB/.test(e.message));
    // A pipe (size unknown) is stopped when it grows past the limit.
    const pipe = await saving.open(2, "stdin", null);
    assert.throws(() => pipe.write({ length: MEMORY_LIMIT_BYTES }), /at most 512 MB/);
  });

  it("states a limit only when memory is all there is, and refuses a larger offer up front", async () => {
    const memoryOnly = await SaveOptions.probe(Method.MEMORY);
    assert.equal(memoryOnly.limit(), MEMORY_LIMIT_BYTES);
    await assert.rejects(memoryOnly.choose(flat("big.iso"), MEMORY_LIMIT_BYTES + 1), /at most 512 MB/);
    const saving = await memoryOnly.choose(flat("a", "b"), 10);
    assert.equal(saving.method, Method.MEMORY);
    // Without a secure context there is no worker and no picker: memory in auto mode too.
    const auto = await SaveOptions.probe("auto");
    assert.deepEqual(auto.methods(), [Method.MEMORY]);
    // A forced method this browser lacks saves nothing rather than something else.
    const download = await SaveOptions.probe(Method.DOWNLOAD);
    await assert.rejects(download.choose(flat("a"), 1), DiskError);
  });
});
