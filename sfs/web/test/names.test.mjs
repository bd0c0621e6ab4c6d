// Names and folder paths (src/names.js) exactly as sfs/peer/proto/names.py and tree.py
// make them: known answers written by the Python (tests/web_vectors.py).
// Run: node --test sfs/web/test/
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { RemoteProtocolError } from "../src/errors.js";
import { freeName, planTree, safeName } from "../src/names.js";

const vectors = JSON.parse(readFileSync(new URL("./vectors.json", import.meta.url), "utf8"));

describe("names as sfs/peer/proto/names.py makes them", () => {
  for (const [offered, expected] of vectors.names.safe_names) {
    it(`safe_name(${JSON.stringify(offered).slice(0, 40)})`, () => {
      if (expected === null) assert.throws(() => safeName(offered), RemoteProtocolError);
      else assert.equal(safeName(offered), expected);
    });
  }
  for (const [offered, expected] of vectors.names.in_folder_names) {
    it(`safe_name(${JSON.stringify(offered).slice(0, 40)}, in_folder=True)`, () => {
      if (expected === null) {
        assert.throws(() => safeName(offered, { inFolder: true }), RemoteProtocolError);
      } else {
        assert.equal(safeName(offered, { inFolder: true }), expected);
      }
    });
  }
  for (const [wanted, taken, folder, expected] of vectors.names.free_names) {
    it(`free_name(${JSON.stringify(wanted).slice(0, 30)}, ${taken.length} taken)`, () => {
      assert.equal(freeName(wanted, new Set(taken), { folder }), expected);
    });
  }
});

describe("folder paths as sfs/peer/proto/tree.py plans them", () => {
  for (const [entries, expected] of vectors.names.trees) {
    it(`plan_tree(${JSON.stringify(entries).slice(0, 60)})`, () => {
      if (expected === null) assert.throws(() => planTree(entries), RemoteProtocolError);
      else assert.deepEqual(planTree(entries), expected);
    });
  }
});
