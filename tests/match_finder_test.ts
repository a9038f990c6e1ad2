/**
 * The global match finder (codec/match_finder.ts) and its use by the v2
 * encoder: anchors are content-defined and deterministic, pieces that moved
 * anywhere in the base are found and copied, the table stays within its
 * budget, and no run is ever returned that the base's bytes do not confirm.
 */

import { safetensors } from "./support/safetensors.ts";
import assert from "node:assert/strict";
import { applyFile } from "../codec/applier.ts";
import { encodeFile, type EncodeSummary } from "../codec/encoder.ts";
import {
  anchorsOf,
  type BaseReader,
  DEFAULT_MAX_SLOTS,
  MatchFinder,
  MAX_LOAD,
  MIN_MATCH,
  slotsFor,
} from "../codec/match_finder.ts";
import { writeIndexFile } from "../codec/index_file.ts";
import { headerSize, VERSION_3 } from "../codec/patch_format.ts";
import { sampleRanges } from "../codec/base_samples.ts";
import { concat, randomBytes, withTempDir } from "./helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** A reader over bytes in memory. */
function reader(bytes: Uint8Array): BaseReader {
  return (position, buf) => {
    const n = Math.max(0, Math.min(buf.length, bytes.length - position));
    buf.set(bytes.subarray(position, position + n));
    return n;
  };
}

/** A finder fed `bytes` in pieces of `piece` bytes. */
function finderOf(bytes: Uint8Array, piece = 1 * MiB, maxSlots?: number): MatchFinder {
  const finder = new MatchFinder(bytes.length, { maxSlots });
  for (let at = 0; at < bytes.length; at += piece) {
    finder.feed(at, bytes.subarray(at, Math.min(at + piece, bytes.length)));
  }
  return finder;
}

/** Encodes with the defaults (the finder on), applies, checks the output is the target. */
async function roundtrip(
  dir: string,
  base: Uint8Array,
  target: Uint8Array,
  options: { format?: 1 | 2; baseIndex?: boolean } = {},
): Promise<EncodeSummary> {
  await Deno.writeFile(`${dir}/base`, base);
  await Deno.writeFile(`${dir}/target`, target);
  if (options.baseIndex) await writeIndexFile(`${dir}/base`, `${dir}/base.idx`);
  const encoded = await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/patch`, {
    threads: 1,
    format: options.format,
    baseIndex: options.baseIndex ? `${dir}/base.idx` : undefined,
  });
  await applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`);
  assert.deepEqual(await Deno.readFile(`${dir}/out`), target, "the output is the target");
  return encoded;
}

/** Weight-like bytes: float32 values of one small range (not random bytes). */
function tensor(bytes: number, seed: number): Uint8Array {
  const values = new Float32Array(Math.ceil(bytes / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < values.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    values[i] = ((x >>> 8) / 2 ** 24 - 0.5) * 0.1;
  }
  return new Uint8Array(values.buffer, 0, bytes);
}

/** Tensors of many sizes, a few hundred bytes to 60 KiB. */
function tensors(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < 48; i++) {
    const size = i % 4 === 0 ? 256 + 8 * i : 4 * KiB + ((i * 7919) % (56 * KiB));
    out.push(tensor(size - (size % 4), 100 + i));
  }
  return out;
}

/** The tensors in a deterministic shuffled order. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

// ---------------------------------------------------------------------------
// Anchors

Deno.test("anchors of a fixed input are always the same (golden table)", () => {
  const bytes = randomBytes(4096, 42);
  const level5 = anchorsOf(bytes, 5);
  assert.equal(level5.length, 152);
  assert.deepEqual(level5.slice(0, 8).map((a) => [a.offset, a.key >>> 0]), [
    [40, 1158107870],
    [76, 860421725],
    [79, 1203036887],
    [157, 771052301],
    [212, 1032432000],
    [215, 800600979],
    [308, 726105522],
    [318, 694203725],
  ]);
  const level7 = anchorsOf(bytes, 7).map((a) => a.offset);
  assert.deepEqual(level7, [
    40,
    79,
    212,
    411,
    741,
    910,
    1055,
    1136,
    1152,
    1173,
    1197,
    1246,
    1284,
    1289,
    1327,
    1400,
    1401,
    1418,
    1532,
    1540,
    1603,
    1724,
    1785,
    1856,
    2062,
    2139,
    2443,
    2677,
    2707,
    2723,
    2744,
    2797,
    2838,
    3085,
    3269,
    3528,
    3904,
    3988,
  ]);
  const at5 = new Set(level5.map((a) => a.offset));
  assert.ok(level7.every((o) => at5.has(o)), "a higher level's anchors are a subset of a lower's");
});

Deno.test("a piece has the same anchors wherever it lies (after its first window)", () => {
  const piece = randomBytes(3000, 7);
  const here = anchorsOf(concat(randomBytes(100, 1), piece), 5);
  const there = anchorsOf(concat(randomBytes(777, 2), piece), 5);
  const inside = (list: typeof here, start: number) =>
    list.filter((a) => a.offset >= start).map((a) => [a.offset - start, a.key]);
  assert.ok(inside(here, 100).length > 50);
  assert.deepEqual(inside(here, 100), inside(there, 777));
});

Deno.test("a base fed in pieces of any size finds the same runs as fed whole", () => {
  const base = randomBytes(2 * MiB, 3);
  const target = concat(base.subarray(1_500_000, 1_503_000), base.subarray(20_000, 20_500));
  const whole = finderOf(base, base.length);
  const expected = whole.find(reader(base), 0, target);
  assert.deepEqual(expected, [
    { start: 0, end: 3000, delta: 1_500_000 },
    { start: 3000, end: 3500, delta: 20_000 - 3000 },
  ]);
  for (const piece of [1, 31, 33, 4096, 65_537]) {
    const finder = finderOf(base, piece);
    assert.equal(finder.stats.entries, whole.stats.entries, `pieces of ${piece}`);
    assert.deepEqual(finder.find(reader(base), 0, target), expected, `pieces of ${piece}`);
  }
});

Deno.test("feeding the base out of order is refused", () => {
  const finder = new MatchFinder(1000);
  finder.feed(0, new Uint8Array(100));
  assert.throws(() => finder.feed(200, new Uint8Array(100)), RangeError);
});

// ---------------------------------------------------------------------------
// Memory

Deno.test("the table never grows past its budget, however large the base", () => {
  for (const size of [1 * MiB, 64 * MiB, 4 * 1024 * MiB, 20 * 1024 * MiB]) {
    const slots = slotsFor(size);
    assert.ok(slots <= DEFAULT_MAX_SLOTS, `${size}: ${slots} slots`);
  }
  assert.equal(new MatchFinder(4 * 1024 * MiB - 1).stats.tableBytes, DEFAULT_MAX_SLOTS * 8);
  assert.equal(new MatchFinder(20 * 1024 * MiB).stats.tableBytes, DEFAULT_MAX_SLOTS * 12);
  // A small table fed a base with far more anchors than it holds goes up levels instead.
  const base = randomBytes(8 * MiB, 5);
  const finder = finderOf(base, 1 * MiB, 4096);
  const stats = finder.stats;
  assert.equal(stats.slots, 4096);
  assert.ok(stats.entries <= 4096 * MAX_LOAD, `${stats.entries} entries`);
  assert.ok(stats.entries > 4096 / 4, `${stats.entries} entries`);
  assert.ok(stats.level >= 12, `level ${stats.level}`);
  // ...and still finds a long piece that moved.
  const target = concat(randomBytes(5000, 6), base.subarray(6 * MiB, 6 * MiB + 64 * KiB));
  const runs = finder.find(reader(base), 0, target);
  assert.deepEqual(runs, [{ start: 5000, end: 5000 + 64 * KiB, delta: 6 * MiB - 5000 }]);
});

Deno.test("runs of one byte and short periods store a few entries, not one per byte", () => {
  // A byte whose constant run is an anchor at the finest level (else a run has none at all).
  const fill = [...Array(256).keys()].find((b) => anchorsOf(new Uint8Array(64).fill(b), 5).length);
  assert.ok(fill !== undefined);
  const base = concat(
    randomBytes(512 * KiB, 7),
    new Uint8Array(1 * MiB).fill(fill),
    new Uint8Array(512 * KiB).map((_, i) => i % 7),
  );
  const finder = finderOf(base);
  assert.equal(finder.stats.level, 5);
  // About one entry per 32 random bytes, and next to none for the other 1.5 MiB.
  assert.ok(finder.stats.entries < 512 * KiB / 16, `${finder.stats.entries} entries`);
  assert.ok(finder.stats.entries > 512 * KiB / 64, `${finder.stats.entries} entries`);
  const target = concat(
    randomBytes(1000, 8),
    new Uint8Array(10_000).fill(fill),
    randomBytes(1000, 9),
  );
  const runs = finder.find(reader(base), 0, target);
  assert.equal(runs.length, 1);
  assert.ok(runs[0].start === 1000 && runs[0].end === 11_000, JSON.stringify(runs));
});

// ---------------------------------------------------------------------------
// Never a wrong run

Deno.test("a base whose bytes differ from what was indexed yields only runs its bytes confirm", () => {
  const indexed = randomBytes(1 * MiB, 10);
  const actual = indexed.slice();
  for (let i = 0; i < actual.length; i += 100) actual[i] ^= 0xff; // every window now differs
  const finder = finderOf(indexed);
  const target = concat(indexed.subarray(500_000, 520_000), indexed.subarray(10_000, 30_000));
  assert.equal(finder.find(reader(indexed), 0, target).length, 2, "found when the bytes agree");
  const runs = finder.find(reader(actual), 0, target);
  for (const run of runs) {
    assert.ok(run.end - run.start >= MIN_MATCH);
    assert.deepEqual(
      target.subarray(run.start, run.end),
      actual.subarray(run.start + run.delta, run.end + run.delta),
      "every run is equal to the base as read",
    );
  }
});

Deno.test("a fingerprint that matches bytes that differ yields no run (collisions are verified)", () => {
  // The table claims the target's windows are at offsets holding other bytes.
  const target = randomBytes(64 * KiB, 11);
  const finder = new MatchFinder(256 * KiB);
  finder.feed(0, concat(randomBytes(100 * KiB, 12), target, randomBytes(92 * KiB, 13)));
  const other = randomBytes(256 * KiB, 14);
  assert.deepEqual(finder.find(reader(other), 0, target), []);
  // A base shorter than the table thinks: reads past its end are unequal bytes, not errors.
  assert.deepEqual(finder.find(reader(other.subarray(0, 120 * KiB)), 0, target), []);
});

// ---------------------------------------------------------------------------
// The encoder

Deno.test("a piece of a few hundred bytes moved MiBs away is coded as a COPY", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(6 * MiB, 20);
    const target = base.slice();
    target.set(base.subarray(5 * MiB + 123, 5 * MiB + 123 + 400), 300 * KiB); // moved 4.7 MiB
    const encoded = await roundtrip(dir, base, target);
    const header = headerSize(VERSION_3, sampleRanges(base.length).length);
    assert.ok(
      encoded.patchSize - header < 300,
      `patch ${encoded.patchSize} B (header ${header} B) for 400 moved bytes`,
    );
    assert.equal(encoded.copyBytes, target.length);
  });
});

Deno.test("reordered tensors are coded as COPYs", async () => {
  await withTempDir(async (dir) => {
    const list = tensors();
    const base = concat(...list);
    const target = concat(...shuffled(list, 3));
    const encoded = await roundtrip(dir, base, target);
    assert.ok(encoded.copyBytes >= target.length * 0.99, `${encoded.copyBytes} copied`);
    assert.ok(encoded.patchSize < target.length / 200, `patch ${encoded.patchSize} B`);
  });
});

Deno.test("tensors re-aligned by +8 or +64 bytes of padding are coded as COPYs", async () => {
  for (const pad of [8, 64]) {
    await withTempDir(async (dir) => {
      const list = tensors();
      const base = concat(...list);
      const target = concat(...list.flatMap((t) => [new Uint8Array(pad), t]));
      const encoded = await roundtrip(dir, base, target);
      assert.ok(encoded.copyBytes >= base.length * 0.99, `+${pad}: ${encoded.copyBytes} copied`);
      assert.ok(encoded.patchSize < target.length / 200, `+${pad}: patch ${encoded.patchSize} B`);
    });
  }
});

Deno.test("the same tensors in another container (reordered, re-aligned, new header) are coded as COPYs", async () => {
  await withTempDir(async (dir) => {
    const list = tensors();
    const base = concat(new TextEncoder().encode("ONNX-ish header".repeat(20)), ...list);
    const parts: Uint8Array[] = [new TextEncoder().encode("TFL3 another header".repeat(9))];
    for (const t of shuffled(list, 9)) parts.push(new Uint8Array(16 - (t.length % 16)), t);
    const target = concat(...parts);
    const encoded = await roundtrip(dir, base, target);
    assert.ok(encoded.patchSize < target.length / 100, `patch ${encoded.patchSize} B`);
  });
});

Deno.test("format 1 and an encode from a base index file go without the finder and still round-trip", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(6 * MiB, 20);
    const target = base.slice();
    target.set(base.subarray(5 * MiB + 123, 5 * MiB + 123 + 400), 300 * KiB);
    const v1 = await roundtrip(dir, base, target, { format: 1 });
    assert.ok(v1.literalBytes > 0, "v1 copies whole chunks only");
    const indexed = await roundtrip(dir, base, target, { baseIndex: true });
    assert.ok(indexed.usedBaseIndex);
    assert.ok(indexed.patchSize > 400, "without the finder the moved piece is not found");
  });
});

Deno.test("unchanged same-named tensors a SafeTensors exporter reordered or re-aligned are COPYs, not DELTAs of zeros", async () => {
  const named = tensors().map((t, i): [string, Uint8Array] => [`layer.${i}.weight`, t]);
  for (
    const [order, pad] of [[shuffled(named, 5), 0], [named, 8], [shuffled(named, 6), 64]] as const
  ) {
    await withTempDir(async (dir) => {
      const base = safetensors(named);
      const target = safetensors([...order], pad);
      const encoded = await roundtrip(dir, base, target);
      const weights = named.reduce((sum, [, t]) => sum + t.length, 0);
      assert.ok(encoded.copyBytes >= weights, `pad ${pad}: ${JSON.stringify(encoded)}`);
      assert.ok(encoded.patchSize < weights / 100, `pad ${pad}: patch ${encoded.patchSize} B`);
    });
  }
});

Deno.test("many small tensors (192-byte norms) re-exported in another container are all copied", async () => {
  await withTempDir(async (dir) => {
    const list = [
      ...Array.from({ length: 20 }, (_, i) => tensor(192, 500 + i)),
      ...Array.from({ length: 6 }, (_, i) => tensor(24 * KiB, 600 + i)),
    ];
    const base = concat(new TextEncoder().encode("header".repeat(30)), ...list);
    const parts: Uint8Array[] = [new TextEncoder().encode("another header".repeat(11))];
    for (const t of shuffled(list, 4)) parts.push(new Uint8Array(64 - (t.length % 64) + 8), t);
    const target = concat(...parts);
    const encoded = await roundtrip(dir, base, target);
    const weights = list.reduce((sum, t) => sum + t.length, 0);
    assert.ok(encoded.copyBytes >= weights, `${encoded.copyBytes} of ${weights} copied`);
  });
});
