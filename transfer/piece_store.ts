/**
 * Where a swarm download keeps its pieces (issue 15): `PieceStore`, with a
 * file-backed implementation (the partial file written piece by piece at its
 * offset, plus a sidecar bitmap of verified pieces, so a restarted download
 * resumes by piece) and an in-memory one (the fleet simulator). A store is
 * also a `PartialBlob`: a blob server can serve its verified pieces while the
 * download goes on.
 *
 * A store keeps only pieces its caller verified against the piece list
 * (`swarm_client.ts` does); a file store re-verifies the pieces its sidecar
 * claims when it is opened (a crash may have left a piece half written), and
 * `complete` checks the whole blob's BLAKE3 before the file takes its final
 * name. Sidecar format: magic `PBPM` (4), version u8 = 1, BLAKE3 of the
 * encoded piece list (32), then ceil(pieceCount / 8) bitmap bytes (piece i is
 * bit i % 8, least significant first, of byte i / 8). A sidecar of another
 * list, or unreadable, is ignored (the download starts over).
 *
 * @module
 */

import { directoryOf, syncDirectory } from "../kernel/atomic_file.ts";
import { blake3, createHasher, DIGEST_LENGTH, digestsEqual, toHex } from "../kernel/blake3.ts";
import { ioError, VerificationError } from "../kernel/errors.ts";
import { readFull, writeAll } from "../kernel/file_io.ts";
import type { PartialBlob } from "./blob_server.ts";
import { closeQuietly } from "./idle_watchdog.ts";
import { encodePieceList, type PieceList, pieceRange, verifyPiece } from "./piece_list.ts";

/** The sidecar's first four bytes: ASCII `PBPM`. */
export const SIDECAR_MAGIC: Uint8Array = new Uint8Array([0x50, 0x42, 0x50, 0x4d]);
/** The sidecar format's version. */
export const SIDECAR_VERSION = 1;
/** Sidecar bytes before the bitmap. */
export const SIDECAR_HEADER_SIZE = 4 + 1 + DIGEST_LENGTH;

/** Bytes read at a time when hashing a partial file. */
const HASH_BUFFER_SIZE = 256 * 1024;

/** The pieces of one blob held so far. */
export interface PieceStore extends PartialBlob {
  /** The piece list the pieces are verified against. */
  readonly list: PieceList;
  /** Pieces held (each verified). */
  readonly heldCount: number;
  /** Whether piece `index` is held. */
  hasPiece(index: number): boolean;
  /** Keeps piece `index`: `bytes` MUST already be verified against the list. */
  putPiece(index: number, bytes: Uint8Array): Promise<void>;
  /**
   * Once every piece is held: checks the whole blob's BLAKE3 against the list
   * (else forgets every piece and throws `VerificationError`) and makes the
   * blob final (a file store renames it to its destination). Reads keep working.
   */
  complete(): Promise<void>;
  /** Releases the store's resources (a file store keeps its files for a resume). */
  close(): Promise<void>;
}

/** Whether pieces `first..last` touching `[offset, offset + length)` are all in `has`. */
function rangeHeld(
  list: PieceList,
  offset: number,
  length: number,
  has: (index: number) => boolean,
): boolean {
  if (offset < 0 || length < 0 || offset + length > list.blobSize) return false;
  if (length === 0) return true;
  const first = Math.floor(offset / list.pieceSize);
  const last = Math.floor((offset + length - 1) / list.pieceSize);
  for (let i = first; i <= last; i++) if (!has(i)) return false;
  return true;
}

function checkPut(list: PieceList, index: number, bytes: Uint8Array): void {
  if (bytes.length !== pieceRange(list, index).length) {
    throw new RangeError(`piece ${index} is ${pieceRange(list, index).length} bytes`);
  }
}

/** Pieces held in memory (the whole blob's bytes: for the simulator and tests). */
export class MemoryPieceStore implements PieceStore {
  readonly list: PieceList;
  readonly #bytes: Uint8Array;
  readonly #held: Uint8Array;
  #count = 0;

  constructor(list: PieceList) {
    this.list = list;
    this.#bytes = new Uint8Array(list.blobSize);
    this.#held = new Uint8Array(list.pieceCount);
  }

  get size(): number {
    return this.list.blobSize;
  }

  get heldCount(): number {
    return this.#count;
  }

  hasPiece(index: number): boolean {
    return this.#held[index] === 1;
  }

  has(offset: number, length: number): boolean {
    return rangeHeld(this.list, offset, length, (i) => this.hasPiece(i));
  }

  read(offset: number, buffer: Uint8Array): Promise<number> {
    const n = Math.max(0, Math.min(buffer.length, this.list.blobSize - offset));
    buffer.set(this.#bytes.subarray(offset, offset + n));
    return Promise.resolve(n);
  }

  putPiece(index: number, bytes: Uint8Array): Promise<void> {
    checkPut(this.list, index, bytes);
    this.#bytes.set(bytes, pieceRange(this.list, index).offset);
    if (this.#held[index] === 0) {
      this.#held[index] = 1;
      this.#count++;
    }
    return Promise.resolve();
  }

  complete(): Promise<void> {
    if (!digestsEqual(blake3(this.#bytes), this.list.blobDigest)) {
      this.#held.fill(0);
      this.#count = 0;
      return Promise.reject(
        new VerificationError("the pieces assembled do not hash to the blob's digest"),
      );
    }
    return Promise.resolve();
  }

  /** The blob's bytes (whole once `complete` resolved). */
  bytes(): Uint8Array {
    return this.#bytes;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Where a `FilePieceStore` keeps its files. */
export interface FilePieceStorePaths {
  /** The partial file (resumed if present with a matching sidecar). */
  readonly partialPath: string;
  /** Where the blob goes once complete and verified; its directory must exist. */
  readonly destination: string;
  /** The sidecar bitmap; default `partialPath + ".pieces"`. */
  readonly sidecarPath?: string;
}

/** What opening a file store found. */
export interface FilePieceStoreOpened {
  readonly store: FilePieceStore;
  /** Pieces kept from an earlier run (re-verified). */
  readonly resumedPieces: number;
}

/** Pieces in a partial file with a sidecar bitmap: survives a restart. */
export class FilePieceStore implements PieceStore {
  readonly list: PieceList;
  readonly paths: Required<FilePieceStorePaths>;
  readonly #file: Deno.FsFile;
  readonly #sidecar: Deno.FsFile;
  readonly #bitmap: Uint8Array;
  #count = 0;
  #serial: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(
    list: PieceList,
    paths: Required<FilePieceStorePaths>,
    file: Deno.FsFile,
    sidecar: Deno.FsFile,
    bitmap: Uint8Array,
  ) {
    this.list = list;
    this.paths = paths;
    this.#file = file;
    this.#sidecar = sidecar;
    this.#bitmap = bitmap;
    for (let i = 0; i < list.pieceCount; i++) if (this.hasPiece(i)) this.#count++;
  }

  /**
   * Opens (or creates) the partial file and its sidecar. Pieces the sidecar
   * marks are read back and re-verified; those that fail are forgotten. A
   * sidecar missing, unreadable or of another piece list starts over.
   */
  static async open(list: PieceList, paths: FilePieceStorePaths): Promise<FilePieceStoreOpened> {
    const full = { ...paths, sidecarPath: paths.sidecarPath ?? `${paths.partialPath}.pieces` };
    const listDigest = blake3(encodePieceList(list));
    const bitmapBytes = Math.ceil(list.pieceCount / 8);
    let file: Deno.FsFile | undefined;
    let sidecar: Deno.FsFile | undefined;
    try {
      file = await Deno.open(full.partialPath, { read: true, write: true, create: true });
      sidecar = await Deno.open(full.sidecarPath, { read: true, write: true, create: true });
      const header = new Uint8Array(SIDECAR_HEADER_SIZE + bitmapBytes);
      const got = await readFull(sidecar, header);
      const fileSize = (await file.stat()).size;
      let bitmap = header.slice(SIDECAR_HEADER_SIZE);
      const valid = got === header.length && fileSize === list.blobSize &&
        SIDECAR_MAGIC.every((b, i) => header[i] === b) && header[4] === SIDECAR_VERSION &&
        digestsEqual(header.subarray(5, SIDECAR_HEADER_SIZE), listDigest);
      if (!valid) bitmap = new Uint8Array(bitmapBytes);
      // Re-verify every piece the sidecar claims (a crash may have left one half written).
      let resumed = 0;
      const buf = new Uint8Array(Math.min(list.pieceSize, Math.max(1, list.blobSize)));
      for (let i = 0; i < list.pieceCount; i++) {
        if ((bitmap[i >> 3] & (1 << (i & 7))) === 0) continue;
        const { offset, length } = pieceRange(list, i);
        await file.seek(offset, Deno.SeekMode.Start);
        const n = await readFull(file, buf.subarray(0, length));
        if (n === length && verifyPiece(list, i, buf.subarray(0, length))) resumed++;
        else bitmap[i >> 3] &= ~(1 << (i & 7));
      }
      if (fileSize !== list.blobSize) await file.truncate(list.blobSize);
      header.set(SIDECAR_MAGIC, 0);
      header[4] = SIDECAR_VERSION;
      header.set(listDigest, 5);
      header.set(bitmap, SIDECAR_HEADER_SIZE);
      await sidecar.truncate(0);
      await sidecar.seek(0, Deno.SeekMode.Start);
      await writeAll(sidecar, header);
      const store = new FilePieceStore(list, full, file, sidecar, bitmap);
      return { store, resumedPieces: resumed };
    } catch (err) {
      if (file !== undefined) closeQuietly(file);
      if (sidecar !== undefined) closeQuietly(sidecar);
      throw ioError("open partial download", full.partialPath, err);
    }
  }

  get size(): number {
    return this.list.blobSize;
  }

  get heldCount(): number {
    return this.#count;
  }

  hasPiece(index: number): boolean {
    return index >= 0 && index < this.list.pieceCount &&
      (this.#bitmap[index >> 3] & (1 << (index & 7))) !== 0;
  }

  has(offset: number, length: number): boolean {
    return rangeHeld(this.list, offset, length, (i) => this.hasPiece(i));
  }

  /** Runs file operations one at a time (they share one file position). */
  #run<T>(fn: () => Promise<T>): Promise<T> {
    const turn = this.#serial.then(fn);
    this.#serial = turn.then(() => {}, () => {});
    return turn;
  }

  read(offset: number, buffer: Uint8Array): Promise<number> {
    return this.#run(async () => {
      const n = Math.max(0, Math.min(buffer.length, this.list.blobSize - offset));
      await this.#file.seek(offset, Deno.SeekMode.Start);
      return await readFull(this.#file, buffer.subarray(0, n));
    });
  }

  putPiece(index: number, bytes: Uint8Array): Promise<void> {
    checkPut(this.list, index, bytes);
    return this.#run(async () => {
      try {
        await this.#file.seek(pieceRange(this.list, index).offset, Deno.SeekMode.Start);
        await writeAll(this.#file, bytes);
        if (this.hasPiece(index)) return;
        this.#bitmap[index >> 3] |= 1 << (index & 7);
        await this.#sidecar.seek(SIDECAR_HEADER_SIZE + (index >> 3), Deno.SeekMode.Start);
        await writeAll(this.#sidecar, this.#bitmap.subarray(index >> 3, (index >> 3) + 1));
        this.#count++;
      } catch (err) {
        throw ioError("write partial download", this.paths.partialPath, err);
      }
    });
  }

  complete(): Promise<void> {
    return this.#run(async () => {
      const hasher = createHasher();
      const buf = new Uint8Array(HASH_BUFFER_SIZE);
      try {
        await this.#file.seek(0, Deno.SeekMode.Start);
        for (let done = 0; done < this.list.blobSize;) {
          const n = await readFull(
            this.#file,
            buf.subarray(0, Math.min(buf.length, this.list.blobSize - done)),
          );
          if (n === 0) break;
          hasher.update(buf.subarray(0, n));
          done += n;
        }
      } catch (err) {
        throw ioError("read partial download", this.paths.partialPath, err);
      }
      const got = hasher.digest();
      if (!digestsEqual(got, this.list.blobDigest)) {
        this.#bitmap.fill(0);
        this.#count = 0;
        await this.#sidecar.truncate(SIDECAR_HEADER_SIZE);
        throw new VerificationError(
          `the pieces assembled hash to ${toHex(got)}, not the blob's ${
            toHex(this.list.blobDigest)
          }; every piece is dropped`,
        );
      }
      try {
        await this.#file.sync();
        await Deno.rename(this.paths.partialPath, this.paths.destination);
      } catch (err) {
        throw ioError("write", this.paths.destination, err);
      }
      await syncDirectory(directoryOf(this.paths.destination));
      closeQuietly(this.#sidecar);
      try {
        await Deno.remove(this.paths.sidecarPath);
      } catch {
        // Already gone: nothing to resume anyway.
      }
    });
  }

  close(): Promise<void> {
    return this.#run(() => {
      if (!this.#closed) {
        this.#closed = true;
        closeQuietly(this.#file);
        closeQuietly(this.#sidecar);
      }
      return Promise.resolve();
    });
  }
}
