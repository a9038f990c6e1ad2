/**
 * The WebAssembly kernels (codec/filter_kernels.ts, built from
 * codec/wasm/filters.c) give exactly the bytes of the TypeScript reference
 * implementations they replace — residue filters, equal-run scan, FastCDC gear
 * loop — on random inputs of every width, odd lengths and unaligned offsets;
 * and the embedded module is the build of its source.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  combine,
  combineJs,
  combineShuffle,
  shuffle,
  shuffleJs,
  uncombine,
  uncombineJs,
  unshuffle,
  unshuffleJs,
  unshuffleUncombine,
} from "../codec/residue_filter.ts";
import { filterKernels, KERNEL_REGION, newFilterKernels } from "../codec/filter_kernels.ts";
import { RunScanner } from "../codec/equal_runs.ts";
import { chunkMasks, type ChunkParams, findCut, findCutJs } from "../codec/fastcdc.ts";
import type { Filter } from "../codec/patch_format.ts";
import { randomBytes } from "./helpers.ts";

const WIDTHS = [1, 2, 4] as const;
const SHUFFLES = ["none", "bytes", "bits"] as const;
const COMBINES = ["xor", "sub"] as const;
const FILTERS: Filter[] = WIDTHS.flatMap((width) =>
  SHUFFLES.flatMap((shuffle) => COMBINES.map((combine) => ({ width, shuffle, combine })))
);
/** Every short length (tails, fewer than 16 elements), odd ones, and the largest a kernel takes. */
const LENGTHS = [
  ...Array.from({ length: 80 }, (_, i) => i),
  127,
  129,
  255,
  1001,
  4097,
  65535,
  65536 + 13,
  KERNEL_REGION - 1,
  KERNEL_REGION,
];

/** `n` random bytes at byte offset `skew` of their buffer (so nothing may rely on alignment). */
function at(n: number, seed: number, skew: number): Uint8Array {
  return randomBytes(n + skew, seed).subarray(skew);
}

/** A target that differs from `base` in about one byte of `every`, as a fine-tune does. */
function nudged(base: Uint8Array, every: number, seed: number, skew: number): Uint8Array {
  const out = at(base.length, seed, skew);
  const noise = randomBytes(base.length, seed + 1);
  for (let i = 0; i < base.length; i++) out[i] = noise[i] % every === 0 ? base[i] ^ 1 : base[i];
  return out;
}

Deno.test("the kernels are available here (otherwise every other check compares JS with itself)", () => {
  assert.ok(filterKernels() !== undefined);
});

Deno.test("combine and uncombine in WebAssembly equal the reference for every filter, length and offset", () => {
  let seed = 1;
  for (const filter of FILTERS) {
    for (const n of LENGTHS) {
      const skew = seed % 4;
      const base = at(n, seed++, skew);
      const target = nudged(base, 3, seed++, (skew + 1) % 4);
      const want = new Uint8Array(n);
      const got = at(n, seed++, 3).fill(0x5a);
      combineJs(target, base, filter, want);
      combine(target, base, filter, got);
      assert.deepEqual(got, want, `combine ${JSON.stringify(filter)} n=${n}`);
      const back = new Uint8Array(n);
      const backJs = new Uint8Array(n);
      uncombineJs(want, base, filter, backJs);
      uncombine(want, base, filter, back);
      assert.deepEqual(back, backJs, `uncombine ${JSON.stringify(filter)} n=${n}`);
      assert.deepEqual(back, target);
    }
  }
});

Deno.test("uncombine in WebAssembly may write over its residue, as the reference may", () => {
  for (const filter of FILTERS) {
    const base = at(1001, 7, 1);
    const target = nudged(base, 2, 8, 3);
    const residue = new Uint8Array(1001);
    combineJs(target, base, filter, residue);
    uncombine(residue, base, filter, residue);
    assert.deepEqual(residue, target);
  }
});

Deno.test("shuffle and unshuffle in WebAssembly equal the reference for every filter, length and offset", () => {
  let seed = 100;
  for (const filter of FILTERS) {
    if (filter.combine === "sub") continue; // shuffles ignore combine
    for (const n of LENGTHS) {
      const src = at(n, seed++, seed % 4);
      const want = new Uint8Array(n);
      const got = at(n, seed++, 2).fill(0x5a);
      shuffleJs(src, filter, want);
      shuffle(src, filter, got);
      assert.deepEqual(got, want, `shuffle ${JSON.stringify(filter)} n=${n}`);
      const back = new Uint8Array(n);
      unshuffle(want, filter, back);
      const backJs = new Uint8Array(n);
      unshuffleJs(want, filter, backJs);
      assert.deepEqual(back, backJs, `unshuffle ${JSON.stringify(filter)} n=${n}`);
      assert.deepEqual(back, src);
    }
  }
});

Deno.test("combineShuffle is combine then shuffle, in WebAssembly and beyond the kernels' region", () => {
  for (const filter of FILTERS) {
    for (const n of [0, 33, 4097, KERNEL_REGION, KERNEL_REGION + 5]) {
      const base = at(n, n + 1, 1);
      const target = nudged(base, 4, n + 2, 2);
      const residue = new Uint8Array(n);
      const want = new Uint8Array(n);
      combineJs(target, base, filter, residue);
      shuffleJs(residue, filter, want);
      const got = new Uint8Array(n);
      combineShuffle(target, base, filter, got, new Uint8Array(n));
      assert.deepEqual(got, want, `${JSON.stringify(filter)} n=${n}`);
    }
  }
});

Deno.test("unshuffleUncombine undoes combine then shuffle, in WebAssembly and beyond the kernels' region", () => {
  for (const filter of FILTERS) {
    for (const n of [0, 7, 33, 4097, KERNEL_REGION, KERNEL_REGION + 5]) {
      const base = at(n, n + 11, 3);
      const target = nudged(base, 5, n + 12, 1);
      const residue = new Uint8Array(n);
      const planes = new Uint8Array(n);
      combineJs(target, base, filter, residue);
      shuffleJs(residue, filter, planes);
      const got = at(n, 9, 2).fill(0x33);
      unshuffleUncombine(planes, base, filter, got, new Uint8Array(n));
      assert.deepEqual(got, target, `${JSON.stringify(filter)} n=${n}`);
    }
  }
});

Deno.test("the filters beyond the kernels' region run the reference and give its bytes", () => {
  const n = KERNEL_REGION + 29;
  const base = at(n, 5, 1);
  const target = nudged(base, 3, 6, 0);
  for (const filter of FILTERS.filter((f) => f.shuffle === "bits")) {
    const want = new Uint8Array(n);
    const got = new Uint8Array(n);
    combineJs(target, base, filter, want);
    combine(target, base, filter, got);
    assert.deepEqual(got, want);
  }
});

/** The runs both scans find over `target` against `base`, cut into windows of `window` bytes. */
function scanBoth(target: Uint8Array, base: Uint8Array, window: number, minRun: number) {
  const wasm = new RunScanner(7, minRun, { longRun: 256, maxShort: 8 });
  const js = new RunScanner(7, minRun, { longRun: 256, maxShort: 8 });
  for (let i = 0; i < target.length; i += window) {
    const t = target.subarray(i, i + window);
    const b = base.subarray(i, Math.min(i + window, base.length));
    wasm.scan(t, b);
    js.scanJs(t, b);
  }
  return { wasm: wasm.finish(), js: js.finish() };
}

Deno.test("the equal-run scan in WebAssembly finds the reference's runs, across windows and short bases", () => {
  for (const [every, minRun] of [[2, 1], [7, 4], [40, 24], [300, 24], [5000, 24]] as const) {
    for (const n of [0, 5, 100, 4097, 300_001, KERNEL_REGION + 77]) {
      const base = at(n, every + n, 1);
      const target = nudged(base, every, n + 3, 3);
      for (const window of [13, 4096, KERNEL_REGION, 2 * KERNEL_REGION]) {
        if (window < 4096 && n > 5000) continue;
        const { wasm, js } = scanBoth(target, base, window, minRun);
        assert.deepEqual(wasm, js, `every ${every} n ${n} window ${window}`);
        const short = scanBoth(target, base.subarray(0, n >> 1), window, minRun);
        assert.deepEqual(short.wasm, short.js, `short base, every ${every} n ${n}`);
      }
    }
  }
});

Deno.test("findCut in WebAssembly cuts where the reference does, for small and default parameters", () => {
  const params: ChunkParams[] = [
    { min: 64, avg: 256, max: 1024 },
    { min: 256, avg: 1024, max: 4096 },
    { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 },
    { min: 64, avg: 2 * 1024 * 1024, max: 3 * 1024 * 1024 },
  ];
  const data = at(6 * 1024 * 1024 + 3, 42, 1);
  const zeros = new Uint8Array(5 * 1024 * 1024);
  for (const p of params) {
    const masks = chunkMasks(p.avg);
    for (const bytes of [data, zeros]) {
      let cuts = 0;
      for (let start = 0; start < bytes.length && cuts < 200; cuts++) {
        const got = findCut(bytes, start, bytes.length, p, masks);
        assert.equal(got, findCutJs(bytes, start, bytes.length, p, masks), `${JSON.stringify(p)}`);
        start += got;
      }
    }
  }
});

Deno.test("one kernel instance holds a fixed memory of a few MiB", () => {
  const k = newFilterKernels();
  assert.ok(k.memoryBytes >= 2 * KERNEL_REGION && k.memoryBytes <= 3 * 1024 * 1024);
});

Deno.test("the embedded modules are fresh builds of codec/wasm/filters.c and codec/wasm/zstd_decoder.c (when the same clang is here)", async () => {
  const script = fileURLToPath(new URL("../scripts/build_wasm.ts", import.meta.url));
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-run",
      "--allow-env",
      "--allow-net=registry.npmjs.org",
      script,
      "--check",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (out.code === 3) {
    console.log(`SKIPPED: cannot rebuild the module here: ${said.trim()}`);
    return;
  }
  assert.equal(out.code, 0, said);
});
