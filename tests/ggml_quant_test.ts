/**
 * Tests of the corpus's ggml quantizers (`testkit/ggml_quant.ts`): Q8_0 and
 * Q4_0 blocks of hand-computed values byte for byte (scale, rounding, clamp,
 * nibble order, zero blocks), and 256 blocks of random weights against
 * digests made by an independent float32 implementation of
 * `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` (numpy, outside this
 * repository), so that the corpus's quantized GGUF files are what llama.cpp's
 * reference path would write.
 *
 * @module
 */

import assert from "node:assert/strict";
import { blake3, toHex } from "../kernel/blake3.ts";
import { Prng } from "../testkit/corpus.ts";
import {
  dequantizeQ4_0,
  dequantizeQ8_0,
  f16Bits,
  quantizeQ4_0,
  quantizeQ8_0,
} from "../testkit/ggml_quant.ts";

function block(values: number[]): Float32Array {
  const x = new Float32Array(32);
  x.set(values);
  return x;
}

Deno.test("Q8_0: d = amax / 127 as f16, then q = x / d rounded half away from zero", () => {
  const out = new Uint8Array(34);
  assert.equal(quantizeQ8_0(block([127, -63.5, 0.5, -0.5, 1.49, -127]), out), 34);
  assert.deepEqual([...out.subarray(0, 8)], [0x00, 0x3c, 127, 0xc0, 1, 0xff, 1, 0x81]);
  assert.ok(out.subarray(8).every((b) => b === 0));
});

Deno.test("Q8_0: a block of zeros has d = 0 and every q = 0", () => {
  const out = new Uint8Array(34).fill(0xaa);
  quantizeQ8_0(new Float32Array(32), out);
  assert.ok(out.every((b) => b === 0));
});

Deno.test("Q4_0: d = max / -8 with the sign of the largest magnitude; low nibbles hold the first 16 values", () => {
  const out = new Uint8Array(18);
  const x = block([-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7]);
  assert.equal(quantizeQ4_0(x, out), 18);
  // d = -8 / -8 = 1 (f16 0x3c00); q = x + 8; the last 16 values are 0: q = 8 in the high nibbles.
  assert.deepEqual([...out], [0x00, 0x3c, ...Array.from({ length: 16 }, (_, j) => 0x80 | j)]);
});

Deno.test("Q4_0: a positive maximum gives a negative d, and the opposite extreme clamps to 15", () => {
  const out = new Uint8Array(18);
  // 8 comes first, so it is the max on the tie with -8: d = -1, q(8) = 0, q(-8) = min(15, 16).
  quantizeQ4_0(block([8, -8, 0.49, 0.51]), out);
  assert.deepEqual([...out.subarray(0, 6)], [0x00, 0xbc, 0x80, 0x8f, 0x88, 0x87]);
});

Deno.test("Q4_0: a block of zeros has d = 0 / -8 = -0 (f16 0x8000, as in C) and every q = 8", () => {
  const out = new Uint8Array(18);
  quantizeQ4_0(new Float32Array(32), out);
  assert.deepEqual([...out], [0x00, 0x80, ...new Array(16).fill(0x88)]);
});

Deno.test("Q8_0 and Q4_0 of 256 random blocks match an independent reference byte for byte", () => {
  const prng = new Prng(17);
  const x = new Float32Array(32 * 256);
  for (let i = 0; i < x.length; i++) x[i] = 0.02 * Math.exp(0.5 * prng.normal()) * prng.normal();
  const q8 = new Uint8Array(34 * 256);
  const q4 = new Uint8Array(18 * 256);
  quantizeQ8_0(x, q8);
  quantizeQ4_0(x, q4);
  assert.equal(
    toHex(blake3(q8)),
    "0f13a83e1441b95ea417aef26563665165e9567f95d6cdbaa1783a8ef69140e5",
  );
  assert.equal(
    toHex(blake3(q4)),
    "ebd7878aa6aafa16486a7a509845345d92a65f790d6db9a6790c6a3ac6638264",
  );
  // Dequantized, every value is within half a Q8_0 step and one Q4_0 step of its weight.
  const back8 = new Float32Array(x.length);
  const back4 = new Float32Array(x.length);
  assert.equal(dequantizeQ8_0(q8, back8), x.length);
  assert.equal(dequantizeQ4_0(q4, back4), x.length);
  for (let b = 0; b < 256; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    for (let j = b * 32; j < b * 32 + 32; j++) {
      assert.ok(Math.abs(back8[j] - x[j]) <= 0.6 * (amax / 127), `Q8_0 [${j}]`);
      assert.ok(Math.abs(back4[j] - x[j]) <= 1.01 * (amax / 8), `Q4_0 [${j}]`);
    }
  }
});

Deno.test("quantizers refuse a length that is not whole blocks, or too small an output", () => {
  assert.throws(() => quantizeQ8_0(new Float32Array(31), new Uint8Array(34)), RangeError);
  assert.throws(() => quantizeQ4_0(new Float32Array(64), new Uint8Array(35)), RangeError);
});

Deno.test("f16 conversion rounds to nearest even, as GGML_FP32_TO_FP16 does", () => {
  assert.equal(f16Bits(1), 0x3c00);
  assert.equal(f16Bits(-1), 0xbc00);
  assert.equal(f16Bits(1 + 2 ** -11), 0x3c00);
  assert.equal(f16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(f16Bits(2 ** -24), 0x0001);
});
