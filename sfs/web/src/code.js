// One-time codes: "ABC-123-tiger-lamp" (a port of sfs/code.py).
//
// The first part (ABC-123) is the receiver's peer ID, which the signaling server
// assigned and knows.  The rest is the secret part: words the receiver drew itself
// from sfs/wordlist.txt, which the server never sees.  It is the SPAKE2 password, so
// an attacker (server included) gets one online guess per code: with two words from
// 1024, a chance of one in 1 048 576.
//
// The word list comes in as text (the bundle imports sfs/wordlist.txt itself, so the
// page and the command line draw from the same 1024 words); tests pass the file.

export const SECRET_WORDS = 2;
const PEER_ID = /^[A-Z]{3}-[0-9]{3}$/;
const ORDINALS = ["first", "second", "third", "fourth", "fifth"];

export class Code {
  constructor(peerId, secret) {
    this.peerId = peerId;
    this.secret = secret;
    Object.freeze(this);
  }

  toString() {
    return `${this.peerId}-${this.secret}`;
  }

  // The secret must not reach a log through console.log or JSON.
  toJSON() {
    return `Code(${this.peerId}, <redacted>)`;
  }
  [Symbol.for("nodejs.util.inspect.custom")]() {
    return this.toJSON();
  }
}

/** The words of sfs/wordlist.txt: one a line, "#" lines are comments. */
export function loadWordlist(text) {
  const words = text.split(/\r?\n/).filter((line) => line && !line.startsWith("#"));
  return Object.freeze(words);
}

/** A uniform index below n from crypto.getRandomValues (no modulo bias). */
function randomIndex(n, random) {
  const limit = Math.floor(2 ** 32 / n) * n;
  for (;;) {
    const [value] = random(new Uint32Array(1));
    if (value < limit) return value % n;
  }
}

/**
 * Draw the secret part of a code from the word list.
 * @param {readonly string[]} wordlist
 * @param {object} [options]
 * @param {number} [options.words]
 * @param {(array: Uint32Array) => Uint32Array} [options.random]  tests pass their own
 */
export function newSecret(
  wordlist,
  { words = SECRET_WORDS, random = (a) => crypto.getRandomValues(a) } = {},
) {
  return Array.from({ length: words }, () => wordlist[randomIndex(wordlist.length, random)]).join(
    "-",
  );
}

/**
 * Parse what a user typed: surrounding space and letter case do not matter.
 * @throws {RangeError} with a message for the user that says which part of the code
 *   is wrong or missing; it never repeats the secret words.
 */
export function parseCode(text, wordlist) {
  const parts = text.trim().split(/\s+/).join("-").toLowerCase().split("-");
  if (parts.length === 1 && parts[0] === "") {
    throw new RangeError("no code given; a code looks like ABC-123-tiger-lamp");
  }
  const peerId = parts.slice(0, 2).join("-").toUpperCase();
  if (!PEER_ID.test(peerId)) {
    throw new RangeError(
      "a code starts with the receiver's ID, three letters and three digits, " +
        "as in ABC-123-tiger-lamp",
    );
  }
  const words = parts.slice(2);
  while (words.length && !words[words.length - 1]) words.pop(); // "ABC-123-tiger-": a word to come
  if (!words.length) {
    throw new RangeError(
      `${peerId} is missing its secret words (a code looks like ABC-123-tiger-lamp)`,
    );
  }
  if (words.length < SECRET_WORDS) {
    throw new RangeError(
      `the code ${peerId}-… is missing its ${ordinal(words.length)} secret word`,
    );
  }
  const known = new Set(wordlist);
  words.forEach((word, i) => {
    if (!known.has(word)) {
      throw new RangeError(
        `the ${ordinal(i)} secret word of ${peerId}-… is not an sfs code word; check for typos`,
      );
    }
  });
  return new Code(peerId, words.join("-"));
}

function ordinal(index) {
  return index < ORDINALS.length ? ORDINALS[index] : `#${index + 1}`;
}
