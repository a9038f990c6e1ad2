/**
 * Specification of FastCDC chunking (codec/fastcdc.ts) and of its streaming form
 * (codec/chunk_stream.ts).
 */

import assert from "node:assert/strict";
import {
  CHUNK_SIZE_LIMITS,
  chunkLengths,
  chunkMasks,
  type ChunkParams,
  type CutScan,
  DEFAULT_CHUNK_PARAMS,
  findCut,
  findCutJs,
  GEAR,
  validateChunkParams,
} from "../codec/fastcdc.ts";
import { type ByteSource, chunkBufferSize, chunkStream } from "../codec/chunk_stream.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { InvalidArgumentError } from "../kernel/errors.ts";
import { bufferSource, randomBytes, withTempDir, writeFile } from "./helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** The parameters of the pinned snapshot and of most tests here. */
const P64K: ChunkParams = { min: 16 * KiB, avg: 64 * KiB, max: 256 * KiB };
/** Small parameters, for tests that read one byte at a time. */
const SMALL: ChunkParams = { min: 256, avg: 1024, max: 4096 };

/** Cumulative ends of chunks: the cut positions. */
function boundaries(lengths: number[]): number[] {
  let sum = 0;
  return lengths.map((len) => (sum += len));
}

/** Lengths of the chunks `chunkStream` yields, checking offsets and bytes on the way. */
async function streamLengths(
  data: Uint8Array,
  source: ByteSource,
  params: ChunkParams,
  buffer?: Uint8Array,
): Promise<number[]> {
  const lengths: number[] = [];
  let expectedOffset = 0;
  for await (const chunk of chunkStream(source, params, buffer)) {
    assert.equal(chunk.offset, expectedOffset, "chunks are contiguous");
    assert.deepEqual(
      chunk.data,
      data.subarray(chunk.offset, chunk.offset + chunk.data.length),
      `chunk at ${chunk.offset} holds the input's bytes`,
    );
    lengths.push(chunk.data.length);
    expectedOffset += chunk.data.length;
  }
  assert.equal(expectedOffset, data.length, "the chunks cover the whole input");
  return lengths;
}

// ---------------------------------------------------------------------------
// The format: pinned values
// ---------------------------------------------------------------------------

Deno.test("the gear table is part of the format: its first 8 entries never change", () => {
  // If this fails, every chunk boundary and every stored index file has changed.
  // That is a format break, not a refactoring: do not update these values.
  assert.equal(GEAR.length, 256);
  assert.deepEqual(Array.from(GEAR.subarray(0, 8)), [
    0xf6b7d45f,
    0xf306a5e6,
    0xed38b4bd,
    0x917bb066,
    0x7cde24c3,
    0x191e7d52,
    0x05c35a6f,
    0x6d8b886f,
  ]);
});

Deno.test("the masks of normalized chunking are the top log2(avg)+2 and log2(avg)-2 bits", () => {
  assert.deepEqual(chunkMasks(64 * KiB), { maskS: 0xffffc000, maskL: 0xfffc0000 });
  assert.deepEqual(chunkMasks(1 * MiB), { maskS: 0xfffffc00, maskL: 0xffffc000 });
  assert.deepEqual(chunkMasks(64), { maskS: 0xff000000, maskL: 0xf0000000 });
});

Deno.test("chunk boundaries of a fixed 4 MiB input are pinned: they are part of the format", () => {
  // Chunk boundaries decide which chunks of a cached base index file match: a
  // change here silently makes every stored index file useless. Do not update
  // these values unless the format version changes.
  const data = randomBytes(4 * MiB, 1);
  // Guard: the input itself is what it was when the values were computed.
  assert.equal(
    toHex(blake3(data)),
    "7c08d0e2c80be9d70242bcf56de725e1a029258bc6d2782586bb62c5e7622b18",
  );
  // deno-fmt-ignore
  const expected = [
    41687, 110863, 85359, 68102, 125663, 37619, 72567, 81552, 53170, 20698,
    67233, 75327, 94650, 86427, 80969, 138582, 34302, 59915, 84161, 65820,
    68206, 97451, 89075, 66531, 69698, 80508, 100322, 17892, 124756, 68922,
    82974, 74313, 90902, 91132, 77558, 34604, 81663, 71589, 73239, 67089,
    92429, 70229, 65728, 101372, 73344, 117879, 22267, 103816, 23674, 70563,
    59373, 74981, 55858, 83141, 83759, 61535, 21266,
  ];
  assert.deepEqual(chunkLengths(data, P64K), expected);
});

Deno.test("a run of one repeated byte never meets a cut point, so it is cut at max", () => {
  const zeros = new Uint8Array(3 * SMALL.max + 100);
  assert.deepEqual(chunkLengths(zeros, SMALL), [SMALL.max, SMALL.max, SMALL.max, 100]);
});

// ---------------------------------------------------------------------------
// findCut and chunkLengths
// ---------------------------------------------------------------------------

Deno.test("findCut returns all the bytes when no more than min remain", () => {
  const data = randomBytes(1000, 3);
  assert.equal(findCut(data, 0, 0, SMALL), 0);
  assert.equal(findCut(data, 0, 1, SMALL), 1);
  assert.equal(findCut(data, 10, 10 + SMALL.min, SMALL), SMALL.min);
});

Deno.test("findCut never returns a chunk shorter than min unless the input ends", () => {
  const data = randomBytes(256 * KiB, 4);
  for (let start = 0; start + SMALL.min < data.length; start += 997) {
    const len = findCut(data, start, data.length, SMALL);
    assert.ok(len > SMALL.min && len <= SMALL.max, `chunk at ${start} is ${len} bytes`);
  }
});

Deno.test("findCut depends only on the bytes from its start, not on what lies before", () => {
  const data = randomBytes(64 * KiB, 5);
  const start = 12345;
  const copy = data.slice(start);
  assert.equal(findCut(data, start, data.length, SMALL), findCut(copy, 0, copy.length, SMALL));
});

Deno.test("chunking is deterministic: the same bytes give the same chunks", () => {
  const a = randomBytes(2 * MiB, 6);
  const b = randomBytes(2 * MiB, 6);
  assert.deepEqual(chunkLengths(a, P64K), chunkLengths(b, P64K));
  assert.deepEqual(chunkLengths(a, P64K), chunkLengths(a, P64K));
});

Deno.test("every chunk is within [min, max] except the last, and lengths sum to the input", () => {
  for (const [params, size, seed] of [[P64K, 8 * MiB, 7], [SMALL, 1 * MiB, 8]] as const) {
    const data = randomBytes(size + 123, seed);
    const lengths = chunkLengths(data, params);
    assert.equal(lengths.reduce((s, n) => s + n, 0), data.length);
    for (const len of lengths.slice(0, -1)) {
      assert.ok(len >= params.min && len <= params.max, `chunk of ${len} bytes`);
    }
    const last = lengths[lengths.length - 1];
    assert.ok(last > 0 && last <= params.max, `last chunk of ${last} bytes`);
  }
});

Deno.test("an empty input has no chunks", () => {
  assert.deepEqual(chunkLengths(new Uint8Array(0), P64K), []);
});

Deno.test("on 32 MiB of random data the average chunk size is close to avg", () => {
  const data = randomBytes(32 * MiB, 9);
  const lengths = chunkLengths(data, P64K);
  const mean = data.length / lengths.length;
  // Normalized chunking with min-skipping lands a little above avg (about 75 KiB
  // here); a wrong mask would be off by a factor of 4 or more.
  assert.ok(mean >= 0.5 * P64K.avg && mean <= 2 * P64K.avg, `mean chunk ${mean} bytes`);
  // Normalization keeps the spread narrow: few chunks are cut at max.
  const atMax = lengths.filter((len) => len === P64K.max).length;
  assert.ok(atMax <= lengths.length / 20, `${atMax} of ${lengths.length} chunks cut at max`);
});

Deno.test("inserting one byte near the front changes only the chunks near the insertion", () => {
  const before = randomBytes(4 * MiB, 10);
  const after = new Uint8Array(before.length + 1);
  after.set(before.subarray(0, 1000));
  after[1000] = before[1000] ^ 0x5a;
  after.set(before.subarray(1000), 1001);

  const lengthsBefore = chunkLengths(before, P64K);
  const lengthsAfter = chunkLengths(after, P64K);

  // Boundaries re-synchronise within the first couple of chunks, then are the
  // old ones shifted by exactly one byte, to the end.
  const cutsBefore = boundaries(lengthsBefore);
  const cutsAfter = boundaries(lengthsAfter);
  assert.equal(cutsAfter.length, cutsBefore.length);
  const resync = 2;
  assert.deepEqual(
    cutsAfter.slice(resync),
    cutsBefore.slice(resync).map((cut) => cut + 1),
  );

  // And so the later chunks have the same content: at least 90% of their digests
  // are found again.
  const digests = (data: Uint8Array, lengths: number[]) => {
    const out: string[] = [];
    let at = 0;
    for (const len of lengths) {
      out.push(toHex(blake3(data.subarray(at, at + len))));
      at += len;
    }
    return out;
  };
  const digestsBefore = digests(before, lengthsBefore);
  const digestsAfter = new Set(digests(after, lengthsAfter));
  const later = digestsBefore.slice(resync);
  const kept = later.filter((d) => digestsAfter.has(d)).length;
  assert.ok(kept >= 0.9 * later.length, `${kept} of ${later.length} later chunks unchanged`);
  // The chunk that holds the inserted byte is new.
  assert.ok(!digestsAfter.has(digestsBefore[0]));
});

// ---------------------------------------------------------------------------
// chunkStream: the same chunks, however the bytes arrive
// ---------------------------------------------------------------------------

const STREAM_LENGTHS = (p: ChunkParams) => [
  0,
  1,
  p.min,
  p.min + 1,
  p.max,
  p.max + 1,
  3 * p.max + 17,
];

Deno.test("chunkStream yields exactly chunkLengths of the whole buffer with 1-byte reads", async () => {
  for (const size of [...STREAM_LENGTHS(SMALL), 40 * KiB]) {
    const data = randomBytes(size, 100 + size);
    const got = await streamLengths(data, bufferSource(data, () => 1), SMALL);
    assert.deepEqual(got, chunkLengths(data, SMALL), `input of ${size} bytes`);
  }
});

Deno.test("chunkStream yields exactly chunkLengths with random small reads (1..10000 bytes)", async () => {
  for (const params of [SMALL, P64K]) {
    for (const size of [...STREAM_LENGTHS(params), 2 * MiB + 5]) {
      const data = randomBytes(size, 200 + size);
      const sizes = randomBytes(4 * size + 64, size + 1);
      let k = 0;
      const source = bufferSource(data, () => {
        const v = sizes[k] | (sizes[k + 1] << 8);
        k = (k + 2) % (sizes.length - 1);
        return 1 + (v % 10000);
      });
      const got = await streamLengths(data, source, params);
      assert.deepEqual(got, chunkLengths(data, params), `input of ${size} bytes`);
    }
  }
});

Deno.test("chunkStream yields exactly chunkLengths with reads of exactly max bytes", async () => {
  for (const size of [...STREAM_LENGTHS(P64K), 3 * MiB]) {
    const data = randomBytes(size, 300 + size);
    const got = await streamLengths(data, bufferSource(data, () => P64K.max), P64K);
    assert.deepEqual(got, chunkLengths(data, P64K), `input of ${size} bytes`);
  }
});

Deno.test("chunkStream works with a caller buffer of exactly 2 * max, and refuses a smaller one", async () => {
  assert.equal(chunkBufferSize(P64K), 2 * P64K.max);
  for (const size of [...STREAM_LENGTHS(P64K), 3 * MiB]) {
    const data = randomBytes(size, 400 + size);
    const buffer = new Uint8Array(chunkBufferSize(P64K));
    const got = await streamLengths(data, bufferSource(data, (room) => room), P64K, buffer);
    assert.deepEqual(got, chunkLengths(data, P64K), `input of ${size} bytes`);
  }
  const tooSmall = new Uint8Array(2 * P64K.max - 1);
  const source = bufferSource(new Uint8Array(10), (room) => room);
  await assert.rejects(async () => {
    for await (const _ of chunkStream(source, P64K, tooSmall)) { /* drain */ }
  }, RangeError);
});

Deno.test("chunkStream over a real file yields exactly chunkLengths of its bytes", async () => {
  await withTempDir(async (dir) => {
    const data = randomBytes(5 * MiB + 77, 500);
    const path = `${dir}/input.bin`;
    await writeFile(path, data);
    using file = await Deno.open(path, { read: true });
    const got = await streamLengths(data, file, P64K);
    assert.deepEqual(got, chunkLengths(data, P64K));
  });
});

// ---------------------------------------------------------------------------
// validateChunkParams
// ---------------------------------------------------------------------------

Deno.test("validateChunkParams accepts the defaults and the limits", () => {
  assert.deepEqual(validateChunkParams(DEFAULT_CHUNK_PARAMS), DEFAULT_CHUNK_PARAMS);
  assert.deepEqual(validateChunkParams({ min: 64, avg: 64, max: 64 }), {
    min: 64,
    avg: 64,
    max: 64,
  });
  const top = CHUNK_SIZE_LIMITS.max;
  assert.deepEqual(validateChunkParams({ min: top, avg: top, max: top }), {
    min: top,
    avg: top,
    max: top,
  });
});

Deno.test("validateChunkParams rejects bad parameters with an InvalidArgumentError (exit code 2, HTTP 400)", () => {
  const bad: [string, ChunkParams][] = [
    ["avg not a power of two", { min: 16 * KiB, avg: 60 * KiB, max: 256 * KiB }],
    ["avg not a power of two (odd)", { min: 64, avg: 1023, max: 4096 }],
    ["min > avg", { min: 128 * KiB, avg: 64 * KiB, max: 256 * KiB }],
    ["avg > max", { min: 16 * KiB, avg: 512 * KiB, max: 256 * KiB }],
    ["min below 64", { min: 32, avg: 1024, max: 4096 }],
    ["all below 64", { min: 16, avg: 32, max: 32 }],
    ["max above 64 MiB", { min: 1 * MiB, avg: 4 * MiB, max: 64 * MiB + 1 }],
    ["avg above 64 MiB", { min: 1 * MiB, avg: 128 * MiB, max: 128 * MiB }],
    ["zero", { min: 0, avg: 1024, max: 4096 }],
    ["negative", { min: -1, avg: 1024, max: 4096 }],
    ["not an integer", { min: 100.5, avg: 1024, max: 4096 }],
    ["NaN", { min: NaN, avg: 1024, max: 4096 }],
  ];
  for (const [what, params] of bad) {
    assert.throws(() => validateChunkParams(params), InvalidArgumentError, what);
  }
});

Deno.test("chunkStream refuses a source that returns 0 bytes without ending, instead of spinning", async () => {
  const source: ByteSource = { read: () => Promise.resolve(0) };
  await assert.rejects(async () => {
    for await (const _ of chunkStream(source, DEFAULT_CHUNK_PARAMS)) { /* nothing */ }
  }, /returned 0 bytes/);
});

Deno.test("findCut resumed after a scan that found no cut cuts where one fresh scan does", () => {
  const defaults = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 };
  for (const params of [SMALL, defaults]) {
    for (let seed = 1; seed <= 40; seed++) {
      const data = randomBytes(params.max + 100, 1000 + seed);
      for (const cutFn of [findCut, findCutJs]) {
        const fresh = cutFn(data, 0, data.length, params);
        // Reveal the chunk's bytes a few at a time, as a pipeline's buffers do.
        const scan: CutScan = { scanned: 0, fp: 0 };
        let got = -1;
        for (let end = 1 + (seed % 7) * 37; got < 0; end = Math.min(data.length, end * 2 + 13)) {
          const len = cutFn(data, 0, end, params, undefined, scan);
          if (len < end || len === params.max || end === data.length) got = len;
        }
        assert.equal(got, fresh, `${cutFn.name}, seed ${seed}, max ${params.max}`);
      }
    }
  }
});
