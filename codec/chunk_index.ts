/**
 * The base's chunk index: every chunk of a file in order (offset, length, BLAKE3)
 * and a lookup from digest to the first chunk with that digest.
 *
 * It is the one structure of the encoder that grows with the base, so it lives
 * entirely in typed arrays (no per-entry JavaScript objects): per chunk 32 bytes
 * of digest, 8 of offset, 4 of length, plus an open-addressing table of chunk
 * numbers (linear probing, kept at most half full, keyed by 32 bits of the
 * digest and confirmed on the full 32 bytes). Given a capacity hint (the
 * encoder passes the most chunks the base can have), the arrays never move;
 * their pages are touched only as chunks are added, so the resident cost is
 * what is used: about 60 bytes a chunk.
 *
 * @module
 */

import { DIGEST_LENGTH } from "../kernel/blake3.ts";

/** Where a chunk lies in the base. */
export interface ChunkLocation {
  /** Position in the index (chunks are numbered in file order). */
  readonly index: number;
  readonly offset: number;
  readonly length: number;
}

/** 32 bits of a digest (BLAKE3 output is uniform, so any 4 bytes do). */
function hashOf(digest: Uint8Array): number {
  return (digest[0] | (digest[1] << 8) | (digest[2] << 16) | (digest[3] << 24)) >>> 0;
}

/** The smallest power of two >= n (and >= 16). */
function powerOfTwoAtLeast(n: number): number {
  let p = 16;
  while (p < n) p *= 2;
  return p;
}

/** An append-only, ordered index of a file's chunks with digest lookup. */
export class ChunkIndex {
  #count = 0;
  #offsets: Float64Array;
  #lengths: Uint32Array;
  #digests: Uint8Array;
  /** Open-addressing table: chunk number + 1, or 0 for an empty slot. */
  #slots: Int32Array;
  /** Distinct digests in the table. */
  #distinct = 0;

  /** `capacity`: how many chunks to make room for up front (it grows past it if needed). */
  constructor(capacity = 1024) {
    const n = Math.max(16, Math.ceil(capacity));
    this.#offsets = new Float64Array(n);
    this.#lengths = new Uint32Array(n);
    this.#digests = new Uint8Array(n * DIGEST_LENGTH);
    this.#slots = new Int32Array(powerOfTwoAtLeast(2 * Math.min(n, 1 << 16)));
  }

  /** Number of chunks. */
  get size(): number {
    return this.#count;
  }

  /** Appends the next chunk of the file. */
  add(offset: number, length: number, digest: Uint8Array): void {
    if (2 * (this.#distinct + 1) > this.#slots.length) this.#rehash(2 * this.#slots.length);
    if (this.#count === this.#offsets.length) this.#grow();
    const i = this.#count++;
    this.#offsets[i] = offset;
    this.#lengths[i] = length;
    this.#digests.set(digest.subarray(0, DIGEST_LENGTH), i * DIGEST_LENGTH);
    this.#insert(i);
  }

  /** The first chunk with this digest, if any. */
  find(digest: Uint8Array): ChunkLocation | undefined {
    const mask = this.#slots.length - 1;
    for (let s = hashOf(digest) & mask;; s = (s + 1) & mask) {
      const entry = this.#slots[s];
      if (entry === 0) return undefined;
      if (this.#digestAt(entry - 1, digest)) return this.at(entry - 1);
    }
  }

  /** Chunk number `i` if it exists and has this digest (the "next chunk" fast path). */
  matchAt(i: number, digest: Uint8Array): ChunkLocation | undefined {
    if (i < 0 || i >= this.#count || !this.#digestAt(i, digest)) return undefined;
    return this.at(i);
  }

  /** Chunk number `i`. */
  at(i: number): ChunkLocation {
    if (i < 0 || i >= this.#count) throw new RangeError(`no chunk ${i}`);
    return { index: i, offset: this.#offsets[i], length: this.#lengths[i] };
  }

  /** The digest of chunk `i` (a view; copy it to keep it). */
  digestOf(i: number): Uint8Array {
    return this.#digests.subarray(i * DIGEST_LENGTH, (i + 1) * DIGEST_LENGTH);
  }

  /** Puts chunk `i` in the table unless an earlier chunk has the same digest. */
  #insert(i: number): void {
    const digest = this.digestOf(i);
    const mask = this.#slots.length - 1;
    for (let s = hashOf(digest) & mask;; s = (s + 1) & mask) {
      const entry = this.#slots[s];
      if (entry === 0) {
        this.#slots[s] = i + 1;
        this.#distinct++;
        return;
      }
      if (this.#digestAt(entry - 1, digest)) return; // the first occurrence stays
    }
  }

  #digestAt(i: number, digest: Uint8Array): boolean {
    const base = i * DIGEST_LENGTH;
    for (let k = 0; k < DIGEST_LENGTH; k++) if (this.#digests[base + k] !== digest[k]) return false;
    return true;
  }

  /** Rebuilds the table with `size` slots, re-inserting chunks in file order. */
  #rehash(size: number): void {
    this.#slots = new Int32Array(size);
    this.#distinct = 0;
    for (let i = 0; i < this.#count; i++) this.#insert(i);
  }

  #grow(): void {
    const capacity = this.#offsets.length * 2;
    const offsets = new Float64Array(capacity);
    offsets.set(this.#offsets);
    const lengths = new Uint32Array(capacity);
    lengths.set(this.#lengths);
    const digests = new Uint8Array(capacity * DIGEST_LENGTH);
    digests.set(this.#digests);
    this.#offsets = offsets;
    this.#lengths = lengths;
    this.#digests = digests;
  }
}
