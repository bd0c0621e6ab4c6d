// Where received files go (src/save.js), with stand-ins for the browser APIs a node
// process lacks: a picked folder never loses a file that is there, an aborted file
// leaves nothing, memory stays within its stated limit, and the URL chooses the method.
// Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { createHash } from "node:crypto";

import { DiskError, IntegrityError } from "../src/errors.js";
import { MEMORY_LIMIT_BYTES, Method, record, requestedMethod, SaveOptions, Saving } from "../src/save.js";

/** A FileSystemWritableFileStream: bytes land in `file.data` only on close(). */
class FakeWritable {
  constructor(file, keep) {
    this.file = file;
    this.swap = keep && file.data ? Buffer.from(file.data) : Buffer.alloc(0);
    this.at = 0;
  }
  async write(data) {
    const bytes = Buffer.from(typeof data === "string" ? Buffer.from(data) : data);
    const end = this.at + bytes.length;
    if (end > this.swap.length) this.swap = Buffer.concat([this.swap, Buffer.alloc(end - this.swap.length)]);
    bytes.copy(this.swap, this.at);
    this.at = end;
  }
  async seek(position) {
    this.at = position;
  }
  async truncate(size) {
    this.swap = this.swap.subarray(0, size);
  }
  async close() {
    this.file.data = Buffer.from(this.swap);
    this.file.closes += 1;
  }
  async abort() {
    this.swap = Buffer.alloc(0);
  }
}

class FakeFileHandle {
  constructor(name, parent = null) {
    this.kind = "file";
    this.name = name;
    this.parent = parent;
    this.data = null;
    this.closes = 0;
  }
  async createWritable({ keepExistingData = false } = {}) {
    return new FakeWritable(this, keepExistingData);
  }
  async getFile() {
    return new Blob([this.data ?? Buffer.alloc(0)]);
  }
  async move(name) {
    this.parent.entries.delete(this.name);
    this.name = name;
    this.parent.entries.set(name, this);
  }
}

class FakeFolder {
  constructor(names = []) {
    this.kind = "directory";
    this.entries = new Map(names.map((n) => [n, new FakeFileHandle(n, this)]));
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
      this.entries.set(name, new FakeFileHandle(name, this));
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
const flat = (...names) => ({
  files: names.map((n) => [n]),
  folders: [],
  tree: false,
  infos: names.map((name) => info(name, 1)),
});
/** An offered file, as the plan keeps it. */
const info = (name, size, mtimeNs = 1_600_000_000_000_000_001n) => ({ name, size, mtimeNs, stream: false });

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
    // Not before the hash checks: a hidden partial copy, beside its record.
    assert.ok(!folder.entries.has("report (2).pdf"));
    assert.ok(folder.entries.has(".report (2).pdf.sfs-part"));
    assert.equal(folder.entries.get(".report (2).pdf.sfs-info").data.toString(), record(info("report.pdf", 1)));
    await first.commit();
    assert.equal(first.place, "report (2).pdf");
    assert.deepEqual([...folder.entries.get("report (2).pdf").data], [1, 2, 3]);
    assert.ok(!folder.entries.has(".report (2).pdf.sfs-part") && !folder.entries.has(".report (2).pdf.sfs-info"));
    assert.equal(folder.entries.get("report.pdf").data, null); // the file that was there: untouched
    // The second file's planned name is taken here too: its next free one, as the CLI says.
    const second = await saving.open(1, "report (1).pdf", 0);
    assert.equal(second.place, "report (1) (1).pdf");
    await second.abort(new IntegrityError("SHA-256 mismatch"));
    assert.deepEqual(
      [...folder.entries.keys()].sort(),
      ["report (1).pdf", "report (2).pdf", "report.pdf"],
      "a file that failed its check leaves nothing",
    );
  });

  it("writes the command line's record, byte for byte", () => {
    // json.dumps({"v": 1, "kind": "sfs partial copy", "name": ..., "size": 5, "mtime_ns": ...})
    assert.equal(
      record(info("résumé ✓ 日本\n\"x😀", 5)),
      String.raw`{"v": 1, "kind": "sfs partial copy", "name": "r\u00e9sum\u00e9 \u2713 \u65e5\u672c\n\"x\ud83d\ude00", "size": 5, "mtime_ns": 1600000000000000001}`,
    );
  });

  it("resumes a partial copy in the picked folder: the prefix checked, the rest written", async () => {
    const whole = Buffer.from("0123456789abcdefghij");
    const offered = info("big.bin", whole.length);
    for (const [digest, expected] of [
      [createHash("sha256").update(whole.subarray(0, 12)).digest(), 12],
      [createHash("sha256").update("other bytes").digest(), 0],
    ]) {
      const folder = new FakeFolder([".big.bin.sfs-info", ".big.bin.sfs-part"]);
      folder.entries.get(".big.bin.sfs-info").data = Buffer.from(record(offered));
      folder.entries.get(".big.bin.sfs-part").data = whole.subarray(0, 12);
      const plan = { files: [["big.bin"]], folders: [], tree: false, infos: [offered] };
      const saving = new Saving({ picked: folder, methods: [Method.PICKER], worker: null, plan });
      assert.deepEqual(await saving.held(), [12]);
      const [start] = await saving.confirm({ offsets: [12], sha256: [digest] });
      assert.equal(start.offset, expected);
      await saving.begin();
      const sink = await saving.open(0, "big.bin", whole.length, 0n, start.offset);
      await sink.write(whole.subarray(start.offset));
      await sink.commit();
      assert.deepEqual(folder.entries.get("big.bin").data, whole);
      assert.deepEqual([...folder.entries.keys()], ["big.bin"]);
    }
  });

  it("keeps what arrived when the transfer stops, committed as it grows", async () => {
    const folder = new FakeFolder();
    const plan = flat("video.mp4");
    plan.infos[0] = info("video.mp4", 20 * 1024 * 1024);
    const saving = new Saving({ picked: folder, methods: [Method.PICKER], worker: null, plan });
    assert.deepEqual(await saving.held(), [0]);
    await saving.begin();
    const sink = await saving.open(0, "video.mp4", 20 * 1024 * 1024);
    for (let i = 0; i < 9; i++) await sink.write(new Uint8Array(1024 * 1024));
    const part = folder.entries.get(".video.mp4.sfs-part");
    assert.equal(part.data.length, 8 * 1024 * 1024, "committed at 8 MiB, before the end");
    await sink.abort(new Error("the connection was lost"));
    assert.equal(part.data.length, 9 * 1024 * 1024, "kept whole to resume");
    assert.ok(!folder.entries.has("video.mp4"));
    // The next transfer of it finds it.
    const again = new Saving({ picked: folder, methods: [Method.PICKER], worker: null, plan });
    assert.deepEqual(await again.held(), [9 * 1024 * 1024]);
  });

  it("a tree into a picked folder: a top folder that is there is left alone, empty folders made", async () => {
    const folder = new FakeFolder(["holiday"]);
    folder.entries.set("holiday", new FakeFolder(["mine.txt"]));
    const plan = {
      files: [["holiday", "day 2", "a.jpg"], ["holiday", "b.jpg"], ["top.txt"]],
      folders: [["holiday"], ["holiday", "day 2"], ["holiday", "empty"]],
      tree: true,
      infos: [info("a.jpg", 2), info("b.jpg", 3), info("top.txt", 1)],
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
