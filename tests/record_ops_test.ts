/**
 * v3 record ops (codec/record_filter.ts, ZRECORDS 0x05 and DRECORDS 0x06 in
 * patch_format.ts, patch_reader.ts, applier.ts, literal_coder.ts): the record
 * transform and its inverse, GGUF quant blocks coded as field streams for
 * every supported ggml type, their size against v2's bytes-only coding, and
 * malformed record ops refused on their head.
 */

import assert from "node:assert/strict";
import { applyFile } from "../codec/applier.ts";
import { blake3 } from "../kernel/blake3.ts";
import { MalformedPatchError } from "../kernel/errors.ts";
import { inspectPatch } from "../codec/inspect.ts";
import {
  decodeFilter,
  encodeDRecordsHead,
  encodeFilter,
  encodeHeaderV3,
  encodeZRecordsHead,
  type Filter,
  MAX_OP_RAW,
} from "../codec/patch_format.ts";
import {
  decodeRecords,
  encodeRecords,
  joinRecords,
  layoutProblem,
  MAX_RECORD_FIELDS,
  MAX_RECORD_LENGTH,
  type RecordLayout,
  rotateLayout,
  splitRecords,
} from "../codec/record_filter.ts";
import { GGML_BLOCKS, ggufLayout } from "../codec/tensor_layout.ts";
import { PatchReader } from "../codec/patch_reader.ts";
import { bufferSource, concat, randomBytes, withTempDir } from "./helpers.ts";
import { poolboy } from "./cli_helpers.ts";
import { v2Patch, zstd } from "./support/v2_patches.ts";
import { Prng } from "../testkit/corpus.ts";
import {
  GGML_F32,
  ggufBytes,
  quantFinetunePair,
  quantizeQ4_0,
  quantizeQ8_0,
} from "../testkit/gguf_pairs.ts";
import { Q8_LIKE, Q8_LIKE_Z, SUB_BYTES_2 } from "./support/record_layouts.ts";
import { roundtripFormat } from "./support/format_roundtrip.ts";

const KiB = 1024;

/** Every valid filter (the 18 filter bytes `decodeFilter` accepts). */
const FILTERS: Filter[] = [...Array(64).keys()].map(decodeFilter).filter((f): f is Filter =>
  f !== undefined
);

/** A random valid layout: 1..8 fields, each a multiple of its filter's width, ≤ 256 bytes in all. */
function randomLayout(prng: Prng, xorOnly = false): RecordLayout {
  const count = 1 + (prng.nextU32() % MAX_RECORD_FIELDS);
  const fields = [];
  let total = 0;
  for (let j = 0; j < count; j++) {
    const choices = FILTERS.filter((f) => !xorOnly || f.combine === "xor");
    const filter = choices[prng.nextU32() % choices.length];
    const room = Math.floor((MAX_RECORD_LENGTH - total - (count - j - 1) * 4) / filter.width);
    const length = filter.width * (1 + (prng.nextU32() % Math.max(1, Math.min(room, 40))));
    fields.push({ length, filter });
    total += length;
  }
  return { recordLength: total, fields };
}

/** A hand-made v3 patch (no base samples: an 88-byte header). */
function v3Patch(base: Uint8Array, target: Uint8Array, ...ops: Uint8Array[]): Uint8Array {
  return concat(
    encodeHeaderV3({
      baseSize: base.length,
      targetSize: target.length,
      targetDigest: blake3(target),
      baseDigest: blake3(base),
      samples: [],
    }),
    ...ops,
  );
}

/** The record transform S of `target` (against `base`), as an op's frames hold it. */
function transform(target: Uint8Array, base: Uint8Array | undefined, layout: RecordLayout) {
  const out = new Uint8Array(target.length);
  encodeRecords(target, base, layout, new Uint8Array(target.length), out);
  return out;
}

const XOR_BYTES: Filter = { width: 1, shuffle: "none", combine: "xor" };

// ---------------------------------------------------------------------------
// The transform

Deno.test("the spec's test vector: two 4-byte records and a 2-byte tail, f16 SUB planes then XOR bytes", () => {
  const target = new Uint8Array([0x10, 0x20, 0x01, 0x02, 0x11, 0x21, 0x03, 0x04, 0xaa, 0xbb]);
  const base = new Uint8Array([0x0f, 0x20, 0x01, 0x00, 0x10, 0x21, 0x03, 0x05, 0xaa, 0x00]);
  const s = transform(target, base, Q8_LIKE);
  assert.deepEqual(
    [...s],
    [0x02, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x00, 0xbb],
    "stream 0: zigzag(+1), zigzag(+1) as byte planes; stream 1: XOR; tail: XOR",
  );
  const out = new Uint8Array(10);
  decodeRecords(s.slice(), base, Q8_LIKE, new Uint8Array(10), out);
  assert.deepEqual(out, target);
  assert.equal(encodeFilter(SUB_BYTES_2), 0x15);
  assert.deepEqual(
    [...encodeDRecordsHead(0, 10, 7, Q8_LIKE)],
    [0x06, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 7, 0, 0, 0, 4, 0, 2, 2, 0, 0x15, 2, 0, 0x00],
  );
  assert.deepEqual(
    [...encodeZRecordsHead(10, 7, Q8_LIKE)],
    [0x05, 10, 0, 0, 0, 7, 0, 0, 0, 4, 0, 2, 2, 0, 0x15, 2, 0, 0x00],
  );
});

Deno.test("random record layouts round-trip through split/join and the transform, with and without a base (seeded)", () => {
  const prng = new Prng(17);
  for (let trial = 0; trial < 300; trial++) {
    const delta = trial % 2 === 0;
    const layout = randomLayout(prng, !delta);
    assert.equal(layoutProblem(layout), undefined, JSON.stringify(layout));
    const length = 1 + (prng.nextU32() % (trial % 10 === 0 ? 70_000 : 3000));
    const target = randomBytes(length, trial);
    const base = target.map((b, i) => (i % 7 === 0 ? b ^ (prng.nextU32() & 3) : b));
    const streams = new Uint8Array(length);
    splitRecords(target, layout, streams);
    const joined = new Uint8Array(length);
    joinRecords(streams, layout, joined);
    assert.deepEqual(joined, target, `split/join, trial ${trial}`);
    const s = transform(target, delta ? base : undefined, layout);
    // In place (the applier decodes into the payload's buffer) and into another buffer.
    const inPlace = s.slice();
    decodeRecords(inPlace, delta ? base : undefined, layout, new Uint8Array(length), inPlace);
    assert.deepEqual(inPlace, target, `transform, trial ${trial}`);
    // Rotated to start anywhere in a record, the layout stays valid and round-trips.
    const rotated = rotateLayout(layout, prng.nextU32() % layout.recordLength);
    if (rotated !== undefined) {
      assert.equal(layoutProblem(rotated), undefined);
      assert.equal(rotated.recordLength, layout.recordLength);
      const r = transform(target, delta ? base : undefined, rotated);
      const back = new Uint8Array(length);
      decodeRecords(r, delta ? base : undefined, rotated, new Uint8Array(length), back);
      assert.deepEqual(back, target, `rotated, trial ${trial}`);
    }
  }
});

Deno.test("a rotation keeps each field's bytes together: Q8_0 started 10 bytes in is qs[8..32], d, qs[0..8]", () => {
  const rotated = rotateLayout(GGML_BLOCKS[8], 10)!;
  assert.deepEqual(rotated.fields.map((f) => f.length), [24, 2, 8]);
  const cut = rotateLayout(GGML_BLOCKS[8], 1)!; // cuts d: its halves become bytes
  assert.deepEqual(cut.fields.map((f) => [f.length, f.filter.width]), [[1, 1], [32, 1], [1, 1]]);
});

Deno.test("layoutProblem names each invalid layout: no fields, too many, zero or odd lengths, a wrong sum, too long", () => {
  const f = (length: number, filter: Filter = XOR_BYTES) => ({ length, filter });
  const cases: [RecordLayout, RegExp][] = [
    [{ recordLength: 0, fields: [f(1)] }, /record length 0/],
    [{ recordLength: 257, fields: [f(257)] }, /record length 257/],
    [{ recordLength: 4, fields: [] }, /0 fields/],
    [{ recordLength: 9, fields: Array(9).fill(f(1)) }, /9 fields/],
    [{ recordLength: 4, fields: [f(0), f(4)] }, /field 0 has length 0/],
    [{ recordLength: 3, fields: [f(3, SUB_BYTES_2)] }, /not a multiple of its filter's width 2/],
    [{ recordLength: 5, fields: [f(2), f(2)] }, /sum to 4, not the record length 5/],
  ];
  for (const [layout, message] of cases) assert.match(layoutProblem(layout) ?? "", message);
});

// ---------------------------------------------------------------------------
// GGUF quant blocks

Deno.test("GGUF quant types map to ggml-common.h's block layouts; F32/F16 tensors have none", () => {
  const sizes: Record<number, number> = {
    2: 18,
    3: 20,
    6: 22,
    7: 24,
    8: 34,
    9: 36,
    10: 84,
    11: 110,
    12: 144,
    13: 176,
    14: 210,
  };
  for (const [type, size] of Object.entries(sizes)) {
    const layout = GGML_BLOCKS[Number(type)];
    assert.equal(layout.recordLength, size, `type ${type}`);
    assert.equal(layoutProblem(layout), undefined);
  }
  assert.equal(GGML_BLOCKS[0], undefined);
  assert.equal(GGML_BLOCKS[15], undefined, "Q8_K (292-byte blocks) stays bytes");
});

/** Random blocks of a ggml type, and the same with f16 fields nudged by ±1 unit and ~4% of other bytes changed. */
function randomBlocks(type: number, blocks: number, seed: number): [Uint8Array, Uint8Array] {
  const layout = GGML_BLOCKS[type];
  const prng = new Prng(seed);
  const base = new Uint8Array(blocks * layout.recordLength);
  const view = new DataView(base.buffer);
  for (let b = 0, at = 0; b < blocks; b++) {
    for (const field of layout.fields) {
      if (field.filter.width === 2) view.setUint16(at, 0x2000 + (prng.nextU32() & 0x3ff), true);
      else for (let i = 0; i < field.length; i++) base[at + i] = prng.nextU32() & 0xff;
      at += field.length;
    }
  }
  const target = base.slice();
  const tview = new DataView(target.buffer);
  for (let b = 0, at = 0; b < blocks; b++) {
    for (const field of layout.fields) {
      if (field.filter.width === 2) {
        tview.setUint16(at, view.getUint16(at, true) + (prng.nextU32() % 3) - 1, true);
      } else {
        for (let i = 0; i < field.length; i++) {
          if (prng.nextU32() % 25 === 0) target[at + i] += prng.nextU32() % 2 === 0 ? 1 : 255;
        }
      }
      at += field.length;
    }
  }
  return [base, target];
}

Deno.test("every supported ggml quant type round-trips as DRECORDS ops, a tail of a partial block included", async () => {
  await withTempDir(async (dir) => {
    for (const type of Object.keys(GGML_BLOCKS).map(Number)) {
      const blocks = Math.ceil(96 * KiB / GGML_BLOCKS[type].recordLength);
      const [base, target] = randomBlocks(type, blocks, type);
      const norm = randomBytes(4 * KiB, 5);
      const file = (quant: Uint8Array) =>
        ggufBytes([
          { name: "norm", type: GGML_F32, dims: [1024], data: norm },
          { name: "w", type, dims: [blocks * 32], data: quant },
          // A last tensor whose length is not a whole number of blocks.
          {
            name: "odd",
            type,
            dims: [32],
            data: quant.subarray(0, 3 * GGML_BLOCKS[type].recordLength + 5),
          },
        ]);
      const layout = await layoutOf(dir, file(base));
      assert.deepEqual(layout?.find((t) => t.name === "w")?.records, GGML_BLOCKS[type]);
      const v3 = await roundtripFormat(dir, file(base), file(target), 3);
      assert.ok(v3.drecordsOps > 0, `type ${type}: DRECORDS ops`);
    }
  });
});

async function layoutOf(dir: string, bytes: Uint8Array) {
  await Deno.writeFile(`${dir}/probe`, bytes);
  const file = await Deno.open(`${dir}/probe`);
  try {
    return ggufLayout(file, bytes.length);
  } finally {
    file.close();
  }
}

Deno.test("the reference quantizers: Q8_0 and Q4_0 blocks of known weights", () => {
  const x = new Float32Array(32).map((_, i) => (i - 16) / 16); // -1 .. 0.9375
  const q8 = quantizeQ8_0(x);
  assert.equal(q8.length, 34);
  const d8 = new DataView(q8.buffer).getUint16(0, true);
  assert.equal(d8, 0x2008, "d = 1/127 in f16");
  assert.equal(q8[2] << 24 >> 24, -127, "x = -1 → -127");
  assert.equal(q8[2 + 16], 0, "x = 0 → 0");
  const q4 = quantizeQ4_0(x);
  assert.equal(q4.length, 18);
  assert.equal(new DataView(q4.buffer).getUint16(0, true), 0x3000, "d = -1 / -8 = 0.125");
  // x[0] = -1 → -1/0.125 + 8.5 = 0.5 → 0; x[16] = 0 → 8.5 → 8 (high nibble).
  assert.equal(q4[2], 0x80);
});

Deno.test("a Q8_0 fine-tune: record ops are at most 75% of v2's bytes-only patch (measured 62%)", async () => {
  await withTempDir(async (dir) => {
    const { base, target } = quantFinetunePair({ size: 2 * 1024 * KiB, type: "Q8_0", seed: 3 });
    const v2 = await roundtripFormat(dir, base, target, 2);
    const v3 = await roundtripFormat(dir, base, target, 3);
    assert.equal(v2.zrecordsOps + v2.drecordsOps, 0, "format 2 writes no record ops");
    assert.ok(v3.drecordsOps > 0);
    assert.ok(
      v3.patchSize <= 0.75 * v2.patchSize,
      `v3 ${v3.patchSize} B against v2 ${v2.patchSize} B`,
    );
  });
});

Deno.test("a Q4_0 fine-tune: record ops are at most 65% of v2's bytes-only patch (measured 49%)", async () => {
  await withTempDir(async (dir) => {
    const { base, target } = quantFinetunePair({ size: 2 * 1024 * KiB, type: "Q4_0", seed: 4 });
    const v2 = await roundtripFormat(dir, base, target, 2);
    const v3 = await roundtripFormat(dir, base, target, 3);
    assert.ok(v3.drecordsOps > 0);
    assert.ok(
      v3.patchSize <= 0.65 * v2.patchSize,
      `v3 ${v3.patchSize} B against v2 ${v2.patchSize} B`,
    );
  });
});

Deno.test("a requantization Q8_0 → Q4_0 (no same-length base tensor) round-trips, no larger than v2", async () => {
  await withTempDir(async (dir) => {
    const { base, target } = quantFinetunePair({
      size: 512 * KiB,
      type: "Q8_0",
      targetType: "Q4_0",
      seed: 5,
    });
    const v2 = await roundtripFormat(dir, base, target, 2);
    const v3 = await roundtripFormat(dir, base, target, 3);
    assert.ok(v3.patchSize <= v2.patchSize, `v3 ${v3.patchSize} B against v2 ${v2.patchSize} B`);
  });
});

Deno.test("a quant tensor the base does not have is coded as ZRECORDS (its f16 scales apart from its quants)", async () => {
  await withTempDir(async (dir) => {
    for (const type of [8, 12]) {
      const [blocks] = randomBlocks(type, Math.ceil(64 * KiB / GGML_BLOCKS[type].recordLength), 9);
      const norm = randomBytes(4 * KiB, 5);
      const base = ggufBytes([{ name: "norm", type: GGML_F32, dims: [1024], data: norm }]);
      const target = ggufBytes([
        { name: "norm", type: GGML_F32, dims: [1024], data: norm },
        { name: "new", type, dims: [blocks.length], data: blocks },
      ]);
      const v3 = await roundtripFormat(dir, base, target, 3);
      assert.ok(v3.zrecordsOps > 0, `type ${type}: ZRECORDS ops`);
    }
  });
});

Deno.test("a quant tensor's piece starting mid-block (bytes inserted before it) round-trips", async () => {
  await withTempDir(async (dir) => {
    const { base, target } = quantFinetunePair({ size: 512 * KiB, type: "Q8_0", seed: 6 });
    // The same tensors, with 7 bytes more of header: every piece's phase in its block moves.
    const shifted = concat(target.subarray(0, 200), new Uint8Array(7), target.subarray(200));
    await roundtripFormat(dir, base, shifted, 3);
  });
});

// ---------------------------------------------------------------------------
// Malformed record ops

/** A valid one-op v3 patch: 64 bytes as a DRECORDS (or ZRECORDS) of the Q8-like layout. */
function recordPatch(kind: "z" | "d", head?: Uint8Array, data?: Uint8Array) {
  const base = new Uint8Array(64).map((_, i) => (i * 7) % 13);
  const target = base.map((b, i) => (i % 5 === 0 ? b + 1 : b));
  const frame = zstd(
    kind === "d" ? transform(target, base, Q8_LIKE) : transform(target, undefined, Q8_LIKE_Z),
  );
  const op = head ??
    (kind === "d"
      ? encodeDRecordsHead(0, 64, frame.length, Q8_LIKE)
      : encodeZRecordsHead(64, frame.length, Q8_LIKE_Z));
  return { base, target, patch: v3Patch(base, target, op, data ?? frame), frame };
}

async function readAll(bytes: Uint8Array): Promise<void> {
  const reader = await PatchReader.open(bufferSource(bytes, (room) => room));
  for (let op = await reader.next(); op !== null; op = await reader.next()) {
    await reader.skipLiteral(new Uint8Array(256));
  }
}

Deno.test("hand-made ZRECORDS and DRECORDS ops apply byte for byte and inspect shows them", async () => {
  await withTempDir(async (dir) => {
    for (const kind of ["z", "d"] as const) {
      const { base, target, patch } = recordPatch(kind);
      await Deno.writeFile(`${dir}/base`, base);
      await Deno.writeFile(`${dir}/patch`, patch);
      const applied = await applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`);
      assert.deepEqual(await Deno.readFile(`${dir}/out`), target);
      assert.equal(kind === "z" ? applied.zrecordsOps : applied.drecordsOps, 1);
      const inspected = await inspectPatch(`${dir}/patch`);
      assert.equal(kind === "z" ? inspected.zrecordsBytes : inspected.drecordsBytes, 64);
    }
  });
});

Deno.test("malformed record op heads are refused on the head, before their data is read", async () => {
  const frameLength = recordPatch("d").frame.length;
  const layoutBytes = (recordLength: number, fields: [number, number][]) => {
    const out = new Uint8Array(3 + 3 * fields.length);
    const view = new DataView(out.buffer);
    view.setUint16(0, recordLength, true);
    out[2] = fields.length;
    fields.forEach(([len, filter], j) => {
      view.setUint16(3 + 3 * j, len, true);
      out[5 + 3 * j] = filter;
    });
    return out;
  };
  const dHead = (offset: number, raw: number, comp: number, layout: Uint8Array) => {
    const fixed = new Uint8Array(17);
    const view = new DataView(fixed.buffer);
    fixed[0] = 0x06;
    view.setBigUint64(1, BigInt(offset), true);
    view.setUint32(9, raw, true);
    view.setUint32(13, comp, true);
    return concat(fixed, layout);
  };
  const zHead = (raw: number, comp: number, layout: Uint8Array) => {
    const fixed = new Uint8Array(9);
    const view = new DataView(fixed.buffer);
    fixed[0] = 0x05;
    view.setUint32(1, raw, true);
    view.setUint32(5, comp, true);
    return concat(fixed, layout);
  };
  const good = layoutBytes(4, [[2, 0x15], [2, 0x00]]);
  const cases: [string, Uint8Array, RegExp][] = [
    ["no fields", dHead(0, 64, frameLength, layoutBytes(4, [])), /0 record fields/],
    [
      "nine fields",
      dHead(0, 64, frameLength, layoutBytes(9, Array(9).fill([1, 0]))),
      /9 record fields/,
    ],
    ["record length 0", dHead(0, 64, frameLength, layoutBytes(0, [[0, 0]])), /record length 0/],
    [
      "record length 257",
      dHead(0, 64, frameLength, layoutBytes(257, [[257, 0]])),
      /record length 257/,
    ],
    ["a field of 0 bytes", dHead(0, 64, frameLength, layoutBytes(4, [[0, 0], [4, 0]])), /length 0/],
    [
      "fields summing to another length",
      dHead(0, 64, frameLength, layoutBytes(5, [[2, 0x15], [2, 0]])),
      /sum to 4, not the record length 5/,
    ],
    [
      "a field not a multiple of its width",
      dHead(0, 64, frameLength, layoutBytes(3, [[3, 0x15]])),
      /not a multiple of its filter's width 2/,
    ],
    [
      "an invalid filter byte",
      dHead(0, 64, frameLength, layoutBytes(4, [[2, 0x03], [2, 0]])),
      /invalid filter byte 0x03 for record field 0/,
    ],
    [
      "a filter byte above 0x3f",
      dHead(0, 64, frameLength, layoutBytes(4, [[2, 0x40], [2, 0]])),
      /invalid filter byte 0x40/,
    ],
    [
      "a SUB filter in a ZRECORDS",
      zHead(64, frameLength, good),
      /ZRECORDS .* invalid filter byte 0x15/,
    ],
    ["raw_len 0", dHead(0, 0, frameLength, good), /claims 0 bytes/],
    [
      "raw_len above 1 MiB",
      dHead(0, MAX_OP_RAW + 1, frameLength, good),
      /claims 1048577 bytes/,
    ],
    ["comp_len 0", dHead(0, 64, 0, good), /0 compressed bytes/],
    ["comp_len ≥ raw_len", dHead(0, 64, 64, good), /64 compressed bytes for 64/],
    ["a base range past the base", dHead(1, 64, frameLength, good), /base bytes 1..65, beyond/],
  ];
  for (const [name, head, message] of cases) {
    const { patch } = recordPatch("d", head, new Uint8Array(0)); // no data: the head alone decides
    await assert.rejects(readAll(patch), (err: Error) => {
      assert.ok(err instanceof MalformedPatchError, `${name}: ${err}`);
      assert.match(err.message, message, name);
      return true;
    });
  }
  // An op producing more than target_size; a head cut short.
  const long = recordPatch(
    "d",
    zHead(128, frameLength, layoutBytes(4, [[2, 0x05], [2, 0x00]])),
    new Uint8Array(0),
  );
  await assert.rejects(readAll(long.patch), /produces 128 bytes, but only 64/);
  const cut = recordPatch("d", dHead(0, 64, frameLength, good).subarray(0, 20), new Uint8Array(0));
  await assert.rejects(readAll(cut.patch), /truncated/);
});

Deno.test("record data that does not decompress to the op's length is refused by apply and inspect, no output", async () => {
  await withTempDir(async (dir) => {
    const ok = recordPatch("d");
    const short = zstd(new Uint8Array(60));
    const { base, patch } = recordPatch(
      "d",
      encodeDRecordsHead(0, 64, short.length, Q8_LIKE),
      short,
    );
    assert.ok(ok.frame.length > 0);
    await Deno.writeFile(`${dir}/base`, base);
    await Deno.writeFile(`${dir}/patch`, patch);
    await assert.rejects(
      applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`),
      /DRECORDS data decompresses to 60 bytes, not the 64/,
    );
    await assert.rejects(Deno.stat(`${dir}/out`), Deno.errors.NotFound);
    await assert.rejects(inspectPatch(`${dir}/patch`), MalformedPatchError);
  });
});

Deno.test("record ops exist only in v3: 0x05 and 0x06 in a v2 patch are unknown ops", async () => {
  const { base, target, frame } = recordPatch("d");
  for (
    const op of [
      encodeZRecordsHead(64, frame.length, Q8_LIKE),
      encodeDRecordsHead(0, 64, frame.length, Q8_LIKE),
    ]
  ) {
    await assert.rejects(
      readAll(v2Patch(base, target, op, frame)),
      new RegExp(`unknown op 0x0${op[0]} at patch offset 86`),
    );
  }
});

Deno.test("poolboy encode --format 3 writes record ops for a Q8_0 fine-tune; inspect and apply show them", async () => {
  await withTempDir(async (dir) => {
    const { base, target } = quantFinetunePair({ size: 256 * KiB, type: "Q8_0", seed: 7 });
    await Deno.writeFile(`${dir}/base.gguf`, base);
    await Deno.writeFile(`${dir}/target.gguf`, target);
    const encoded = await poolboy(
      dir,
      "encode",
      "base.gguf",
      "target.gguf",
      "-o",
      "p",
      "--format",
      "3",
    );
    assert.equal(encoded.code, 0, encoded.stderr);
    assert.match(encoded.stdout, /DRECORDS .* in \d+ ops?/);
    const inspected = await poolboy(dir, "inspect", "p");
    assert.equal(inspected.code, 0, inspected.stderr);
    assert.match(inspected.stdout, /version\s+3/);
    assert.match(inspected.stdout, /DRECORDS\s+[1-9]\d* ops?, \d+ bytes/);
    const applied = await poolboy(dir, "apply", "base.gguf", "p", "-o", "out.gguf");
    assert.equal(applied.code, 0, applied.stderr);
    assert.match(applied.stdout, /DRECORDS/);
    assert.deepEqual(await Deno.readFile(`${dir}/out.gguf`), target);
  });
});
