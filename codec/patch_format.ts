/**
 * The poolboy patch format, versions 1 and 2: constants, header and op encodings.
 *
 * All integers are little-endian. A v1 patch is a 54-byte header followed by
 * ops, repeated until `target_size` bytes have been produced, and nothing after.
 *
 * ```
 * header, 54 bytes:
 *   offset 0   magic          "POOL" (0x50 0x4f 0x4f 0x4c)      4
 *   offset 4   version        u16 = 1                            2
 *   offset 6   base_size      u64                                8
 *   offset 14  target_size    u64                                8
 *   offset 22  target_blake3  [u8; 32]                          32
 * body:
 *   0x01 COPY     offset u64, len u64     output base[offset .. offset+len]
 *   0x02 LITERAL  len u64, bytes[len]     output the len bytes that follow
 * ```
 *
 * A reader must refuse: a header shorter than 54 bytes, other magic, another
 * version, sizes above 2^53 - 1 (not addressable here), a COPY whose range is not
 * inside `base_size`, an op that would produce more than `target_size` bytes, an
 * unknown op byte, a patch that ends before `target_size` bytes are produced, and
 * any byte after the op that completes the target. The output is accepted only
 * if its BLAKE3 equals `target_blake3`.
 *
 * Version 2 (`encode --format 2`) has an 86-byte header and two more ops:
 *
 * ```
 * header, 86 bytes:
 *   offset 0   magic          "POOL"                             4
 *   offset 4   version        u16 = 2                            2
 *   offset 6   base_size      u64                                8
 *   offset 14  target_size    u64                                8
 *   offset 22  target_blake3  [u8; 32]                          32
 *   offset 54  base_blake3    [u8; 32]                          32
 * body (ops 0x01 and 0x02 as in v1, plus):
 *   0x03 ZLITERAL  raw_len u32, comp_len u32, comp_len bytes: whole zstd
 *                  frames (RFC 8878; usually one, an empty one may follow) that
 *                  decompress to exactly raw_len bytes; output them
 *   0x04 XOR       base_offset u64, raw_len u32, comp_len u32, comp_len bytes:
 *                  whole zstd frames that decompress to exactly raw_len bytes D;
 *                  output D[i] XOR base[base_offset + i] for i < raw_len
 * ```
 *
 * In v2 a reader must also refuse: raw_len of 0 or above `MAX_OP_RAW` (1 MiB,
 * so an applier needs at most three 1 MiB buffers for them), comp_len of 0 or
 * above raw_len (the encoder writes a compressed op only when it is smaller),
 * an XOR range not inside `base_size`, comp_len bytes that are not whole zstd
 * frames or do not decompress to exactly raw_len bytes, and a base whose BLAKE3 is not `base_blake3` (checked
 * before any output is written).
 *
 * @module
 */

import { DIGEST_LENGTH } from "./blake3.ts";
import { MalformedPatchError } from "./errors.ts";

/** "POOL". */
export const MAGIC = new Uint8Array([0x50, 0x4f, 0x4f, 0x4c]);
/** The version this module writes. */
export const VERSION_1 = 1;
/** Size of the v1 header in bytes. */
export const HEADER_V1_SIZE = 54;
/** Bytes of magic + version: enough to tell which header follows. */
export const PREAMBLE_SIZE = 6;
/** The v2 version number. */
export const VERSION_2 = 2;
/** Size of the v2 header in bytes. */
export const HEADER_V2_SIZE = 86;
/** Op byte of ZLITERAL (v2): `raw_len u32, comp_len u32` then a zstd frame. */
export const OP_ZLITERAL = 0x03;
/** Op byte of XOR (v2): `base_offset u64, raw_len u32, comp_len u32` then a zstd frame. */
export const OP_XOR = 0x04;
/** Largest raw_len of a ZLITERAL or XOR op. */
export const MAX_OP_RAW = 1024 * 1024;
/** Encoded size of a ZLITERAL op's head. */
export const ZLITERAL_HEAD_SIZE = 9;
/** Encoded size of an XOR op's head. */
export const XOR_HEAD_SIZE = 17;
/** Op byte of COPY: `offset u64, len u64`. */
export const OP_COPY = 0x01;
/** Op byte of LITERAL: `len u64` then `len` bytes. */
export const OP_LITERAL = 0x02;
/** Encoded size of a COPY op. */
export const COPY_OP_SIZE = 17;
/** Encoded size of a LITERAL op's head (the bytes before its data). */
export const LITERAL_HEAD_SIZE = 9;

/** What a header says (`baseDigest` only in v2). */
export interface PatchHeader {
  readonly version: number;
  readonly baseSize: number;
  readonly targetSize: number;
  readonly targetDigest: Uint8Array;
  readonly baseDigest?: Uint8Array;
}

/** Size of the header of a version. */
export function headerSize(version: number): number {
  return version === VERSION_2 ? HEADER_V2_SIZE : HEADER_V1_SIZE;
}

/** Encodes a v2 header (86 bytes). */
export function encodeHeaderV2(
  header: Omit<PatchHeader, "version" | "baseDigest"> & { baseDigest: Uint8Array },
): Uint8Array {
  if (header.baseDigest.length !== DIGEST_LENGTH) {
    throw new RangeError(`base digest must be ${DIGEST_LENGTH} bytes`);
  }
  const bytes = new Uint8Array(HEADER_V2_SIZE);
  bytes.set(encodeHeaderV1(header));
  new DataView(bytes.buffer).setUint16(4, VERSION_2, true);
  bytes.set(header.baseDigest, 54);
  return bytes;
}

/** Decodes a v1 or v2 header from its bytes (throws `MalformedPatchError`). */
export function decodeHeader(bytes: Uint8Array): PatchHeader {
  const version = decodePreamble(bytes);
  if (version === VERSION_1) return decodeHeaderV1(bytes);
  if (bytes.length < HEADER_V2_SIZE) {
    throw new MalformedPatchError(
      `patch is truncated: a v2 header is ${HEADER_V2_SIZE} bytes, only ${bytes.length} present`,
    );
  }
  // The first 54 bytes are laid out as in v1 (with version 2).
  return { ...decodeHeaderV1(bytes), baseDigest: bytes.slice(54, 54 + DIGEST_LENGTH) };
}

/** Encodes the head of a ZLITERAL op (its compressed bytes follow). */
export function encodeZLiteralHead(rawLength: number, compressedLength: number): Uint8Array {
  const bytes = new Uint8Array(ZLITERAL_HEAD_SIZE);
  const view = new DataView(bytes.buffer);
  bytes[0] = OP_ZLITERAL;
  view.setUint32(1, rawLength, true);
  view.setUint32(5, compressedLength, true);
  return bytes;
}

/** Encodes the head of an XOR op (its compressed bytes follow). */
export function encodeXorHead(
  baseOffset: number,
  rawLength: number,
  compressedLength: number,
): Uint8Array {
  const bytes = new Uint8Array(XOR_HEAD_SIZE);
  const view = new DataView(bytes.buffer);
  bytes[0] = OP_XOR;
  view.setBigUint64(1, BigInt(baseOffset), true);
  view.setUint32(9, rawLength, true);
  view.setUint32(13, compressedLength, true);
  return bytes;
}

/** Encodes a v1 header (54 bytes). */
export function encodeHeaderV1(header: Omit<PatchHeader, "version">): Uint8Array {
  if (header.targetDigest.length !== DIGEST_LENGTH) {
    throw new RangeError(`target digest must be ${DIGEST_LENGTH} bytes`);
  }
  const bytes = new Uint8Array(HEADER_V1_SIZE);
  const view = new DataView(bytes.buffer);
  bytes.set(MAGIC, 0);
  view.setUint16(4, VERSION_1, true);
  view.setBigUint64(6, BigInt(header.baseSize), true);
  view.setBigUint64(14, BigInt(header.targetSize), true);
  bytes.set(header.targetDigest, 22);
  return bytes;
}

/**
 * Reads magic and version from the first 6 bytes; throws `MalformedPatchError`
 * for other magic or a version this build cannot read.
 */
export function decodePreamble(bytes: Uint8Array): number {
  if (bytes.length < PREAMBLE_SIZE) {
    throw new MalformedPatchError(
      `patch is truncated: ${bytes.length} bytes, shorter than the ${PREAMBLE_SIZE}-byte magic and version`,
    );
  }
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) {
      throw new MalformedPatchError(
        `not a poolboy patch: bad magic ${
          JSON.stringify(String.fromCharCode(...bytes.subarray(0, 4)))
        } (expected "POOL")`,
      );
    }
  }
  const version = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint16(4, true);
  if (version !== VERSION_1 && version !== VERSION_2) {
    throw new MalformedPatchError(
      `unknown patch version ${version} (this poolboy reads versions ${VERSION_1} and ${VERSION_2})`,
    );
  }
  return version;
}

/**
 * Decodes the first 54 bytes of a header as v1 lays them out (throws
 * `MalformedPatchError`); `version` is whatever the preamble says.
 */
export function decodeHeaderV1(bytes: Uint8Array): PatchHeader {
  const version = decodePreamble(bytes);
  if (bytes.length < HEADER_V1_SIZE) {
    throw new MalformedPatchError(
      `patch is truncated: header is ${HEADER_V1_SIZE} bytes, only ${bytes.length} present`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    version,
    baseSize: safeU64(view, 6, "base_size"),
    targetSize: safeU64(view, 14, "target_size"),
    targetDigest: bytes.slice(22, 22 + DIGEST_LENGTH),
  };
}

/** Encodes a COPY op. */
export function encodeCopy(offset: number, length: number): Uint8Array {
  const bytes = new Uint8Array(COPY_OP_SIZE);
  const view = new DataView(bytes.buffer);
  bytes[0] = OP_COPY;
  view.setBigUint64(1, BigInt(offset), true);
  view.setBigUint64(9, BigInt(length), true);
  return bytes;
}

/** Encodes the head of a LITERAL op (its data follows). */
export function encodeLiteralHead(length: number): Uint8Array {
  const bytes = new Uint8Array(LITERAL_HEAD_SIZE);
  bytes[0] = OP_LITERAL;
  new DataView(bytes.buffer).setBigUint64(1, BigInt(length), true);
  return bytes;
}

/**
 * A u64 field as a number, or `MalformedPatchError` if it is above 2^53 - 1
 * (hostile or corrupt: no real file is that large).
 */
export function safeU64(view: DataView, at: number, field: string): number {
  const value = view.getBigUint64(at, true);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new MalformedPatchError(`${field} ${value} is too large (corrupt or hostile patch)`);
  }
  return Number(value);
}
