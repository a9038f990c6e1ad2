/**
 * Specification of encode + apply as a pair (codec/encoder.ts, codec/applier.ts,
 * codec/op_writer.ts, codec/inspect.ts): for any base and target, applying the
 * encoded patch to the base rebuilds the target byte for byte, and the patch
 * reuses the base wherever the content allows. The exact op shapes are those of
 * format 1; every pair is also encoded as format 2, which must rebuild the
 * same target and never be larger than v1 but for its longer header and a few
 * bytes per chunk, as format 3: v2's ops byte for byte after a header with
 * base samples, applied reading each base byte it needs once, and as format 4
 * (the default): v3's ops with varint heads, the same output, the base read once.
 */

import { SAMPLE_COUNT, SAMPLE_LENGTH } from "../codec/base_samples.ts";
import assert from "node:assert/strict";
import { encodeFile, type EncodeSummary } from "../codec/encoder.ts";
import { applyFile, type ApplySummary } from "../codec/applier.ts";
import { inspectPatch } from "../codec/inspect.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { type ChunkParams, DEFAULT_CHUNK_PARAMS } from "../codec/fastcdc.ts";
import { COPY_OP_SIZE, HEADER_V1_SIZE, LITERAL_HEAD_SIZE } from "../codec/patch_format.ts";
import { LITERAL_RUN_V4 } from "../codec/op_writer.ts";
import { concat, randomBytes, readFile, withTempDir, writeFile } from "./helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** Small chunks keep the tests fast and the files many chunks long. */
const SMALL: ChunkParams = { min: 4 * KiB, avg: 16 * KiB, max: 64 * KiB };

interface Roundtrip {
  encoded: EncodeSummary;
  applied: ApplySummary;
  patch: Uint8Array;
}

/**
 * Writes base and target, encodes, applies, and checks what holds for every
 * pair: the output is the target, the patch's size is what its ops add up to,
 * and encode, apply and inspect agree on the counts.
 */
async function roundtrip(
  dir: string,
  base: Uint8Array,
  target: Uint8Array,
  chunk: ChunkParams = SMALL,
): Promise<Roundtrip> {
  const [basePath, targetPath, patchPath, outPath] = ["base", "target", "patch", "out"].map(
    (name) => `${dir}/${name}`,
  );
  await writeFile(basePath, base);
  await writeFile(targetPath, target);
  const encoded = await encodeFile(basePath, targetPath, patchPath, { chunk, format: 1 });
  const applied = await applyFile(basePath, patchPath, outPath);
  const out = await readFile(outPath);
  assert.equal(out.length, target.length, "output has the target's size");
  assert.ok(out.every((byte, i) => byte === target[i]), "output is byte-identical to target");

  const patch = await readFile(patchPath);
  assert.equal(encoded.patchSize, patch.length);
  assert.equal(encoded.baseSize, base.length);
  assert.equal(encoded.targetSize, target.length);
  assert.equal(encoded.targetBlake3, toHex(blake3(target)));
  assert.equal(encoded.copyBytes + encoded.literalBytes, target.length, "ops cover the target");
  assert.equal(
    patch.length,
    HEADER_V1_SIZE + COPY_OP_SIZE * encoded.copyOps +
      LITERAL_HEAD_SIZE * encoded.literalOps + encoded.literalBytes,
    "the patch is its header plus its ops, nothing else",
  );

  const counts = (s: EncodeSummary | ApplySummary | Awaited<ReturnType<typeof inspectPatch>>) => ({
    copyOps: s.copyOps,
    copyBytes: s.copyBytes,
    literalOps: s.literalOps,
    literalBytes: s.literalBytes,
    patchSize: s.patchSize,
    baseSize: s.baseSize,
    targetSize: s.targetSize,
    targetBlake3: s.targetBlake3,
  });
  assert.deepEqual(counts(applied), counts(encoded), "apply reads the ops encode wrote");
  const inspected = await inspectPatch(patchPath);
  assert.equal(inspected.version, 1);

  // Every thread count writes the same patch, and apply on a Worker the same output.
  for (const threads of [2, 3]) {
    const again = await encodeFile(basePath, targetPath, `${patchPath}-${threads}`, {
      chunk,
      threads,
      format: 1,
    });
    assert.equal(again.threads, threads);
    assert.deepEqual(await readFile(`${patchPath}-${threads}`), patch, `${threads} threads`);
    await Deno.remove(`${patchPath}-${threads}`);
  }
  const onWorker = await applyFile(basePath, patchPath, `${outPath}-worker`, { threads: 1 });
  assert.equal(onWorker.threads, 1);
  assert.deepEqual(counts(onWorker), counts(encoded), "apply on a Worker reads the same ops");
  assert.deepEqual(await readFile(`${outPath}-worker`), target);
  await Deno.remove(`${outPath}-worker`);
  assert.deepEqual(counts(inspected), counts(encoded), "inspect reports the encode summary");
  await v2Roundtrip(basePath, targetPath, target, chunk, encoded);
  return { encoded, applied, patch };
}

/** The same pair as format 2: same output, counts agree, same bytes at any thread count. */
async function v2Roundtrip(
  basePath: string,
  targetPath: string,
  target: Uint8Array,
  chunk: ChunkParams,
  v1: EncodeSummary,
): Promise<void> {
  const patchPath = `${targetPath}.v2`;
  const outPath = `${targetPath}.v2-out`;
  const encoded = await encodeFile(basePath, targetPath, patchPath, { chunk, format: 2 });
  const applied = await applyFile(basePath, patchPath, outPath);
  assert.deepEqual(await readFile(outPath), target, "v2: output is the target");
  const inspected = await inspectPatch(patchPath);
  assert.equal(inspected.version, 2);
  const counts = (s: EncodeSummary | ApplySummary | Awaited<ReturnType<typeof inspectPatch>>) => [
    s.copyOps,
    s.copyBytes,
    s.literalOps,
    s.literalBytes,
    s.zliteralOps,
    s.zliteralBytes,
    s.deltaOps,
    s.deltaBytes,
    s.patchSize,
  ];
  assert.deepEqual(counts(applied), counts(encoded), "v2: apply reads the ops encode wrote");
  assert.deepEqual(counts(inspected), counts(encoded), "v2: inspect agrees");
  assert.equal(
    encoded.copyBytes + encoded.literalBytes + encoded.zliteralBytes + encoded.deltaBytes,
    target.length,
    "v2: ops cover the target",
  );
  assert.ok(
    encoded.patchSize <= v1.patchSize + 32 + 16 * encoded.targetChunks,
    `v2 ${encoded.patchSize} bytes, v1 ${v1.patchSize}`,
  );
  const again = await encodeFile(basePath, targetPath, `${patchPath}-3`, {
    chunk,
    threads: 3,
    format: 2,
  });
  assert.equal(again.patchSize, encoded.patchSize);
  assert.deepEqual(await readFile(`${patchPath}-3`), await readFile(patchPath), "v2: 3 threads");
  await v3Roundtrip(basePath, targetPath, target, chunk, await readFile(patchPath), applied);
  for (const path of [patchPath, `${patchPath}-3`, outPath]) await Deno.remove(path);
}

/**
 * The same pair as format 3: v2's ops byte for byte after a header
 * of 88 bytes and 44 per base sample, the same output, and the base read once:
 * its samples, then the ranges the ops use (v2 also reads all of it first).
 */
async function v3Roundtrip(
  basePath: string,
  targetPath: string,
  target: Uint8Array,
  chunk: ChunkParams,
  v2Patch: Uint8Array,
  v2Applied: ApplySummary,
): Promise<void> {
  const patchPath = `${targetPath}.v3`;
  const outPath = `${targetPath}.v3-out`;
  const encoded = await encodeFile(basePath, targetPath, patchPath, { chunk, format: 3 });
  const inspected = await inspectPatch(patchPath);
  assert.equal(inspected.version, 3);
  const samples = inspected.baseSamples ?? [];
  const sampled = samples.reduce((sum, s) => sum + s.length, 0);
  assert.equal(
    sampled,
    Math.min(encoded.baseSize, SAMPLE_COUNT * SAMPLE_LENGTH),
    "v3: the samples' bytes",
  );
  const patch = await readFile(patchPath);
  const header = 88 + 44 * samples.length;
  assert.equal(patch.length, encoded.patchSize);
  assert.deepEqual(patch.subarray(header), v2Patch.subarray(86), "v3: v2's ops, byte for byte");
  const applied = await applyFile(basePath, patchPath, outPath);
  assert.deepEqual(await readFile(outPath), target, "v3: output is the target");
  const used = applied.copyBytes + applied.deltaBytes;
  assert.equal(applied.baseBytesRead, sampled + used, "v3: the base is read once");
  assert.equal(v2Applied.baseBytesRead, encoded.baseSize + used, "v2: all of it, then the ops");
  for (const path of [patchPath, outPath]) await Deno.remove(path);
  await v4Roundtrip(basePath, targetPath, target, chunk, encoded, applied);
}

/**
 * The same pair as format 4, the default: the same ops as v3 (its counts and
 * bytes), the same output and base reads, and a patch no larger than v3's but
 * for v4's LITERAL heads (at most 4 bytes per 256 KiB of literal bytes).
 */
async function v4Roundtrip(
  basePath: string,
  targetPath: string,
  target: Uint8Array,
  chunk: ChunkParams,
  v3: EncodeSummary,
  v3Applied: ApplySummary,
): Promise<void> {
  const patchPath = `${targetPath}.v4`;
  const outPath = `${targetPath}.v4-out`;
  const encoded = await encodeFile(basePath, targetPath, patchPath, { chunk });
  const inspected = await inspectPatch(patchPath);
  assert.equal(inspected.version, 4, "format 4 is the default");
  assert.equal(inspected.patchSize, encoded.patchSize);
  for (const k of ["copyOps", "copyBytes", "literalBytes", "zliteralOps", "deltaOps"] as const) {
    assert.equal(encoded[k], v3[k], `v4: ${k} as in v3`);
  }
  assert.ok(
    encoded.patchSize <= v3.patchSize + 4 * Math.ceil(encoded.literalBytes / LITERAL_RUN_V4),
    `v4 ${encoded.patchSize} B, v3 ${v3.patchSize} B`,
  );
  const applied = await applyFile(basePath, patchPath, outPath);
  assert.deepEqual(await readFile(outPath), target, "v4: output is the target");
  assert.equal(applied.baseBytesRead, v3Applied.baseBytesRead, "v4: the base read as v3 reads it");
  for (const path of [patchPath, outPath]) await Deno.remove(path);
}

/** `data` with `insert` placed at `at`. */
function inserted(data: Uint8Array, at: number, insert: Uint8Array): Uint8Array<ArrayBuffer> {
  return concat(data.subarray(0, at), insert, data.subarray(at));
}

Deno.test("identical files encode as one COPY of the whole base and no literal", async () => {
  await withTempDir(async (dir) => {
    const data = randomBytes(3 * MiB + 5, 1);
    const { encoded } = await roundtrip(dir, data, data);
    assert.equal(encoded.copyOps, 1, "contiguous COPYs are merged into one");
    assert.equal(encoded.copyBytes, data.length);
    assert.equal(encoded.literalOps, 0);
    assert.equal(encoded.literalBytes, 0);
    assert.equal(encoded.patchSize, HEADER_V1_SIZE + COPY_OP_SIZE);
    assert.ok(encoded.baseChunks > 100 && encoded.targetChunks === encoded.baseChunks);
  });
});

Deno.test("identical 20 MiB files with the default chunk sizes merge into exactly one COPY", async () => {
  await withTempDir(async (dir) => {
    const data = randomBytes(20 * MiB, 2);
    const { encoded } = await roundtrip(dir, data, data, DEFAULT_CHUNK_PARAMS);
    assert.equal(encoded.copyOps, 1);
    assert.equal(encoded.copyBytes, data.length);
    assert.equal(encoded.literalBytes, 0);
    assert.deepEqual(encoded.chunk, DEFAULT_CHUNK_PARAMS);
    assert.ok(encoded.baseChunks > 4, `${encoded.baseChunks} chunks`);
  });
});

Deno.test("an empty base gives an all-literal patch in one LITERAL op", async () => {
  await withTempDir(async (dir) => {
    const target = randomBytes(1 * MiB + 3, 3);
    const { encoded } = await roundtrip(dir, new Uint8Array(0), target);
    assert.equal(encoded.copyOps, 0);
    assert.equal(encoded.literalOps, 1);
    assert.equal(encoded.literalBytes, target.length);
    assert.equal(encoded.baseChunks, 0);
  });
});

Deno.test("an empty target gives a 54-byte patch that applies to an empty file", async () => {
  await withTempDir(async (dir) => {
    const { encoded, patch } = await roundtrip(dir, randomBytes(100 * KiB, 4), new Uint8Array(0));
    assert.equal(patch.length, 54);
    assert.equal(encoded.copyOps + encoded.literalOps, 0);
    assert.equal(encoded.targetChunks, 0);
    assert.equal(
      encoded.targetBlake3,
      "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    );
    assert.equal((await Deno.stat(`${dir}/out`)).size, 0);
  });
});

Deno.test("two empty files give a 54-byte patch and an empty output", async () => {
  await withTempDir(async (dir) => {
    const { encoded, patch } = await roundtrip(dir, new Uint8Array(0), new Uint8Array(0));
    assert.equal(patch.length, 54);
    assert.equal(encoded.baseSize + encoded.targetSize, 0);
  });
});

Deno.test("a target unrelated to the base is all literal, in one LITERAL op", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(2 * MiB, 5);
    const target = randomBytes(3 * MiB + 17, 6); // > the writer's 1 MiB buffer
    const { encoded } = await roundtrip(dir, base, target);
    assert.equal(encoded.copyBytes, 0);
    assert.equal(encoded.literalBytes, target.length);
    assert.equal(encoded.literalOps, 1, "consecutive literal chunks merge into one op");
  });
});

Deno.test("one-byte files and files shorter than min chunk round-trip", async () => {
  await withTempDir(async (dir) => {
    const one = new Uint8Array([0x42]);
    let r = await roundtrip(dir, one, one);
    assert.equal(r.encoded.copyOps, 1);
    r = await roundtrip(dir, one, new Uint8Array([0x43]));
    assert.equal(r.encoded.literalBytes, 1);
    const small = randomBytes(SMALL.min - 1, 7);
    r = await roundtrip(dir, small, small);
    assert.equal(r.encoded.copyBytes, small.length);
  });
});

Deno.test("bytes appended to the base: all of the base but its last chunk is copied", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(4 * MiB, 8);
    const appended = randomBytes(100 * KiB, 9);
    const { encoded } = await roundtrip(dir, base, concat(base, appended));
    // The base's last chunk was cut by end-of-file; in the target it continues.
    assert.ok(encoded.copyBytes >= base.length - SMALL.max, `copied ${encoded.copyBytes}`);
    assert.ok(encoded.literalBytes <= appended.length + SMALL.max);
    assert.equal(encoded.copyOps, 1);
  });
});

Deno.test("bytes prepended to the base: only the first chunk or two are literal", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(4 * MiB, 10);
    const prefix = randomBytes(100, 11);
    const { encoded } = await roundtrip(dir, base, concat(prefix, base));
    assert.ok(encoded.copyBytes >= base.length - 2 * SMALL.max, `copied ${encoded.copyBytes}`);
    assert.ok(encoded.literalBytes <= prefix.length + 2 * SMALL.max);
  });
});

Deno.test("bytes inserted in the middle: only chunks around the insertion are literal", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(4 * MiB, 12);
    const insert = randomBytes(50 * KiB, 13);
    const target = inserted(base, 2 * MiB + 333, insert);
    const { encoded } = await roundtrip(dir, base, target);
    assert.ok(encoded.copyBytes >= base.length - 4 * SMALL.max, `copied ${encoded.copyBytes}`);
    assert.ok(encoded.literalBytes <= insert.length + 4 * SMALL.max);
    assert.ok(encoded.copyOps >= 2 && encoded.copyOps <= 3, `${encoded.copyOps} COPY ops`);
  });
});

Deno.test("a target shorter than the base (truncated, or a rollback) round-trips", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(3 * MiB, 14);
    const { encoded } = await roundtrip(dir, base, base.subarray(0, 2 * MiB + 99));
    assert.ok(encoded.copyBytes >= 2 * MiB - SMALL.max);
  });
});

Deno.test("a target that reorders the base's halves copies both from the base", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(4 * MiB, 15);
    const half = 2 * MiB;
    const target = concat(base.subarray(half), base.subarray(0, half));
    const { encoded } = await roundtrip(dir, base, target);
    assert.ok(encoded.copyBytes >= base.length - 4 * SMALL.max, `copied ${encoded.copyBytes}`);
    assert.ok(encoded.copyOps >= 2);
  });
});

Deno.test("repeated content (runs of zeros) round-trips though every chunk has the same digest", async () => {
  await withTempDir(async (dir) => {
    const base = new Uint8Array(1 * MiB);
    const target = new Uint8Array(1.5 * MiB + 10);
    const { encoded } = await roundtrip(dir, base, target);
    // Zeros are cut at max: every full chunk is found in the base.
    assert.ok(encoded.copyBytes >= target.length - SMALL.max);
  });
});

Deno.test("many small scattered edits in a 16 MiB file leave most bytes as COPY", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(16 * MiB, 16);
    const target = base.slice();
    const positions = randomBytes(80, 17);
    const view = new DataView(positions.buffer);
    for (let k = 0; k < 20; k++) {
      const at = view.getUint32(4 * k, true) % target.length;
      target[at] ^= 0xff;
    }
    const { encoded } = await roundtrip(dir, base, target);
    assert.ok(
      encoded.copyBytes >= 0.9 * target.length,
      `copied ${encoded.copyBytes} of ${target.length}`,
    );
    // Each edit disturbs a few chunks at most.
    assert.ok(encoded.literalBytes <= 20 * 3 * SMALL.max, `literal ${encoded.literalBytes}`);
    assert.ok(encoded.literalOps <= 20);
  });
});

Deno.test("a file many times larger than the chunk buffer round-trips with an edit in every region", async () => {
  await withTempDir(async (dir) => {
    // The encoder's buffer is 2 * max = 128 KiB here; the file spans 80 of them.
    const base = randomBytes(10 * MiB, 18);
    let target = base.slice();
    for (let at = 1 * MiB; at < 10 * MiB; at += 2 * MiB) {
      target = inserted(target, at, randomBytes(1000, at));
    }
    const { encoded } = await roundtrip(dir, base, target);
    assert.ok(encoded.copyBytes >= 0.9 * base.length, `copied ${encoded.copyBytes}`);
  });
});

Deno.test("a 40 MiB pair with the default chunk sizes (ten 4 MiB buffers) round-trips", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(40 * MiB, 19);
    const target = inserted(base, 20 * MiB, randomBytes(4096, 20));
    const { encoded } = await roundtrip(dir, base, target, DEFAULT_CHUNK_PARAMS);
    assert.ok(
      encoded.copyBytes >= base.length - 4 * DEFAULT_CHUNK_PARAMS.max,
      `copied ${encoded.copyBytes}`,
    );
    assert.ok(encoded.copyOps >= 2 && encoded.copyOps <= 3);
  });
});

Deno.test("apply rebuilds the same output whatever its buffer size, in the main thread or on a Worker", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(400 * KiB, 21);
    const target = inserted(base, 200 * KiB, randomBytes(70 * KiB, 22));
    await roundtrip(dir, base, target);
    for (const bufferSize of [64, 1000, 4 * MiB]) {
      for (const threads of [0, 1] as const) {
        const outPath = `${dir}/out-${bufferSize}-${threads}`;
        await applyFile(`${dir}/base`, `${dir}/patch`, outPath, { bufferSize, threads });
        assert.deepEqual(await readFile(outPath), target, `${bufferSize}-byte buffers, ${threads}`);
      }
    }
  });
});

Deno.test("encode replaces an existing patch file and leaves no temporary file", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/patch`, new TextEncoder().encode("an old patch"));
    const data = randomBytes(200 * KiB, 23);
    await roundtrip(dir, data, data);
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["base", "out", "patch", "target"]);
  });
});

Deno.test("applyFile refuses a buffer size below 64 bytes instead of looping", async () => {
  await withTempDir(async (dir) => {
    const data = randomBytes(100_000, 7);
    await writeFile(`${dir}/base`, data);
    await encodeFile(`${dir}/base`, `${dir}/base`, `${dir}/patch`);
    for (const bufferSize of [0, 1, 63, Number.NaN]) {
      await assert.rejects(
        () => applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`, { bufferSize }),
        RangeError,
      );
    }
  });
});
