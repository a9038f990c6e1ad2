/**
 * The filters of v2's compressed ops, as pure functions over byte arrays: how
 * target bytes are turned into the bytes zstd compresses, and back.
 *
 * A filter (`patch_format.ts` decodes its byte) has an element `width` (1, 2
 * or 4 bytes), a `combine` step for DELTA ops (how target and base make the
 * residue: `xor`, or `sub`, the zigzag-coded difference of little-endian
 * integers) and a `shuffle` step (`none`, `bytes`: byte planes, `bits`: bit
 * planes). Float weights nudged by a fine-tune differ from their base by a few
 * units in the last place: their `sub` residue is small integers, and its high
 * bits and bytes are almost all zero — which zstd compresses far better once
 * they are grouped into planes.
 *
 * Specification: docs/spec/patch-v2.md, "The filters, exactly" (the exact
 * layouts of byte and bit planes, the zigzag, and how tail bytes are treated).
 *
 * `combine`, `uncombine`, `shuffle` and `unshuffle` run the WebAssembly
 * kernels (`filter_kernels.ts`) for inputs of up to `KERNEL_REGION` bytes (every
 * op: `MAX_OP_RAW`), 2-8× faster; the `...Js` functions are the reference
 * implementation they are tested against, and run for longer inputs.
 *
 * @module
 */

import { filterKernels, KERNEL_REGION } from "./filter_kernels.ts";
import type { Filter } from "./patch_format.ts";

/** The residue of `target` against `base` (same length) into `out`. */
export function combine(
  target: Uint8Array,
  base: Uint8Array,
  filter: Filter,
  out: Uint8Array,
): void {
  const kernels = target.length <= KERNEL_REGION ? filterKernels() : undefined;
  if (kernels) kernels.combine(target, base, filter, out);
  else combineJs(target, base, filter, out);
}

/** The target from a residue and its base (inverse of `combine`); `out` may be `residue`. */
export function uncombine(
  residue: Uint8Array,
  base: Uint8Array,
  filter: Filter,
  out: Uint8Array,
): void {
  const kernels = residue.length <= KERNEL_REGION ? filterKernels() : undefined;
  if (kernels) kernels.uncombine(residue, base, filter, out);
  else uncombineJs(residue, base, filter, out);
}

/**
 * `shuffle(combine(target, base, filter), filter)` into `out` (not `target`
 * nor `base`), in one pass through the kernels where they run.
 */
export function combineShuffle(
  target: Uint8Array,
  base: Uint8Array,
  filter: Filter,
  out: Uint8Array,
  scratch: Uint8Array,
): void {
  const kernels = target.length <= KERNEL_REGION ? filterKernels() : undefined;
  if (kernels) kernels.combineShuffle(target, base, filter, out);
  else {
    combineJs(target, base, filter, scratch);
    shuffleJs(scratch.subarray(0, target.length), filter, out);
  }
}

/**
 * The target from the planes of a residue and its base:
 * `uncombine(unshuffle(src, filter), base, filter)` into `out` (not `src` nor
 * `base`), in one pass through the kernels where they run; `scratch` (room for
 * `src.length` bytes) is used only where they do not.
 */
export function unshuffleUncombine(
  src: Uint8Array,
  base: Uint8Array,
  filter: Filter,
  out: Uint8Array,
  scratch: Uint8Array,
): void {
  const kernels = src.length <= KERNEL_REGION ? filterKernels() : undefined;
  if (kernels) kernels.unshuffleUncombine(src, base, filter, out);
  else {
    const residue = scratch.subarray(0, src.length);
    unshuffleJs(src, filter, residue);
    uncombineJs(residue, base, filter, out);
  }
}

/** Groups `src` into planes (`filter.shuffle`) into `out` (not `src`). */
export function shuffle(src: Uint8Array, filter: Filter, out: Uint8Array): void {
  const kernels = src.length <= KERNEL_REGION ? filterKernels() : undefined;
  if (kernels) kernels.planes(src, filter, out, true);
  else shuffleJs(src, filter, out);
}

/** Inverse of `shuffle`: `src` are planes, `out` (not `src`) gets the residue. */
export function unshuffle(src: Uint8Array, filter: Filter, out: Uint8Array): void {
  const kernels = src.length <= KERNEL_REGION ? filterKernels() : undefined;
  if (kernels) kernels.planes(src, filter, out, false);
  else unshuffleJs(src, filter, out);
}

/** Whether typed-array views read little-endian here (x86-64 and aarch64 do). */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Whether all of `arrays` can be viewed as elements of `width` bytes in place. */
function viewable(width: number, ...arrays: Uint8Array[]): boolean {
  return LITTLE_ENDIAN && arrays.every((a) => a.byteOffset % width === 0);
}

/** `combine` in TypeScript: the reference implementation. */
export function combineJs(
  target: Uint8Array,
  base: Uint8Array,
  filter: Filter,
  out: Uint8Array,
): void {
  const length = target.length;
  const w = filter.width;
  const n = Math.floor(length / w);
  if (filter.combine === "xor") {
    for (let j = 0; j < length; j++) out[j] = target[j] ^ base[j];
    return;
  }
  if (w === 1) {
    for (let i = 0; i < n; i++) {
      const d = ((target[i] - base[i]) << 24) >> 24;
      out[i] = (d << 1) ^ (d >> 31);
    }
  } else if (w === 2 && viewable(2, target, base, out)) {
    const t16 = new Uint16Array(target.buffer, target.byteOffset, n);
    const b16 = new Uint16Array(base.buffer, base.byteOffset, n);
    const o16 = new Uint16Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const d = ((t16[i] - b16[i]) << 16) >> 16;
      o16[i] = (d << 1) ^ (d >> 31);
    }
  } else if (w === 4 && viewable(4, target, base, out)) {
    const t32 = new Int32Array(target.buffer, target.byteOffset, n);
    const b32 = new Int32Array(base.buffer, base.byteOffset, n);
    const o32 = new Int32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const d = (t32[i] - b32[i]) | 0;
      o32[i] = (d << 1) ^ (d >> 31);
    }
  } else if (w === 2) {
    for (let i = 0, j = 0; i < n; i++, j += 2) {
      const t = target[j] | (target[j + 1] << 8);
      const b = base[j] | (base[j + 1] << 8);
      const d = ((t - b) << 16) >> 16;
      const z = (d << 1) ^ (d >> 31);
      out[j] = z;
      out[j + 1] = z >> 8;
    }
  } else {
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      const t = target[j] | (target[j + 1] << 8) | (target[j + 2] << 16) | (target[j + 3] << 24);
      const b = base[j] | (base[j + 1] << 8) | (base[j + 2] << 16) | (base[j + 3] << 24);
      const d = (t - b) | 0;
      const z = (d << 1) ^ (d >> 31);
      out[j] = z;
      out[j + 1] = z >> 8;
      out[j + 2] = z >> 16;
      out[j + 3] = z >> 24;
    }
  }
  for (let j = n * w; j < length; j++) out[j] = target[j] ^ base[j];
}

/** `uncombine` in TypeScript: the reference implementation. */
export function uncombineJs(
  residue: Uint8Array,
  base: Uint8Array,
  filter: Filter,
  out: Uint8Array,
): void {
  const length = residue.length;
  const w = filter.width;
  const n = Math.floor(length / w);
  if (filter.combine === "xor") {
    for (let j = 0; j < length; j++) out[j] = residue[j] ^ base[j];
    return;
  }
  if (w === 1) {
    for (let i = 0; i < n; i++) {
      const z = residue[i];
      out[i] = base[i] + ((z >>> 1) ^ -(z & 1));
    }
  } else if (w === 2 && viewable(2, residue, base, out)) {
    const r16 = new Uint16Array(residue.buffer, residue.byteOffset, n);
    const b16 = new Uint16Array(base.buffer, base.byteOffset, n);
    const o16 = new Uint16Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const z = r16[i];
      o16[i] = b16[i] + ((z >>> 1) ^ -(z & 1));
    }
  } else if (w === 4 && viewable(4, residue, base, out)) {
    const r32 = new Int32Array(residue.buffer, residue.byteOffset, n);
    const b32 = new Int32Array(base.buffer, base.byteOffset, n);
    const o32 = new Int32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const z = r32[i];
      o32[i] = (b32[i] + ((z >>> 1) ^ -(z & 1))) | 0;
    }
  } else if (w === 2) {
    for (let i = 0, j = 0; i < n; i++, j += 2) {
      const z = residue[j] | (residue[j + 1] << 8);
      const t = (base[j] | (base[j + 1] << 8)) + ((z >>> 1) ^ -(z & 1));
      out[j] = t;
      out[j + 1] = t >> 8;
    }
  } else {
    for (let i = 0, j = 0; i < n; i++, j += 4) {
      const z = residue[j] | (residue[j + 1] << 8) | (residue[j + 2] << 16) |
        (residue[j + 3] << 24);
      const b = base[j] | (base[j + 1] << 8) | (base[j + 2] << 16) | (base[j + 3] << 24);
      const t = (b + ((z >>> 1) ^ -(z & 1))) | 0;
      out[j] = t;
      out[j + 1] = t >> 8;
      out[j + 2] = t >> 16;
      out[j + 3] = t >> 24;
    }
  }
  for (let j = n * w; j < length; j++) out[j] = residue[j] ^ base[j];
}

/** `shuffle` in TypeScript: the reference implementation. */
export function shuffleJs(src: Uint8Array, filter: Filter, out: Uint8Array): void {
  planes(src, filter, out, true);
}

/** `unshuffle` in TypeScript: the reference implementation. */
export function unshuffleJs(src: Uint8Array, filter: Filter, out: Uint8Array): void {
  planes(src, filter, out, false);
}

function planes(src: Uint8Array, filter: Filter, out: Uint8Array, forward: boolean): void {
  const length = src.length;
  const w = filter.width;
  if (filter.shuffle === "none") {
    out.set(src);
    return;
  }
  const n = Math.floor(length / w);
  if (filter.shuffle === "bytes") {
    for (let p = 0; p < w; p++) {
      const plane = p * n;
      if (forward) { for (let i = 0; i < n; i++) out[plane + i] = src[i * w + p]; }
      else for (let i = 0; i < n; i++) out[i * w + p] = src[plane + i];
    }
    out.set(src.subarray(n * w), n * w);
    return;
  }
  const groups = n >>> 3; // of 8 elements
  const m = groups * 8;
  for (let k = 0; k < w; k++) {
    for (let g = 0; g < groups; g++) {
      // Elements 8g..8g+7, byte k: 8 rows of 8 bits; plane 8k+b byte g is column b.
      const e = (8 * g) * w + k;
      const p = 8 * k * groups + g; // byte g of plane 8k
      let x: number, y: number;
      if (forward) {
        x = (src[e + 7 * w] << 24) | (src[e + 6 * w] << 16) | (src[e + 5 * w] << 8) |
          src[e + 4 * w];
        y = (src[e + 3 * w] << 24) | (src[e + 2 * w] << 16) | (src[e + w] << 8) | src[e];
      } else {
        x = (src[p + 7 * groups] << 24) | (src[p + 6 * groups] << 16) |
          (src[p + 5 * groups] << 8) | src[p + 4 * groups];
        y = (src[p + 3 * groups] << 24) | (src[p + 2 * groups] << 16) | (src[p + groups] << 8) |
          src[p];
      }
      // Transpose the 8x8 bit matrix (Hacker's Delight, transpose8rS32).
      let t = (x ^ (x >>> 7)) & 0x00aa00aa;
      x = x ^ t ^ (t << 7);
      t = (y ^ (y >>> 7)) & 0x00aa00aa;
      y = y ^ t ^ (t << 7);
      t = (x ^ (x >>> 14)) & 0x0000cccc;
      x = x ^ t ^ (t << 14);
      t = (y ^ (y >>> 14)) & 0x0000cccc;
      y = y ^ t ^ (t << 14);
      t = (x & 0xf0f0f0f0) | ((y >>> 4) & 0x0f0f0f0f);
      y = ((x << 4) & 0xf0f0f0f0) | (y & 0x0f0f0f0f);
      x = t;
      if (forward) {
        out[p + 7 * groups] = x >>> 24;
        out[p + 6 * groups] = x >>> 16;
        out[p + 5 * groups] = x >>> 8;
        out[p + 4 * groups] = x;
        out[p + 3 * groups] = y >>> 24;
        out[p + 2 * groups] = y >>> 16;
        out[p + groups] = y >>> 8;
        out[p] = y;
      } else {
        out[e + 7 * w] = x >>> 24;
        out[e + 6 * w] = x >>> 16;
        out[e + 5 * w] = x >>> 8;
        out[e + 4 * w] = x;
        out[e + 3 * w] = y >>> 24;
        out[e + 2 * w] = y >>> 16;
        out[e + w] = y >>> 8;
        out[e] = y;
      }
    }
  }
  out.set(src.subarray(m * w), m * w);
}
