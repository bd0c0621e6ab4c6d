// Names: what an offered name or path becomes here.  The page's port of
// sfs/peer/proto/names.py and sfs/peer/proto/tree.py, rule for rule (known answers
// from the Python: sfs/web/test/vectors.json "names" and "trees").
//
// An offered name keeps only its last component, loses control and invisible
// characters, leading dots (at the top) and Windows' forbidden characters, and is
// cut to MAX_NAME_BYTES with a short extension kept.  Inside an offered folder a name
// keeps its leading dot (.gitignore) unless it has the form of sfs's own hidden files.
// An offered path is refused, never repaired, when a component is empty, ".", "..",
// or holds a separator or NUL; two files that become one name here are both kept,
// the second as "x (1).txt".

import { RemoteProtocolError } from "./errors.js";
import { MAX_ENTRIES, MAX_PATH_DEPTH } from "./protocol.js";

/** Names fit in 255 bytes with the command line's hidden partial-copy names around them. */
export const MAX_NAME_BYTES = 255 - 1 - ".sfs-part".length;
/** The number the second file of one name gets: "a.txt", then "a (1).txt". */
export const FIRST_COPY_NUMBER = 1;
/** How many numbered names are tried for one file before giving up. */
export const MAX_COPY_NUMBER = 10_000;
const PART_SUFFIX = ".sfs-part";
const META_SUFFIX = ".sfs-info";
const LOCK_SUFFIX = ".sfs-lock";
const STAGING_PREFIX = ".sfs-staging-";

// The characters never shown raw (sfs/text.py) are never kept in a name either.
const UNSAFE = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu;
// Names Windows takes for devices, whatever the extension ("nul.txt" is NUL too).
const WINDOWS_RESERVED = new Set(["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]);
for (const prefix of ["COM", "LPT"]) {
  for (const c of "0123456789\u00b9\u00b2\u00b3") WINDOWS_RESERVED.add(prefix + c);
}
const encoder = new TextEncoder();
const utf8Length = (text) => encoder.encode(text).length;

/** Python's str.casefold(), as near as JavaScript gets ("ß" and "SS" are one name). */
export const casefold = (text) => text.toUpperCase().toLowerCase();

/**
 * Reduce a name offered by the peer to a plain, harmless file name (names.py
 * safe_name).
 * @param {string} offered
 * @param {{inFolder?: boolean}} [options]  a name inside an offered folder keeps its
 *   leading dot, unless it has the form of sfs's own files
 * @throws {RemoteProtocolError} nothing usable is left
 */
export function safeName(offered, { inFolder = false } = {}) {
  let name = offered.replaceAll("\\", "/");
  name = name.slice(name.lastIndexOf("/") + 1);
  name = name.replace(UNSAFE, "");
  name = name.normalize("NFC").replace(/[<>:"|?*]/g, "_");
  const hiddenOk = inFolder && !isOwnName(pyStrip(name));
  const trimmer = hiddenOk ? trimKeepingDots : trim;
  name = trimmer(name);
  if (!name) {
    throw new RemoteProtocolError(
      `the offered file name ${JSON.stringify(offered.slice(0, 40))} is empty or unusable`,
    );
  }
  name = fit(name, trimmer);
  // After the cut: a stem cut short could be a device name ("COM1" of "COM1xyz...").
  if (WINDOWS_RESERVED.has(name.split(".")[0].replace(/ +$/, "").toUpperCase())) {
    name = fit("_" + name, trimmer);
  }
  return name;
}

/** A name of the form sfs gives its own files: a partial copy, its record, a lock. */
export function isOwnName(name) {
  const folded = casefold(name);
  return (
    folded.startsWith(".") &&
    ([PART_SUFFIX, META_SUFFIX, LOCK_SUFFIX].some((s) => folded.endsWith(s)) ||
      folded.startsWith(STAGING_PREFIX))
  );
}

/** Strip space and dots at both ends (no hidden files; Windows drops trailing ones). */
function trim(name) {
  for (;;) {
    const trimmed = pyStrip(name).replace(/^\.+/, "").replace(/[. ]+$/, "");
    if (trimmed === name) return name;
    name = trimmed;
  }
}

/** Strip space at both ends and dots at the end; a name of dots only is nothing. */
function trimKeepingDots(name) {
  const trimmed = pyStrip(name).replace(/[. ]+$/, "");
  return /^\.*$/.test(trimmed) ? "" : trimmed;
}

// Python's str.strip(): the characters str.isspace() calls whitespace.
const PY_SPACE = "[\\s\\x1c-\\x1f\\x85]";
const PY_STRIP = new RegExp(`^${PY_SPACE}+|${PY_SPACE}+$`, "gu");
function pyStrip(text) {
  return text.replace(PY_STRIP, "");
}

/** The first `limit` bytes of `text` in UTF-8, never cutting a character in two. */
function cutUtf8(text, limit) {
  const bytes = encoder.encode(text);
  if (bytes.length <= limit) return text;
  let end = Math.max(0, limit);
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--; // a character's continuation
  return new TextDecoder().decode(bytes.subarray(0, end));
}

/** Stem, dot, extension; a hidden name's leading dot starts no extension. */
function splitExt(name) {
  const at = name.lastIndexOf(".");
  const stem = at < 0 ? "" : name.slice(0, at);
  if (at < 0 || /^\.*$/.test(stem)) return [name, "", ""];
  return [stem, ".", name.slice(at + 1)];
}

/** Cut `name` to MAX_NAME_BYTES, keeping a short extension. */
function fit(name, trimmer = trim) {
  if (utf8Length(name) <= MAX_NAME_BYTES) return name;
  const [stem, dot, ext] = splitExt(name);
  const keepExt = dot && utf8Length(ext) > 0 && utf8Length(ext) <= 16;
  const suffix = keepExt ? "." + ext : "";
  const base = cutUtf8(keepExt ? stem : name, MAX_NAME_BYTES - utf8Length(suffix));
  return trimmer(base) + suffix;
}

/** `name (n).ext` (a folder: `name (n)`), still within MAX_NAME_BYTES. */
export function numbered(name, n, { folder = false } = {}) {
  let [stem, dot, ext] = folder ? ["", "", ""] : splitExt(name);
  if (folder || !dot || utf8Length(ext) > 16) [stem, dot, ext] = [name, "", ""];
  const tail = ` (${n})${dot}${ext}`;
  // Only the end is trimmed: a hidden name inside a folder keeps its dot.
  return cutUtf8(stem, MAX_NAME_BYTES - utf8Length(tail)).replace(/[. ]+$/, "") + tail;
}

/** Every name sfs writes for a file that arrives as `name`, case-folded. */
export function namesTaken(name) {
  return [name, `.${name}${PART_SUFFIX}`, `.${name}${META_SUFFIX}`, `.${name}${LOCK_SUFFIX}`].map(
    casefold,
  );
}

/** `wanted`, or the first numbered name none of whose names is in `taken` (a Set). */
export function freeName(wanted, taken, { folder = false } = {}) {
  const clashes = (name) => namesTaken(name).some((used) => taken.has(used));
  if (!clashes(wanted)) return wanted;
  for (let n = FIRST_COPY_NUMBER; n < FIRST_COPY_NUMBER + MAX_COPY_NUMBER; n++) {
    const name = numbered(wanted, n, { folder });
    if (!clashes(name)) return name;
  }
  throw new RemoteProtocolError(
    `${JSON.stringify(wanted)} and ${MAX_COPY_NUMBER} numbered names are all taken`,
  );
}

/**
 * The local relative path of one offered path (tree.py local_parts).
 * @param {string[]} parts
 * @returns {string[]}
 * @throws {RemoteProtocolError} empty, too deep, or a component that is not a name
 */
export function localParts(parts) {
  if (!(parts.length >= 1 && parts.length <= MAX_PATH_DEPTH)) {
    throw new RemoteProtocolError(`an offered path has 1 to ${MAX_PATH_DEPTH} components`);
  }
  for (const part of parts) {
    if (["", ".", ".."].includes(part) || /[/\\\0]/.test(part)) {
      throw new RemoteProtocolError(
        `refusing the offered path ${JSON.stringify(parts.join("/").slice(0, 80))}`,
      );
    }
  }
  return parts.map((part, depth) => safeName(part, { inFolder: depth > 0 }));
}

/**
 * Local relative paths for the offered [parts, isDir] entries, in order (tree.py
 * plan_tree): a file whose name another of its folder has here takes the next free
 * one; a file and a folder that meet in one name are refused, as is an entry under a
 * file.
 * @param {[string[], boolean][]} offered
 * @returns {string[][]}
 */
export function planTree(offered) {
  if (offered.length > MAX_ENTRIES) {
    throw new RemoteProtocolError(`an offer carries at most ${MAX_ENTRIES} files and folders`);
  }
  const kinds = new Map(); // casefolded local path (joined by "/") -> is a folder
  const used = new Map(); // casefolded folder -> every name used in it
  const usedIn = (key) => {
    if (!used.has(key)) used.set(key, new Set());
    return used.get(key);
  };
  const planned = [];
  for (const [parts, isDir] of offered) {
    let local = localParts(parts);
    let key = local.map(casefold);
    for (let depth = 1; depth < key.length; depth++) {
      const prefix = key.slice(0, depth).join("/");
      if (!kinds.has(prefix)) kinds.set(prefix, true);
      if (kinds.get(prefix) === false) throw clash(parts, "a file is in the way of its folder");
      usedIn(key.slice(0, depth - 1).join("/")).add(key[depth - 1]);
    }
    const known = kinds.get(key.join("/"));
    if (known !== undefined && known !== isDir) {
      throw clash(parts, "a file and a folder have one name here");
    }
    const names = usedIn(key.slice(0, -1).join("/"));
    if (!isDir) {
      const name = freeName(local[local.length - 1], names);
      local = [...local.slice(0, -1), name];
      key = [...key.slice(0, -1), casefold(name)];
      for (const taken of namesTaken(name)) names.add(taken);
    }
    names.add(key[key.length - 1]);
    kinds.set(key.join("/"), isDir);
    planned.push(local);
  }
  return planned;
}

function clash(parts, why) {
  return new RemoteProtocolError(
    `the offered path ${JSON.stringify(parts.join("/").slice(0, 80))} cannot be placed: ${why}`,
  );
}
