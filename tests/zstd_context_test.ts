/**
 * zstd through reused contexts: `ZstdCompressor` (codec/zstd_context.ts,
 * node:zlib) makes standard frames into one reused buffer, `ZstdDecompressor`
 * (codec/zstd_decoder.ts, zstd's decoder in WebAssembly) decodes a whole
 * frame into the caller's buffer and refuses corrupt frames and frames
 * holding more than it was told, and `compressBound` bounds zstd's output.
 */

import assert from "node:assert/strict";
import zlib from "node:zlib";
import { compressBound, ZstdCompressor } from "../codec/zstd_context.ts";
import {
  DECODER_INPUT_BYTES,
  DECODER_OUTPUT_BYTES,
  ZstdDataError,
  ZstdDecompressor,
  zstdFrameLength,
} from "../codec/zstd_decoder.ts";
import { randomBytes } from "./helpers.ts";

const MIB = 1024 * 1024;

/** zstd's frame magic number, little-endian. */
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** A plain Uint8Array copy: a Buffer's slice is a view, and Buffers do not deepEqual Uint8Arrays. */
function plain(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/** node:zlib's own one-shot decompression, as the reference decoder. */
function reference(frame: Uint8Array): Uint8Array {
  return plain(zlib.zstdDecompressSync(frame));
}

/** A frame made by node:zlib's own one-shot compression. */
function frameOf(data: Uint8Array): Uint8Array {
  return plain(zlib.zstdCompressSync(data));
}

/** 1 MiB of text-like, highly compressible bytes. */
function compressible(n: number): Uint8Array {
  const line = new TextEncoder().encode("layer.17.mlp.weight: bf16 [4096, 11008]\n");
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += line.length) out.set(line.subarray(0, n - at), at);
  return out;
}

// ---------------------------------------------------------------------------
// ZstdCompressor

Deno.test("ZstdCompressor makes standard zstd frames of empty, one-byte, random and compressible inputs", async () => {
  const compressor = await ZstdCompressor.create(MIB, 3);
  try {
    for (
      const input of [
        new Uint8Array(0),
        Uint8Array.of(0x42),
        randomBytes(MIB, 1),
        compressible(MIB),
      ]
    ) {
      const frame = compressor.compress(input);
      assert.deepEqual([...frame.subarray(0, 4)], ZSTD_MAGIC);
      assert.deepEqual(reference(frame), input, `${input.length} bytes`);
    }
    assert.ok(compressor.compress(compressible(MIB)).length < MIB / 100);
  } finally {
    compressor.close();
  }
});

Deno.test("ZstdCompressor returns a view of its own buffer: the next call overwrites the previous result", async () => {
  const compressor = await ZstdCompressor.create(64 * 1024, 3);
  try {
    const first = compressor.compress(randomBytes(1000, 2));
    const kept = first.slice();
    assert.deepEqual(reference(kept), randomBytes(1000, 2));
    const second = compressor.compress(randomBytes(1000, 3));
    assert.equal(second.buffer, first.buffer, "one buffer for every call");
    assert.equal(second.byteOffset, first.byteOffset);
    assert.notDeepEqual(first, kept, "the first result was overwritten");
    assert.deepEqual(reference(second), randomBytes(1000, 3));
    // A caller that keeps a result copies it first, as `kept` above did.
    assert.deepEqual(reference(kept), randomBytes(1000, 2));
  } finally {
    compressor.close();
  }
});

Deno.test("ZstdCompressor refuses an input whose frame cannot fit the buffer sized for maxInput, and works on", async () => {
  const compressor = await ZstdCompressor.create(1024, 3);
  try {
    assert.throws(() => compressor.compress(randomBytes(8192, 4)), /did not fit/);
    // Compressible input larger than maxInput still fits.
    assert.deepEqual(reference(compressor.compress(compressible(8192))), compressible(8192));
    assert.deepEqual(reference(compressor.compress(randomBytes(1024, 5))), randomBytes(1024, 5));
  } finally {
    compressor.close();
  }
});

// ---------------------------------------------------------------------------
// ZstdDecompressor

const DATA = randomBytes(10_000, 6);
const FRAME = frameOf(DATA);

Deno.test("ZstdDecompressor decodes a frame holding exactly max bytes into the start of dest", async () => {
  const decompressor = await ZstdDecompressor.create();
  try {
    const dest = new Uint8Array(DATA.length + 1).fill(0xee);
    assert.equal(decompressor.decompressFrame(FRAME, dest, DATA.length), DATA.length);
    assert.deepEqual(dest.subarray(0, DATA.length), DATA);
    // Fewer than max is fine too: the count says how many.
    const roomy = new Uint8Array(3 * DATA.length);
    assert.equal(decompressor.decompressFrame(FRAME, roomy, 2 * DATA.length), DATA.length);
    assert.deepEqual(roomy.subarray(0, DATA.length), DATA);
    // Frames of compressible data, and of nothing.
    const text = compressible(MIB);
    const big = new Uint8Array(MIB + 1);
    assert.equal(decompressor.decompressFrame(frameOf(text), big, MIB), MIB);
    assert.deepEqual(big.subarray(0, MIB), text);
    assert.equal(decompressor.decompressFrame(frameOf(new Uint8Array(0)), dest, 0), 0);
  } finally {
    decompressor.close();
  }
});

Deno.test("ZstdDecompressor decodes the frames ZstdCompressor makes", async () => {
  const compressor = await ZstdCompressor.create(MIB, 1);
  const decompressor = await ZstdDecompressor.create();
  try {
    const dest = new Uint8Array(MIB + 1);
    for (const input of [randomBytes(MIB, 7), compressible(MIB), Uint8Array.of(9)]) {
      const n = decompressor.decompressFrame(compressor.compress(input), dest, input.length);
      assert.equal(n, input.length);
      assert.deepEqual(dest.subarray(0, n), input);
    }
  } finally {
    compressor.close();
    decompressor.close();
  }
});

Deno.test("a ZstdCompressor with capped tables (a stronger level in little memory) makes frames the decompressor reads", async () => {
  const strong = await ZstdCompressor.create(MIB, 12, 18);
  const decompressor = await ZstdDecompressor.create();
  try {
    const dest = new Uint8Array(MIB + 1);
    for (const input of [randomBytes(MIB, 8), compressible(MIB), Uint8Array.of(9)]) {
      const frame = strong.compress(input);
      assert.ok(frame.length < input.length + 64);
      const n = decompressor.decompressFrame(frame, dest, input.length);
      assert.equal(n, input.length);
      assert.deepEqual(dest.subarray(0, n), input);
    }
  } finally {
    strong.close();
    decompressor.close();
  }
});

Deno.test("ZstdDecompressor throws ZstdDataError when the frame holds more than max bytes", async () => {
  const decompressor = await ZstdDecompressor.create();
  try {
    const dest = new Uint8Array(DATA.length);
    assert.throws(
      () => decompressor.decompressFrame(FRAME, dest, DATA.length - 1),
      ZstdDataError,
    );
    assert.throws(() => decompressor.decompressFrame(FRAME, dest, 0), ZstdDataError);
  } finally {
    decompressor.close();
  }
});

Deno.test("ZstdDecompressor throws ZstdDataError for a corrupt frame: damaged magic, damaged header, trailing bytes", async () => {
  const decompressor = await ZstdDecompressor.create();
  try {
    const dest = new Uint8Array(DATA.length + 1);
    // The magic, the frame header's descriptor, the first block's header (byte 6
    // of this frame: descriptor 0, then a window descriptor). A damaged window
    // descriptor alone is no error: decoding in one shot needs no window.
    for (const at of [0, 3, 4, 6]) {
      const bad = FRAME.slice();
      bad[at] ^= 0xff;
      assert.throws(
        () => decompressor.decompressFrame(bad, dest, DATA.length),
        ZstdDataError,
        `byte ${at} damaged`,
      );
    }
    const trailing = new Uint8Array(FRAME.length + 5);
    trailing.set(FRAME);
    assert.throws(() => decompressor.decompressFrame(trailing, dest, DATA.length), ZstdDataError);
  } finally {
    decompressor.close();
  }
});

Deno.test("ZstdDecompressor throws a RangeError when dest has no room for max + 1 bytes", async () => {
  const decompressor = await ZstdDecompressor.create();
  try {
    const err = assert.throws(
      () => decompressor.decompressFrame(FRAME, new Uint8Array(DATA.length), DATA.length),
      RangeError,
    );
    assert.ok(!((err as unknown) instanceof ZstdDataError));
    assert.throws(() => decompressor.decompressFrame(FRAME, new Uint8Array(0), 0), RangeError);
  } finally {
    decompressor.close();
  }
});

Deno.test("ZstdDecompressor works again after an error: the context is reset on every call", async () => {
  const decompressor = await ZstdDecompressor.create();
  try {
    const dest = new Uint8Array(DATA.length + 1);
    const bad = FRAME.slice();
    bad[4] ^= 0xff;
    const attempts: Array<() => unknown> = [
      () => decompressor.decompressFrame(bad, dest, DATA.length),
      () => decompressor.decompressFrame(FRAME, dest, DATA.length - 1),
      () => decompressor.decompressFrame(FRAME, new Uint8Array(1), DATA.length),
      // Half a frame: whatever it is reported as, the next call must not see its leftovers.
      () => decompressor.decompressFrame(FRAME.subarray(0, FRAME.length >> 1), dest, DATA.length),
    ];
    for (const attempt of attempts) {
      try {
        attempt();
      } catch {
        // Refused: what matters here is the call after it.
      }
      dest.fill(0);
      assert.equal(decompressor.decompressFrame(FRAME, dest, DATA.length), DATA.length);
      assert.deepEqual(dest.subarray(0, DATA.length), DATA);
    }
  } finally {
    decompressor.close();
  }
});

Deno.test({
  name: "ZstdDecompressor throws ZstdDataError for a frame cut short",
  async fn() {
    const decompressor = await ZstdDecompressor.create();
    try {
      const dest = new Uint8Array(DATA.length + 1);
      const cut = FRAME.subarray(0, FRAME.length - 3);
      assert.throws(() => decompressor.decompressFrame(cut, dest, DATA.length), ZstdDataError);
    } finally {
      decompressor.close();
    }
  },
});

// ---------------------------------------------------------------------------
// compressBound

Deno.test("compressBound is zstd's ZSTD_COMPRESSBOUND", () => {
  assert.equal(compressBound(0), 64); // 0 + 0 + (131072 >> 11)
  assert.equal(compressBound(1000), 1066); // 1000 + 3 + (130072 >> 11)
  assert.equal(compressBound(128 * 1024), 128 * 1024 + 512);
  assert.equal(compressBound(MIB), MIB + 4096);
});

Deno.test("compressBound(n) is at least the compressed size of n random bytes", async () => {
  const compressor = await ZstdCompressor.create(MIB + 3, 1);
  try {
    for (const n of [0, 1, 100, 4096, 128 * 1024 - 1, 128 * 1024, 128 * 1024 + 1, MIB + 3]) {
      const input = randomBytes(n, 100 + n);
      const bound = compressBound(n);
      assert.ok(frameOf(input).length <= bound, `zlib, ${n} bytes`);
      assert.ok(compressor.compress(input).length <= bound, `ZstdCompressor, ${n} bytes`);
    }
  } finally {
    compressor.close();
  }
});

// ---------------------------------------------------------------------------
// ZstdDecompressor: what the WebAssembly decoder adds

/** A frame of `data` with zstd's content checksum (XXH64) at its end. */
function checksummedFrameOf(data: Uint8Array): Uint8Array {
  return plain(
    zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_checksumFlag]: 1 } }),
  );
}

Deno.test("ZstdDecompressor checks a frame's content checksum: a damaged one is ZstdDataError", async () => {
  const decompressor = await ZstdDecompressor.create();
  const dest = new Uint8Array(DATA.length + 1);
  const frame = checksummedFrameOf(DATA);
  assert.equal(decompressor.decompressFrame(frame, dest, DATA.length), DATA.length);
  assert.deepEqual(dest.subarray(0, DATA.length), DATA);
  const bad = frame.slice();
  bad[bad.length - 1] ^= 0x01;
  assert.throws(() => decompressor.decompressFrame(bad, dest, DATA.length), ZstdDataError);
});

Deno.test("ZstdDecompressor refuses a frame that declares a window above 2^30 bytes, whatever its size", async () => {
  const decompressor = await ZstdDecompressor.create();
  // Frame header: magic, descriptor 0 (no content size, not single-segment),
  // window descriptor 0xa8 (exponent 21 + 10 = 2^31 bytes), then one empty
  // last raw block (header 0x000001).
  const frame = Uint8Array.of(...ZSTD_MAGIC, 0x00, 0xa8, 0x01, 0x00, 0x00);
  assert.throws(
    () => decompressor.decompressFrame(frame, new Uint8Array(16), 8),
    (err: unknown) => err instanceof ZstdDataError && /too much memory/.test(err.message),
  );
});

Deno.test("ZstdDecompressor refuses a frame that needs a dictionary", async () => {
  const decompressor = await ZstdDecompressor.create();
  // Descriptor 0x01: a 1-byte dictionary ID (7) after the window descriptor.
  const frame = Uint8Array.of(...ZSTD_MAGIC, 0x01, 0x58, 0x07, 0x01, 0x00, 0x00);
  assert.throws(
    () => decompressor.decompressFrame(frame, new Uint8Array(16), 8),
    (err: unknown) => err instanceof ZstdDataError && /dictionary/i.test(err.message),
  );
});

Deno.test("ZstdDecompressor refuses a frame longer than its input region without reading it", async () => {
  const decompressor = await ZstdDecompressor.create();
  const noise = randomBytes(DECODER_INPUT_BYTES + 4096, 9);
  const compressor = await ZstdCompressor.create(noise.length, 1);
  const frame = compressor.compress(noise).slice(); // incompressible: a little longer than its input
  compressor.close();
  assert.equal(zstdFrameLength(frame), frame.length);
  assert.ok(frame.length > DECODER_INPUT_BYTES);
  const max = DECODER_OUTPUT_BYTES;
  assert.throws(
    () => decompressor.decompressFrame(frame, new Uint8Array(max + 1), max),
    (err: unknown) =>
      err instanceof ZstdDataError && /more than a frame may have/.test(err.message),
  );
});

Deno.test("one ZstdDecompressor holds a fixed memory of under 3 MiB", async () => {
  const decompressor = await ZstdDecompressor.create();
  assert.ok(decompressor.memoryBytes >= DECODER_INPUT_BYTES + DECODER_OUTPUT_BYTES);
  assert.ok(decompressor.memoryBytes < 3 * MIB);
});
