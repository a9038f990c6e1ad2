/**
 * `deno task build:wasm`: compiles the codec's WebAssembly module with clang +
 * wasm-ld and writes it, base64, into codec/filters_wasm.ts, which the codec
 * embeds (no file is read at run time). One module, one linear memory:
 *
 * - codec/wasm/filters.c: the codec's hot loops;
 * - codec/wasm/zstd_decoder.c with the decoder of zstd 1.5.7 (its lib/common
 *   and lib/decompress): apply's zstd decoder, which decodes from one of the
 *   filters' regions into the other (no copy). zstd's sources are taken from
 *   the npm package zstd-napi 0.0.13 (which vendors them, BSD licence),
 *   downloaded once from the npm registry into ~/.cache/poolboy/zstd-src, its
 *   SHA-512 checked against the pin below.
 *
 * Needs `clang` with the wasm32 target and `wasm-ld` (Debian: `apt-get install
 * clang lld`), and `tar`. The build is deterministic for one clang version;
 * the version is recorded in each generated file so that a check can tell
 * "the source changed" from "another compiler".
 *
 * Usage: deno task build:wasm [--check]
 *   --check  build into a temporary directory and compare with the embedded
 *            modules: exit 0 if equal, 1 if not, 3 if clang is missing or is
 *            another version than the one recorded, or zstd's sources cannot
 *            be had (nothing to compare).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { FILTERS_WASM_BASE64, FILTERS_WASM_CLANG } from "../codec/filters_wasm.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/**
 * Linear memory of the module, fixed (initial = maximum, it never grows):
 * 64 KiB of stack, zstd's 192 KiB context workspace and the module's static
 * bytes (~5 pages of 64 KiB), then what codec/filter_kernels.ts lays out (two
 * 1 MiB regions, 64 KiB of slack after the second so that a frame of an
 * incompressible MiB fits it, and the gear table).
 */
export const MEMORY_BYTES = 40 * 65536;

/** Where zstd's sources come from: an npm tarball, pinned by its digest. */
export const ZSTD_SOURCE = {
  /** The zstd release the tarball vendors (`ZSTD_VERSION_STRING`). */
  zstd: "1.5.7",
  url: "https://registry.npmjs.org/zstd-napi/-/zstd-napi-0.0.13.tgz",
  /** npm's `dist.integrity` of the tarball. */
  integrity:
    "sha512-ErGF+Ko1PsbooU6oC/sc/diiWKwVa0kd/5AkFSs7kg5kwcEuOtSzOy3xUOadXQlAVNab9TxsxaUk3hOq3cj/lA==",
  /** zstd's lib/ inside the tarball. */
  lib: "package/deps/zstd/lib",
} as const;

/** The decoder's C files of zstd's lib/ (no compressor, no dictionary builder, no legacy formats). */
const ZSTD_DECODER_FILES = [
  "common/entropy_common.c",
  "common/error_private.c",
  "common/fse_decompress.c",
  "common/xxhash.c",
  "common/zstd_common.c",
  "decompress/huf_decompress.c",
  "decompress/zstd_ddict.c",
  "decompress/zstd_decompress.c",
  "decompress/zstd_decompress_block.c",
];

/** The clang command line (kept in the generated file, so a rebuild is reproducible). */
export const CLANG_ARGS = [
  "--target=wasm32",
  "-nostdlib",
  "-O3",
  "-msimd128",
  "-mbulk-memory",
  "-Wl,--no-entry",
  "-Wl,--export=__heap_base",
  `-Wl,--initial-memory=${MEMORY_BYTES}`,
  `-Wl,--max-memory=${MEMORY_BYTES}`,
  "-Wl,-z,stack-size=65536",
];

/**
 * zstd's decoder without libc: its headers ask for string.h, stdlib.h and
 * assert.h; these stand in for them (the functions are defined in
 * zstd_decoder.c; assertions compile to nothing, as in zstd's release builds).
 */
const SHIM_HEADERS: Record<string, string> = {
  "string.h": `#pragma once
#include <stddef.h>
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
`,
  "stdlib.h": `#pragma once
#include <stddef.h>
void *malloc(size_t n);
void *calloc(size_t n, size_t s);
void free(void *p);
`,
  "assert.h": `#pragma once
#define assert(x) ((void)0)
`,
};

/** zstd's build switches: no assembly, no tracing, no debug output, no legacy formats. */
const ZSTD_DEFINES = [
  "-DZSTD_DISABLE_ASM",
  "-DZSTD_NO_TRACE",
  "-DDEBUGLEVEL=0",
  "-DZSTD_LEGACY_SUPPORT=0",
  "-DXXH_NO_STDLIB",
  "-DZSTD_HAVE_WEAK_SYMBOLS=0",
];

/** Why a module cannot be built here (exit 3 with --check: nothing to compare). */
class CannotBuild extends Error {}

/** The first line of `clang --version`, or undefined without clang. */
async function clangVersion(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("clang", { args: ["--version"], stdout: "piped" }).output();
    return out.success ? new TextDecoder().decode(out.stdout).split("\n")[0].trim() : undefined;
  } catch {
    return undefined;
  }
}

async function run(cmd: string, args: string[], what: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, { args, stderr: "piped" }).output();
  } catch (err) {
    throw new CannotBuild(`${what}: cannot run ${cmd}: ${(err as Error).message}`);
  }
  if (!out.success) throw new Error(`${what} failed:\n${new TextDecoder().decode(out.stderr)}`);
}

async function clang(args: string[], wasm: string): Promise<Uint8Array<ArrayBuffer>> {
  await run("clang", [...args, "-o", wasm], `clang (${wasm})`);
  return await Deno.readFile(wasm);
}

function cacheDir(): string {
  const home = Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "/tmp"}/.cache`;
  return `${home}/poolboy/zstd-src`;
}

async function sha512Integrity(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", bytes));
  return `sha512-${btoa(String.fromCharCode(...digest))}`;
}

/**
 * zstd's lib/ unpacked under `dir`: the pinned tarball from the cache, or
 * downloaded into it; refused if its digest is not the pinned one.
 */
async function zstdSources(dir: string): Promise<string> {
  const cached = `${cacheDir()}/zstd-napi-0.0.13.tgz`;
  let tarball: Uint8Array<ArrayBuffer> | undefined;
  try {
    tarball = await Deno.readFile(cached);
  } catch {
    // not cached yet
  }
  if (!tarball || await sha512Integrity(tarball) !== ZSTD_SOURCE.integrity) {
    console.log(`downloading zstd ${ZSTD_SOURCE.zstd}'s sources: ${ZSTD_SOURCE.url}`);
    try {
      const response = await fetch(ZSTD_SOURCE.url, { signal: AbortSignal.timeout(60_000) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      tarball = new Uint8Array(await response.arrayBuffer());
    } catch (err) {
      throw new CannotBuild(`cannot download ${ZSTD_SOURCE.url}: ${(err as Error).message}`);
    }
    const got = await sha512Integrity(tarball);
    if (got !== ZSTD_SOURCE.integrity) {
      throw new Error(`${ZSTD_SOURCE.url} is not the pinned tarball: ${got}`);
    }
    await Deno.mkdir(cacheDir(), { recursive: true });
    await Deno.writeFile(cached, tarball);
  }
  await Deno.writeFile(`${dir}/zstd.tgz`, tarball);
  await run("tar", ["-xzf", `${dir}/zstd.tgz`, "-C", dir, ZSTD_SOURCE.lib], "tar");
  return `${dir}/${ZSTD_SOURCE.lib}`;
}

/** Compiles the module into `dir`; returns its bytes. */
async function compile(dir: string): Promise<Uint8Array<ArrayBuffer>> {
  const lib = await zstdSources(dir);
  await Deno.mkdir(`${dir}/shim`);
  for (const [name, text] of Object.entries(SHIM_HEADERS)) {
    await Deno.writeTextFile(`${dir}/shim/${name}`, text);
  }
  return await clang([
    ...CLANG_ARGS,
    "-isystem",
    `${dir}/shim`,
    `-I${lib}`,
    `-I${lib}/common`,
    ...ZSTD_DEFINES,
    `${ROOT}codec/wasm/filters.c`,
    `${ROOT}codec/wasm/zstd_decoder.c`,
    ...ZSTD_DECODER_FILES.map((f) => `${lib}/${f}`),
  ], `${dir}/kernels.wasm`);
}

const OUTPUT = "codec/filters_wasm.ts";

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** The generated module's text for `wasm`. */
async function render(wasm: Uint8Array<ArrayBuffer>, version: string): Promise<string> {
  const b64 = base64(wasm);
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 96) lines.push(`  "${b64.slice(i, i + 96)}"`);
  return `/**
 * GENERATED by \`deno task build:wasm\` (scripts/build_wasm.ts) from
 * codec/wasm/filters.c, codec/wasm/zstd_decoder.c and the decoder of zstd
 * ${ZSTD_SOURCE.zstd} (BSD licence, (c) Meta Platforms, Inc. and affiliates): do not
 * edit. The codec's hot loops and apply's zstd decoder as WebAssembly (loaded
 * by codec/filter_kernels.ts).
 *
 * Bytes: ${wasm.length}; SHA-256 ${await sha256Hex(wasm)}.
 *
 * @module
 */

/** \`clang --version\` of the build (another version may emit other bytes). */
export const FILTERS_WASM_CLANG = ${JSON.stringify(version)};

/** The module's bytes, base64. */
export const FILTERS_WASM_BASE64 =
${lines.join(" +\n")};
`;
}

if (import.meta.main) {
  const check = Deno.args.includes("--check");
  const version = await clangVersion();
  if (version === undefined) {
    console.error("clang not found: install clang and lld (apt-get install clang lld)");
    Deno.exit(check ? 3 : 2);
  }
  const dir = await Deno.makeTempDir({ prefix: "poolboy-wasm-" });
  let wasm: Uint8Array<ArrayBuffer>;
  try {
    wasm = await compile(dir);
  } catch (err) {
    if (!(err instanceof CannotBuild)) throw err;
    console.error(err.message);
    Deno.exit(check ? 3 : 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  if (!check) {
    const output = `${ROOT}${OUTPUT}`;
    await Deno.writeTextFile(output, await render(wasm, version));
    await new Deno.Command("deno", { args: ["fmt", "--quiet", output] }).output();
    console.log(`wrote ${OUTPUT} (${wasm.length} bytes of WebAssembly, ${version})`);
  } else {
    if (FILTERS_WASM_CLANG !== version) {
      console.error(
        `the embedded module was built by "${FILTERS_WASM_CLANG}", this is "${version}": ` +
          "nothing to compare",
      );
      Deno.exit(3);
    }
    if (FILTERS_WASM_BASE64 !== base64(wasm)) {
      console.error(`${OUTPUT} is not a fresh build of its sources: run deno task build:wasm`);
      Deno.exit(1);
    }
    console.log(`${OUTPUT} equals a fresh build (${wasm.length} bytes, ${version})`);
  }
}
