/**
 * The residue filters of v2's compressed ops (codec/residue_filter.ts): every
 * `shuffle` / `combine` is undone by its inverse, and the byte-plane, bit-plane
 * and `sub` layouts are exactly those docs/spec/patch-v2.md defines — checked against
 * reference implementations written from that definition, not from the code,
 * and against residues worked out by hand.
 */

import assert from "node:assert/strict";
import { combine, shuffle, uncombine, unshuffle } from "../codec/residue_filter.ts";
import type { Filter } from "../codec/patch_format.ts";
import { randomBytes } from "./helpers.ts";

const WIDTHS = [1, 2, 4] as const;
const SHUFFLES = ["none", "bytes", "bits"] as const;
const COMBINES = ["xor", "sub"] as const;

/** Lengths 0..70 (every tail and every short bit-plane case), then large odd ones. */
const SMALL_LENGTHS = Array.from({ length: 71 }, (_, i) => i);
const MIB = 1024 * 1024;
const LARGE_LENGTHS = [MIB + 3, MIB + 29];

/**
 * `n` random bytes at a non-zero byte offset of their buffer, so that nothing
 * may rely on the array being aligned.
 */
function unaligned(n: number, seed: number): Uint8Array {
  return randomBytes(n + 1, seed).subarray(1);
}

/** A buffer of `n` bytes filled with a pattern the filters never write by chance everywhere. */
function garbage(n: number): Uint8Array {
  return new Uint8Array(n).fill(0xa5);
}

// ---------------------------------------------------------------------------
// Reference implementations, written from docs/spec/patch-v2.md's definitions only.

/** `bytes`: S[p·n + i] = R[i·w + p] for p < w, i < n; the tail is copied. */
function referenceBytePlanes(r: Uint8Array, w: number): Uint8Array {
  const n = Math.floor(r.length / w);
  const s = new Uint8Array(r.length);
  for (let p = 0; p < w; p++) {
    for (let i = 0; i < n; i++) s[p * n + i] = r[i * w + p];
  }
  for (let j = n * w; j < r.length; j++) s[j] = r[j];
  return s;
}

/**
 * `bits`: m = 8·floor(n / 8); plane q = 8k + b is m/8 bytes at S[q·m/8 ..];
 * its bit i (byte floor(i/8), bit i mod 8, LSB first) is bit b of R[i·w + k];
 * bytes from m·w on are copied.
 */
function referenceBitPlanes(r: Uint8Array, w: number): Uint8Array {
  const n = Math.floor(r.length / w);
  const m = 8 * Math.floor(n / 8);
  const s = new Uint8Array(r.length);
  for (let k = 0; k < w; k++) {
    for (let b = 0; b < 8; b++) {
      const q = 8 * k + b;
      for (let i = 0; i < m; i++) {
        const bit = (r[i * w + k] >> b) & 1;
        s[(q * m) / 8 + Math.floor(i / 8)] |= bit << (i % 8);
      }
    }
  }
  for (let j = m * w; j < r.length; j++) s[j] = r[j];
  return s;
}

function referenceShuffle(r: Uint8Array, filter: Filter): Uint8Array {
  if (filter.shuffle === "none") return r.slice();
  if (filter.shuffle === "bytes") return referenceBytePlanes(r, filter.width);
  return referenceBitPlanes(r, filter.width);
}

/**
 * `sub`: element i < n is zigzag(d), d = (T_i − B_i) mod 2^(8w) read as a
 * signed w-byte integer, zigzag(d) = (2d) XOR (d >> (8w − 1)) mod 2^(8w), all
 * little-endian; the tail is XORed. `xor`: byte by byte.
 */
function referenceCombine(t: Uint8Array, b: Uint8Array, filter: Filter): Uint8Array {
  const out = new Uint8Array(t.length);
  const w = filter.width;
  const n = filter.combine === "xor" ? 0 : Math.floor(t.length / w);
  const bits = BigInt(8 * w);
  const mask = (1n << bits) - 1n;
  const le = (bytes: Uint8Array, at: number): bigint => {
    let v = 0n;
    for (let j = w - 1; j >= 0; j--) v = (v << 8n) | BigInt(bytes[at + j]);
    return v;
  };
  for (let i = 0; i < n; i++) {
    const unsigned = (le(t, i * w) - le(b, i * w)) & mask;
    const d = BigInt.asIntN(8 * w, unsigned);
    let z = ((2n * d) ^ (d >> (bits - 1n))) & mask;
    for (let j = 0; j < w; j++) {
      out[i * w + j] = Number(z & 0xffn);
      z >>= 8n;
    }
  }
  for (let j = n * w; j < t.length; j++) out[j] = t[j] ^ b[j];
  return out;
}

// ---------------------------------------------------------------------------
// Inverses.

Deno.test("unshuffle gives back what shuffle was given, for every width and shuffle and length", () => {
  for (const width of WIDTHS) {
    for (const shuffleKind of SHUFFLES) {
      const filter: Filter = { width, shuffle: shuffleKind, combine: "xor" };
      for (const length of [...SMALL_LENGTHS, ...LARGE_LENGTHS]) {
        const src = unaligned(length, 1000 + length);
        const planes = garbage(length);
        shuffle(src, filter, planes);
        const back = garbage(length);
        unshuffle(planes, filter, back);
        assert.deepEqual(back, src, `width ${width}, ${shuffleKind}, length ${length}`);
      }
    }
  }
});

Deno.test("uncombine gives back the target combine was given, for every width and combine and length", () => {
  for (const width of WIDTHS) {
    for (const combineKind of COMBINES) {
      const filter: Filter = { width, shuffle: "none", combine: combineKind };
      for (const length of [...SMALL_LENGTHS, ...LARGE_LENGTHS]) {
        const target = unaligned(length, 2000 + length);
        const base = unaligned(length, 3000 + length);
        const residue = garbage(length);
        combine(target, base, filter, residue);
        const back = garbage(length);
        uncombine(residue, base, filter, back);
        assert.deepEqual(back, target, `width ${width}, ${combineKind}, length ${length}`);
      }
    }
  }
});

Deno.test("uncombine may write the target over its residue (out === residue)", () => {
  for (const width of WIDTHS) {
    for (const combineKind of COMBINES) {
      const filter: Filter = { width, shuffle: "none", combine: combineKind };
      for (const length of [...SMALL_LENGTHS, ...LARGE_LENGTHS]) {
        const target = unaligned(length, 4000 + length);
        const base = unaligned(length, 5000 + length);
        const buffer = garbage(length);
        combine(target, base, filter, buffer);
        uncombine(buffer, base, filter, buffer);
        assert.deepEqual(buffer, target, `width ${width}, ${combineKind}, length ${length}`);
      }
    }
  }
});

Deno.test("a base equal to the target gives an all-zero residue, whatever the filter", () => {
  for (const width of WIDTHS) {
    for (const combineKind of COMBINES) {
      const target = randomBytes(67, width);
      const residue = garbage(67);
      combine(target, target.slice(), { width, shuffle: "none", combine: combineKind }, residue);
      assert.deepEqual(residue, new Uint8Array(67), `width ${width}, ${combineKind}`);
    }
  }
});

// ---------------------------------------------------------------------------
// Layouts, against the format's definition.

Deno.test("shuffle lays out byte planes and bit planes exactly as the format defines them", () => {
  for (const width of WIDTHS) {
    for (const shuffleKind of SHUFFLES) {
      const filter: Filter = { width, shuffle: shuffleKind, combine: "xor" };
      for (const length of [...SMALL_LENGTHS, 4099, 8 * 4 * 37 + 13, MIB + 29]) {
        const src = unaligned(length, 6000 + length);
        const planes = garbage(length);
        shuffle(src, filter, planes);
        assert.deepEqual(
          planes,
          referenceShuffle(src, filter),
          `width ${width}, ${shuffleKind}, length ${length}`,
        );
      }
    }
  }
});

Deno.test("byte planes by hand: width 2 puts every low byte first, then every high byte, then the tail", () => {
  const residue = Uint8Array.of(0x01, 0xa1, 0x02, 0xa2, 0x03, 0xa3, 0x77);
  const planes = garbage(residue.length);
  shuffle(residue, { width: 2, shuffle: "bytes", combine: "sub" }, planes);
  assert.deepEqual([...planes], [0x01, 0x02, 0x03, 0xa1, 0xa2, 0xa3, 0x77]);
});

Deno.test("bit planes by hand: width 1, eight elements, plane b holds bit b of each element LSB first", () => {
  // Element i has only bit (i mod 8) set: plane b is then the single bit b.
  const residue = Uint8Array.of(1, 2, 4, 8, 16, 32, 64, 128, 0xee);
  const planes = garbage(residue.length);
  shuffle(residue, { width: 1, shuffle: "bits", combine: "xor" }, planes);
  assert.deepEqual([...planes], [1, 2, 4, 8, 16, 32, 64, 128, 0xee]);
  // Every element 0x01: plane 0 is all ones, the other planes all zero.
  const ones = new Uint8Array(16).fill(1);
  const onesPlanes = garbage(16);
  shuffle(ones, { width: 1, shuffle: "bits", combine: "xor" }, onesPlanes);
  assert.deepEqual([...onesPlanes], [0xff, 0xff, ...new Array(14).fill(0)]);
});

Deno.test("bit planes need 8 whole elements: fewer are copied unchanged", () => {
  for (const width of WIDTHS) {
    const length = 8 * width - 1;
    const src = randomBytes(length, 77);
    const planes = garbage(length);
    shuffle(src, { width, shuffle: "bits", combine: "xor" }, planes);
    assert.deepEqual(planes, src, `width ${width}`);
  }
});

Deno.test("combine computes the residue the format defines, for every width and combine", () => {
  for (const width of WIDTHS) {
    for (const combineKind of COMBINES) {
      const filter: Filter = { width, shuffle: "none", combine: combineKind };
      for (const length of [...SMALL_LENGTHS, 4099]) {
        const target = unaligned(length, 7000 + length);
        // Half the bases near the target (small differences), half unrelated.
        const base = length % 2 === 0
          ? unaligned(length, 8000 + length)
          : target.map((v, i) => v + (i % 3) - 1);
        const residue = garbage(length);
        combine(target, base, filter, residue);
        assert.deepEqual(
          residue,
          referenceCombine(target, base, filter),
          `width ${width}, ${combineKind}, length ${length}`,
        );
      }
    }
  }
});

// ---------------------------------------------------------------------------
// `sub` residues worked out by hand.

function residueOf(
  target: number[],
  base: number[],
  width: 1 | 2 | 4,
  kind: "sub" | "xor" = "sub",
) {
  const out = garbage(target.length);
  const filter: Filter = { width, shuffle: "none", combine: kind };
  combine(Uint8Array.from(target), Uint8Array.from(base), filter, out);
  // The residue must also give the target back.
  const back = garbage(target.length);
  uncombine(out, Uint8Array.from(base), filter, back);
  assert.deepEqual([...back], target, "uncombine of the worked example");
  return [...out];
}

Deno.test("sub, width 2: one unit up is zigzag 2, one unit down is zigzag 1, and differences wrap around", () => {
  // 0x3f81 − 0x3f80 = +1 → 2.
  assert.deepEqual(residueOf([0x81, 0x3f], [0x80, 0x3f], 2), [2, 0]);
  // 0x3f7f − 0x3f80 = −1 → 1.
  assert.deepEqual(residueOf([0x7f, 0x3f], [0x80, 0x3f], 2), [1, 0]);
  // 0x0000 − 0xffff = +1 (mod 2^16) → 2; and the other way round −1 → 1.
  assert.deepEqual(residueOf([0x00, 0x00], [0xff, 0xff], 2), [2, 0]);
  assert.deepEqual(residueOf([0xff, 0xff], [0x00, 0x00], 2), [1, 0]);
  // Borrow across the byte: 0x4000 − 0x3fff = +1 → 2.
  assert.deepEqual(residueOf([0x00, 0x40], [0xff, 0x3f], 2), [2, 0]);
  // +256 → 512; −256 → 511.
  assert.deepEqual(residueOf([0x00, 0x02], [0x00, 0x01], 2), [0x00, 0x02]);
  assert.deepEqual(residueOf([0x00, 0x01], [0x00, 0x02], 2), [0xff, 0x01]);
  // The extremes: 0x8000 − 0 = −32768 → 0xffff; 0x7fff − 0 = +32767 → 0xfffe.
  assert.deepEqual(residueOf([0x00, 0x80], [0x00, 0x00], 2), [0xff, 0xff]);
  assert.deepEqual(residueOf([0xff, 0x7f], [0x00, 0x00], 2), [0xfe, 0xff]);
  // Elements are independent: +1, 0, −2.
  assert.deepEqual(
    residueOf([0x81, 0x3f, 0x80, 0x3f, 0x7e, 0x3f], [0x80, 0x3f, 0x80, 0x3f, 0x80, 0x3f], 2),
    [2, 0, 0, 0, 3, 0],
  );
});

Deno.test("sub, width 4: the same zigzag over 32-bit little-endian integers", () => {
  // 0x3f800001 − 0x3f800000 = +1 → 2; 0x3f7fffff − 0x3f800000 = −1 → 1.
  assert.deepEqual(residueOf([0x01, 0x00, 0x80, 0x3f], [0x00, 0x00, 0x80, 0x3f], 4), [2, 0, 0, 0]);
  assert.deepEqual(residueOf([0xff, 0xff, 0x7f, 0x3f], [0x00, 0x00, 0x80, 0x3f], 4), [1, 0, 0, 0]);
  // 0 − 0xffffffff = +1 (mod 2^32) → 2.
  assert.deepEqual(residueOf([0, 0, 0, 0], [0xff, 0xff, 0xff, 0xff], 4), [2, 0, 0, 0]);
  // +65536 → 131072 = 0x00020000.
  assert.deepEqual(residueOf([0, 0, 2, 0], [0, 0, 1, 0], 4), [0, 0, 2, 0]);
  // The extremes: 0x80000000 − 0 → 0xffffffff; 0x7fffffff − 0 → 0xfffffffe.
  assert.deepEqual(residueOf([0, 0, 0, 0x80], [0, 0, 0, 0], 4), [0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual(residueOf([0xff, 0xff, 0xff, 0x7f], [0, 0, 0, 0], 4), [0xfe, 0xff, 0xff, 0xff]);
});

Deno.test("sub, width 1: each byte is its own signed difference, zigzagged", () => {
  assert.deepEqual(residueOf([5], [3], 1), [4]); // +2
  assert.deepEqual(residueOf([3], [5], 1), [3]); // −2
  assert.deepEqual(residueOf([0x00], [0xff], 1), [2]); // +1 (mod 256)
  assert.deepEqual(residueOf([0x80], [0x00], 1), [0xff]); // −128
  assert.deepEqual(residueOf([0x7f], [0x00], 1), [0xfe]); // +127
  assert.deepEqual(residueOf([9, 9, 10, 8], [9, 10, 9, 9], 1), [0, 1, 2, 1]);
});

Deno.test("sub XORs the tail bytes that do not make a whole element", () => {
  // Width 2, length 3: one element (+1 → 2), then 0x10 XOR 0x01 (sub would give 30).
  assert.deepEqual(residueOf([0x81, 0x3f, 0x10], [0x80, 0x3f, 0x01], 2), [2, 0, 0x11]);
  // Width 4, length 7: one element (+1 → 2), then three bytes XORed.
  assert.deepEqual(
    residueOf([1, 0, 0, 0, 0x0f, 0xf0, 0x55], [0, 0, 0, 0, 0xff, 0x0f, 0x55], 4),
    [2, 0, 0, 0, 0xf0, 0xff, 0x00],
  );
  // Fewer bytes than one element: all tail.
  assert.deepEqual(residueOf([0x12, 0x34, 0x56], [0x10, 0x30, 0x50], 4), [0x02, 0x04, 0x06]);
});

Deno.test("xor is byte by byte whatever the width", () => {
  for (const width of WIDTHS) {
    assert.deepEqual(
      residueOf([0x0f, 0x81, 0x3f, 0x00, 0xaa], [0xff, 0x80, 0x3f, 0xff, 0x55], width, "xor"),
      [0xf0, 0x01, 0x00, 0xff, 0xff],
      `width ${width}`,
    );
  }
});

// ---------------------------------------------------------------------------
// Why the filters exist.

/** bf16 weights: the high halves of float32 values of magnitude in [0.01, 1), either sign. */
function bf16Weights(count: number, seed: number): Uint16Array {
  const noise = randomBytes(count * 4, seed);
  const view = new DataView(noise.buffer);
  const f32 = new DataView(new ArrayBuffer(4));
  const out = new Uint16Array(count);
  for (let i = 0; i < count; i++) {
    const u = view.getUint32(i * 4, true) / 2 ** 32;
    const magnitude = 0.01 + 0.99 * (u * 2 % 1);
    f32.setFloat32(0, u < 0.5 ? magnitude : -magnitude, true);
    out[i] = f32.getUint32(0, true) >>> 16;
  }
  return out;
}

function littleEndian(values: Uint16Array): Uint8Array {
  const bytes = new Uint8Array(values.length * 2);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setUint16(i * 2, v, true));
  return bytes;
}

Deno.test("bf16 weights nudged by one unit in the last place: the sub residue's high byte plane and high bit planes are all zero", () => {
  const count = 4096;
  const before = bf16Weights(count, 42);
  const nudges = randomBytes(count, 43);
  const after = before.map((v, i) => v + (nudges[i] % 3) - 1); // −1, 0 or +1 unit
  const base = littleEndian(before);
  const target = littleEndian(after);

  const sub: Filter = { width: 2, shuffle: "bytes", combine: "sub" };
  const residue = garbage(target.length);
  combine(target, base, sub, residue);
  // zigzag(−1, 0, +1) = 1, 0, 2: small integers.
  for (let i = 0; i < count; i++) assert.ok(residue[2 * i] <= 2 && residue[2 * i + 1] === 0);

  const bytePlanes = garbage(residue.length);
  shuffle(residue, sub, bytePlanes);
  assert.deepEqual(bytePlanes.subarray(count), new Uint8Array(count), "high byte plane");

  const bitPlanes = garbage(residue.length);
  shuffle(residue, { ...sub, shuffle: "bits" }, bitPlanes);
  const planeSize = count / 8;
  // Planes 0 and 1 (bits 0 and 1 of the low byte) hold everything; planes 2..15 are zero.
  assert.ok(bitPlanes.subarray(0, 2 * planeSize).some((b) => b !== 0));
  assert.deepEqual(bitPlanes.subarray(2 * planeSize), new Uint8Array(14 * planeSize));

  // xor does not do as well: a nudge that carries out of the low byte reaches the high one.
  const xorResidue = garbage(target.length);
  combine(target, base, { ...sub, combine: "xor" }, xorResidue);
  const xorPlanes = garbage(xorResidue.length);
  shuffle(xorResidue, sub, xorPlanes);
  assert.ok(xorPlanes.subarray(count).some((b) => b !== 0));

  // And the whole chain undoes: unshuffle, then uncombine in place.
  const back = garbage(bitPlanes.length);
  unshuffle(bitPlanes, { ...sub, shuffle: "bits" }, back);
  uncombine(back, base, sub, back);
  assert.deepEqual(back, target);
});

Deno.test("combine and uncombine give the same bytes whether the arrays can be viewed as elements or not", () => {
  for (const width of WIDTHS) {
    for (const n of [0, 1, 7, 64 * 1024 + 3]) {
      const filter: Filter = { width, shuffle: "none", combine: "sub" };
      // Offset 0 (typed views of 2- and 4-byte elements) and offset 1 (byte by byte).
      const aligned = [randomBytes(n, 7), randomBytes(n, 8)];
      const odd = aligned.map((a) => {
        const copy = new Uint8Array(a.length + 1).subarray(1);
        copy.set(a);
        return copy;
      });
      const residues = [aligned, odd].map(([t, b]) => {
        const out = new Uint8Array(n);
        combine(t, b, filter, out);
        return out;
      });
      assert.deepEqual(residues[0], residues[1], `combine, width ${width}, ${n} bytes`);
      assert.deepEqual(residues[0], referenceCombine(aligned[0], aligned[1], filter));
      const targets = [aligned, odd].map(([, b]) => {
        const out = new Uint8Array(n);
        uncombine(residues[0], b, filter, out);
        return out;
      });
      assert.deepEqual(targets[0], aligned[0], `uncombine (views), width ${width}, ${n} bytes`);
      assert.deepEqual(targets[1], aligned[0], `uncombine (bytes), width ${width}, ${n} bytes`);
    }
  }
});
