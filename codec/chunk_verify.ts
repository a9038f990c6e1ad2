/**
 * Byte-for-byte check of a chunk match against the base: what makes a match
 * found by a non-cryptographic fingerprint (`ChunkIdentity` "fingerprint" in
 * chunk_pipeline.ts) safe to turn into a COPY. A fingerprint collision then
 * costs one comparison and the chunk is coded as if unmatched; it can never
 * put wrong bytes in a patch.
 *
 * Memory: none of its own; the base range is read piece by piece into the
 * WebAssembly kernels' memory and compared there (positional reads on the
 * thread: the base was read moments ago and is usually in the page cache).
 *
 * @module
 */

import { readAtSync } from "../kernel/file_io.ts";
import type { ChunkIndex, ChunkLocation } from "./chunk_index.ts";
import { type FilterKernels, filterKernels, KERNEL_REGION } from "./filter_kernels.ts";

/** Bytes of the base read and compared at a time (one kernel region). */
export const VERIFY_PIECE = KERNEL_REGION;

/** Compares target chunks with ranges of one base file. */
export class BaseComparer {
  readonly #base: Deno.FsFile;
  readonly #baseSize: number;
  readonly #kernels: FilterKernels | undefined;
  /** Only without the WebAssembly kernels: where the base's bytes are read. */
  #buffer: Uint8Array | undefined;
  /** Comparisons made, and how many found unequal bytes (fingerprint collisions). */
  compared = 0;
  unequal = 0;

  constructor(base: Deno.FsFile, baseSize: number) {
    this.#base = base;
    this.#baseSize = baseSize;
    this.#kernels = filterKernels();
  }

  /** Whether `base[baseOffset, baseOffset + data.length)` holds exactly `data`. */
  equals(baseOffset: number, data: Uint8Array): boolean {
    this.compared++;
    const same = this.#equals(baseOffset, data);
    if (!same) this.unequal++;
    return same;
  }

  #equals(baseOffset: number, data: Uint8Array): boolean {
    if (
      !Number.isSafeInteger(baseOffset) || baseOffset < 0 ||
      baseOffset + data.length > this.#baseSize
    ) {
      return false;
    }
    const kernels = this.#kernels;
    for (let pos = 0; pos < data.length; pos += VERIFY_PIECE) {
      const n = Math.min(VERIFY_PIECE, data.length - pos);
      const chunkPiece = data.subarray(pos, pos + n);
      // The base's bytes are read straight into the kernels' second region (no
      // buffer of our own); a base that shrank since it was chunked reads short.
      const basePiece = kernels ? kernels.region(1).subarray(0, n) : this.#ownBuffer(n);
      if (readAtSync(this.#base, baseOffset + pos, basePiece) !== n) return false;
      if (kernels) {
        kernels.region(0).set(chunkPiece);
        if (kernels.equalEnd(0, n) !== n) return false;
      } else {
        for (let i = 0; i < n; i++) if (basePiece[i] !== chunkPiece[i]) return false;
      }
    }
    return true;
  }

  #ownBuffer(n: number): Uint8Array {
    this.#buffer ??= new Uint8Array(VERIFY_PIECE);
    return this.#buffer.subarray(0, n);
  }
}

/**
 * The base chunk a target chunk matches: chunk `next` of the index (the one
 * after the previous match, so that runs merge into one COPY) if it has the
 * chunk's digest, else the first with that digest; with `comparer`, only if
 * its bytes are the chunk's (each candidate compared at most once).
 */
export function verifiedMatch(
  index: ChunkIndex,
  next: number,
  chunk: { readonly data: Uint8Array; readonly digest: Uint8Array },
  comparer?: BaseComparer,
): ChunkLocation | undefined {
  const same = (found: ChunkLocation) =>
    found.length === chunk.data.length &&
    (comparer === undefined || comparer.equals(found.offset, chunk.data));
  const after = index.matchAt(next, chunk.digest);
  if (after && same(after)) return after;
  const first = index.find(chunk.digest);
  if (first && first.index !== after?.index && same(first)) return first;
  return undefined;
}
