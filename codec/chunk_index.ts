/**
 * The base's chunk index: every chunk of a file in order (offset, length, BLAKE3)
 * and a lookup from digest to the first chunk with that digest.
 *
 * Compact on purpose (it is the only structure that grows with the base): per
 * chunk 32 bytes of digest, 8 of offset, 4 of length in typed arrays, plus one
 * Map entry keyed by 48 bits of the digest. A 200 GB base at 1 MiB chunks is
 * about 200,000 entries, a few MB.
 *
 * @module
 */

import { DIGEST_LENGTH } from "./blake3.ts";

/** Where a chunk lies in the base. */
export interface ChunkLocation {
  /** Position in the index (chunks are numbered in file order). */
  readonly index: number;
  readonly offset: number;
  readonly length: number;
}

/** 48 bits of a digest as a Map key (a safe integer). */
function keyOf(digest: Uint8Array, at = 0): number {
  return (
    (digest[at] | (digest[at + 1] << 8) | (digest[at + 2] << 16)) * 0x1000000 +
    (digest[at + 3] | (digest[at + 4] << 8) | (digest[at + 5] << 16))
  );
}

/** An append-only, ordered index of a file's chunks with digest lookup. */
export class ChunkIndex {
  #count = 0;
  #offsets = new Float64Array(1024);
  #lengths = new Uint32Array(1024);
  #digests = new Uint8Array(1024 * DIGEST_LENGTH);
  /** 48-bit key → first chunk number with that key. */
  #byKey = new Map<number, number>();
  /** Full hex digest → chunk number, for the rare chunks whose 48-bit key collides. */
  #collisions = new Map<string, number>();

  /** Number of chunks. */
  get size(): number {
    return this.#count;
  }

  /** Appends the next chunk of the file. */
  add(offset: number, length: number, digest: Uint8Array): void {
    if (this.#count === this.#offsets.length) this.#grow();
    const i = this.#count++;
    this.#offsets[i] = offset;
    this.#lengths[i] = length;
    this.#digests.set(digest.subarray(0, DIGEST_LENGTH), i * DIGEST_LENGTH);
    const key = keyOf(digest);
    const existing = this.#byKey.get(key);
    if (existing === undefined) {
      this.#byKey.set(key, i);
    } else if (!this.#digestAt(existing, digest)) {
      const hex = hexKey(digest);
      if (!this.#collisions.has(hex)) this.#collisions.set(hex, i);
    }
  }

  /** The first chunk with this digest, if any. */
  find(digest: Uint8Array): ChunkLocation | undefined {
    let i = this.#byKey.get(keyOf(digest));
    if (i === undefined) return undefined;
    if (!this.#digestAt(i, digest)) {
      i = this.#collisions.get(hexKey(digest));
      if (i === undefined) return undefined;
    }
    return this.at(i);
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

  #digestAt(i: number, digest: Uint8Array): boolean {
    const base = i * DIGEST_LENGTH;
    for (let k = 0; k < DIGEST_LENGTH; k++) if (this.#digests[base + k] !== digest[k]) return false;
    return true;
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

function hexKey(digest: Uint8Array): string {
  let s = "";
  for (let k = 0; k < DIGEST_LENGTH; k++) s += digest[k].toString(16).padStart(2, "0");
  return s;
}
