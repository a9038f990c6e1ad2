/**
 * ggml's reference quantizers for Q8_0 and Q4_0 (`quantize_row_q8_0_ref`,
 * `quantize_row_q4_0_ref` in llama.cpp's ggml/src/ggml-quants.c), written
 * anew from their description so that the corpus makes quantized GGUF tensors
 * byte for byte as llama.cpp's reference path would, and tests can check
 * quantized blocks. Every step is float32 arithmetic (`Math.fround`), as in C.
 *
 * Blocks of 32 weights:
 *
 * - Q8_0 (ggml type 8, 34 bytes): `d` f16 LE, then 32 × int8 `qs`.
 *   amax = max |x|; d = amax / 127; id = d ? 1/d : 0; qs[j] = roundf(x[j]·id)
 *   (half away from zero); the f16 of d is stored.
 * - Q4_0 (ggml type 2, 18 bytes): `d` f16 LE, then 16 bytes of nibbles.
 *   max = the value of largest magnitude, sign kept (the first one on ties);
 *   d = max / −8; id = d ? 1/d : 0; q = min(15, trunc(x·id + 8.5)); byte j
 *   holds q[j] in its low nibble and q[j + 16] in its high nibble.
 *
 * f16 conversion rounds to nearest even (as `GGML_FP32_TO_FP16` does).
 *
 * @module
 */

/** Weights per Q8_0 / Q4_0 block. */
export const QK = 32;

/** Bytes of one Q8_0 block (f16 scale + 32 int8). */
export const Q8_0_BLOCK_BYTES = 34;

/** Bytes of one Q4_0 block (f16 scale + 16 bytes of nibbles). */
export const Q4_0_BLOCK_BYTES = 18;

/** ggml's tensor type ids of the quantized types here. */
export const GGML_TYPE_Q4_0 = 2;
/** ggml's tensor type id of Q8_0. */
export const GGML_TYPE_Q8_0 = 8;

const f32 = new Float32Array(1);
const f32Bits = new Uint32Array(f32.buffer);

/** The bits of the float32 nearest `value`. */
export function float32Bits(value: number): number {
  f32[0] = value;
  return f32Bits[0];
}

/** float16 bits of float32 bits, rounded to nearest even; subnormals kept, overflow to infinity. */
export function f16FromF32Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const e = exponent - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mantissa & ((1 << shift) - 1);
    let h = mantissa >>> shift;
    if (rest > half || (rest === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++; // a carry may reach infinity: right
  return sign | h;
}

/** float16 bits of a number (first rounded to float32), round to nearest even. */
export function f16Bits(value: number): number {
  return f16FromF32Bits(float32Bits(value));
}

/** The number a float16's bits stand for. */
export function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

function checkSizes(values: Float32Array, out: Uint8Array, blockBytes: number): number {
  if (values.length % QK !== 0) {
    throw new RangeError(`quantize: ${values.length} values is not a multiple of ${QK}`);
  }
  const blocks = values.length / QK;
  if (out.length < blocks * blockBytes) {
    throw new RangeError(`quantize: output of ${out.length} bytes < ${blocks * blockBytes}`);
  }
  return blocks;
}

/** C's roundf: to nearest, halves away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/**
 * Quantizes `values` (a multiple of 32) to Q8_0 blocks in `out`; returns the
 * bytes written (34 per 32 values).
 */
export function quantizeQ8_0(values: Float32Array, out: Uint8Array): number {
  const blocks = checkSizes(values, out, Q8_0_BLOCK_BYTES);
  const fr = Math.fround;
  for (let b = 0; b < blocks; b++) {
    const x = b * QK;
    let amax = 0;
    for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(values[x + j]));
    const d = fr(amax / 127);
    const id = d !== 0 ? fr(1 / d) : 0;
    const at = b * Q8_0_BLOCK_BYTES;
    const h = f16Bits(d);
    out[at] = h & 0xff;
    out[at + 1] = h >>> 8;
    for (let j = 0; j < QK; j++) out[at + 2 + j] = roundf(fr(values[x + j] * id)) & 0xff;
  }
  return blocks * Q8_0_BLOCK_BYTES;
}

/**
 * Quantizes `values` (a multiple of 32) to Q4_0 blocks in `out`; returns the
 * bytes written (18 per 32 values).
 */
export function quantizeQ4_0(values: Float32Array, out: Uint8Array): number {
  const blocks = checkSizes(values, out, Q4_0_BLOCK_BYTES);
  const fr = Math.fround;
  const half = QK / 2;
  for (let b = 0; b < blocks; b++) {
    const x = b * QK;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const v = values[x + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = fr(max / -8);
    const id = d !== 0 ? fr(1 / d) : 0;
    const at = b * Q4_0_BLOCK_BYTES;
    const h = f16Bits(d);
    out[at] = h & 0xff;
    out[at + 1] = h >>> 8;
    for (let j = 0; j < half; j++) {
      // x·id + 8.5 lies in [0.5, 16.5] (|x·id| ≤ 8): truncation is the floor.
      const q0 = Math.min(15, Math.trunc(fr(fr(values[x + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(fr(fr(values[x + half + j] * id) + 8.5)));
      out[at + 2 + j] = q0 | (q1 << 4);
    }
  }
  return blocks * Q4_0_BLOCK_BYTES;
}

/** Dequantizes Q8_0 blocks: d · q. Returns the values written (32 per block). */
export function dequantizeQ8_0(bytes: Uint8Array, out: Float32Array): number {
  const blocks = Math.floor(bytes.length / Q8_0_BLOCK_BYTES);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q8_0_BLOCK_BYTES;
    const d = f16Value(bytes[at] | (bytes[at + 1] << 8));
    for (let j = 0; j < QK; j++) out[b * QK + j] = d * ((bytes[at + 2 + j] << 24) >> 24);
  }
  return blocks * QK;
}

/** Dequantizes Q4_0 blocks: d · (q − 8). Returns the values written (32 per block). */
export function dequantizeQ4_0(bytes: Uint8Array, out: Float32Array): number {
  const blocks = Math.floor(bytes.length / Q4_0_BLOCK_BYTES);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q4_0_BLOCK_BYTES;
    const d = f16Value(bytes[at] | (bytes[at + 1] << 8));
    for (let j = 0; j < QK / 2; j++) {
      const byte = bytes[at + 2 + j];
      out[b * QK + j] = d * ((byte & 0x0f) - 8);
      out[b * QK + QK / 2 + j] = d * ((byte >>> 4) - 8);
    }
  }
  return blocks * QK;
}
