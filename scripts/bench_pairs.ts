/**
 * Deterministic benchmark pairs of any size, generated fast and streamed to disk
 * in 4 MiB blocks (memory stays at one block).
 *
 * The base is a xorshift128 byte stream (incompressible, like float weights).
 * The target is the base with realistic edits: 37 bytes inserted at offset 4096
 * (a header that grew, shifting everything after it), every 50th MiB rewritten
 * with new bytes (retrained regions, about 2%), and 1 MiB appended.
 *
 * @module
 */

const BLOCK = 4 << 20;
const MIB = 1 << 20;

/** Bytes `[offset, offset + out.length)` of the PRNG stream named by `seed`. */
export function streamBytes(seed: number, offset: number, out: Uint8Array): void {
  // Each 64-byte line is generated from (seed, line number): random access, no state.
  const words = new Uint32Array(16);
  const bytes = new Uint8Array(words.buffer);
  let pos = 0;
  while (pos < out.length) {
    const absolute = offset + pos;
    const line = Math.floor(absolute / 64);
    let x = (Math.imul(seed, 0x9e3779b1) ^ Math.imul(line % 0x100000000, 0x85ebca6b) ^
          Math.imul(Math.floor(line / 0x100000000) + 1, 0xc2b2ae35)) >>> 0 || 1;
    for (let k = 0; k < 16; k++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[k] = x;
    }
    const from = absolute % 64;
    const n = Math.min(64 - from, out.length - pos);
    out.set(bytes.subarray(from, from + n), pos);
    pos += n;
  }
}

/** A region of the target: bytes of a PRNG stream (`seed`) starting at `offset`. */
interface Segment {
  readonly seed: number;
  readonly offset: number;
  readonly length: number;
}

/** The base of a pair: one stream. */
export function baseSegments(size: number): Segment[] {
  return [{ seed: 1, offset: 0, length: size }];
}

/** The target of a pair, as segments of the base stream and of new streams. */
export function targetSegments(size: number): Segment[] {
  const segments: Segment[] = [];
  const insertAt = Math.min(4096, size);
  segments.push({ seed: 1, offset: 0, length: insertAt });
  segments.push({ seed: 2, offset: 0, length: 37 });
  let at = insertAt;
  let rewriteSeed = 100;
  while (at < size) {
    const mib = Math.floor(at / MIB);
    const end = Math.min(size, (mib + 1) * MIB);
    if (mib % 50 === 25) segments.push({ seed: rewriteSeed++, offset: 0, length: end - at });
    else segments.push({ seed: 1, offset: at, length: end - at });
    at = end;
  }
  segments.push({ seed: 3, offset: 0, length: Math.min(MIB, size) });
  return segments;
}

/** Writes segments to a file. */
export async function writeSegments(path: string, segments: Segment[]): Promise<number> {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const block = new Uint8Array(BLOCK);
  let total = 0;
  try {
    for (const s of segments) {
      for (let done = 0; done < s.length;) {
        const n = Math.min(BLOCK, s.length - done);
        streamBytes(s.seed, s.offset + done, block.subarray(0, n));
        for (let w = 0; w < n;) w += await file.write(block.subarray(w, n));
        done += n;
        total += n;
      }
    }
  } finally {
    file.close();
  }
  return total;
}

/** Writes the base and target of the pair of `size` bytes into `dir`. */
export async function writePair(
  dir: string,
  size: number,
): Promise<{ base: string; target: string }> {
  const base = `${dir}/base-${size}.bin`;
  const target = `${dir}/target-${size}.bin`;
  await writeSegments(base, baseSegments(size));
  await writeSegments(target, targetSegments(size));
  return { base, target };
}
