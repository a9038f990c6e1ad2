/**
 * FastCDC content-defined chunking (Xia et al., 2016/2020) with normalized
 * chunking, level 2, over a 32-bit gear hash.
 *
 * Where a chunk ends depends only on the bytes from its start: the gear hash at
 * position i is a function of the last 32 bytes, so inserting a byte disturbs only
 * the chunk around it and the stream re-synchronises at the next cut point.
 *
 * The algorithm, for a chunk starting at `s` with `n = min(available, max)` bytes:
 * - if `n <= min`, the chunk is all `n` bytes;
 * - the hash `fp` starts at 0 at `s + min` (cut-point skipping) and is updated as
 *   `fp = (fp << 1) + GEAR[byte]` (32-bit wrap-around);
 * - before `s + avg` a cut is made after the first byte where `fp & maskS == 0`,
 *   from `s + avg` on, where `fp & maskL == 0`; `maskS` has `log2(avg) + 2` bits
 *   set and `maskL` has `log2(avg) - 2` (both the top bits of the word, which
 *   depend on the most bytes);
 * - with no cut point the chunk is `n` bytes long.
 *
 * `GEAR` is 256 words from the SplitMix32 generator seeded with 0x706f6f6c
 * ("pool"). Changing it, or the masks, changes every chunk boundary and so every
 * stored chunk index file: it is part of the format.
 *
 * @module
 */

import { InvalidArgumentError } from "../kernel/errors.ts";
import { filterKernels, KERNEL_REGION } from "./filter_kernels.ts";
import { formatBytes } from "../kernel/units.ts";

/** Chunk size limits in bytes. `avg` must be a power of two. */
export interface ChunkParams {
  readonly min: number;
  readonly avg: number;
  readonly max: number;
}

/**
 * The defaults (docs/spec/fastcdc.md): 256 KiB / 1 MiB / 2 MiB. The largest
 * chunk sizes the encoder's pipeline buffers (1.25 × max each): 2 MiB lets a
 * hashing Worker have its own buffer within the 100 MB budget (encoder.ts,
 * `encodeThreads`). Index files record the parameters they were made with.
 */
export const DEFAULT_CHUNK_PARAMS: ChunkParams = Object.freeze({
  min: 256 * 1024,
  avg: 1024 * 1024,
  max: 2 * 1024 * 1024,
});

/** Smallest and largest values accepted for any chunk-size parameter. */
export const CHUNK_SIZE_LIMITS = Object.freeze({ min: 64, max: 64 * 1024 * 1024 });

/** Seed of the gear table ("pool" in ASCII). */
export const GEAR_SEED = 0x706f6f6c;

/** SplitMix32: a tiny, well-mixed generator; fixed here because the table is format. */
function splitMix32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** The 256-entry gear table. */
export const GEAR: Uint32Array = (() => {
  const next = splitMix32(GEAR_SEED);
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) table[i] = next();
  return table;
})();

/** A mask with the top `bits` bits of a 32-bit word set. */
function topBits(bits: number): number {
  return (0xffffffff << (32 - bits)) >>> 0;
}

/** The two masks of normalized chunking (level 2) for an average size. */
export function chunkMasks(avg: number): { maskS: number; maskL: number } {
  const bits = Math.log2(avg);
  return { maskS: topBits(bits + 2), maskL: topBits(bits - 2) };
}

/**
 * Checks chunk parameters and returns them, or throws a `InvalidArgumentError` saying what
 * to change: `min <= avg <= max`, `avg` a power of two, all within
 * `CHUNK_SIZE_LIMITS`.
 */
export function validateChunkParams(params: ChunkParams): ChunkParams {
  const { min, avg, max } = params;
  for (const [name, value] of Object.entries({ min, avg, max })) {
    if (
      !Number.isSafeInteger(value) || value < CHUNK_SIZE_LIMITS.min ||
      value > CHUNK_SIZE_LIMITS.max
    ) {
      throw new InvalidArgumentError(
        `${name} chunk size must be between ${formatBytes(CHUNK_SIZE_LIMITS.min)} and ${
          formatBytes(CHUNK_SIZE_LIMITS.max)
        }, got ${value}`,
      );
    }
  }
  if ((avg & (avg - 1)) !== 0) {
    throw new InvalidArgumentError(`average chunk size must be a power of two, got ${avg}`);
  }
  if (!(min <= avg && avg <= max)) {
    throw new InvalidArgumentError(
      `chunk sizes must satisfy min <= avg <= max, got ${formatBytes(min)} / ${
        formatBytes(avg)
      } / ${formatBytes(max)}`,
    );
  }
  return { min, avg, max };
}

/**
 * How far a `findCut` that found no cut got, for resuming it once more bytes of
 * the same chunk are there: `scanned` bytes from the chunk's start (0: none
 * yet) and the gear state after them. `findCut` reads it and updates it.
 */
export interface CutScan {
  scanned: number;
  fp: number;
}

/**
 * Length of the chunk that starts at `data[start]`, given the bytes
 * `data[start..end)`. The caller must supply at least `params.max` bytes unless
 * the input ends at `end`; under that rule the result depends only on content.
 *
 * With `resume`, the first `resume.scanned` bytes of the chunk were scanned
 * before (a call for the same chunk with fewer bytes, which found no cut) and
 * are not scanned again; `resume` is left describing this call, so a caller
 * that carries an incomplete chunk over to its next buffer scans each byte
 * once. The result is the same as without it.
 */
export function findCut(
  data: Uint8Array,
  start: number,
  end: number,
  params: ChunkParams,
  masks: { maskS: number; maskL: number } = chunkMasks(params.avg),
  resume?: CutScan,
): number {
  const kernels = filterKernels();
  if (kernels === undefined) return findCutJs(data, start, end, params, masks, resume);
  const available = end - start;
  if (available <= params.min) return available;
  const n = available < params.max ? available : params.max;
  const normal = n < params.avg ? n : params.avg;
  const resumed = resume !== undefined && resume.scanned > params.min && resume.scanned <= n;
  let fp = resumed ? resume.fp : 0;
  const first = start + (resumed ? resume.scanned : params.min);
  // The gear loop in the WebAssembly kernel, KERNEL_REGION bytes at a time.
  for (
    const [from, to, mask] of [
      [Math.max(first, start + params.min), start + normal, masks.maskS],
      [Math.max(first, start + normal), start + n, masks.maskL],
    ]
  ) {
    for (let at = from; at < to; at += KERNEL_REGION) {
      const piece = data.subarray(at, Math.min(at + KERNEL_REGION, to));
      const scanned = kernels.gearScan(piece, GEAR, mask, fp);
      if (scanned.cut >= 0) return at + scanned.cut - start;
      fp = scanned.fp;
    }
  }
  if (resume !== undefined) {
    resume.scanned = n;
    resume.fp = fp;
  }
  return n;
}

/** `findCut` in TypeScript, byte by byte: the reference. */
export function findCutJs(
  data: Uint8Array,
  start: number,
  end: number,
  params: ChunkParams,
  masks: { maskS: number; maskL: number } = chunkMasks(params.avg),
  resume?: CutScan,
): number {
  const available = end - start;
  if (available <= params.min) return available;
  const n = available < params.max ? available : params.max;
  const normal = n < params.avg ? n : params.avg;
  const { maskS, maskL } = masks;
  const gear = GEAR;
  const resumed = resume !== undefined && resume.scanned > params.min && resume.scanned <= n;
  let fp = resumed ? resume.fp : 0;
  let i = start + (resumed ? resume.scanned : params.min);
  const normalEnd = start + normal;
  const hardEnd = start + n;
  for (; i < normalEnd; i++) {
    fp = ((fp << 1) + gear[data[i]]) | 0;
    if ((fp & maskS) === 0) return i + 1 - start;
  }
  for (; i < hardEnd; i++) {
    fp = ((fp << 1) + gear[data[i]]) | 0;
    if ((fp & maskL) === 0) return i + 1 - start;
  }
  if (resume !== undefined) {
    resume.scanned = n;
    resume.fp = fp;
  }
  return n;
}

/** Chunk lengths of a whole in-memory buffer: the reference the streaming path must match. */
export function chunkLengths(data: Uint8Array, params: ChunkParams): number[] {
  const masks = chunkMasks(params.avg);
  const lengths: number[] = [];
  for (let start = 0; start < data.length;) {
    const len = findCut(data, start, data.length, params, masks);
    lengths.push(len);
    start += len;
  }
  return lengths;
}
