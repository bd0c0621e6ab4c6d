// The page's constants against the Python ones (vectors.json "constants", written by
// `python -m tests.web_vectors` from the modules that own them): a limit, timeout,
// code, reason text or HKDF label copied into the page must not drift from its source.
// Every entry of the block must be checked here: a constant Python adds to the block
// fails this test until the page has it.  Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import * as code from "../src/code.js";
import * as connection from "../src/connection.js";
import * as conversation from "../src/conversation.js";
import * as crypto from "../src/crypto.js";
import * as handshake from "../src/handshake.js";
import * as opening from "../src/opening.js";
import * as protocol from "../src/protocol.js";
import * as reasons from "../src/reasons.js";
import * as session from "../src/session.js";
import * as signal from "../src/signal.js";
import * as tcp from "../src/tcp.js";
import * as text from "../src/text.js";
import * as transfer from "../src/transfer.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));
const C = vectors.constants;

// Python name -> the page's value, where the page keeps it (and under which name there).
const PAGE = {
  versions: {
    TRANSFER_PROTOCOL_VERSION: protocol.PROTOCOL_VERSION,
    SETUP_PROTOCOL_VERSION: crypto.PROTOCOL_VERSION,
    SIGNALING_PROTOCOL_VERSION: signal.SIGNALING_PROTOCOL_VERSION,
  },
  limits: {
    FRAME_OVERHEAD_BYTES: crypto.FRAME_OVERHEAD_BYTES,
    MAX_MESSAGE_BYTES: protocol.MAX_MESSAGE_BYTES,
    MAX_CHUNK_BYTES: protocol.MAX_CHUNK_BYTES,
    DEFAULT_CHUNK_BYTES: protocol.DEFAULT_CHUNK_BYTES,
    MAX_TEXT_BYTES: protocol.MAX_TEXT_BYTES,
    MAX_SENDER_NAME_CHARS: protocol.MAX_SENDER_NAME_CHARS,
    MAX_STREAMS: handshake.MAX_STREAMS,
    SECRET_WORDS: code.SECRET_WORDS,
    MAX_CONTROL_BYTES: protocol.MAX_CONTROL_BYTES,
    MAX_JOINED_CONTROL_BYTES: protocol.MAX_JOINED_CONTROL_BYTES,
    MAX_FILES: protocol.MAX_FILES,
    MAX_ENTRIES: protocol.MAX_ENTRIES,
    MAX_OFFERED_NAME_CHARS: protocol.MAX_OFFERED_NAME_CHARS,
    MAX_REASON_CHARS: protocol.MAX_REASON_CHARS,
    MAX_FILE_BYTES: protocol.MAX_FILE_BYTES,
    SHA256_BYTES: protocol.SHA256_BYTES,
    MAX_FOLDERS: protocol.MAX_FOLDERS,
    MAX_PATH_DEPTH: protocol.MAX_PATH_DEPTH,
    KEY_BYTES: crypto.KEY_BYTES,
    NONCE_BYTES: crypto.NONCE_BYTES,
    TAG_BYTES: crypto.TAG_BYTES,
    MAX_COUNTER: crypto.MAX_COUNTER,
    TCP_NONCE_BYTES: crypto.TCP_NONCE_BYTES,
    TCP_PROOF_BYTES: crypto.TCP_PROOF_BYTES,
    RELAY_TOKEN_BYTES: crypto.RELAY_TOKEN_BYTES,
    MAX_FRAME_BYTES: tcp.MAX_FRAME_BYTES,
    MAX_NAME_BYTES: transfer.MAX_NAME_BYTES,
    FIRST_COPY_NUMBER: transfer.FIRST_COPY_NUMBER,
    BACKLOG_LIMIT: handshake.BACKLOG_LIMIT,
    MAX_RELAY_URL_CHARS: handshake.MAX_RELAY_URL_CHARS,
    RECONNECT_VERSION: handshake.RECONNECT_VERSION,
    MAX_ICE_SERVERS: signal.MAX_ICE_SERVERS,
    MAX_ICE_URLS: signal.MAX_ICE_URLS,
    DEFAULT_REMOTE_MAX_MESSAGE_BYTES: connection.DEFAULT_REMOTE_MAX_MESSAGE_BYTES,
    READ_BLOCK_BYTES: transfer.READ_BLOCK_BYTES,
    MAX_SHOWN_NAME_CHARS: transfer.MAX_SHOWN_NAME_CHARS,
  },
  seconds: {
    PING_INTERVAL_SECONDS: conversation.PING_INTERVAL_SECONDS,
    IDLE_TIMEOUT_SECONDS: conversation.IDLE_TIMEOUT_SECONDS,
    PEER_CONNECT_TIMEOUT_SECONDS: session.PEER_CONNECT_TIMEOUT_SECONDS,
    SIGNAL_CONNECT_TIMEOUT_SECONDS: signal.SIGNAL_CONNECT_TIMEOUT_SECONDS,
    CALL_TIMEOUT_SECONDS: signal.CALL_TIMEOUT_SECONDS,
    PARTNER_GONE_GRACE_SECONDS: handshake.PARTNER_GONE_GRACE_SECONDS,
    RECONNECT_SECONDS: session.RECONNECT_SECONDS,
    ABORT_NOTICE_SECONDS: session.ABORT_NOTICE_SECONDS,
    CLOSE_GRACE_SECONDS: transfer.CLOSE_GRACE_SECONDS,
    LAST_WORD_GRACE_SECONDS: transfer.LAST_WORD_GRACE_SECONDS,
    PROGRESS_TICK_SECONDS: transfer.PROGRESS_TICK_MS / 1000,
    GATHER_SECONDS: connection.GATHER_SECONDS,
    RELAY_GRACE_SECONDS: connection.GATHER_AFTER_RELAY_SECONDS,
    RELAY_HEAD_START_SECONDS: opening.RELAY_HEAD_START_SECONDS,
  },
  hkdf_labels: {
    INFO_SIGNAL_SENDER: crypto.INFO_SIGNAL_SENDER,
    INFO_SIGNAL_RECEIVER: crypto.INFO_SIGNAL_RECEIVER,
    INFO_DATA_SENDER: crypto.INFO_DATA_SENDER,
    INFO_CONTROL_RECEIVER: crypto.INFO_CONTROL_RECEIVER,
    INFO_VERIFY: crypto.INFO_VERIFY,
    INFO_TCP_DATA_SENDER: crypto.INFO_TCP_DATA_SENDER,
    INFO_TCP_CONTROL_RECEIVER: crypto.INFO_TCP_CONTROL_RECEIVER,
    INFO_TCP_PROOF_SENDER: crypto.INFO_TCP_PROOF_SENDER,
    INFO_TCP_PROOF_RECEIVER: crypto.INFO_TCP_PROOF_RECEIVER,
    INFO_RELAY_TOKEN: crypto.INFO_RELAY_TOKEN,
    INFO_RECONNECT: crypto.INFO_RECONNECT,
    INFO_RENDEZVOUS: crypto.INFO_RENDEZVOUS,
    INFO_RECONNECT_PASSWORD: crypto.INFO_RECONNECT_PASSWORD,
  },
  words: {
    CHANNEL_LABEL: connection.CHANNEL_LABEL,
    CODE_PATTERN: protocol.CODE_PATTERN,
    CANCELLED_REASON: handshake.CANCELLED_REASON,
    WRONG_CODE_REASON: handshake.WRONG_CODE_REASON,
    SERVER_LOST: signal.SERVER_LOST,
    ELLIPSIS: text.ELLIPSIS,
    TCP_MAGIC: new TextDecoder().decode(crypto.TCP_MAGIC),
    PUSHED_EVENTS: signal.PUSHED_EVENTS,
  },
  // reasons.js keeps the Python names.
  codes: Object.fromEntries(Object.keys(C.codes).map((name) => [name, reasons[name]])),
  reason_texts: Object.fromEntries(Object.keys(C.reason_texts).map((n) => [n, reasons[n]])),
  reject_reasons: reasons.REJECT_REASONS,
  cancel_reasons: reasons.CANCEL_REASONS,
};

/** The vector's value as the page holds it: integers above 2**53 are strings there. */
const expected = (page, vector) => (typeof page === "bigint" ? BigInt(vector) : vector);

describe("constants (vectors.json from the Python modules)", () => {
  it("the block has exactly the groups checked here", () => {
    const groups = Object.keys(C).filter((key) => key !== "comment");
    assert.deepEqual(groups.sort(), Object.keys(PAGE).sort());
  });

  for (const [group, page] of Object.entries(PAGE)) {
    it(`${group}: every Python constant has its page copy, equal`, () => {
      assert.deepEqual(Object.keys(page).sort(), Object.keys(C[group]).sort());
      for (const [name, value] of Object.entries(C[group])) {
        assert.notEqual(page[name], undefined, `${group}.${name}: the page has no such constant`);
        assert.deepEqual(page[name], expected(page[name], value), `${group}.${name}`);
      }
    });
  }

  it("the reason tables hold the codes, in Python's order", () => {
    assert.deepEqual(Object.keys(reasons.REJECT_REASONS), Object.keys(C.reject_reasons));
    assert.deepEqual(Object.keys(reasons.CANCEL_REASONS), Object.keys(C.cancel_reasons));
    const codes = new Set(Object.values(C.codes));
    for (const key of [...Object.keys(C.reject_reasons), ...Object.keys(C.cancel_reasons)]) {
      assert.ok(codes.has(key), key);
    }
  });
});
