// The page itself: what the user sees and answers (the counterpart of sfs/cli.py).
//
// Everything a peer or a server wrote reaches the document as textContent only, and
// through printable() first, so no name or reason can inject markup or pass for
// something else.  Automation contract (tests/integration drive the page):
//
//   #role-receive #role-send   the two roles
//   #code                      the receiver's code, exactly (e.g. ABC-123-tiger-lamp)
//   #code-input #file-input #send   the sender's form (#name: the name shown)
//   #accept #decline           the receiver's answer to an offer
//   #status                    one line: the current state, then the final line
//                              ("Received report.pdf (1.2 MB) in …", "Sent 2 files (…)",
//                              "Wrong code…", "…declined…", "…went away…")
//   #progress                  per file and overall: bytes, rate, time left
//   body[data-state]           idle | waiting | connecting | deciding | transferring | reconnecting | done | error
//
// URL: `#CODE` opens Send with the code filled in, `#receive/CODE` (a sender's code:
// `sfs send --print-code`) receives from that sender at once (the fragment never
// reaches the server, and is removed from the address bar at once); `?save=picker|download|memory`
// forces how received files are saved (./save.js).

import qrcode from "qrcode-generator";

import wordlistText from "../../wordlist.txt";
import { loadWordlist, parseCode } from "./code.js";
import { CryptoError, WrongCodeError } from "./crypto.js";
import {
  CancelledByPeerError,
  CancelledError,
  PeerGoneError,
  RejectedError,
  SfsError,
} from "./errors.js";
import { MAX_SENDER_NAME_CHARS, MAX_TEXT_BYTES } from "./protocol.js";
import { canPickFolder, MEMORY_LIMIT_TEXT, requestedMethod, SaveOptions, zipName } from "./save.js";
import { relayMode, relayStats } from "./relay.js";
import { receive, send } from "./session.js";
import { printable, printableText } from "./text.js";
import { PAGE_CLOSED } from "./reasons.js";
import { describeOffer, finalLine, formatSize } from "./transfer.js";

const WORDS = loadWordlist(wordlistText);
const PROGRESS_EVERY_MS = 250;
const $ = (id) => document.getElementById(id);

const ui = {
  body: document.body,
  status: $("status"),
  code: $("code"),
  codeInput: $("code-input"),
  name: $("name"),
  fileInput: $("file-input"),
  folderInput: $("folder-input"),
  textInput: $("text-input"),
  chosen: $("chosen"),
  drop: $("drop"),
  send: $("send"),
  offer: $("offer"),
  offerList: $("offer-list"),
  offerNote: $("offer-note"),
  accept: $("accept"),
  decline: $("decline"),
  text: $("text-message"),
  saved: $("saved"),
  verifier: $("verifier"),
  cancel: $("cancel"),
  again: $("again"),
};

/** The one place the page's state changes (tests wait on body[data-state]). */
function setState(state) {
  ui.body.dataset.state = state;
  if (relayStats.flow) {
    // For tests and bug reports: how a relayed receive held incoming bytes back.
    ui.body.dataset.relayFlow = relayStats.flow;
    ui.body.dataset.relayPeakHeld = String(relayStats.peakHeld);
  }
  const running = ["waiting", "connecting", "deciding", "transferring"].includes(state);
  // While an offer is open, Decline is the way out.
  ui.cancel.hidden = !running || state === "deciding";
  ui.again.hidden = running || state === "idle";
}

function say(message) {
  ui.status.textContent = message;
}

function clear(element) {
  element.replaceChildren();
}

function fileItem(name, size) {
  const item = document.createElement("li");
  item.textContent = printable(name, 120);
  if (size !== null && size !== undefined) {
    const span = document.createElement("span");
    span.className = "size";
    span.textContent = formatSize(size);
    item.append(span);
  }
  return item;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// -- what an error says ---------------------------------------------------------------------

function describeError(error) {
  if (error instanceof WrongCodeError) {
    return (
      "Wrong code: the two sides did not agree on a key (a typo, or someone interfering). " +
      "Nothing was sent, and that code is spent: start over with a new one."
    );
  }
  if (error instanceof CancelledError) return "Cancelled.";
  // A decision of either side, not a failure: said as it is.
  if (error instanceof RejectedError || error instanceof CancelledByPeerError) {
    return capitalize(printable(error.message));
  }
  if (error instanceof PeerGoneError) {
    const message = printable(error.message);
    if (/went away/.test(message)) return capitalize(message);
    return `The other side went away: ${message.replace(/^the other side /, "it ")}`;
  }
  // The command line's one line, word for word ("Error: no direct connection: …").
  if (error instanceof SfsError || error instanceof CryptoError) {
    return `Error: ${printable(error.message)}`;
  }
  console.error(error); // a bug: the details are for the console only
  return `Something went wrong: ${printable(String(error?.message ?? error), 200)}`;
}

const capitalize = (text) => text.charAt(0).toUpperCase() + text.slice(1);

// -- progress -------------------------------------------------------------------------------

/** transfer.js's Progress, shown in #progress: per file and overall, rate and time left. */
class PageProgress {
  constructor() {
    this._timer = null;
  }

  begin(files, total) {
    Object.assign(this, { files, total, done: 0, index: 0, started: performance.now() });
    this.firstByte = null;
    $("progress").hidden = false;
    setState("transferring");
  }

  start(name, size) {
    Object.assign(this, { index: this.index + 1, name, size, fileDone: 0 });
    this._render();
  }

  advance(n) {
    this.firstByte ??= performance.now();
    this.fileDone += n;
    this.done += n;
    // At most a few times a second: a 64 KiB chunk comes far more often.
    this._timer ??= setTimeout(() => this._render(), PROGRESS_EVERY_MS);
  }

  finish() {
    this._render();
    // From the first byte to the last, as the page saw them: what `scripts/bench
    // --browser` reads (polling the page instead would cost the page time).
    if (this.firstByte !== null) {
      ui.body.dataset.dataSeconds = ((performance.now() - this.firstByte) / 1000).toFixed(3);
    }
  }

  _render() {
    clearTimeout(this._timer);
    this._timer = null;
    const of = (done, total) =>
      total === null ? formatSize(done) : `${formatSize(done)} of ${formatSize(total)}`;
    const which = this.files > 1 ? `File ${this.index} of ${this.files}: ` : "";
    const name = printable(this.name, 80);
    $("file-line").textContent = `${which}${name}, ${of(this.fileDone, this.size)}`;
    setBar($("file-bar"), this.fileDone, this.size);
    const seconds = (performance.now() - this.started) / 1000;
    const rate = seconds > 0.5 ? this.done / seconds : 0;
    let line = `Overall: ${of(this.done, this.total)}`;
    if (rate > 0) line += `, ${formatSize(rate)}/s`;
    if (rate > 0 && this.total !== null && this.total > this.done) {
      line += `, ${duration((this.total - this.done) / rate)} left`;
    }
    $("overall-line").textContent = line;
    setBar($("overall-bar"), this.done, this.total);
  }
}

function setBar(bar, done, total) {
  if (total === null) {
    bar.removeAttribute("value"); // indeterminate: a pipe of unknown size
  } else {
    bar.max = Math.max(total, 1);
    bar.value = total === 0 ? 1 : done;
  }
}

function duration(seconds) {
  const s = Math.ceil(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

// -- the running transfer, for cancel and tab close --------------------------------------------

const running = { cancel: null, pump: null };

function started(pump) {
  running.pump = pump;
}

/** Best effort: tell the peer on the DataChannel why we stop (the tab is closing). */
function sayGoodbye(code) {
  try {
    running.pump?.goodbye(code);
  } catch {
    // the protocol allows no word now
  }
}

ui.cancel.addEventListener("click", () => {
  // While an offer is open, cancelling is declining it (the sender is told so).
  if (ui.body.dataset.state === "deciding" && !ui.decline.disabled) ui.decline.click();
  else running.cancel?.abort(new CancelledError());
});

window.addEventListener("beforeunload", (event) => {
  // Leaving mid-transfer loses it: let the browser ask first.
  if (["deciding", "transferring"].includes(ui.body.dataset.state)) {
    event.preventDefault();
    event.returnValue = ""; // what older browsers look for
  }
});
window.addEventListener("pagehide", () => sayGoodbye(PAGE_CLOSED));

/** Run one job (receive or send) and show how it ended. */
async function run(job, verb) {
  running.cancel = new AbortController();
  try {
    const result = await job(running.cancel.signal);
    if (result.text !== null) {
      ui.text.textContent = printableText(result.text);
      ui.text.hidden = false;
    }
    say(finalLine(verb, result));
    setState("done");
  } catch (error) {
    say(describeError(error));
    setState("error");
  } finally {
    ui.offer.hidden = true;
    running.pump = null;
    running.cancel = null;
  }
}

/** What session.js reports to, common to both roles. */
function sessionUi() {
  return {
    status: (message) => say(printable(message)),
    pairing: () => {
      // The code has had its one use: it is no longer worth showing.
      $("receive-panel").hidden = true;
      setState("connecting");
      say("Connecting to the other side…");
    },
    connected: (verifier, route) => {
      ui.verifier.textContent = `Verification: ${verifier} (the other side shows the same)`;
      say(route ? `Connected, ${printable(route)}.` : "Connected.");
    },
    reconnecting: (windowSeconds) => {
      setState("reconnecting");
      say(`Connection lost; reconnecting (for up to ${Math.round(windowSeconds / 60)} min)…`);
    },
    reconnected: (route) => {
      setState("transferring");
      say(route ? `Reconnected (${printable(route)}); resuming` : "Reconnected; resuming");
    },
    progress: new PageProgress(),
    started,
  };
}

// -- receiving ------------------------------------------------------------------------------

/** Receive: with a new code shown here, or with `code`, a sender's (`sfs send --print-code`). */
async function startReceiving(code = null) {
  $("receive-panel").hidden = false;
  setState("connecting");
  say(code ? `Connecting to ${code.peerId}…` : "Connecting to the server…");
  // Found out now, so a size limit can be stated before the user accepts.
  const saving = SaveOptions.probe(requestedMethod(location.search));
  await run(
    (cancel) =>
      receive({
        ui: {
          ...sessionUi(),
          showCode,
          decide: async (offer, names, signal, plan) =>
            decide(offer, names, signal, plan, await saving),
        },
        wordlist: wordlistText,
        cancel,
        relayMode: relayMode(location.search),
        code,
        // Only a page that saves into a picked folder can continue after an outage.
        reconnects: canPickFolder(requestedMethod(location.search)),
      }),
    "Received",
  );
}

function showCode(code) {
  const link = `${location.origin}/#${code}`;
  ui.code.textContent = code;
  const anchor = $("link");
  anchor.href = link;
  anchor.textContent = link;
  $("cli-hint").textContent = `sfs send --server ${location.origin} ${code} FILE`;
  const qr = qrcode(0, "M");
  qr.addData(link);
  qr.make();
  const image = $("qr");
  image.src = qr.createDataURL(8, 4);
  image.hidden = false;
  setState("waiting");
  say("Waiting for the sender. Give them the code, the link or the QR code.");
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API outside a secure context: select it for the user instead.
    const range = document.createRange();
    range.selectNodeContents(ui.code);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    if (!document.execCommand?.("copy")) return;
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => (button.textContent = label), 1500);
}

$("copy").addEventListener("click", (event) => copy(ui.code.textContent, event.currentTarget));
$("copy-link").addEventListener("click", (event) => copy($("link").href, event.currentTarget));

/**
 * Ask whether to take `offer`; resolves to {saving} or null (declined).  The save
 * dialog (if any) opens from the Accept click itself, as browsers require.
 */
function decide(offer, names, signal, plan, options) {
  const sender = offer.sender ? ` from ${printable(offer.sender, 40)}` : "";
  const info = offer.files[0];
  let what;
  if (offer.text) what = `a text message (${plural(info.size, "byte")})`;
  else if (offer.stream) what = `${printable(names[0], 80)} (a pipe, size unknown)`;
  else if (offer.files.length === 1) what = `${printable(names[0], 80)} (${formatSize(info.size)})`;
  else what = `${describeOffer(offer)} (${formatSize(offer.totalSize)})`;
  const question = `Receive ${what}${sender}?`;
  clear(ui.offerList);
  if (offer.files.length > 1) {
    offer.files.forEach((file, i) => ui.offerList.append(fileItem(names[i], file.size)));
  }
  const limit = offer.text ? null : options.limit();
  const total = offer.stream ? null : offer.totalSize;
  const tooLarge = limit !== null && total !== null && total > limit;
  ui.offerNote.textContent = limit === null ? "" : capitalize(MEMORY_LIMIT_TEXT) + ".";
  if (plan.tree && !options.canPick) {
    ui.offerNote.textContent += ` The folders arrive as one zip file, ${printable(zipName(plan), 80)}.`;
  }
  ui.accept.disabled = tooLarge;
  ui.decline.disabled = false;
  ui.offer.hidden = false;
  if (tooLarge) {
    ui.offerNote.textContent += " This offer is larger: decline it, or use the command line.";
  }
  setState("deciding");
  say(question);

  return new Promise((resolve) => {
    const finish = (answer) => {
      ui.accept.removeEventListener("click", accept);
      ui.decline.removeEventListener("click", declineClicked);
      ui.offer.hidden = true;
      resolve(answer);
    };
    const accept = () => {
      ui.accept.disabled = ui.decline.disabled = true;
      if (offer.text) return finish({ saving: null });
      // No await before choose(): the file picker needs this click's user activation.
      options.choose(plan, total).then(
        (saving) => {
          saving.onMemoryFile = (name, link) => {
            const item = document.createElement("li");
            item.append(link);
            ui.saved.append(item);
          };
          setState("transferring");
          say("Receiving…");
          finish({ saving });
        },
        (error) => {
          ui.accept.disabled = ui.decline.disabled = false;
          if (error?.name === "AbortError") {
            say("No place chosen: press Accept to choose where to save, or Decline.");
          } else {
            say(describeError(error));
            ui.accept.disabled = true;
          }
        },
      );
    };
    const declineClicked = () => finish(null);
    ui.accept.addEventListener("click", accept);
    ui.decline.addEventListener("click", declineClicked);
    // The sender gave up (or the connection went) while the user was asked.
    signal.addEventListener("abort", () => finish(null), { once: true });
  });
}

// -- sending --------------------------------------------------------------------------------

// What to send: {file, folder} (folder: the folders the file is in, inside the
// transfer; [] for a file picked on its own), and every folder of the transfer, empty
// ones included, as the command line sends a folder.
let files = [];
let folders = [];

function choose(items, folderList = []) {
  files = items;
  folders = folderList;
  clear(ui.chosen);
  for (const { file, folder } of files) {
    ui.chosen.append(fileItem([...folder, file.name].join("/"), file.size));
  }
  if (folders.length) {
    const empty = folders.length - new Set(files.map(({ folder }) => folder.join("/"))).size;
    say(`${files.length} files in ${folders.length} folders` + (empty > 0 ? ` (${empty} empty).` : "."));
  }
}

ui.fileInput.addEventListener("change", () =>
  choose(Array.from(ui.fileInput.files, (file) => ({ file, folder: [] }))),
);

// A picked folder: each file's path inside it (webkitRelativePath, "holiday/a/b.jpg").
// Browsers list no empty folder this way; a dropped folder has them.
ui.folderInput.addEventListener("change", () => {
  const items = Array.from(ui.folderInput.files, (file) => ({
    file,
    folder: file.webkitRelativePath.split("/").slice(0, -1),
  }));
  choose(items, foldersOf(items.map(({ folder }) => folder)));
});

/** Every folder on the way to each of `paths` (arrays of names), once, parents first. */
function foldersOf(paths) {
  const seen = new Map();
  for (const path of paths) {
    for (let depth = 1; depth <= path.length; depth++) {
      const folder = path.slice(0, depth);
      seen.set(folder.join("/"), folder);
    }
  }
  return [...seen.values()];
}

/** The files and folders under dropped entries (the File and Directory Entries API). */
async function walk(entries) {
  const items = [];
  const found = [];
  const visit = async (entry, folder) => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      items.push({ file, folder });
    } else if (entry.isDirectory) {
      const inside = [...folder, entry.name];
      found.push(inside);
      const reader = entry.createReader();
      // readEntries() gives a batch at a time (100 in Chromium) until an empty one.
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await visit(child, inside);
      }
    }
  };
  for (const entry of entries) await visit(entry, []);
  return { items, found };
}

ui.drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  ui.drop.classList.add("over");
});
ui.drop.addEventListener("dragleave", () => ui.drop.classList.remove("over"));
ui.drop.addEventListener("drop", (event) => {
  event.preventDefault();
  ui.drop.classList.remove("over");
  // Only the items that are files: a drag from a desktop may carry a link (text/uri-list)
  // beside them, which has no entry and would hide the folder's.
  const entries = Array.from(event.dataTransfer.items ?? [])
    .filter((item) => item.kind === "file")
    .map((item) => item.webkitGetAsEntry?.());
  if (!entries.length || entries.some((entry) => !entry)) {
    // No entries API here: the files as they are (a folder among them cannot be read).
    choose(Array.from(event.dataTransfer.files, (file) => ({ file, folder: [] })));
    return;
  }
  walk(entries).then(
    ({ items, found }) => choose(items, found),
    (error) => say(`Cannot read what was dropped: ${printable(error.message ?? String(error))}.`),
  );
});

function showSendPanel(code = "") {
  $("send-panel").hidden = false;
  if (code) ui.codeInput.value = code;
  setState("idle");
  $("roles").hidden = true;
  say(code ? "Choose the files to send." : "Type the receiver's code and choose the files.");
  (code ? ui.fileInput : ui.codeInput).focus();
}

async function startSending() {
  let code;
  try {
    code = parseCode(ui.codeInput.value, WORDS);
  } catch (error) {
    say(capitalize(error.message) + ".");
    setState("idle");
    ui.codeInput.focus();
    return;
  }
  const text = ui.textInput.value;
  if (text && (files.length || folders.length)) {
    say("Send either files or a text message, not both at once.");
    return;
  }
  if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
    say(`A text message is at most ${formatSize(MAX_TEXT_BYTES)}: send it as a file.`);
    return;
  }
  if (!text && !files.length && !folders.length) {
    say("Choose the files to send (or type a text message) first.");
    return;
  }
  const sender = Array.from(ui.name.value.trim()).slice(0, MAX_SENDER_NAME_CHARS).join("");
  for (const element of [ui.codeInput, ui.name, ui.fileInput, ui.folderInput, ui.textInput, ui.send]) {
    element.disabled = true;
  }
  setState("connecting");
  say(`Connecting to ${code.peerId}…`);
  await run(
    (cancel) =>
      send({
        code,
        files,
        folders,
        text: text || null,
        sender,
        ui: {
          ...sessionUi(),
          waiting: () => {
            setState("waiting");
            say("Waiting for the receiver to accept…");
          },
        },
        cancel,
        relayMode: relayMode(location.search),
      }),
    "Sent",
  );
}

ui.send.addEventListener("click", startSending);
ui.codeInput.addEventListener("keydown", (event) => {
  if (event.key === "Enter") startSending();
});

// -- start ----------------------------------------------------------------------------------

$("role-receive").addEventListener("click", () => {
  $("roles").hidden = true;
  startReceiving();
});
$("role-send").addEventListener("click", () => showSendPanel());
ui.again.addEventListener("click", () => location.assign(location.pathname + location.search));

/** The fragment of a link that asks this page to receive: "#receive/CODE". */
const RECEIVE_PREFIX = "receive/";

/**
 * A link with the code after "#": Send, with the code filled in; "#receive/CODE" (a
 * sender's code, `sfs send --print-code`): Receive from that sender at once.
 */
function takeFragment() {
  if (!location.hash || ui.body.dataset.state !== "idle") return;
  let code = location.hash.slice(1);
  try {
    code = decodeURIComponent(code);
  } catch {
    // keep it as it is; parseCode says what is wrong with it
  }
  // The secret words should not linger in the address bar or the history.
  history.replaceState(null, "", location.pathname + location.search);
  if (code.startsWith(RECEIVE_PREFIX)) {
    $("roles").hidden = true;
    try {
      startReceiving(parseCode(code.slice(RECEIVE_PREFIX.length), WORDS));
    } catch (error) {
      say(capitalize(error.message) + ".");
      setState("error");
    }
  } else if (code) {
    showSendPanel(code);
  }
}

window.addEventListener("hashchange", takeFragment);
takeFragment();
setState(ui.body.dataset.state || "idle");
