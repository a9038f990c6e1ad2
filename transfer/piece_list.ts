/**
 * Piece lists (format "PBPL" version 1, issue 15): a blob cut into fixed
 * pieces of `pieceSize` bytes (a power of two, the last piece shorter), each
 * with its BLAKE3, so that a device can verify every piece as it arrives from
 * any peer and serve only verified pieces. The piece list is itself a
 * content-addressed blob; its digest travels in the control plane's signed
 * ElectionClosed, which binds it to the release.
 *
 * Layout (big-endian): magic `PBPL` (4), version u8 = 1, pieceSizeLog2 u8
 * (16..26), reserved u16 = 0, blobSize u64, blobDigest (32), pieceCount u32,
 * then pieceCount × 32-byte piece digests. `decodePieceList` refuses anything
 * else (`PieceListError`). Specification: docs/spec/piece-list-v1.md.
 *
 * @module
 */

import { blake3, createHasher, DIGEST_LENGTH, digestsEqual } from "../kernel/blake3.ts";
import { ioError, ProtocolError } from "../kernel/errors.ts";
import { openInput, readFull } from "../kernel/file_io.ts";

/** The list's first four bytes: ASCII `PBPL`. */
export const PIECE_LIST_MAGIC: Uint8Array = new Uint8Array([0x50, 0x42, 0x50, 0x4c]);
/** The format version this module reads and writes. */
export const PIECE_LIST_VERSION = 1;
/** Bytes before the piece digests: magic 4, version 1, log2 1, reserved 2, blobSize 8, digest 32, count 4. */
export const PIECE_LIST_HEADER_SIZE = 4 + 1 + 1 + 2 + 8 + DIGEST_LENGTH + 4;
/** Smallest piece: 64 KiB. */
export const MIN_PIECE_SIZE_LOG2 = 16;
/** Largest piece: 64 MiB. */
export const MAX_PIECE_SIZE_LOG2 = 26;
/** Most pieces in one list. */
export const MAX_PIECES = 65536;
/** Largest encoded list: header + MAX_PIECES digests (2 MiB + 52 bytes). */
export const MAX_PIECE_LIST_SIZE = PIECE_LIST_HEADER_SIZE + MAX_PIECES * DIGEST_LENGTH;
/** Piece sizes `choosePieceSize` picks from: [64 KiB, 16 MiB]. */
export const CHOSEN_PIECE_SIZE_MIN = 1 << 16;
export const CHOSEN_PIECE_SIZE_MAX = 1 << 24;
/** `choosePieceSize` aims at about this many pieces. */
export const TARGET_PIECES = 256;

/** Bytes read from a file at a time while building a list. */
const READ_BUFFER_SIZE = 256 * 1024;

/** A decoded (or built) piece list. */
export interface PieceList {
  /** Bytes per piece (a power of two in [2^16, 2^26]); the last piece may be shorter. */
  readonly pieceSize: number;
  /** Bytes of the whole blob. */
  readonly blobSize: number;
  /** BLAKE3 of the whole blob. */
  readonly blobDigest: Uint8Array;
  /** Number of pieces: ceil(blobSize / pieceSize). */
  readonly pieceCount: number;
  /** The pieces' BLAKE3 digests, concatenated (pieceCount × 32 bytes); see `pieceDigest`. */
  readonly pieceDigests: Uint8Array;
}

/** Bytes that are not a valid piece list (or a piece list that does not match what it should). */
export class PieceListError extends ProtocolError {}

/** Where a piece lies in the blob. */
export interface PieceRange {
  readonly offset: number;
  readonly length: number;
}

function isPowerOfTwoPieceSize(pieceSize: number): boolean {
  for (let log2 = MIN_PIECE_SIZE_LOG2; log2 <= MAX_PIECE_SIZE_LOG2; log2++) {
    if (pieceSize === 2 ** log2) return true;
  }
  return false;
}

/** Pieces of a blob of `blobSize` bytes cut in `pieceSize` pieces (0 for an empty blob). */
export function pieceCountOf(blobSize: number, pieceSize: number): number {
  return Math.ceil(blobSize / pieceSize);
}

/**
 * The default piece size of a blob: the smallest power of two ≥ blobSize / 64,
 * clamped to [64 KiB, 16 MiB].
 */
export function choosePieceSize(blobSize: number): number {
  if (!Number.isSafeInteger(blobSize) || blobSize < 0) {
    throw new RangeError(`bad blob size ${blobSize}`);
  }
  let size = CHOSEN_PIECE_SIZE_MIN;
  while (size < CHOSEN_PIECE_SIZE_MAX && size * TARGET_PIECES < blobSize) size *= 2;
  return size;
}

/** The BLAKE3 of piece `index` (a view into the list). */
export function pieceDigest(list: PieceList, index: number): Uint8Array {
  checkIndex(list, index);
  return list.pieceDigests.subarray(index * DIGEST_LENGTH, (index + 1) * DIGEST_LENGTH);
}

/** Where piece `index` lies in the blob. Throws `RangeError` for an index not in [0, pieceCount). */
export function pieceRange(list: PieceList, index: number): PieceRange {
  checkIndex(list, index);
  const offset = index * list.pieceSize;
  return { offset, length: Math.min(list.pieceSize, list.blobSize - offset) };
}

/** Whether `bytes` are piece `index` of the list (their BLAKE3 is the listed one, and their length right). */
export function verifyPiece(list: PieceList, index: number, bytes: Uint8Array): boolean {
  if (bytes.length !== pieceRange(list, index).length) return false;
  return digestsEqual(blake3(bytes), pieceDigest(list, index));
}

function checkIndex(list: PieceList, index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= list.pieceCount) {
    throw new RangeError(`piece ${index} is not in [0, ${list.pieceCount})`);
  }
}

/** Throws `RangeError` unless the fields make a valid list. */
function checkFields(list: PieceList): void {
  if (!isPowerOfTwoPieceSize(list.pieceSize)) {
    throw new RangeError(`piece size ${list.pieceSize} is not a power of two in [2^16, 2^26]`);
  }
  if (!Number.isSafeInteger(list.blobSize) || list.blobSize < 0) {
    throw new RangeError(`bad blob size ${list.blobSize}`);
  }
  if (list.blobDigest.length !== DIGEST_LENGTH) throw new RangeError("blob digest is not 32 bytes");
  const count = pieceCountOf(list.blobSize, list.pieceSize);
  if (list.pieceCount !== count) {
    throw new RangeError(`piece count ${list.pieceCount}, expected ${count}`);
  }
  if (count > MAX_PIECES) throw new RangeError(`${count} pieces, more than ${MAX_PIECES}`);
  if (list.pieceDigests.length !== count * DIGEST_LENGTH) {
    throw new RangeError(`piece digests are ${list.pieceDigests.length} bytes`);
  }
}

/** The bytes of a piece list. Throws `RangeError` on fields outside the format. */
export function encodePieceList(list: PieceList): Uint8Array<ArrayBuffer> {
  checkFields(list);
  const out = new Uint8Array(PIECE_LIST_HEADER_SIZE + list.pieceDigests.length);
  const view = new DataView(out.buffer);
  out.set(PIECE_LIST_MAGIC, 0);
  out[4] = PIECE_LIST_VERSION;
  out[5] = Math.log2(list.pieceSize);
  view.setUint16(6, 0, false);
  view.setBigUint64(8, BigInt(list.blobSize), false);
  out.set(list.blobDigest, 16);
  view.setUint32(16 + DIGEST_LENGTH, list.pieceCount, false);
  out.set(list.pieceDigests, PIECE_LIST_HEADER_SIZE);
  return out;
}

/**
 * Decodes a piece list, strictly: throws `PieceListError` on a wrong length,
 * magic, version, piece size, non-zero reserved field, blob size above
 * 2^53 − 1, piece count other than ceil(blobSize / pieceSize) or above
 * `MAX_PIECES`, or bytes after the last digest. The result owns its bytes.
 */
export function decodePieceList(bytes: Uint8Array): PieceList {
  if (bytes.length < PIECE_LIST_HEADER_SIZE) {
    throw new PieceListError(`a piece list is at least ${PIECE_LIST_HEADER_SIZE} bytes`);
  }
  if (bytes.length > MAX_PIECE_LIST_SIZE) {
    throw new PieceListError(`a piece list is at most ${MAX_PIECE_LIST_SIZE} bytes`);
  }
  for (let i = 0; i < PIECE_LIST_MAGIC.length; i++) {
    if (bytes[i] !== PIECE_LIST_MAGIC[i]) throw new PieceListError("not a piece list: bad magic");
  }
  if (bytes[4] !== PIECE_LIST_VERSION) {
    throw new PieceListError(`unsupported piece list version ${bytes[4]}`);
  }
  const log2 = bytes[5];
  if (log2 < MIN_PIECE_SIZE_LOG2 || log2 > MAX_PIECE_SIZE_LOG2) {
    throw new PieceListError(`piece size 2^${log2} is outside [2^16, 2^26]`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(6, false) !== 0) throw new PieceListError("reserved field is not zero");
  const bigSize = view.getBigUint64(8, false);
  if (bigSize > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PieceListError(`blob size ${bigSize} is out of range`);
  }
  const blobSize = Number(bigSize);
  const pieceSize = 2 ** log2;
  const pieceCount = view.getUint32(16 + DIGEST_LENGTH, false);
  if (pieceCount > MAX_PIECES) {
    throw new PieceListError(`${pieceCount} pieces, more than ${MAX_PIECES}`);
  }
  const expected = pieceCountOf(blobSize, pieceSize);
  if (pieceCount !== expected) {
    throw new PieceListError(
      `piece count ${pieceCount} does not match blob size ${blobSize} in pieces of ${pieceSize} (${expected})`,
    );
  }
  const length = PIECE_LIST_HEADER_SIZE + pieceCount * DIGEST_LENGTH;
  if (bytes.length !== length) {
    throw new PieceListError(
      `a piece list of ${pieceCount} pieces is ${length} bytes, got ${bytes.length}`,
    );
  }
  return {
    pieceSize,
    blobSize,
    blobDigest: bytes.slice(16, 16 + DIGEST_LENGTH),
    pieceCount,
    pieceDigests: bytes.slice(PIECE_LIST_HEADER_SIZE, length),
  };
}

/**
 * Decodes a piece list and checks that it describes the blob expected (its
 * digest and size, from an authenticated message): throws `PieceListError`
 * otherwise. The caller has already checked the list's own digest.
 */
export function decodePieceListFor(
  bytes: Uint8Array,
  blobDigest: Uint8Array,
  blobSize: number,
): PieceList {
  const list = decodePieceList(bytes);
  if (list.blobSize !== blobSize || !digestsEqual(list.blobDigest, blobDigest)) {
    throw new PieceListError("the piece list describes another blob");
  }
  return list;
}

function checkPieceSize(pieceSize: number, blobSize: number): void {
  if (!isPowerOfTwoPieceSize(pieceSize)) {
    throw new RangeError(`piece size ${pieceSize} is not a power of two in [2^16, 2^26]`);
  }
  if (pieceCountOf(blobSize, pieceSize) > MAX_PIECES) {
    throw new RangeError(
      `a blob of ${blobSize} bytes is over ${MAX_PIECES} pieces of ${pieceSize}`,
    );
  }
}

/** The piece list of a blob held in memory (default piece size: `choosePieceSize`). */
export function buildPieceListFromBytes(
  blob: Uint8Array,
  pieceSize: number = choosePieceSize(blob.length),
): PieceList {
  checkPieceSize(pieceSize, blob.length);
  const pieceCount = pieceCountOf(blob.length, pieceSize);
  const pieceDigests = new Uint8Array(pieceCount * DIGEST_LENGTH);
  for (let i = 0; i < pieceCount; i++) {
    pieceDigests.set(blake3(blob.subarray(i * pieceSize, (i + 1) * pieceSize)), i * DIGEST_LENGTH);
  }
  return { pieceSize, blobSize: blob.length, blobDigest: blake3(blob), pieceCount, pieceDigests };
}

/**
 * The piece list of a file, read once through a fixed 256 KiB buffer (memory
 * does not grow with the file or the piece size). Default piece size:
 * `choosePieceSize` of the file's size. Throws `IoError` if the file cannot be
 * read or changes size while read.
 */
export async function buildPieceListFromFile(path: string, pieceSize?: number): Promise<PieceList> {
  const { file, size } = await openInput(path, "blob");
  try {
    const chosen = pieceSize ?? choosePieceSize(size);
    checkPieceSize(chosen, size);
    const pieceCount = pieceCountOf(size, chosen);
    const pieceDigests = new Uint8Array(pieceCount * DIGEST_LENGTH);
    const whole = createHasher();
    const piece = createHasher();
    const buf = new Uint8Array(Math.min(READ_BUFFER_SIZE, chosen));
    let done = 0;
    for (let index = 0; index < pieceCount; index++) {
      const end = Math.min(size, done + chosen);
      while (done < end) {
        const n = await readFull(file, buf.subarray(0, Math.min(buf.length, end - done)));
        if (n === 0) throw new Error(`file ended at ${done} bytes, before its size ${size}`);
        const bytes = buf.subarray(0, n);
        whole.update(bytes);
        piece.update(bytes);
        done += n;
      }
      pieceDigests.set(piece.digest(), index * DIGEST_LENGTH);
    }
    if (await readFull(file, buf.subarray(0, 1)) !== 0) {
      throw new Error(`file grew past its size ${size} while read`);
    }
    return {
      pieceSize: chosen,
      blobSize: size,
      blobDigest: whole.digest(),
      pieceCount,
      pieceDigests,
    };
  } catch (err) {
    if (err instanceof RangeError) throw err;
    throw ioError("read blob", path, err);
  } finally {
    file.close();
  }
}
