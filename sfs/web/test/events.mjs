// Events as tests/web_vectors.py _describe() writes them, both ways: shared by the
// tests that read vectors.json (protocol.test.mjs, conversation.test.mjs).  Not a test.
import { readFileSync } from "node:fs";

import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

import {
  Accept,
  Cancel,
  Chunk,
  FileAck,
  FileDone,
  FileInfo,
  Offer,
  Partial,
  Ping,
  Reject,
  Resume,
  Start,
} from "../src/protocol.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const P = vectors.protocol;
const hex = bytesToHex;
const bytes = hexToBytes;

/** The same rule as tests/web_vectors.py many_files(). */
export function manyFiles() {
  const { count, mtime_ns: mtime } = P.many_files;
  const base = BigInt(mtime.split(" ")[0]);
  return Array.from(
    { length: count },
    (_, i) =>
      new FileInfo({
        name: `file-${String(i).padStart(5, "0")}-` + "x".repeat(180),
        size: (i % 5) + 1,
        mtimeNs: base + BigInt(i),
      }),
  );
}

export const rows = (values) => ({
  length: values.length,
  rows: values.flatMap((v, i) => (v && (typeof v !== "object" || v.length) ? [[i, v]] : [])),
});
export const unrows = ({ length, rows: given }, fill) => {
  const out = new Array(length).fill(fill);
  for (const [i, v] of given) out[i] = v;
  return out;
};

/** An event as tests/web_vectors.py _describe() writes it. */
export function describeEvent(event) {
  if (event instanceof Offer) {
    const many = event.files.length === P.many_files.count;
    return {
      type: "Offer",
      sender: event.sender,
      chunk_size: event.chunkSize,
      text: event.text,
      folders: event.folders.map((f) => [...f]),
      files: many
        ? { generated: "many_files" }
        : event.files.map((f) => ({
            name: f.name,
            size: f.size,
            mtime_ns: String(f.mtimeNs),
            folder: [...f.folder],
            x: f.executable,
            stream: f.stream,
          })),
      version: event.version,
    };
  }
  if (event instanceof Accept) return { type: "Accept", held: rows(event.held), zstd: event.zstd };
  if (event instanceof Resume) {
    return {
      type: "Resume",
      offsets: rows(event.offsets),
      sha256: rows(event.sha256.map((d) => hex(d))),
    };
  }
  if (event instanceof Start) return { type: "Start", offsets: rows(event.offsets) };
  if (event instanceof Reject || event instanceof Cancel) {
    const type = event instanceof Reject ? "Reject" : "Cancel";
    return event.code ? { type, reason: event.reason, code: event.code } : { type, reason: event.reason };
  }
  if (event instanceof Chunk) return { type: "Chunk", data: hex(event.data) };
  if (event instanceof FileDone) return { type: "FileDone", sha256: hex(event.sha256) };
  if (event instanceof FileAck) return { type: "FileAck", count: event.count };
  if (event instanceof Ping) return { type: "Ping" };
  if (event instanceof Partial) return { type: "Partial" };
  throw new TypeError(`cannot describe ${event}`);
}

/** The JS event for a description. */
export function buildEvent(d) {
  switch (d.type) {
    case "Offer":
      return new Offer({
        sender: d.sender,
        chunkSize: d.chunk_size,
        text: d.text,
        folders: d.folders,
        files: d.files.generated
          ? manyFiles()
          : d.files.map(
              (f) =>
                new FileInfo({
                  name: f.name,
                  size: f.size,
                  mtimeNs: BigInt(f.mtime_ns),
                  folder: f.folder,
                  executable: f.x,
                  stream: f.stream,
                }),
            ),
      });
    case "Accept":
      return new Accept(d.held.length && d.held.rows.length ? unrows(d.held, 0) : [], d.zstd);
    case "Resume":
      return new Resume(
        unrows(d.offsets, 0),
        d.sha256.length ? unrows(d.sha256, "").map((h) => bytes(h)) : [],
      );
    case "Start":
      return new Start(unrows(d.offsets, 0));
    case "Reject":
      return new Reject(d.reason, d.code ?? "");
    case "Cancel":
      return new Cancel(d.reason, d.code ?? "");
    case "Chunk":
      return new Chunk(bytes(d.data));
    case "FileDone":
      return new FileDone(bytes(d.sha256));
    case "FileAck":
      return new FileAck(d.count);
    case "Ping":
      return new Ping();
    default:
      throw new TypeError(d.type);
  }
}

