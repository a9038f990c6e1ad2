/**
 * Runs of target bytes equal to the base at a fixed offset difference, and the
 * choice among runs found at several differences: the v2 encoder turns them
 * into COPYs inside a chunk that did not match as a whole (bytes inserted at
 * the front of a file shift everything after them; the chunk holding the
 * insertion is mostly the base's bytes at two offsets).
 *
 * `RunScanner.scan` finds runs with the WebAssembly kernels
 * (`filter_kernels.ts`: 8 bytes compared at a time) where they run, else with
 * its TypeScript loop (`scanJs`, the reference).
 *
 * @module
 */

import { filterKernels, KERNEL_REGION } from "./filter_kernels.ts";

/** `length` target bytes from `start` (relative to a block) equal the base at `start + delta` onwards (absolute: see the caller). */
export interface Run {
  readonly start: number;
  readonly end: number;
  /** Base offset − target offset. */
  readonly delta: number;
}

/**
 * Scans a block of target bytes window by window against base windows at one
 * offset difference, and collects maximal runs of equal bytes at least
 * `minRun` long (a run may span windows). With `limits`, runs shorter than
 * `longRun` are kept only up to `maxShort + 1` of them (enough for
 * `chooseRuns` to know there were too many): a fine-tune leaves thousands per
 * MiB, and keeping them all is garbage the heap grows for.
 */
export class RunScanner {
  readonly #minRun: number;
  readonly #delta: number;
  readonly #limits: { longRun: number; maxShort: number } | undefined;
  readonly runs: Run[] = [];
  #short = 0;
  #open = -1;
  #at = 0;

  constructor(delta: number, minRun: number, limits?: { longRun: number; maxShort: number }) {
    this.#delta = delta;
    this.#minRun = minRun;
    this.#limits = limits;
  }

  /**
   * The next `target.length` bytes of the block, and the base bytes they are
   * compared with (`base.length` may be shorter: bytes past it count as unequal).
   */
  scan(target: Uint8Array, base: Uint8Array): void {
    const kernels = filterKernels();
    if (kernels === undefined) return this.scanJs(target, base);
    const n = Math.min(target.length, base.length);
    let open = this.#open;
    const at = this.#at;
    for (let from = 0; from < n; from += KERNEL_REGION) {
      const to = Math.min(from + KERNEL_REGION, n);
      kernels.loadPair(target.subarray(from, to), base.subarray(from, to));
      const len = to - from;
      let i = 0;
      if (open >= 0) {
        i = kernels.equalEnd(0, len);
        if (i === len) continue;
        this.#close(open, at + from + i);
        open = -1;
      }
      while (i < len) {
        const s = kernels.runStart(i, len, this.#minRun);
        if (s === len) break;
        const e = kernels.equalEnd(s, len);
        if (e === len) {
          open = at + from + s;
          break;
        }
        this.#close(at + from + s, at + from + e);
        i = e + 1;
      }
    }
    if (n < target.length && open >= 0) {
      this.#close(open, at + n);
      open = -1;
    }
    this.#open = open;
    this.#at = at + target.length;
  }

  /** `scan` in TypeScript, byte by byte: the reference. */
  scanJs(target: Uint8Array, base: Uint8Array): void {
    const n = Math.min(target.length, base.length);
    let open = this.#open;
    const at = this.#at;
    for (let i = 0; i < n; i++) {
      if (target[i] === base[i]) {
        if (open < 0) open = at + i;
      } else if (open >= 0) {
        this.#close(open, at + i);
        open = -1;
      }
    }
    if (n < target.length && open >= 0) {
      this.#close(open, at + n);
      open = -1;
    }
    this.#open = open;
    this.#at = at + target.length;
  }

  /** Closes a run still open at the end of the block; returns the runs. */
  finish(): Run[] {
    if (this.#open >= 0) this.#close(this.#open, this.#at);
    this.#open = -1;
    return this.runs;
  }

  #close(start: number, end: number): void {
    const length = end - start;
    if (length < this.#minRun) return;
    if (
      this.#limits && length < this.#limits.longRun && ++this.#short > this.#limits.maxShort + 1
    ) {
      return;
    }
    this.runs.push({ start, end, delta: this.#delta });
  }
}

/**
 * Non-overlapping runs to copy, in order: from the runs found at every offset
 * difference, sorted by start, each trimmed to begin after the previous one
 * chosen (and dropped if then shorter than `minRun`). Runs shorter than
 * `longRun` are kept only if there are at most `maxShort` of them: scattered
 * short runs are what small changes to every value leave (a fine-tune), and
 * copying them would cut the delta of the values around them into pieces.
 */
export function chooseRuns(
  runs: readonly Run[],
  options: { minRun: number; longRun: number; maxShort: number },
): Run[] {
  const short = runs.filter((r) => r.end - r.start < options.longRun).length;
  const candidates = runs
    .filter((r) => r.end - r.start >= (short > options.maxShort ? options.longRun : options.minRun))
    .toSorted((a, b) => a.start - b.start || (b.end - b.start) - (a.end - a.start));
  const out: Run[] = [];
  for (const run of candidates) {
    const last = out[out.length - 1];
    if (last && run.start < last.end && run.end - run.start > (last.end - last.start) * 2) {
      // A run that starts inside the previous one and is much longer takes over from its start.
      out.pop();
      if (run.start - last.start >= options.minRun) out.push({ ...last, end: run.start });
    }
    const start = Math.max(run.start, out[out.length - 1]?.end ?? 0);
    if (run.end - start < options.minRun) continue;
    out.push({ start, end: run.end, delta: run.delta });
  }
  return out;
}

/** Most distinct shifts `shiftCandidates` counts (later ones are not counted): bounds its memory. */
export const MAX_SHIFTS = 1 << 16;

/**
 * Offsets at which pieces of `target` occur in `base` (base index − target
 * index), most frequent first, at most `max`: every `k`-byte piece of the
 * target starting at a multiple of `k` is looked up, by a rolling hash, at
 * every position of `base` (a piece that repeats in the target is looked up
 * once). Finds where bytes that moved by an amount no COPY implies went (a
 * header that grew by a few bytes, then padding).
 */
export function shiftCandidates(
  target: Uint8Array,
  base: Uint8Array,
  k: number,
  max: number,
  scratch: ShiftScratch = new ShiftScratch(),
): number[] {
  if (target.length < k || base.length < k) return [];
  // Open addressing: hash -> target position of each k-byte piece (keys may repeat).
  const pieces = Math.floor(target.length / k);
  const size = 1 << Math.ceil(Math.log2(pieces * 2 + 1));
  const mask = size - 1;
  const { keys, positions } = scratch.tables(size);
  pieces: for (let at = 0; at + k <= target.length; at += k) {
    const h = hashOf(target, at, k);
    let slot = mix(h) & mask;
    for (; positions[slot] >= 0; slot = (slot + 1) & mask) {
      // A piece seen before (runs of zeros, repeated records) is kept once:
      // else every base position that matches it walks all its copies.
      if (keys[slot] === h && equalBytes(target, positions[slot], target, at, k)) continue pieces;
    }
    keys[slot] = h;
    positions[slot] = at;
  }
  // P^(k-1) mod 2^32, to take the byte leaving the window out of the hash.
  let top = 1;
  for (let i = 1; i < k; i++) top = Math.imul(top, HASH_P);
  const counts = new Map<number, number>();
  let h = hashOf(base, 0, k);
  for (let at = 0;; at++) {
    for (let slot = mix(h) & mask; positions[slot] >= 0; slot = (slot + 1) & mask) {
      const t = positions[slot];
      if (keys[slot] === h && equalBytes(target, t, base, at, k)) {
        const seen = counts.get(at - t);
        if (seen !== undefined) counts.set(at - t, seen + 1);
        else if (counts.size < MAX_SHIFTS) counts.set(at - t, 1);
      }
    }
    if (at + k >= base.length) break;
    h = (Math.imul(h - Math.imul(base[at], top), HASH_P) + base[at + k]) | 0;
  }
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, max).map((
    [shift],
  ) => shift);
}

/**
 * The hash table of `shiftCandidates`, kept between calls so that a stream of
 * lookups allocates nothing (its arrays grow to the largest size asked for).
 */
export class ShiftScratch {
  #keys = new Int32Array(0);
  #positions = new Int32Array(0);

  /** Tables of at least `size` slots; `positions` cleared to -1 over the first `size`. */
  tables(size: number): { keys: Int32Array; positions: Int32Array } {
    if (this.#keys.length < size) {
      this.#keys = new Int32Array(size);
      this.#positions = new Int32Array(size);
    }
    this.#positions.fill(-1, 0, size);
    return { keys: this.#keys, positions: this.#positions };
  }
}

/** Spreads a polynomial hash's bits over the low ones (the table index). */
function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  return h ^ (h >>> 13);
}

const HASH_P = 0x01000193;

function hashOf(bytes: Uint8Array, at: number, k: number): number {
  let h = 0;
  for (let i = 0; i < k; i++) h = (Math.imul(h, HASH_P) + bytes[at + i]) | 0;
  return h;
}

function equalBytes(a: Uint8Array, at: number, b: Uint8Array, bt: number, k: number): boolean {
  for (let i = 0; i < k; i++) if (a[at + i] !== b[bt + i]) return false;
  return true;
}
