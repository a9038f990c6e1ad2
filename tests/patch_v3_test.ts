/**
 * Patch format v3 (codec/patch_format.ts, codec/base_samples.ts,
 * patch_reader.ts, applier.ts, docs/spec/patch-v3.md): the header with sampled
 * base ranges, a wrong base refused from the samples before any output
 * exists, the base read once, a failed output explained as a wrong base or
 * corrupt patch data, malformed v3 headers refused as malformed (exit 4), and
 * the spec's test vector.
 */

import assert from "node:assert/strict";
import { applyFile, type ApplySummary } from "../codec/applier.ts";
import { blake3, fromHex, toHex } from "../kernel/blake3.ts";
import { encodeFile } from "../codec/encoder.ts";
import { MalformedPatchError, VerificationError } from "../kernel/errors.ts";
import type { ChunkParams } from "../codec/fastcdc.ts";
import { inspectPatch } from "../codec/inspect.ts";
import {
  decodeHeader,
  encodeHeaderV3,
  HEADER_V3_FIXED_SIZE,
  MAX_SAMPLE_LENGTH,
  MAX_SAMPLES,
  SAMPLE_SIZE,
} from "../codec/patch_format.ts";
import { SAMPLE_COUNT, SAMPLE_LENGTH, sampleRanges } from "../codec/base_samples.ts";
import { concat, randomBytes, withTempDir } from "./helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SMALL: ChunkParams = { min: 4 * KiB, avg: 16 * KiB, max: 64 * KiB };

/** A 3 MiB base and a target that copies most of it, with 100 KiB of new random bytes. */
const BASE = randomBytes(3 * MiB, 31);
const NEW_BYTES = randomBytes(100 * KiB, 32);
const TARGET = concat(BASE.subarray(0, 1 * MiB), NEW_BYTES, BASE.subarray(1 * MiB + 50 * KiB));

/** Writes BASE and TARGET into `dir` and encodes them (format 3 unless told). */
async function encodeFixture(dir: string, format: 2 | 3 = 3): Promise<Uint8Array> {
  await Deno.writeFile(`${dir}/base`, BASE);
  await Deno.writeFile(`${dir}/target`, TARGET);
  await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/patch`, {
    chunk: SMALL,
    threads: 1,
    format,
  });
  return await Deno.readFile(`${dir}/patch`);
}

/** The error a promise rejects with (fails if it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof Error);
    return err;
  }
  assert.fail("expected a rejection");
}

/** Names in `dir` other than the inputs: an output or a temporary file left behind. */
async function leftovers(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!["base", "target", "patch", "wrong-base", "damaged"].includes(entry.name)) {
      names.push(entry.name);
    }
  }
  return names.sort();
}

/**
 * Bytes read from files named `base` or `wrong-base` while `fn` runs: a spy on
 * `Deno.open` marks those files, one on `readSync` (the applier's positional
 * reads) counts what is read from them.
 */
async function countingBaseReads<T>(fn: () => Promise<T>): Promise<{ result: T; bytes: number }> {
  const open = Deno.open;
  const readSync = Deno.FsFile.prototype.readSync;
  const bases = new WeakSet<Deno.FsFile>();
  let bytes = 0;
  Deno.open = async (path: string | URL, options?: Deno.OpenOptions): Promise<Deno.FsFile> => {
    const file = await open(path, options);
    if (/\/(wrong-)?base$/.test(String(path))) bases.add(file);
    return file;
  };
  Deno.FsFile.prototype.readSync = function (this: Deno.FsFile, p: Uint8Array): number | null {
    const n = readSync.call(this, p);
    if (n !== null && bases.has(this)) bytes += n;
    return n;
  };
  try {
    const result = await fn();
    return { result, bytes };
  } finally {
    Deno.open = open;
    Deno.FsFile.prototype.readSync = readSync;
  }
}

/** The [start, end) of every LITERAL's data in a v3 patch. */
function literalData(patch: Uint8Array): [number, number][] {
  const view = new DataView(patch.buffer, patch.byteOffset, patch.byteLength);
  const ranges: [number, number][] = [];
  let at = HEADER_V3_FIXED_SIZE + SAMPLE_SIZE * view.getUint16(86, true);
  while (at < patch.length) {
    const op = patch[at];
    if (op === 0x01) at += 17;
    else if (op === 0x02) {
      const length = Number(view.getBigUint64(at + 1, true));
      ranges.push([at + 9, at + 9 + length]);
      at += 9 + length;
    } else if (op === 0x03) at += 10 + view.getUint32(at + 5, true);
    else if (op === 0x04) at += 18 + view.getUint32(at + 13, true);
    else throw new Error(`unknown op ${op} at ${at}`);
  }
  return ranges;
}

Deno.test("the encoder samples the base deterministically: the whole of a small base in 64 KiB pieces, else first, last and 2 evenly spaced 64 KiB ranges", () => {
  assert.deepEqual(sampleRanges(0), []);
  assert.deepEqual(sampleRanges(5), [{ offset: 0, length: 5 }]);
  assert.deepEqual(sampleRanges(100 * KiB), [
    { offset: 0, length: 64 * KiB },
    { offset: 64 * KiB, length: 36 * KiB },
  ]);
  assert.equal(SAMPLE_COUNT, 4);
  const whole = sampleRanges(4 * SAMPLE_LENGTH);
  assert.equal(whole.length, 4);
  assert.equal(whole.reduce((sum, r) => sum + r.length, 0), 4 * SAMPLE_LENGTH, "covered whole");
  for (const size of [4 * SAMPLE_LENGTH + 1, 3 * MiB, 20 * 1024 * MiB + 7]) {
    const ranges = sampleRanges(size);
    assert.equal(ranges.length, 4, `${size}`);
    assert.deepEqual(ranges[0], { offset: 0, length: SAMPLE_LENGTH });
    assert.deepEqual(ranges[3], { offset: size - SAMPLE_LENGTH, length: SAMPLE_LENGTH });
    for (let i = 1; i < 3; i++) {
      assert.equal(ranges[i].length, SAMPLE_LENGTH);
      assert.equal(ranges[i].offset % 4096, 0, "inner samples start on 4 KiB");
      assert.ok(ranges[i].offset > ranges[i - 1].offset, "in order");
    }
    assert.deepEqual(sampleRanges(size), ranges, "the same ranges every time");
  }
});

Deno.test("a v3 header encodes and decodes: v2's 86 bytes with version 3, sample_count, then 44 bytes per sample", () => {
  const samples = [
    { offset: 0, length: 10, digest: blake3(new Uint8Array([1])) },
    { offset: 90, length: 10, digest: blake3(new Uint8Array([2])) },
  ];
  const header = {
    baseSize: 100,
    targetSize: 7,
    targetDigest: blake3(new Uint8Array([3])),
    baseDigest: blake3(new Uint8Array([4])),
    samples,
  };
  const bytes = encodeHeaderV3(header);
  assert.equal(bytes.length, 88 + 2 * 44);
  assert.equal(new DataView(bytes.buffer).getUint16(4, true), 3);
  assert.equal(new DataView(bytes.buffer).getUint16(86, true), 2);
  assert.deepEqual(decodeHeader(bytes), { version: 3, ...header });
  assert.throws(() => encodeHeaderV3({ ...header, samples: [{ ...samples[0], length: 0 }] }));
  assert.throws(() => encodeHeaderV3({ ...header, samples: [{ ...samples[0], offset: 91 }] }));
});

Deno.test("v3 round trip: the output is the target, inspect lists the samples the encoder chose, and the base is read once", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir);
    const inspected = await inspectPatch(`${dir}/patch`);
    assert.equal(inspected.version, 3);
    assert.equal(inspected.baseBlake3, toHex(blake3(BASE)));
    assert.deepEqual(
      inspected.baseSamples,
      sampleRanges(BASE.length).map((r) => ({
        ...r,
        blake3: toHex(blake3(BASE.subarray(r.offset, r.offset + r.length))),
      })),
    );
    const { result: applied, bytes } = await countingBaseReads(() =>
      applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`)
    );
    assert.deepEqual(await Deno.readFile(`${dir}/out`), TARGET);
    const sampled = 4 * SAMPLE_LENGTH;
    const used = applied.copyBytes + applied.deltaBytes;
    assert.ok(used > 2 * MiB, "most of the target comes from the base");
    assert.equal(bytes, sampled + used, "the samples, then each range the ops use, once");
    assert.equal(applied.baseBytesRead, bytes, "the summary counts the same bytes");
  });
});

Deno.test("a v2 apply of the same pair reads all of the base first, then the ranges again (what v3 avoids)", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir, 2);
    const { result: applied, bytes } = await countingBaseReads(() =>
      applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`)
    );
    assert.equal(bytes, BASE.length + applied.copyBytes + applied.deltaBytes);
    assert.equal(applied.baseBytesRead, bytes);
  });
});

Deno.test("v3: a base that differs in a sampled range is refused before any output exists, naming the range and both digests", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir);
    const ranges = sampleRanges(BASE.length);
    const wrong = BASE.slice();
    const at = ranges[2].offset + 1000;
    wrong[at] ^= 1;
    await Deno.writeFile(`${dir}/wrong-base`, wrong);
    const { result: err, bytes } = await countingBaseReads(() =>
      rejection(applyFile(`${dir}/wrong-base`, `${dir}/patch`, `${dir}/out`))
    );
    assert.ok(err instanceof VerificationError, String(err));
    assert.equal(err.exitCode, 5);
    const { offset, length } = ranges[2];
    assert.ok(err.message.includes(`bytes ${offset}..${offset + length}`), err.message);
    assert.ok(err.message.includes(toHex(blake3(wrong.subarray(offset, offset + length)))));
    assert.ok(err.message.includes(toHex(blake3(BASE.subarray(offset, offset + length)))));
    assert.equal(bytes, 3 * SAMPLE_LENGTH, "only samples 0-2 were read");
    assert.deepEqual(await leftovers(dir), [], "no output, no temporary file");
  });
});

Deno.test("v3: the sample check comes before the output is created (an unwritable output place still reports the wrong base)", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir);
    const wrong = BASE.slice();
    wrong[0] ^= 1;
    await Deno.writeFile(`${dir}/wrong-base`, wrong);
    const err = await rejection(
      applyFile(`${dir}/wrong-base`, `${dir}/patch`, `${dir}/no-such-dir/out`),
    );
    assert.ok(err instanceof VerificationError, String(err));
    assert.match(err.message, /bytes 0\.\.65536 \(sample 0 of 4\)/);
  });
});

Deno.test("v3: a wrong base that passes the samples (changed in an unsampled byte) is refused at the end as a wrong base, nothing committed", async () => {
  await withTempDir(async (dir) => {
    await encodeFixture(dir);
    const ranges = sampleRanges(BASE.length);
    const at = ranges[0].offset + SAMPLE_LENGTH + 100; // between samples 0 and 1, copied by the patch
    assert.ok(at < ranges[1].offset && at < 1 * MiB);
    const wrong = BASE.slice();
    wrong[at] ^= 1;
    await Deno.writeFile(`${dir}/wrong-base`, wrong);
    await Deno.writeFile(`${dir}/out`, new TextEncoder().encode("the previous output"));
    const err = await rejection(applyFile(`${dir}/wrong-base`, `${dir}/patch`, `${dir}/out`));
    assert.ok(err instanceof VerificationError, String(err));
    assert.match(err.message, /^wrong base: /);
    assert.ok(err.message.includes(toHex(blake3(wrong))), "the base's actual BLAKE3");
    assert.ok(err.message.includes(toHex(blake3(BASE))), "the patch's base_blake3");
    assert.match(err.message, /matches the patch's 4 sampled ranges but differs elsewhere/);
    assert.deepEqual(
      await Deno.readFile(`${dir}/out`),
      new TextEncoder().encode("the previous output"),
      "the previous output is untouched",
    );
    assert.deepEqual(await leftovers(dir), ["out"], "no temporary file left");
  });
});

Deno.test("v3: corrupt patch data applied to the right base is explained as a damaged patch, nothing committed", async () => {
  await withTempDir(async (dir) => {
    const patch = await encodeFixture(dir);
    const [[start, end]] = literalData(patch);
    assert.ok(end - start >= 50 * KiB, "the new bytes are a LITERAL");
    const damaged = patch.slice();
    damaged[start + 12345] ^= 0x40;
    await Deno.writeFile(`${dir}/damaged`, damaged);
    const err = await rejection(applyFile(`${dir}/base`, `${dir}/damaged`, `${dir}/out`));
    assert.ok(err instanceof VerificationError, String(err));
    assert.equal(err.exitCode, 5);
    assert.match(err.message, /^corrupt patch data: /);
    assert.match(err.message, /the base is the right one/);
    assert.deepEqual(await leftovers(dir), [], "no output, no temporary file");
  });
});

/** Malformed v3 headers: a name, the change to a real patch, and what the error says. */
const MALFORMED: readonly {
  name: string;
  damage(patch: Uint8Array, view: DataView): Uint8Array;
  says: RegExp;
}[] = [
  {
    name: "a sample count above 64",
    damage: (patch, view) => (view.setUint16(86, MAX_SAMPLES + 1, true), patch),
    says: /claims 65 base samples; at most 64/,
  },
  {
    name: "a sample of length 0",
    damage: (patch, view) => (view.setUint32(88 + 44 * 3 + 8, 0, true), patch),
    says: /base sample 3: len 0 must be 1 to 1048576/,
  },
  {
    name: "a sample longer than 1 MiB",
    damage: (patch, view) => (view.setUint32(88 + 8, MAX_SAMPLE_LENGTH + 1, true), patch),
    says: /base sample 0: len 1048577 must be 1 to 1048576/,
  },
  {
    name: "a sample reaching past base_size",
    damage: (patch, view) => (
      view.setBigUint64(88 + 44 * 3, BigInt(BASE.length - SAMPLE_LENGTH + 1), true), patch
    ),
    says: /base sample 3: base bytes 3080193\.\.3145729 are beyond the base's 3145728 bytes/,
  },
  {
    name: "a sample offset above 2^53",
    damage: (patch, view) => (view.setBigUint64(88, 1n << 60n, true), patch),
    says: /too large/,
  },
  {
    name: "a header longer than the file (cut inside the samples)",
    damage: (patch) => patch.subarray(0, 88 + 44 * 2 + 20),
    says: /truncated: its v3 header with 4 base samples is 264 bytes, only 196 present/,
  },
  {
    name: "a header cut before its sample count",
    damage: (patch) => patch.subarray(0, 87),
    says: /truncated: a v3 header is at least 88 bytes, only 87 present/,
  },
];

for (const c of MALFORMED) {
  Deno.test(`v3: ${c.name} is a malformed patch (exit 4) for apply and inspect, and no output exists`, async () => {
    await withTempDir(async (dir) => {
      const patch = (await encodeFixture(dir)).slice();
      const damaged = c.damage(patch, new DataView(patch.buffer));
      await Deno.writeFile(`${dir}/damaged`, damaged);
      const applied = await rejection(applyFile(`${dir}/base`, `${dir}/damaged`, `${dir}/out`));
      assert.ok(applied instanceof MalformedPatchError, String(applied));
      assert.equal(applied.exitCode, 4);
      assert.match(applied.message, c.says);
      const inspected = await rejection(inspectPatch(`${dir}/damaged`));
      assert.ok(inspected instanceof MalformedPatchError);
      assert.equal(inspected.message, applied.message, "inspect says what apply says");
      assert.deepEqual(await leftovers(dir), []);
    });
  });
}

/** The test vector of docs/spec/patch-v3.md: v2's vector with a v3 header of two samples. */
const VECTOR_HEADER = [
  "504f4f4c",
  "0300",
  "8000000000000000",
  "c000000000000000",
  "6fb6a6d48371c83c0d5baeb60f0d2a5f2044d5aff86032b484bc6ae1e777a515",
  "9c87053a51fcab3ec9886e21878e70ad579909b29c453b798bc65191ff4d2a0b",
  "0200",
  "0000000000000000",
  "40000000",
  "d8323a490b5f2c7013f74baec02d0cea8139597d78482f040ac46ec899070831",
  "6000000000000000",
  "20000000",
  "47d2a18f4c6608a4811611e390df742294e6a98767a3da79c04009b07781f0dc",
].join("");
const VECTOR_OPS = [
  "04000000000000000080000000160000001528b52ffd00586d00002002010000020003125e92c302",
  "03400000001100000000" + "28b52ffd00584500001007070100930016",
].join("");

function vectorBase(): Uint8Array {
  const base = new Uint8Array(128);
  const view = new DataView(base.buffer);
  for (let i = 0; i < 64; i++) view.setUint16(2 * i, 1000 + 37 * i, true);
  return base;
}

Deno.test("the test vector of docs/spec/patch-v3.md: its header is what encodeHeaderV3 writes, and it applies to the target", async () => {
  const base = vectorBase();
  const target = new Uint8Array(192);
  const view = new DataView(target.buffer);
  for (let i = 0; i < 64; i++) view.setUint16(2 * i, 1000 + 37 * i + (i % 2 === 0 ? 1 : -1), true);
  target.fill(7, 128);
  const header = encodeHeaderV3({
    baseSize: 128,
    targetSize: 192,
    targetDigest: blake3(target),
    baseDigest: blake3(base),
    samples: [
      { offset: 0, length: 64, digest: blake3(base.subarray(0, 64)) },
      { offset: 96, length: 32, digest: blake3(base.subarray(96)) },
    ],
  });
  assert.equal(toHex(header), VECTOR_HEADER);
  const patch = concat(header, fromHex(VECTOR_OPS));
  assert.equal(patch.length, 243);
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, base);
    await Deno.writeFile(`${dir}/patch`, patch);
    const applied: ApplySummary = await applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`);
    assert.deepEqual(await Deno.readFile(`${dir}/out`), target);
    assert.equal(applied.deltaOps, 1);
    assert.equal(applied.zliteralOps, 1);
    assert.equal(applied.baseBytesRead, 64 + 32 + 128, "the samples, then the DELTA's range");
  });
});
