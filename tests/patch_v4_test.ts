/**
 * Patch format v4 (docs/spec/patch-v4.md): varints and zigzag offsets, the
 * sample-range rule, the spec's test vector byte for byte, every op kind
 * through the writer, reader and applier, the encoder's v4 patches against
 * its v3 ones, and every malformed v4 patch refused with the right error
 * class and exit code before any output exists.
 *
 * @module
 */

import assert from "node:assert/strict";
import { applyFile } from "../codec/applier.ts";
import { blake3, fromHex, toHex } from "../kernel/blake3.ts";
import { encodeFile } from "../codec/encoder.ts";
import { MalformedPatchError, VerificationError } from "../kernel/errors.ts";
import { inspectPatch } from "../codec/inspect.ts";
import {
  type BaseSample,
  COPY_OP_SIZE,
  decodeHeader,
  decodeVarint,
  DELTA_HEAD_SIZE,
  drecordsHeadSize,
  encodeHeaderV3,
  encodeHeaderV4,
  encodeOpHeadV4,
  LITERAL_HEAD_SIZE,
  maxSampleCount,
  NO_FILTER,
  type OpHead,
  opHeadSize,
  pushVarint,
  sampleRangesOf,
  unzigzag,
  varintSize,
  zigzag,
  ZLITERAL_HEAD_SIZE,
  zrecordsHeadSize,
} from "../codec/patch_format.ts";
import { SAMPLE_COUNT, sampleRanges } from "../codec/base_samples.ts";
import { LITERAL_RUN_V4, OpWriter } from "../codec/op_writer.ts";
import { type PatchOp, PatchReader } from "../codec/patch_reader.ts";
import { encodeRecords, type RecordLayout } from "../codec/record_filter.ts";
import { BufferedWriter } from "../kernel/file_io.ts";
import { bufferSource, concat, randomBytes, withTempDir } from "./helpers.ts";
import { zstd } from "./support/v2_patches.ts";
import { quantFinetunePair } from "../testkit/gguf_pairs.ts";
import { assertUserError, EXIT, poolboy } from "./cli_helpers.ts";
import { Q8_LIKE, Q8_LIKE_Z, SUB_BYTES_2 } from "./support/record_layouts.ts";
import { roundtripFormat, SMALL_CHUNKS } from "./support/format_roundtrip.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a rejection");
}

/** Files left in `dir` besides the inputs (an output or a temporary file would show here). */
async function leftovers(dir: string, inputs: readonly string[]): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (!inputs.includes(entry.name)) names.push(entry.name);
  }
  return names.sort();
}

// ---------------------------------------------------------------------------
// Varints, zigzag, sample ranges

Deno.test("varints are canonical LEB128: each value round-trips in varintSize bytes, up to 2^53 - 1 in 8", () => {
  const values = [0, 1, 127, 128, 255, 300, 16383, 16384, 2 ** 21, 2 ** 35 + 7, 2 ** 49 - 1];
  for (const value of [...values, 2 ** 49, Number.MAX_SAFE_INTEGER]) {
    const out: number[] = [];
    pushVarint(out, value);
    assert.equal(out.length, varintSize(value), `${value}`);
    const decoded = decodeVarint(new Uint8Array(out), 0);
    assert.deepEqual(decoded, { ok: true, value, size: out.length }, `${value}`);
  }
  const bytes = (value: number) => {
    const out: number[] = [];
    pushVarint(out, value);
    return toHex(new Uint8Array(out));
  };
  assert.equal(bytes(0), "00");
  assert.equal(bytes(127), "7f");
  assert.equal(bytes(128), "8001");
  assert.equal(bytes(300), "ac02");
  assert.equal(bytes(Number.MAX_SAFE_INTEGER), "ffffffffffffff0f");
  assert.throws(() => pushVarint([], -1), RangeError);
  assert.throws(() => pushVarint([], 2 ** 53), RangeError);
});

Deno.test("a varint is refused when truncated, longer than 10 bytes, not canonical, or above 2^53 - 1", () => {
  const decode = (hex: string) => decodeVarint(fromHex(hex), 0);
  assert.deepEqual(decode(""), { ok: false, problem: "truncated" });
  assert.deepEqual(decode("8080"), { ok: false, problem: "truncated" });
  assert.deepEqual(decode("ff".repeat(11)), { ok: false, problem: "too long" });
  assert.deepEqual(decode("ff".repeat(10) + "01"), { ok: false, problem: "too long" });
  assert.deepEqual(decode("8000"), { ok: false, problem: "not canonical" });
  assert.deepEqual(decode("bf8100"), { ok: false, problem: "not canonical" });
  assert.deepEqual(decode("ffffffffffffff7f"), { ok: false, problem: "too large" });
  assert.deepEqual(decode("8080808080808010"), { ok: false, problem: "too large" }, "2^53");
  assert.deepEqual(decode("ffffffffffffffff7f"), { ok: false, problem: "too large" });
  assert.deepEqual(decode("ffffffffffffffffff01"), { ok: false, problem: "too large" }, "2^64-1");
  // A varint ends at its first byte below 0x80, whatever follows.
  assert.deepEqual(decodeVarint(fromHex("0580"), 0), { ok: true, value: 5, size: 1 });
  assert.deepEqual(decodeVarint(fromHex("ff0501"), 1, 2), { ok: true, value: 5, size: 1 });
});

Deno.test("zigzag codes 0, -1, 1, -2, 2 as 0, 1, 2, 3, 4 and round-trips up to ±2^52", () => {
  assert.deepEqual([0, -1, 1, -2, 2].map(zigzag), [0, 1, 2, 3, 4]);
  for (const value of [0, 1, -1, 96, -96, 2 ** 40, -(2 ** 40), 2 ** 52 - 1, -(2 ** 52)]) {
    assert.equal(unzigzag(zigzag(value)), value);
    assert.ok(zigzag(value) <= Number.MAX_SAFE_INTEGER);
  }
});

Deno.test("sample ranges are a function of base_size and sample_count: the base's 64 KiB pieces, or first, inner and last", () => {
  assert.deepEqual(sampleRangesOf(0, 0), []);
  assert.deepEqual(sampleRangesOf(128, 1), [{ offset: 0, length: 128 }]);
  assert.deepEqual(sampleRangesOf(128, 0), []);
  assert.deepEqual(sampleRangesOf(65537, 2), [
    { offset: 0, length: 65536 },
    { offset: 65536, length: 1 },
  ]);
  assert.deepEqual(sampleRangesOf(65537, 1), [{ offset: 0, length: 65536 }]);
  // The spec's example: a 16,836,224-byte base with 4 samples.
  assert.deepEqual(sampleRangesOf(16836224, 4).map((r) => r.offset), [
    0,
    5586944,
    11177984,
    16770688,
  ]);
  assert.deepEqual(sampleRangesOf(10 * MiB, 2), [
    { offset: 0, length: 65536 },
    { offset: 10 * MiB - 65536, length: 65536 },
  ]);
  const many = sampleRangesOf(1024 * MiB + 5, 64);
  assert.equal(many.length, 64);
  for (const r of many) {
    assert.ok(r.offset + r.length <= 1024 * MiB + 5 && r.length === 65536);
  }
  assert.equal(maxSampleCount(128), 1);
  assert.equal(maxSampleCount(64 * 65536 + 1), 64);
  assert.throws(() => sampleRangesOf(128, 2), RangeError);
  assert.throws(() => sampleRangesOf(0, 1), RangeError);
  assert.throws(() => sampleRangesOf(100 * MiB, 65), RangeError);
});

Deno.test("with the encoder's count (4, or fewer pieces) the rule gives v3's ranges, for every size around the edges", () => {
  for (
    const size of [1, 65535, 65536, 65537, 4 * 65536, 4 * 65536 + 1, 3 * MiB, 16836224, 2 ** 40 + 3]
  ) {
    const ranges = sampleRanges(size);
    assert.equal(ranges.length, Math.min(SAMPLE_COUNT, Math.ceil(size / 65536)), `${size}`);
    assert.deepEqual(sampleRangesOf(size, ranges.length), ranges, `${size}`);
  }
});

// ---------------------------------------------------------------------------
// Op heads and their cost

Deno.test("v4 op heads are the op byte and v3's fields as varints, base offsets zigzag relative to the previous range's end", () => {
  const hex = (op: OpHead, previousEnd = 0) => toHex(encodeOpHeadV4(op, previousEnd));
  assert.equal(hex({ kind: "copy", offset: 32, length: 32 }, 128), "01bf0120");
  assert.equal(hex({ kind: "copy", offset: 128, length: 1 }, 128), "010001");
  assert.equal(hex({ kind: "literal", length: 300 }), "02ac02");
  assert.equal(
    hex({ kind: "zliteral", length: 64, payloadLength: 17, filter: NO_FILTER }),
    "03401100",
  );
  assert.equal(
    hex({ kind: "delta", offset: 0, length: 128, payloadLength: 22, filter: SUB_BYTES_2 }),
    "040080011615",
  );
  assert.equal(
    hex({ kind: "zrecords", length: 10, payloadLength: 9, layout: Q8_LIKE_Z }),
    "050a09040202050200",
  );
  assert.equal(
    hex({ kind: "drecords", offset: 200, length: 10, payloadLength: 9, layout: Q8_LIKE }, 100),
    "06c8010a09040202150200",
  );
});

Deno.test("opHeadSize prices a head as written: v3's fixed sizes for formats 1-3, the varint head's length for 4", () => {
  const ops: OpHead[] = [
    { kind: "copy", offset: 5 * MiB, length: 4 * MiB },
    { kind: "literal", length: 9 },
    { kind: "zliteral", length: MiB, payloadLength: 1000 },
    { kind: "delta", offset: 0, length: 4096, payloadLength: 100 },
    { kind: "zrecords", length: 4096, payloadLength: 100, layout: Q8_LIKE_Z },
    { kind: "drecords", offset: 77, length: 4096, payloadLength: 100, layout: Q8_LIKE },
  ];
  const v3 = [
    COPY_OP_SIZE,
    LITERAL_HEAD_SIZE,
    ZLITERAL_HEAD_SIZE,
    DELTA_HEAD_SIZE,
    zrecordsHeadSize(2),
    drecordsHeadSize(2),
  ];
  for (const version of [1, 2, 3]) {
    assert.deepEqual(ops.map((op) => opHeadSize(version, op, 12345)), v3, `v${version}`);
  }
  for (const op of ops) {
    assert.equal(opHeadSize(4, op, 4096), encodeOpHeadV4(op, 4096).length, op.kind);
    assert.ok(opHeadSize(4, op, 4096) < opHeadSize(3, op), op.kind);
  }
  // A COPY right after the previous range: op byte, rel 0, a 4-byte length (2^22).
  // A COPY right after the previous range: op byte, rel 0, a 4-byte length (2^22).
  assert.equal(opHeadSize(4, { kind: "copy", offset: 9 * MiB, length: 4 * MiB }, 9 * MiB), 6);
});

// ---------------------------------------------------------------------------
// Every op kind through the writer, the reader and the applier

/** A base, a target made of every op kind, and the ops (absolute offsets) that make it. */
function everyKind() {
  const base = randomBytes(64 * KiB, 41);
  const literal = randomBytes(100, 42);
  const repeated = new Uint8Array(4096).map((_, i) => i % 7);
  const nudged = base.slice(500, 4596).map((b, i) => (i % 97 === 0 ? b ^ 1 : b));
  const records = base.slice(30000, 30064).map((b, i) => (i % 5 === 0 ? b + 1 : b));
  const fresh = new Uint8Array(64).map((_, i) => (i * 3) % 11);
  const target = concat(
    base.subarray(1000, 5000),
    literal,
    repeated,
    nudged,
    fresh,
    records,
    base.subarray(0, 10),
    base.subarray(10, 20),
  );
  const transformed = (t: Uint8Array, b: Uint8Array | undefined, layout: RecordLayout) => {
    const out = new Uint8Array(t.length);
    encodeRecords(t, b, layout, new Uint8Array(t.length), out);
    return out;
  };
  const residue = nudged.map((b, i) => b ^ base[500 + i]);
  const frames = {
    zliteral: zstd(repeated),
    delta: zstd(residue),
    zrecords: zstd(transformed(fresh, undefined, Q8_LIKE_Z)),
    drecords: zstd(transformed(records, base.subarray(30000, 30064), Q8_LIKE)),
  };
  return { base, target, literal, frames };
}

/** Writes `everyKind`'s ops with an `OpWriter` of `version` after its header; returns the patch. */
async function writeEveryKind(dir: string, version: 3 | 4): Promise<Uint8Array> {
  const { base, target, literal, frames } = everyKind();
  const samples: BaseSample[] = sampleRangesOf(base.length, 1).map((r) => ({
    ...r,
    digest: blake3(base.subarray(r.offset, r.offset + r.length)).slice(0, version === 4 ? 8 : 32),
  }));
  const fields = {
    baseSize: base.length,
    targetSize: target.length,
    targetDigest: blake3(target),
    baseDigest: blake3(base),
    samples,
  };
  const header = version === 4 ? encodeHeaderV4(fields) : encodeHeaderV3(fields);
  const path = `${dir}/patch${version}`;
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const out = new BufferedWriter(file);
    await out.write(header);
    const ops = new OpWriter(out, version);
    await ops.copy(1000, 2000);
    await ops.copy(3000, 2000); // merged with the previous COPY
    await ops.literal(literal.subarray(0, 60));
    await ops.literal(literal.subarray(60)); // merged with the previous LITERAL
    await ops.zliteral(4096, frames.zliteral, NO_FILTER);
    await ops.delta(500, 4096, frames.delta, NO_FILTER);
    await ops.zrecords(64, frames.zrecords, Q8_LIKE_Z);
    await ops.drecords(30000, 64, frames.drecords, Q8_LIKE);
    await ops.copy(0, 10); // back to the start: a negative relative offset
    await ops.copy(10, 10); // merged
    await ops.finish();
    await out.flush();
  } finally {
    file.close();
  }
  return await Deno.readFile(path);
}

Deno.test("every op kind round-trips in v4: written by OpWriter, read back with absolute offsets, applied, inspected", async () => {
  await withTempDir(async (dir) => {
    const { base, target, frames } = everyKind();
    await Deno.writeFile(`${dir}/base`, base);
    const v4 = await writeEveryKind(dir, 4);
    const v3 = await writeEveryKind(dir, 3);
    const reader = await PatchReader.open(bufferSource(v4, (room) => Math.min(room, 5)));
    const read: PatchOp[] = [];
    for (let op = await reader.next(); op !== null; op = await reader.next()) {
      read.push(op);
      await reader.skipLiteral(new Uint8Array(64));
    }
    assert.deepEqual(
      read.map((op) => [op.kind, "offset" in op ? op.offset : -1, op.length]),
      [
        ["copy", 1000, 4000],
        ["literal", -1, 100],
        ["zliteral", -1, 4096],
        ["delta", 500, 4096],
        ["zrecords", -1, 64],
        ["drecords", 30000, 64],
        ["copy", 0, 20],
      ],
    );
    assert.deepEqual(
      read.filter((op) => op.kind !== "copy" && op.kind !== "literal").map((op) =>
        "payloadLength" in op ? op.payloadLength : 0
      ),
      [frames.zliteral.length, frames.delta.length, frames.zrecords.length, frames.drecords.length],
    );
    assert.deepEqual((read[5] as { layout: RecordLayout }).layout, Q8_LIKE);
    for (const version of [3, 4]) {
      const applied = await applyFile(`${dir}/base`, `${dir}/patch${version}`, `${dir}/out`);
      assert.deepEqual(await Deno.readFile(`${dir}/out`), target, `v${version}`);
      const inspected = await inspectPatch(`${dir}/patch${version}`);
      assert.equal(inspected.version, version);
      for (const [ops, bytes] of [[applied, 0], [inspected, 1]] as const) {
        assert.deepEqual(
          [ops.copyOps, ops.literalOps, ops.zliteralOps, ops.deltaOps, ops.zrecordsOps],
          [2, 1, 1, 1, 1],
          `v${version} ${bytes}`,
        );
        assert.equal(ops.drecordsBytes, 64);
      }
    }
    // Same ops, same payloads: the patches differ by the header (132 against 95 bytes) and by
    // each head (v3's fixed size against v4's, relative to the previous base range's end).
    let previousEnd = 0;
    let saved = 0;
    for (const op of read) {
      saved += opHeadSize(3, op) - opHeadSize(4, op, previousEnd);
      if ("offset" in op) previousEnd = op.offset + op.length;
    }
    assert.equal(v3.length - v4.length, 132 - 95 + saved);
    assert.ok(saved > 60, `the heads are ${saved} bytes smaller`);
  });
});

/** The error a promise rejects with, or undefined if it resolves. */
async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return err;
  }
}

Deno.test("fuzz: every byte of every v4 op head flipped three ways is applied or refused as malformed or unverified, and inspect agrees with apply", async () => {
  await withTempDir(async (dir) => {
    const { base } = everyKind();
    await Deno.writeFile(`${dir}/base`, base);
    const patch = await writeEveryKind(dir, 4);
    // Each head: from its op byte to its payload (or to the next op for a COPY).
    const heads: [number, number][] = [];
    const reader = await PatchReader.open(bufferSource(patch, (room) => room));
    for (
      let at = reader.position, op = await reader.next();
      op !== null;
      op = await reader.next()
    ) {
      heads.push([at, reader.position]);
      await reader.skipLiteral(new Uint8Array(4096));
      at = reader.position;
    }
    assert.equal(heads.length, 7);
    let refused = 0;
    for (const [start, end] of heads) {
      for (let at = start; at < end; at++) {
        for (const flip of [0x01, 0x80, 0xff]) {
          const damaged = patch.slice();
          damaged[at] ^= flip;
          await Deno.writeFile(`${dir}/damaged`, damaged);
          const applied = await failure(applyFile(`${dir}/base`, `${dir}/damaged`, `${dir}/out`));
          const inspected = await failure(inspectPatch(`${dir}/damaged`));
          const where = `byte ${at} ^ 0x${flip.toString(16)}`;
          assert.ok(
            applied === undefined || applied instanceof MalformedPatchError ||
              applied instanceof VerificationError,
            `${where}: ${applied}`,
          );
          if (applied instanceof MalformedPatchError) {
            refused++;
            assert.ok(inspected instanceof MalformedPatchError, `${where}: inspect passed`);
            assert.equal(inspected.message, applied.message, where);
          } else {
            assert.equal(inspected, undefined, `${where}: inspect refused what apply does not`);
          }
          if (applied !== undefined) {
            assert.deepEqual(await leftovers(dir, ["base", "damaged", "patch3", "patch4"]), []);
          }
          await Deno.remove(`${dir}/out`).catch(() => {});
        }
      }
    }
    assert.ok(refused > heads.length, `${refused} damaged heads refused as malformed`);
  });
});

Deno.test("OpWriter.headSize prices the next head from where the previous base range ends, a COPY not yet written included", async () => {
  await withTempDir(async (dir) => {
    for (const version of [3, 4] as const) {
      const file = await Deno.open(`${dir}/body${version}`, { write: true, create: true });
      try {
        const ops = new OpWriter(new BufferedWriter(file), version);
        const next: OpHead = { kind: "copy", offset: 1105, length: 10 };
        assert.equal(ops.headSize(next), version === 4 ? 1 + 2 + 1 : COPY_OP_SIZE, "from 0");
        await ops.copy(1000, 100); // pending: ends at 1100
        assert.equal(ops.headSize(next), version === 4 ? 1 + 1 + 1 : COPY_OP_SIZE, "from 1100");
        await ops.literal(new Uint8Array(3)); // writes the COPY
        assert.equal(ops.headSize(next), version === 4 ? 3 : COPY_OP_SIZE, "still from 1100");
        await ops.finish();
      } finally {
        file.close();
      }
    }
  });
});

Deno.test("format 4 gathers a LITERAL run in 256 KiB pieces: a longer run is several LITERALs, a longer piece its own", async () => {
  await withTempDir(async (dir) => {
    const data = randomBytes(3 * LITERAL_RUN_V4 + 100, 43);
    const path = `${dir}/body`;
    const file = await Deno.open(path, { write: true, create: true });
    const ops = new OpWriter(new BufferedWriter(file), 4);
    try {
      // Pieces of 100 KiB, then one of 300 KiB (more than the buffer).
      let at = 0;
      for (const size of [100 * KiB, 100 * KiB, 100 * KiB, 300 * KiB]) {
        await ops.literal(data.subarray(at, at + size));
        at += size;
      }
      await ops.literal(data.subarray(at));
      await ops.finish();
    } finally {
      file.close();
    }
    assert.equal(ops.stats.literalBytes, data.length);
    // [200 KiB], [100 KiB], [300 KiB alone], [the rest]: every byte, in order, in 4 LITERALs.
    assert.equal(ops.stats.literalOps, 4);
  });
});

// ---------------------------------------------------------------------------
// The encoder's v4 patches

Deno.test("the encoder writes v4 by default: the same ops as v3, each pair applied, the v4 patch smaller", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(3 * MiB, 31);
    const edited = concat(base.subarray(0, MiB), randomBytes(100 * KiB, 32), base.subarray(MiB));
    const quant = quantFinetunePair({ size: 512 * KiB, type: "Q8_0", seed: 6 });
    for (
      const [name, b, t] of [["edit", base, edited], ["q8", quant.base, quant.target]] as const
    ) {
      const v3 = await roundtripFormat(dir, b, t, 3);
      const v4 = await roundtripFormat(dir, b, t, 4);
      for (const k of ["copyBytes", "zliteralOps", "deltaOps", "drecordsOps"] as const) {
        assert.equal(v4[k], v3[k], `${name}: ${k}`);
      }
      assert.ok(v4.patchSize < v3.patchSize, `${name}: v4 ${v4.patchSize} B, v3 ${v3.patchSize}`);
      if (name === "q8") assert.ok(v4.drecordsOps > 0, "the fine-tune has DRECORDS ops");
    }
    await Deno.writeFile(`${dir}/base`, base);
    await Deno.writeFile(`${dir}/target`, edited);
    await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/default`, { chunk: SMALL_CHUNKS });
    assert.equal((await inspectPatch(`${dir}/default`)).version, 4);
    const header = decodeHeader((await Deno.readFile(`${dir}/default`)).subarray(0, 87 + 32));
    assert.deepEqual(
      header.samples?.map((s) => [s.offset, s.length, toHex(s.digest)]),
      sampleRanges(base.length).map((r) => [
        r.offset,
        r.length,
        toHex(blake3(base.subarray(r.offset, r.offset + r.length)).subarray(0, 8)),
      ]),
    );
  });
});

// ---------------------------------------------------------------------------
// The test vector of docs/spec/patch-v4.md

const VECTOR_HEADER = [
  "504f4f4c",
  "0400",
  "8000000000000000",
  "0401000000000000",
  "65b76ad0e81a01d9614d367d0987a965aaadd38f8a6d2c1db64ba1b3c42ea617",
  "9c87053a51fcab3ec9886e21878e70ad579909b29c453b798bc65191ff4d2a0b",
  "01",
  "9c87053a51fcab3e",
].join("");
const FRAME_DELTA = "28b52ffd00586d00002002010000020003125e92c302";
const FRAME_ZLITERAL = "28b52ffd00584500001007070100930016";
/** The ops of the vector, with the two COPYs' `rel` replaceable. */
function vectorOps(rel1 = "bf01", rel2 = "40"): string {
  return [
    "040080011615",
    FRAME_DELTA,
    `01${rel1}20`,
    "02047634210a",
    `01${rel2}20`,
    "03401100",
    FRAME_ZLITERAL,
  ].join("");
}

function vectorBase(): Uint8Array {
  const base = new Uint8Array(128);
  const view = new DataView(base.buffer);
  for (let i = 0; i < 64; i++) view.setUint16(2 * i, 1000 + 37 * i, true);
  return base;
}

function vectorTarget(base: Uint8Array): Uint8Array {
  const first = new Uint8Array(128);
  const view = new DataView(first.buffer);
  for (let i = 0; i < 64; i++) view.setUint16(2 * i, 1000 + 37 * i + (i % 2 === 0 ? 1 : -1), true);
  return concat(
    first,
    base.subarray(32, 64),
    new TextEncoder().encode("v4!\n"),
    base.subarray(96, 128),
    new Uint8Array(64).fill(7),
  );
}

Deno.test("the test vector of docs/spec/patch-v4.md: 157 bytes, its header and heads are what the encoders write, and it applies", async () => {
  const base = vectorBase();
  const target = vectorTarget(base);
  assert.equal(target.length, 260);
  const header = encodeHeaderV4({
    baseSize: 128,
    targetSize: 260,
    targetDigest: blake3(target),
    baseDigest: blake3(base),
    samples: [{ offset: 0, length: 128, digest: blake3(base).slice(0, 8) }],
  });
  assert.equal(toHex(header), VECTOR_HEADER);
  const heads = [
    encodeOpHeadV4({
      kind: "delta",
      offset: 0,
      length: 128,
      payloadLength: 22,
      filter: SUB_BYTES_2,
    }),
    encodeOpHeadV4({ kind: "copy", offset: 32, length: 32 }, 128),
    encodeOpHeadV4({ kind: "literal", length: 4 }, 64),
    encodeOpHeadV4({ kind: "copy", offset: 96, length: 32 }, 64),
    encodeOpHeadV4({ kind: "zliteral", length: 64, payloadLength: 17, filter: NO_FILTER }, 128),
  ].map(toHex);
  assert.deepEqual(heads, ["040080011615", "01bf0120", "0204", "014020", "03401100"]);
  const patch = fromHex(VECTOR_HEADER + vectorOps());
  assert.equal(patch.length, 157);
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base`, base);
    await Deno.writeFile(`${dir}/patch`, patch);
    const applied = await applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`);
    assert.deepEqual(await Deno.readFile(`${dir}/out`), target);
    assert.deepEqual(
      [applied.deltaOps, applied.copyOps, applied.literalOps, applied.zliteralOps],
      [1, 2, 1, 1],
    );
    assert.equal(applied.baseBytesRead, 128 + 128 + 32 + 32, "the sample, then the ops' ranges");
    const inspected = await inspectPatch(`${dir}/patch`);
    assert.equal(inspected.version, 4);
    assert.deepEqual(inspected.baseSamples, [
      { offset: 0, length: 128, blake3: "9c87053a51fcab3e" },
    ]);
  });
});

/** Malformed v4 patches: a name, the patch's hex, and what the error says. */
const MALFORMED: readonly { name: string; hex: () => string; says: RegExp }[] = [
  {
    name: "a header cut before its sample count",
    hex: () => VECTOR_HEADER.slice(0, 86 * 2),
    says: /truncated: a v4 header is at least 87 bytes, only 86 present/,
  },
  {
    name: "a header cut inside its samples",
    hex: () => VECTOR_HEADER.slice(0, 90 * 2),
    says: /truncated: its v4 header with 1 base samples is 95 bytes, only 90 present/,
  },
  {
    name: "more samples than the base has 64 KiB pieces",
    hex: () => VECTOR_HEADER.slice(0, 86 * 2) + "02" + "00".repeat(16) + vectorOps(),
    says: /v4 header claims 2 base samples; a 128-byte base has at most 1/,
  },
  {
    name: "more than 64 samples",
    hex: () =>
      VECTOR_HEADER.slice(0, 12) + "0000000001000000" + VECTOR_HEADER.slice(28, 86 * 2) + "41",
    says: /v4 header claims 65 base samples; a 4294967296-byte base has at most 64/,
  },
  {
    name: "a base_size above 2^52 - 1",
    hex: () => VECTOR_HEADER.slice(0, 12) + "0000000000001000" + VECTOR_HEADER.slice(28),
    says: /base_size 4503599627370496 is above 2\^52 - 1/,
  },
  {
    name: "a non-canonical varint (191 as bf 81 00)",
    hex: () => VECTOR_HEADER + vectorOps("bf8100"),
    says: /COPY at patch offset 123: its base offset is a varint that is not canonical/,
  },
  {
    name: "a varint above 2^53 - 1 (2^63 - 1 in 9 bytes)",
    hex: () => VECTOR_HEADER + vectorOps("ffffffffffffffff7f"),
    says: /COPY at patch offset 123: its base offset is a varint above 2\^53 - 1/,
  },
  {
    name: "a varint longer than 10 bytes",
    hex: () => VECTOR_HEADER + vectorOps("ff".repeat(11)),
    says: /COPY at patch offset 123: its base offset is a varint longer than 10 bytes/,
  },
  {
    name: "a relative offset going before the base (128 - 129)",
    hex: () => VECTOR_HEADER + vectorOps("8102"),
    says:
      /COPY at patch offset 123 has base offset -129 relative to 128: -1, before the base's first byte/,
  },
  {
    name: "a relative offset going past the base (64 + 33, 32 bytes)",
    hex: () => VECTOR_HEADER + vectorOps("bf01", "42"),
    says: /COPY at patch offset 133 reads base bytes 97\.\.129, beyond the base's 128 bytes/,
  },
  {
    name: "a patch cut inside an op head's varint",
    hex: () => (VECTOR_HEADER + vectorOps()).slice(0, (95 + 6 + 22 + 2) * 2),
    says: /truncated: the COPY op at offset 123 ends inside its base offset/,
  },
  {
    name: "a ZLITERAL whose comp_len is not below its raw_len",
    hex: () => VECTOR_HEADER + vectorOps().replace("03401100", "03404000"),
    says: /ZLITERAL at patch offset 136 has 64 compressed bytes for 64/,
  },
];

for (const c of MALFORMED) {
  Deno.test(`v4: ${c.name} is a malformed patch (exit 4) for apply and inspect, and no output exists`, async () => {
    await withTempDir(async (dir) => {
      await Deno.writeFile(`${dir}/base`, vectorBase());
      await Deno.writeFile(`${dir}/damaged`, fromHex(c.hex()));
      const applied = await rejection(applyFile(`${dir}/base`, `${dir}/damaged`, `${dir}/out`));
      assert.ok(applied instanceof MalformedPatchError, String(applied));
      assert.equal(applied.exitCode, 4);
      assert.match(applied.message, c.says);
      const inspected = await rejection(inspectPatch(`${dir}/damaged`));
      assert.ok(inspected instanceof MalformedPatchError);
      assert.equal(inspected.message, applied.message, "inspect says what apply says");
      assert.deepEqual(await leftovers(dir, ["base", "damaged"]), []);
    });
  });
}

Deno.test("v4: a base whose sample digest differs is refused (exit 5) before any output exists, naming the range", async () => {
  await withTempDir(async (dir) => {
    const base = vectorBase();
    base[100] ^= 1; // same size, different bytes in the one sampled range
    await Deno.writeFile(`${dir}/base`, base);
    await Deno.writeFile(`${dir}/patch`, fromHex(VECTOR_HEADER + vectorOps()));
    const err = await rejection(applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`));
    assert.ok(err instanceof VerificationError, String(err));
    assert.equal(err.exitCode, 5);
    assert.match(
      err.message,
      /bytes 0\.\.128 \(sample 0 of 1\).*made from 9c87053a51fcab3e; no output/,
    );
    assert.deepEqual(await leftovers(dir, ["base", "patch"]), []);
  });
});

Deno.test("poolboy encode --format 4 and the default write v4, inspect prints it, --format 5 is a usage error; apply exits 4 on a malformed v4 patch, 5 on a base its sample refuses", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/base.bin`, vectorBase());
    await Deno.writeFile(`${dir}/target.bin`, vectorTarget(vectorBase()));
    for (const args of [["--format", "4"], []]) {
      const run = await poolboy(dir, "encode", "base.bin", "target.bin", "-o", "p", ...args);
      assert.equal(run.code, 0, run.stderr);
      const inspected = await poolboy(dir, "inspect", "p");
      assert.equal(inspected.code, 0, inspected.stderr);
      assert.match(inspected.stdout, /^version +4$/m);
      assert.match(inspected.stdout, /^ {2}0\.\.128 \(128 B\) BLAKE3 9c87053a51fcab3e\.\.\.$/m);
    }
    const bad = await poolboy(dir, "encode", "base.bin", "target.bin", "-o", "p", "--format", "5");
    assertUserError(bad, EXIT.usage, '--format must be 1, 2, 3 or 4, got "5"');
    // The exit codes of a malformed v4 patch (4) and of a base its sample refuses (5).
    await Deno.writeFile(`${dir}/bad.patch`, fromHex(VECTOR_HEADER + vectorOps("bf8100")));
    const malformed = await poolboy(dir, "apply", "base.bin", "bad.patch", "-o", "out.bin");
    assertUserError(malformed, EXIT.malformed, "not canonical");
    const wrong = vectorBase();
    wrong[0] ^= 1;
    await Deno.writeFile(`${dir}/wrong.bin`, wrong);
    await Deno.writeFile(`${dir}/good.patch`, fromHex(VECTOR_HEADER + vectorOps()));
    const refused = await poolboy(dir, "apply", "wrong.bin", "good.patch", "-o", "out.bin");
    assertUserError(refused, EXIT.verification, "sample 0 of 1");
    assert.deepEqual(
      await leftovers(dir, ["base.bin", "target.bin", "p", "bad.patch", "wrong.bin", "good.patch"]),
      [],
      "no output",
    );
  });
});
