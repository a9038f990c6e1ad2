/**
 * The layer checker behind `tests/layers_test.ts`: reads a file's imports
 * (static `import`/`export ... from`, side-effect `import "..."`, dynamic
 * `import("...")` and `new URL("...", import.meta.url)` Worker specifiers) and
 * reports every one that crosses a layer the wrong way, plus codec source that
 * opens sockets. Pure functions over `{ path, text }` records so a test can
 * feed it synthetic files; test code only, never imported by the product.
 *
 * The layers (one-way doors): kernel/ ← codec/, transfer/ and release/ (each
 * imports only itself and kernel/) ← agent/ and controlplane/ (never each
 * other) ← cli/ (commands never import commands) ← mod.ts. testkit/ serves tests/ and scripts/; the product imports none of
 * tests/, testkit/, scripts/; scripts/ never import tests/.
 *
 * @module
 */

import { posix } from "node:path";

/** A source file: its path from the repository root ("codec/encoder.ts") and its text. */
export interface SourceFile {
  readonly path: string;
  readonly text: string;
}

/** How a specifier appears in the source. */
export type ImportKind = "static" | "re-export" | "dynamic" | "worker-url";

/** One import of a file, as written. */
export interface ImportRef {
  readonly specifier: string;
  readonly kind: ImportKind;
}

/** A rule broken by one file: the import (or source text) and the rule. */
export interface Violation {
  readonly file: string;
  /** The specifier as written, or the forbidden call for a source-text rule. */
  readonly found: string;
  readonly rule: string;
}

/** What checking a set of files found. */
export interface LayerReport {
  /** Files checked that belong to the product (kernel, release, codec, transfer, agent, controlplane, cli, mod.ts). */
  readonly productFiles: number;
  /** Imports read from product files. */
  readonly productImports: number;
  /** Imports read from all files. */
  readonly imports: number;
  readonly violations: readonly Violation[];
}

/** The folders (and mod.ts) the rules know. */
export type Layer =
  | "kernel"
  | "release"
  | "codec"
  | "transfer"
  | "agent"
  | "controlplane"
  | "cli"
  | "mod"
  | "tests"
  | "testkit"
  | "scripts";

/** The layers that make up the shipped program. */
export const PRODUCT_LAYERS: readonly Layer[] = [
  "kernel",
  "release",
  "codec",
  "transfer",
  "agent",
  "controlplane",
  "cli",
  "mod",
];

/** The folders whose files the guard reads (tests/ only as an import target). */
export const CHECKED_DIRS: readonly string[] = [
  "kernel",
  "release",
  "codec",
  "transfer",
  "agent",
  "controlplane",
  "cli",
  "testkit",
  "scripts",
];

/** cli/ files shared by the commands; every other cli/ file is a command module. */
export const CLI_HELPERS: readonly string[] = [
  "cli/args.ts",
  "cli/arg_parser.ts",
  "cli/fleet_args.ts",
  "cli/bind_errors.ts",
  "cli/api_client.ts",
  "cli/output.ts",
  "cli/progress_line.ts",
  "cli/release_files.ts",
  "cli/control_plane_address.ts",
  "cli/caller_folder.ts",
];

/** Calls that open sockets, which the pure codec must not make. */
const SOCKET_CALLS: readonly { pattern: RegExp; name: string }[] = [
  { pattern: /\bDeno\.listen(?:Tls)?\b/, name: "Deno.listen" },
  { pattern: /\bDeno\.connect/, name: "Deno.connect" },
  { pattern: /\blistenDatagram\b/, name: "listenDatagram" },
  { pattern: /\bDeno\.serve\b/, name: "Deno.serve" },
  { pattern: /(?<![\w.])fetch\s*\(/, name: "fetch(" },
];

/** The layer a repository path belongs to, or undefined for files outside the rules. */
export function layerOf(path: string): Layer | undefined {
  if (path === "mod.ts") return "mod";
  const top = path.split("/")[0];
  const layers: readonly Layer[] = [...PRODUCT_LAYERS, "tests", "testkit", "scripts"];
  return layers.find((l) => l === top && l !== "mod");
}

/**
 * The imports written in `text`. Static imports and re-exports are read only at
 * the start of a line (so doc comments, whose lines start with `*`, are not
 * taken for code); a dynamic import or Worker URL is read wherever it appears.
 * A dynamic import of a string literal, or of `new URL(literal,
 * import.meta.url).href` (which `deno run` does not load up front), is read as
 * an import of that literal; one of anything else is returned with
 * the specifier `<non-literal>` so that the checker can refuse it.
 */
export function importsOf(text: string): ImportRef[] {
  const found: ImportRef[] = [];
  const add = (re: RegExp, kind: ImportKind) => {
    for (const m of text.matchAll(re)) found.push({ specifier: m[1], kind });
  };
  // import x from "..."; import { a, b } from "..."; import type { T } from "..."; (multi-line too)
  add(/^[ \t]*import\b(?![ \t]*[(.])[^;"'`]*?\bfrom[ \t]*["']([^"']+)["']/gm, "static");
  // import "...";
  add(/^[ \t]*import[ \t]*["']([^"']+)["']/gm, "static");
  // export { a } from "..."; export * from "..."; export type { T } from "...";
  add(/^[ \t]*export\b[^;"'`=]*?\bfrom[ \t]*["']([^"']+)["']/gm, "re-export");
  // import("...") and typeof import("...")
  add(/\bimport[ \t]*\([ \t\n]*["'`]([^"'`$]+)["'`][ \t\n]*[,)]/g, "dynamic");
  // import(new URL("./lazy.ts", import.meta.url).href): a literal all the same
  add(
    /\bimport[ \t]*\([ \t\n]*new\s+URL\(\s*["'`]([^"'`$]+)["'`]\s*,\s*import\.meta\.url\s*\)\.href[ \t\n]*[,)]/g,
    "dynamic",
  );
  // new URL("./worker.ts", import.meta.url), unless it is such an import's
  add(
    /(?<!\bimport[ \t]*\([ \t\n]*)\bnew\s+URL\(\s*["'`]([^"'`$]+)["'`]\s*,\s*import\.meta\.url\s*\)/g,
    "worker-url",
  );
  const literal = /["'`][^"'`$]+["'`][ \t\n]*[,)]/.source;
  const urlLiteral =
    /new\s+URL\(\s*["'`][^"'`$]+["'`]\s*,\s*import\.meta\.url\s*\)\.href[ \t\n]*[,)]/.source;
  const nonLiteral = new RegExp(
    `\\bimport[ \\t]*\\((?![ \\t\\n]*(?:${literal}|${urlLiteral}))`,
    "g",
  );
  for (const m of text.matchAll(nonLiteral)) {
    found.push({ specifier: `<non-literal at offset ${m.index}>`, kind: "dynamic" });
  }
  return found;
}

/** Where a relative specifier points, from the repository root; undefined for packages. */
export function resolveSpecifier(from: string, specifier: string): string | undefined {
  if (!specifier.startsWith("./") && !specifier.startsWith("../")) return undefined;
  return posix.normalize(posix.join(posix.dirname(from), specifier));
}

/** The rule `from` breaks by importing `specifier`, or undefined if it may. */
export function ruleBroken(from: string, specifier: string): string | undefined {
  const source = layerOf(from);
  if (source === undefined) return undefined;
  if (specifier.startsWith("<non-literal")) {
    return "a dynamic import must name a string literal, so that its layer can be checked";
  }
  const product = PRODUCT_LAYERS.includes(source);
  const target = resolveSpecifier(from, specifier);
  if (target === undefined) {
    if (/^(jsr|https?):/.test(specifier)) {
      return "no jsr: or remote imports (node:, npm: and deno.json's bare names only)";
    }
    if (source === "codec" && (specifier === "cbor-x" || specifier.startsWith("npm:cbor-x"))) {
      return "codec/ must not import cbor-x (wire formats live in transfer/)";
    }
    return undefined;
  }
  if (target.startsWith("../") || target === "..") {
    return "imports stay inside the repository";
  }
  const to = layerOf(target);
  if (product && (to === "tests" || to === "testkit" || to === "scripts")) {
    return "product code (kernel, release, codec, transfer, agent, controlplane, cli, mod.ts) never imports tests/, testkit/ or scripts/";
  }
  switch (source) {
    case "kernel":
      return to === "kernel" ? undefined : "kernel/ imports only kernel/";
    case "release":
      return to === "release" || to === "kernel"
        ? undefined
        : "release/ imports only release/ and kernel/";
    case "codec":
      return to === "codec" || to === "kernel"
        ? undefined
        : "codec/ imports only codec/ and kernel/";
    case "transfer":
      return to === "transfer" || to === "kernel"
        ? undefined
        : "transfer/ imports only transfer/ and kernel/";
    case "agent":
    case "controlplane": {
      const other = source === "agent" ? "controlplane" : "agent";
      if (to === other) return `${source}/ must not import ${other}/ (nor ${other}/ ${source}/)`;
      return to === source || to === "kernel" || to === "codec" || to === "transfer" ||
          to === "release"
        ? undefined
        : `${source}/ imports only ${source}/, kernel/, release/, codec/ and transfer/`;
    }
    case "cli": {
      if (to === "cli") {
        const fromHelper = CLI_HELPERS.includes(from);
        const toHelper = CLI_HELPERS.includes(target);
        if (toHelper) return undefined;
        return fromHelper
          ? "cli helpers (args, arg_parser, fleet_args, api_client, output, progress_line) must not import commands"
          : "a cli command must not import another command (share code through a cli helper)";
      }
      return to === "kernel" || to === "codec" || to === "transfer" || to === "agent" ||
          to === "controlplane" || to === "release"
        ? undefined
        : "cli/ imports only cli/, kernel/, release/, codec/, transfer/, agent/ and controlplane/";
    }
    case "mod":
      return to === "cli" || to === "kernel" ? undefined : "mod.ts imports only cli/ and kernel/";
    case "scripts":
      return to === "tests"
        ? "scripts/ must not import tests/ (shared code goes in testkit/)"
        : undefined;
    case "testkit":
      return to === "tests" || to === "scripts"
        ? "testkit/ must not import tests/ or scripts/"
        : undefined;
    case "tests":
      return undefined;
  }
}

/** Socket calls in codec source (the codec is pure: no network). */
function socketRules(file: SourceFile): Violation[] {
  if (layerOf(file.path) !== "codec") return [];
  return SOCKET_CALLS.filter((c) => c.pattern.test(file.text)).map((c) => ({
    file: file.path,
    found: c.name,
    rule:
      "codec/ must not use sockets (Deno.listen, Deno.connect, listenDatagram, Deno.serve, fetch)",
  }));
}

/** Checks every file's imports (and codec's source text) against the layer rules. */
export function checkLayers(files: readonly SourceFile[]): LayerReport {
  const violations: Violation[] = [];
  let productFiles = 0;
  let productImports = 0;
  let imports = 0;
  for (const file of files) {
    const layer = layerOf(file.path);
    const isProduct = layer !== undefined && PRODUCT_LAYERS.includes(layer);
    const refs = importsOf(file.text);
    imports += refs.length;
    if (isProduct) {
      productFiles++;
      productImports += refs.length;
    }
    for (const ref of refs) {
      const rule = ruleBroken(file.path, ref.specifier);
      if (rule !== undefined) violations.push({ file: file.path, found: ref.specifier, rule });
    }
    violations.push(...socketRules(file));
  }
  return { productFiles, productImports, imports, violations };
}

/** One line per violation: `file → import: rule`. */
export function describeViolations(violations: readonly Violation[]): string {
  return violations.map((v) => `${v.file} → ${v.found}: ${v.rule}`).join("\n");
}

/** Reads every .ts file of `CHECKED_DIRS` (recursively) and mod.ts under `root`. */
export async function readSourceTree(root: string): Promise<SourceFile[]> {
  const files: SourceFile[] = [];
  const walk = async (dir: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(`${root}/${dir}`));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile && /\.(ts|js|mjs|tsx)$/.test(entry.name)) {
        files.push({ path, text: await Deno.readTextFile(`${root}/${path}`) });
      }
    }
  };
  for (const dir of CHECKED_DIRS) await walk(dir);
  files.push({ path: "mod.ts", text: await Deno.readTextFile(`${root}/mod.ts`) });
  return files;
}
