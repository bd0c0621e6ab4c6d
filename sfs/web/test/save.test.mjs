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
  async getFileHandle(name, { create = false } = {}) {
    if (!this.entries.has(name)) {
      if (!create) throw Object.assign(new Error("no such file"), { name: "NotFoundError" });
      this.entries.set(name, new FakeFileHandle(name));
    }
    return this.entries.get(name);
  }
  async removeEntry(name) {
    this.entries.delete(name);
  }
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
    const saving = new Saving({ picked: folder, methods: [Method.PICKER], worker: null });
    const first = await saving.open(0, "report.pdf", 3);
    await first.write(Uint8Array.of(1, 2, 3));
    assert.equal(folder.entries.get("report (2).pdf").data, null); // not before the hash checks
    await first.commit();
    assert.deepEqual([...folder.entries.get("report (2).pdf").data], [1, 2, 3]);
    assert.equal(folder.entries.get("report.pdf").data, null); // the file that was there: untouched
    // Two offered files of one name in one transfer do not collide either.
    const second = await saving.open(1, "report.pdf", 0);
    await second.abort();
    assert.ok(!folder.entries.has("report (4).pdf"), "an aborted file leaves nothing");
  });

  it("into one picked file: the first file only", async () => {
    const file = new FakeFileHandle("x.bin");
    const saving = new Saving({ picked: file, methods: [Method.PICKER], worker: null });
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
    await assert.rejects(memoryOnly.choose(["big.iso"], MEMORY_LIMIT_BYTES + 1), /at most 512 MB/);
    const saving = await memoryOnly.choose(["a", "b"], 10);
    assert.equal(saving.method, Method.MEMORY);
    // Without a secure context there is no worker and no picker: memory in auto mode too.
    const auto = await SaveOptions.probe("auto");
    assert.deepEqual(auto.methods(), [Method.MEMORY]);
    // A forced method this browser lacks saves nothing rather than something else.
    const download = await SaveOptions.probe(Method.DOWNLOAD);
    await assert.rejects(download.choose(["a"], 1), DiskError);
  });
});
