// Bundle the page: src/ -> static/ (committed, so `pip install .` needs no node).
// Deterministic: the same sources and lockfile give the same bytes, which
// scripts/test checks against the committed bundle.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

const common = {
  bundle: true,
  format: "esm",
  target: ["chrome110", "firefox115", "safari16"],
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
  // No source paths of this machine in the output.
  sourcemap: false,
  // sfs/wordlist.txt, the command line's own list, goes into the bundle as text: the
  // page draws and checks code words from the very same 1024.
  loader: { ".txt": "text" },
};

await mkdir("static", { recursive: true });
await build({ ...common, entryPoints: ["src/app.js"], outfile: "static/app.js" });
await build({ ...common, entryPoints: ["src/sw.js"], outfile: "static/sw.js", format: "iife" });
await copyFile("src/index.html", "static/index.html");
await copyFile("src/style.css", "static/style.css");
