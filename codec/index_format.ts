/**
 * The on-disk format of a chunk index file ("poolboy index FILE -o FILE.idx"):
 * a file's chunk list (every chunk's length and BLAKE3), so that encoding
 * against it needs no pass over the base. Reading and writing whole files is in
 * `index_file.ts`; the in-memory lookup table built from one is
 * `chunk_index.ts`.
 *
 * Before the rename this file was called a "signature" (`poolboy signature
 * FILE -o FILE.sig`, `encode --base-sig`). The bytes did not change: magic
 * "PBSG" and version 1 are kept, so a `.sig` file written by the old command
 * is a valid index file and works as `encode --base-index`.
 *
 * Specification: docs/spec/chunk-index-v1.md (field table, byte order, what a
 * reader must refuse, test vectors). In short: an 80-byte little-endian
 * header (magic, version, the FastCDC parameters, the file's size, mtime,
 * chunk count and BLAKE3), then one 36-byte entry per chunk (length, BLAKE3),
 * then a 32-byte BLAKE3 trailer over the entries and the header. Chunk
 * boundaries are those of `codec/fastcdc.ts` with the stored parameters, so an
 * index file is only as durable as the gear table (docs/spec/fastcdc.md).
 *
 * @module
 */

import { DIGEST_LENGTH } from "../kernel/blake3.ts";
import { ExitCode, PoolboyError } from "../kernel/errors.ts";
import type { ChunkParams } from "./fastcdc.ts";

/** "PBSG" (kept from when index files were called signatures). */
export const INDEX_FILE_MAGIC = new Uint8Array([0x50, 0x42, 0x53, 0x47]);
/** The version this module writes and reads. */
export const INDEX_FILE_VERSION = 1;
/** Size of the header in bytes. */
export const INDEX_FILE_HEADER_SIZE = 80;
/** Size of one chunk entry in bytes. */
export const INDEX_FILE_ENTRY_SIZE = 4 + DIGEST_LENGTH;
/** Size of the trailer (BLAKE3 of everything before it). */
export const INDEX_FILE_TRAILER_SIZE = DIGEST_LENGTH;

/** An index file that cannot be used: damaged, truncated, or not an index file. */
export class MalformedIndexFileError extends PoolboyError {
  constructor(message: string) {
    super(message, ExitCode.malformedPatch);
  }
}

/** What an index file's header says. */
export interface IndexFileHeader {
  readonly chunk: ChunkParams;
  readonly fileSize: number;
  /** Modification time of the file when it was indexed, in ms since the epoch, or -1. */
  readonly fileMtimeMs: number;
  readonly chunkCount: number;
  readonly fileDigest: Uint8Array;
}

/** Encodes a header. */
export function encodeIndexFileHeader(h: IndexFileHeader): Uint8Array {
  const bytes = new Uint8Array(INDEX_FILE_HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  bytes.set(INDEX_FILE_MAGIC, 0);
  view.setUint16(4, INDEX_FILE_VERSION, true);
  view.setUint32(8, h.chunk.min, true);
  view.setUint32(12, h.chunk.avg, true);
  view.setUint32(16, h.chunk.max, true);
  view.setBigUint64(24, BigInt(h.fileSize), true);
  view.setBigInt64(32, BigInt(Math.round(h.fileMtimeMs)), true);
  view.setBigUint64(40, BigInt(h.chunkCount), true);
  bytes.set(h.fileDigest.subarray(0, DIGEST_LENGTH), 48);
  return bytes;
}

/** Decodes a header (throws `MalformedIndexFileError`). */
export function decodeIndexFileHeader(bytes: Uint8Array, path: string): IndexFileHeader {
  if (bytes.length < INDEX_FILE_HEADER_SIZE) {
    throw new MalformedIndexFileError(
      `index file "${path}" is truncated: ${bytes.length} bytes, shorter than its ${INDEX_FILE_HEADER_SIZE}-byte header`,
    );
  }
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== INDEX_FILE_MAGIC[i]) {
      throw new MalformedIndexFileError(`"${path}" is not a poolboy index file (bad magic)`);
    }
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint16(4, true);
  if (version !== INDEX_FILE_VERSION) {
    throw new MalformedIndexFileError(
      `index file "${path}" has version ${version} (this poolboy reads version ${INDEX_FILE_VERSION})`,
    );
  }
  const big = (at: number, field: string) => {
    const v = view.getBigUint64(at, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new MalformedIndexFileError(`index file "${path}": ${field} ${v} is too large`);
    }
    return Number(v);
  };
  return {
    chunk: {
      min: view.getUint32(8, true),
      avg: view.getUint32(12, true),
      max: view.getUint32(16, true),
    },
    fileSize: big(24, "file_size"),
    fileMtimeMs: Number(view.getBigInt64(32, true)),
    chunkCount: big(40, "chunk_count"),
    fileDigest: bytes.slice(48, 48 + DIGEST_LENGTH),
  };
}

/** Encodes one chunk entry into `out` at `at`. */
export function encodeIndexFileEntry(
  out: Uint8Array,
  at: number,
  length: number,
  digest: Uint8Array,
): void {
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(at, length, true);
  out.set(digest.subarray(0, DIGEST_LENGTH), at + 4);
}
