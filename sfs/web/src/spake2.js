// SPAKE2 over Ed25519, byte-for-byte compatible with python-spake2 0.9 (the `spake2`
// package that sfs/peer/crypto.py and magic-wormhole use), asymmetric sides A and B only.
//
// No npm package speaks python-spake2's dialect (its M/N derivation, password scalar
// and transcript are its own), so this is a small port of spake2/spake2.py,
// groups.py and ed25519_basic.py.  All curve and hash math is done by the audited
// @noble libraries; the code here only decides *which* operations python-spake2
// performs, in which order, and how it turns bytes into numbers and back.
//
//   x  = random scalar              X* = x·G + pw·M    (side A's message, "A" || X*)
//   y  = random scalar              Y* = y·G + pw·N    (side B's message, "B" || Y*)
//   K  = x·(Y* − pw·N) = y·(X* − pw·M)
//   key = SHA256(SHA256(pw) || SHA256(idA) || SHA256(idB) || X* || Y* || K)

import { ed25519 } from "@noble/curves/ed25519.js";
import { bytesToNumberBE, concatBytes, equalBytes } from "@noble/curves/utils.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";

const Point = ed25519.Point;
const Fp = Point.Fp; // integers modulo the field prime 2^255 - 19
const Fn = Point.Fn; // integers modulo the group order L (scalars)

const SIDE_A = 0x41; // b"A"
const SIDE_B = 0x42; // b"B"
const ELEMENT_BYTES = 32;
const ENTROPY_BYTES = 64; // python-spake2 draws 32 + 32 bytes to make x unbiased mod L
const EMPTY = new Uint8Array(0);
const ascii = (text) => new TextEncoder().encode(text);

/** Any failure of the exchange itself (wrong side, reflected or invalid message). */
export class SPAKEError extends Error {}
/** A message from the same side we are on: both peers think they are A (or B). */
export class OffSides extends SPAKEError {}
/** Someone sent us our own message back. */
export class ReflectionThwarted extends SPAKEError {}
// Spelled out, as a minifier renames classes.
SPAKEError.prototype.name = "SPAKEError";
OffSides.prototype.name = "OffSides";
ReflectionThwarted.prototype.name = "ReflectionThwarted";

// groups.py: HKDF-SHA256 with an empty salt (the same as no salt: HMAC pads short
// keys with zeros) and a fixed info label, 16 bytes longer than needed so that the
// reduction below is nearly uniform; the bytes are read as one *big-endian* number.
function expand(data, info, length) {
  return bytesToNumberBE(hkdf(sha256, data, EMPTY, ascii(info), length));
}

/** groups.password_to_scalar: the password as a scalar, 0 <= s < L. */
export function passwordToScalar(password) {
  return Fn.create(expand(password, "SPAKE2 pw", 32 + 16));
}

/**
 * ed25519_basic.arbitrary_element: a point nobody knows the discrete log of (M, N).
 *
 * The seed is hashed to a y coordinate; python-spake2 tries y, y+1, … until one is on
 * the curve, always takes the even x for it, and multiplies by the cofactor 8 to land
 * in the prime-order subgroup (skipping the low-order points that become zero).
 */
export function arbitraryElement(seed) {
  const y = expand(seed, "SPAKE2 arbitrary element", 32 + 16);
  for (let plus = 0n; ; plus += 1n) {
    // An encoded point is little-endian y with the sign of x in the top bit; a clear
    // top bit selects the even x, as xrecover() does.  Decoding fails exactly when no
    // x exists for this y, which is when python-spake2's isoncurve() check fails.
    let candidate;
    try {
      candidate = Point.fromBytes(Fp.toBytes(Fp.create(y + plus)));
    } catch {
      continue;
    }
    const p8 = candidate.clearCofactor();
    if (!p8.is0()) return p8;
  }
}

// params.py: _Params(group, M=b"M", N=b"N"); S (symmetric mode) is not needed here.
export const M = arbitraryElement(ascii("M"));
export const N = arbitraryElement(ascii("N"));

// python-spake2 multiplies subgroup elements by `s % L`, giving the identity for 0;
// noble's constant-time multiply() wants 1 <= s < L, so reduce and special-case 0.
function mul(point, scalar) {
  const s = Fn.create(scalar);
  return s === 0n ? Point.ZERO : point.multiply(s);
}

/** ed25519_basic.random_scalar: 64 entropy bytes, read big-endian, reduced mod L. */
function randomScalar(entropy) {
  const bytes = entropy(ENTROPY_BYTES);
  if (!(bytes instanceof Uint8Array) || bytes.length !== ENTROPY_BYTES) {
    throw new TypeError(`entropy(${ENTROPY_BYTES}) must return ${ENTROPY_BYTES} bytes`);
  }
  return Fn.create(bytesToNumberBE(bytes));
}

/** ed25519_basic.bytes_to_element: accept only points of the prime-order subgroup. */
function bytesToElement(bytes) {
  if (bytes.length !== ELEMENT_BYTES) {
    // python-spake2 would read the first 32 bytes and hash all of them into the
    // transcript; an honest peer always sends exactly 32, so anything else is refused.
    throw new SPAKEError(`element must be ${ELEMENT_BYTES} bytes, not ${bytes.length}`);
  }
  let point;
  try {
    point = Point.fromBytes(bytes); // strict RFC 8032 decoding: y < p, canonical x
  } catch (error) {
    throw new SPAKEError(`element is not on the curve (${error.message})`);
  }
  if (point.is0()) throw new SPAKEError("element was Zero");
  // L·P = 0 holds for the identity and the prime-order subgroup only; small-order
  // and mixed points (the ones a small-subgroup attack needs) fail it.
  if (!point.isTorsionFree()) throw new SPAKEError("element is not in the right group");
  return point;
}

export const defaultEntropy = (n) => crypto.getRandomValues(new Uint8Array(n));

function asBytes(value, name) {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  return value;
}

class SPAKE2Asymmetric {
  /**
   * @param {Uint8Array} password
   * @param {{idA?: Uint8Array, idB?: Uint8Array, entropy?: (n: number) => Uint8Array}} options
   *   entropy mirrors python-spake2's entropy_f; only known-answer tests pass their own.
   */
  constructor(password, { idA = EMPTY, idB = EMPTY, entropy = defaultEntropy } = {}) {
    asBytes(password, "password");
    // Keep only what finish() needs; the password itself enters the key only hashed.
    this._pwHash = sha256(password);
    this._pwScalar = passwordToScalar(password);
    this._idA = asBytes(idA, "idA");
    this._idB = asBytes(idB, "idB");
    this._entropy = entropy;
    this._started = false;
    this._finished = false;
  }

  /** The message for the other side: side byte || 32-byte element (33 bytes). */
  start() {
    if (this._started) throw new SPAKEError("start() can only be called once");
    this._started = true;
    this._xyScalar = randomScalar(this._entropy);
    const element = mul(Point.BASE, this._xyScalar).add(mul(this._blinding, this._pwScalar));
    this._outbound = element.toBytes();
    return concatBytes(Uint8Array.of(this._side), this._outbound);
  }

  /** The 32-byte shared key, from the other side's message (33 bytes). */
  finish(inboundSideAndMessage) {
    asBytes(inboundSideAndMessage, "message");
    if (!this._started) throw new SPAKEError("call start() before finish()");
    if (this._finished) throw new SPAKEError("finish() can only be called once");
    this._finished = true;
    const otherSide = inboundSideAndMessage[0];
    if (otherSide !== SIDE_A && otherSide !== SIDE_B) {
      throw new OffSides("I don't know what side they're on");
    }
    if (otherSide === this._side) {
      const [me, them] = this._side === SIDE_A ? ["A", "B"] : ["B", "A"];
      throw new OffSides(`I'm ${me}, but I got a message from ${me} (not ${them}).`);
    }
    const inbound = inboundSideAndMessage.slice(1);
    const inboundElement = bytesToElement(inbound);
    if (equalBytes(inboundElement.toBytes(), this._outbound)) {
      throw new ReflectionThwarted("Someone tried to reflect our message back to us.");
    }
    // K = xy · (inbound − pw · unblinding); python-spake2 writes −pw as scalarmult(−pw).
    const unblinded = inboundElement.add(mul(this._unblinding, Fn.neg(this._pwScalar)));
    const kBytes = mul(unblinded, this._xyScalar).toBytes();
    const [xMsg, yMsg] =
      this._side === SIDE_A ? [this._outbound, inbound] : [inbound, this._outbound];
    // spake2.finalize_SPAKE2; the side bytes are not part of the transcript.
    const key = sha256(
      concatBytes(this._pwHash, sha256(this._idA), sha256(this._idB), xMsg, yMsg, kBytes),
    );
    this._xyScalar = undefined;
    return key;
  }
}

/** Side A (sfs: the sender). */
export class SPAKE2_A extends SPAKE2Asymmetric {
  _side = SIDE_A;
  _blinding = M;
  _unblinding = N;
}

/** Side B (sfs: the receiver). */
export class SPAKE2_B extends SPAKE2Asymmetric {
  _side = SIDE_B;
  _blinding = N;
  _unblinding = M;
}
