// Text from elsewhere, made safe to show (a port of sfs/text.py).
//
// The page puts peer-supplied text (a file name, a sender name, a cancel reason, a
// text message) into the document only as textContent, never as HTML, so no markup
// can run.  What remains is text that misleads the eye: bidi overrides that make
// "exe.pdf" of "fdp.exe", zero-width characters, control characters and line
// separators.  printable() turns each of them into a visible escape, so what is shown
// is exactly one line of inert text, as the command line shows it.

/** Categories never shown as they are: controls, invisible formatting, surrogates, separators. */
const UNSAFE = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/u;
const UNSAFE_ALL = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu;
export const ELLIPSIS = "…";

/** Whether one character must not be shown (or kept in a name) as it is. */
export function isUnsafe(char) {
  return UNSAFE.test(char);
}

function escape(char) {
  const code = char.codePointAt(0);
  if (code < 0x100) return "\\x" + code.toString(16).padStart(2, "0");
  if (code < 0x10000) return "\\u" + code.toString(16).padStart(4, "0");
  return "\\U" + code.toString(16).padStart(8, "0");
}

/**
 * `text` as one line of inert text: unsafe characters become \x1b-style escapes.
 * @param {number} [limit]  cut the result to this many characters, ending it with …
 */
export function printable(text, limit) {
  const clean = String(text).replace(UNSAFE_ALL, escape);
  const chars = Array.from(clean);
  if (limit !== undefined && chars.length > limit) {
    return chars.slice(0, Math.max(limit - 1, 0)).join("") + ELLIPSIS;
  }
  return clean;
}

/** A text message as inert lines: as printable(), but newlines and tabs stay. */
export function printableText(text) {
  return text
    .replaceAll("\r\n", "\n")
    .replace(UNSAFE_ALL, (c) => (c === "\n" || c === "\t" ? c : escape(c)));
}
