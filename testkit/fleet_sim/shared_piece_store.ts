/**
 * Piece stores of the fleet simulator's devices that share one copy of each
 * blob per worker process (transfer/piece_store.ts `PieceStore`), so that
 * 10,000 simulated devices do not each hold the blob in memory.
 *
 * - `SharedBlobs` (one per worker) keeps one buffer per piece list (keyed by
 *   the BLAKE3 of the encoded list, so two lists of one blob never mix), at
 *   most `MAX_SHARED_BLOBS` of them.
 * - `SharedPieceStore` (one per device and download) has its own bitmap of
 *   the pieces *this device* verified. `putPiece` copies the piece — already
 *   verified against the list by the caller (transfer/swarm_client.ts) — into
 *   the shared buffer at its offset and sets the device's bit; `hasPiece`,
 *   `has` and `read` answer for this device only (a server reads only ranges
 *   `has` admits). Two devices writing the same verified piece write the same
 *   bytes, so the buffer never holds an unverified byte where a bit is set.
 * - `complete()` checks the whole blob's BLAKE3 **once per worker per piece
 *   list**: the first device holding every piece hashes the shared buffer and
 *   the verdict is cached for every other device of the process (each piece
 *   of every device was still verified on its own as it arrived). A failed
 *   check (a list whose pieces verify but whose whole does not) is cached as
 *   well: each device then forgets its pieces and `complete` rejects with a
 *   `VerificationError`, as `MemoryPieceStore` does.
 *
 * @module
 */

import { blake3, digestsEqual, toHex } from "../../kernel/blake3.ts";
import { VerificationError } from "../../kernel/errors.ts";
import { encodePieceList, type PieceList, pieceRange } from "../../transfer/piece_list.ts";
import type { PieceStore } from "../../transfer/piece_store.ts";

/** Most distinct piece lists (blobs) one worker keeps buffers for; a run has a handful. */
export const MAX_SHARED_BLOBS = 16;

/** One blob's shared buffer and its whole-blob verdict. */
class SharedBlob {
  readonly list: PieceList;
  readonly bytes: Uint8Array;
  /** The whole blob's BLAKE3 check, computed once. */
  #verdict: boolean | undefined;
  /** How many whole-blob hashes were computed (0 or 1): for tests and the report. */
  hashes = 0;

  constructor(list: PieceList) {
    this.list = list;
    this.bytes = new Uint8Array(list.blobSize);
  }

  /** Whether the buffer hashes to the blob's digest; the caller holds every piece. */
  verdict(): boolean {
    if (this.#verdict === undefined) {
      this.hashes++;
      this.#verdict = digestsEqual(blake3(this.bytes), this.list.blobDigest);
    }
    return this.#verdict;
  }
}

/** The shared buffers of one worker process. */
export class SharedBlobs {
  readonly #blobs = new Map<string, SharedBlob>();

  /** A new store for one device's download of `list`'s blob (the buffer shared with the others). */
  storeFor(list: PieceList): SharedPieceStore {
    const key = toHex(blake3(encodePieceList(list)));
    let blob = this.#blobs.get(key);
    if (blob === undefined) {
      if (this.#blobs.size >= MAX_SHARED_BLOBS) {
        throw new RangeError(`more than ${MAX_SHARED_BLOBS} blobs shared in one process`);
      }
      blob = new SharedBlob(list);
      this.#blobs.set(key, blob);
    }
    return new SharedPieceStore(blob);
  }

  /** Buffers held (one per piece list). */
  get size(): number {
    return this.#blobs.size;
  }

  /** Whole-blob hashes computed so far, all blobs (at most one per blob). */
  get wholeBlobHashes(): number {
    let n = 0;
    for (const b of this.#blobs.values()) n += b.hashes;
    return n;
  }
}

/** One device's view of a shared blob: its own bitmap of verified pieces. */
export class SharedPieceStore implements PieceStore {
  readonly list: PieceList;
  readonly #blob: SharedBlob;
  readonly #held: Uint8Array;
  #count = 0;

  constructor(blob: SharedBlob) {
    this.#blob = blob;
    this.list = blob.list;
    this.#held = new Uint8Array(Math.ceil(blob.list.pieceCount / 8));
  }

  get size(): number {
    return this.list.blobSize;
  }

  get heldCount(): number {
    return this.#count;
  }

  hasPiece(index: number): boolean {
    return Number.isInteger(index) && index >= 0 && index < this.list.pieceCount &&
      (this.#held[index >> 3] & (1 << (index & 7))) !== 0;
  }

  has(offset: number, length: number): boolean {
    if (offset < 0 || length < 0 || offset + length > this.list.blobSize) return false;
    if (length === 0) return true;
    const first = Math.floor(offset / this.list.pieceSize);
    const last = Math.floor((offset + length - 1) / this.list.pieceSize);
    for (let i = first; i <= last; i++) if (!this.hasPiece(i)) return false;
    return true;
  }

  /** Reads from the shared buffer; the caller reads only ranges `has` admitted. */
  read(offset: number, buffer: Uint8Array): Promise<number> {
    const n = Math.max(0, Math.min(buffer.length, this.list.blobSize - offset));
    buffer.set(this.#blob.bytes.subarray(offset, offset + n));
    return Promise.resolve(n);
  }

  putPiece(index: number, bytes: Uint8Array): Promise<void> {
    if (!Number.isInteger(index) || index < 0 || index >= this.list.pieceCount) {
      return Promise.reject(new RangeError(`no piece ${index}`));
    }
    const { offset, length } = pieceRange(this.list, index);
    if (bytes.length !== length) {
      return Promise.reject(new RangeError(`piece ${index} is ${length} bytes`));
    }
    if (!this.hasPiece(index)) {
      this.#blob.bytes.set(bytes, offset);
      this.#held[index >> 3] |= 1 << (index & 7);
      this.#count++;
    }
    return Promise.resolve();
  }

  complete(): Promise<void> {
    if (this.#count < this.list.pieceCount) {
      return Promise.reject(
        new VerificationError(`${this.#count} of ${this.list.pieceCount} pieces held`),
      );
    }
    if (!this.#blob.verdict()) {
      this.#held.fill(0);
      this.#count = 0;
      return Promise.reject(
        new VerificationError("the pieces assembled do not hash to the blob's digest"),
      );
    }
    return Promise.resolve();
  }

  /** The whole blob (the shared buffer): only once `complete` resolved. */
  bytes(): Uint8Array {
    if (this.#count < this.list.pieceCount || !this.#blob.verdict()) {
      throw new VerificationError("the blob is not complete and verified");
    }
    return this.#blob.bytes;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
