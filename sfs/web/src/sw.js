// The page's service worker: it does one thing, turn a received file into a browser
// download without holding it in memory (see ./save.js, method 2).
//
// The page posts {type: "sfs-download", id, name, size} with a MessagePort, then
// navigates a hidden iframe to /download/<id>.  This worker answers that one request
// with a stream fed from the port, as an attachment with the (already safe) name.
// Nothing else is intercepted: every other request goes to `sfs serve` as usual, and
// nothing is cached.
//
// The stream has backpressure: the worker acknowledges bytes to the page only once the
// browser's download has room for more, and the page stops sending while too much is
// unacknowledged.  The page ends the stream ("end") only after the file's SHA-256
// checked out; on a mismatch it errors it ("abort"), and the browser then fails the
// download instead of completing it.

const PREFIX = "/download/";
const ID = /^[0-9a-f]{32}$/;
/** What the stream holds for the download before it asks the page to wait. */
const HIGH_WATER_BYTES = 4 * 1024 * 1024;
/** A download registered but never requested is forgotten after this long. */
const UNCLAIMED_MS = 60_000;

const downloads = new Map(); // id -> {port, name, size}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("message", (event) => {
  const data = event.data;
  const port = event.ports?.[0];
  // Messages come only from pages of this origin (the browser guarantees it).
  if (data?.type !== "sfs-download" || !port || typeof data.id !== "string" || !ID.test(data.id)) {
    return; // keepalives too: their arrival is all that matters
  }
  const size = Number.isSafeInteger(data.size) && data.size >= 0 ? data.size : null;
  downloads.set(data.id, { port, name: String(data.name), size });
  setTimeout(() => downloads.delete(data.id), UNCLAIMED_MS);
  port.postMessage({ type: "registered" });
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || !url.pathname.startsWith(PREFIX)) return;
  const id = url.pathname.slice(PREFIX.length);
  const download = downloads.get(id);
  if (download === undefined) return; // unknown or used: the server answers 404
  downloads.delete(id); // one request per download
  const headers = {
    "Content-Type": "application/octet-stream",
    "Content-Disposition": contentDisposition(download.name),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
  };
  // With the length the browser shows progress, and fails a download cut short.
  if (download.size !== null) headers["Content-Length"] = String(download.size);
  event.respondWith(new Response(streamFrom(download.port), { headers }));
});

function streamFrom(port) {
  let unacked = 0; // bytes enqueued and not yet acknowledged to the page
  let done = false;
  const ack = (controller) => {
    if (unacked > 0 && controller.desiredSize > 0) {
      port.postMessage({ type: "ack", bytes: unacked });
      unacked = 0;
    }
  };
  return new ReadableStream(
    {
      start(controller) {
        port.onmessage = (event) => {
          const data = event.data;
          if (done) return;
          if (data?.type === "data" && data.chunk instanceof Uint8Array) {
            controller.enqueue(data.chunk);
            unacked += data.chunk.byteLength;
            ack(controller);
          } else if (data?.type === "end") {
            done = true;
            controller.close();
            port.close();
          } else if (data?.type === "abort") {
            done = true;
            controller.error(new Error(`sfs: the transfer failed: ${data.reason}`));
            port.close();
          }
        };
      },
      pull(controller) {
        ack(controller);
      },
      cancel() {
        // The user cancelled the download in the browser: the page stops the transfer.
        done = true;
        port.postMessage({ type: "cancelled" });
      },
    },
    new ByteLengthQueuingStrategy({ highWaterMark: HIGH_WATER_BYTES }),
  );
}

/** `attachment` with the name as ASCII (for old browsers) and as UTF-8 (RFC 6266). */
function contentDisposition(name) {
  const ascii = name.replace(/[^\x20-\x7e]|["\\%]/g, "_");
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase(),
  );
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}
