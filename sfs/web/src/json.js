// JSON as Python's json module reads and writes it, for the protocol's control frames.
//
// JSON.parse is not enough for a port that must accept exactly what
// sfs/peer/protocol.py accepts: it turns 1.0 and 1e3 into integers (Python refuses a
// float where an int is due), loses the digits of integers above 2**53 (an mtime_ns
// in nanoseconds is about 2**60), and gives an object whose "__proto__" key is not an
// own property.  This small parser keeps what Python keeps:
//
//   integers   -> number when it is a safe integer, else bigint (exact)
//   floats     -> a JsonFloat (never passes an integer check), as are NaN/Infinity
//   objects    -> objects with a null prototype (any key is just a key; last wins)
//   strings    -> strings, lone surrogates included (the caller refuses them)
//
// and refuses what Python's json.loads refuses (control characters in strings,
// leading zeros, trailing data, a byte-order mark).  encodeJson writes what
// json.dumps(obj, separators=(",", ":"), ensure_ascii=False) writes, byte for byte,
// bigints included.

/** A JSON number with a fraction or an exponent: Python's float. */
export class JsonFloat {
  constructor(value) {
    this.value = value;
  }
}

/** The text is not JSON (the caller turns this into its protocol error). */
export class JsonError extends Error {}
JsonError.prototype.name = "JsonError";

// Python's C scanner gives up (RecursionError) around here too.
const MAX_DEPTH = 900;
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;
const ESCAPES = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };

/**
 * Parse JSON text as Python's json.loads does (strict mode, the default).
 * @param {string} text
 * @throws {JsonError}
 */
export function parseJson(text) {
  let at = 0;

  const fail = (what) => {
    throw new JsonError(`${what} at character ${at}`);
  };
  const space = () => {
    for (;;) {
      const c = text.charCodeAt(at);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) at++;
      else return;
    }
  };

  const string = () => {
    at++; // the opening quote
    let out = "";
    let start = at;
    for (;;) {
      const c = text.charCodeAt(at);
      if (Number.isNaN(c)) fail("unterminated string");
      if (c === 0x22) {
        out += text.slice(start, at);
        at++;
        return out;
      }
      if (c < 0x20) fail("invalid control character in a string");
      if (c !== 0x5c) {
        at++;
        continue;
      }
      out += text.slice(start, at);
      const e = text[at + 1];
      if (e === "u") {
        const hex = text.slice(at + 2, at + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("invalid \\u escape");
        // UTF-16 units: a pair becomes one character, a lone surrogate stays lone.
        out += String.fromCharCode(parseInt(hex, 16));
        at += 6;
      } else if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
        out += ESCAPES[e];
        at += 2;
      } else {
        fail("invalid escape");
      }
      start = at;
    }
  };

  const number = () => {
    NUMBER.lastIndex = at;
    const match = NUMBER.exec(text);
    if (match === null) fail("expected a value");
    at = NUMBER.lastIndex;
    const lexeme = match[0];
    if (match[1] !== undefined || match[2] !== undefined) return new JsonFloat(Number(lexeme));
    const value = Number(lexeme);
    return Number.isSafeInteger(value) ? value : BigInt(lexeme);
  };

  const value = (depth) => {
    if (depth > MAX_DEPTH) fail("nested too deeply");
    space();
    const c = text[at];
    if (c === "{") {
      at++;
      const obj = Object.create(null);
      space();
      if (text[at] === "}") {
        at++;
        return obj;
      }
      for (;;) {
        space();
        if (text[at] !== '"') fail("expected a property name");
        const key = string();
        space();
        if (text[at] !== ":") fail("expected ':'");
        at++;
        obj[key] = value(depth + 1);
        space();
        if (text[at] === ",") {
          at++;
          continue;
        }
        if (text[at] === "}") {
          at++;
          return obj;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      at++;
      const list = [];
      space();
      if (text[at] === "]") {
        at++;
        return list;
      }
      for (;;) {
        list.push(value(depth + 1));
        space();
        if (text[at] === ",") {
          at++;
          continue;
        }
        if (text[at] === "]") {
          at++;
          return list;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    for (const [word, result] of WORDS) {
      if (text.startsWith(word, at)) {
        at += word.length;
        return typeof result === "function" ? result() : result;
      }
    }
    return number();
  };

  const result = value(0);
  space();
  if (at !== text.length) fail("extra data");
  return result;
}

// Python's json also reads NaN, Infinity and -Infinity, as floats.
const WORDS = [
  ["true", true],
  ["false", false],
  ["null", null],
  ["NaN", () => new JsonFloat(NaN)],
  ["Infinity", () => new JsonFloat(Infinity)],
  ["-Infinity", () => new JsonFloat(-Infinity)],
];

/**
 * JSON text as Python's json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
 * writes it: keys in insertion order, no spaces, non-ASCII kept, bigints as digits.
 * Only what the protocol sends: plain objects, arrays, strings, integers, booleans, null.
 */
export function encodeJson(value) {
  if (value === null) return "null";
  switch (typeof value) {
    case "string":
      // The same escapes as Python's: \" \\ \b \f \n \r \t, other controls as \u00xx.
      return JSON.stringify(value);
    case "boolean":
      return value ? "true" : "false";
    case "bigint":
      return value.toString();
    case "number":
      if (!Number.isSafeInteger(value)) throw new TypeError(`not an exact integer: ${value}`);
      return String(value);
    case "object":
      if (Array.isArray(value)) return "[" + value.map(encodeJson).join(",") + "]";
      return (
        "{" +
        Object.entries(value)
          .map(([k, v]) => JSON.stringify(k) + ":" + encodeJson(v))
          .join(",") +
        "}"
      );
    default:
      throw new TypeError(`cannot encode ${typeof value} as JSON`);
  }
}

/** Whether a string is valid Unicode (no lone surrogate), as Python's str.encode() needs. */
export function isWellFormed(text) {
  if (typeof text.isWellFormed === "function") return text.isWellFormed();
  return !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(text);
}

/** Python's len(): code points, not UTF-16 units. */
export function codePoints(text) {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}
