/**
 * The poolboy patch format, versions 1, 2, 3 and 4: constants, header and op encodings.
 *
 * A patch is a header (magic `POOL`, version, base and target sizes, the
 * target's BLAKE3; in v2 and v3 also the base's BLAKE3; in v3 also up to 64
 * sampled base ranges with their BLAKE3, `BaseSample`) followed by ops that append
 * to the output until it has `target_size` bytes: COPY (a base range) and
 * LITERAL (raw bytes), and in v2 ZLITERAL (zstd frames of filtered bytes) and
 * DELTA (zstd frames of a filtered residue against a base range), in v3 also
 * ZRECORDS and DRECORDS (the same with a record layout: `record_filter.ts`).
 * v4 is v3 with a compact header (8-byte sample digests, the sample ranges a
 * function of `base_size` and `sample_count`: `sampleRangesOf`) and compact op
 * heads (LEB128 varints, base offsets zigzag-coded relative to the end of the
 * previous base range: `encodeOpHeadV4`, `decodeVarint`). `opHeadSize` is what
 * an op head costs in a version, for the encoder's choices. Fixed-size
 * integers are little-endian. The filter byte is decoded here (`decodeFilter`); the
 * filters themselves are in `residue_filter.ts`, the checks a reader makes in
 * `patch_reader.ts`.
 *
 * Specification: docs/spec/patch-v1.md, docs/spec/patch-v2.md,
 * docs/spec/patch-v3.md and docs/spec/patch-v4.md (the field tables, the
 * limits, what a reader must refuse, test vectors; v3's record ops too).
 *
 * @module
 */

import { DIGEST_LENGTH } from "../kernel/blake3.ts";
import { MalformedPatchError } from "../kernel/errors.ts";
import type { RecordLayout } from "./record_filter.ts";

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
/** The v3 version number (v2's ops and record ops; a header with sampled base ranges). */
export const VERSION_3 = 3;
/** Size of the fixed part of a v3 header: v2's 86 bytes and `sample_count` u16. */
export const HEADER_V3_FIXED_SIZE = 88;
/** Encoded size of one v3 sample: `offset` u64, `len` u32, `blake3` 32 bytes. */
export const SAMPLE_SIZE = 44;
/** The most samples a v3 header may carry. */
export const MAX_SAMPLES = 64;
/** The largest `len` of a v3 sample (1 MiB). */
export const MAX_SAMPLE_LENGTH = 1024 * 1024;
/** The versions this build reads, oldest first. */
export const READABLE_VERSIONS: readonly number[] = [1, 2, 3, 4];
/** Op byte of ZLITERAL (v2): `raw_len u32, comp_len u32, filter u8` then zstd frames. */
export const OP_ZLITERAL = 0x03;
/** Op byte of DELTA (v2): `base_offset u64, raw_len u32, comp_len u32, filter u8` then zstd frames. */
export const OP_DELTA = 0x04;
/** Largest raw_len of a ZLITERAL or DELTA op. */
export const MAX_OP_RAW = 1024 * 1024;
/** Encoded size of a ZLITERAL op's head. */
export const ZLITERAL_HEAD_SIZE = 10;
/** Encoded size of a DELTA op's head. */
export const DELTA_HEAD_SIZE = 18;
/**
 * Op byte of ZRECORDS (v3): `raw_len u32, comp_len u32` then a record layout
 * (`record_len u16, field_count u8`, per field `len u16, filter u8`), then zstd frames.
 */
export const OP_ZRECORDS = 0x05;
/** Op byte of DRECORDS (v3): `base_offset u64, raw_len u32, comp_len u32`, a record layout, then zstd frames. */
export const OP_DRECORDS = 0x06;
/** Encoded size of a record layout's fixed part (record_len, field_count). */
export const LAYOUT_FIXED_SIZE = 3;
/** Encoded size of each field of a record layout (len, filter). */
export const LAYOUT_FIELD_SIZE = 3;

/** Encoded size of a ZRECORDS head with a layout of `fields` fields. */
export function zrecordsHeadSize(fields: number): number {
  return 9 + LAYOUT_FIXED_SIZE + LAYOUT_FIELD_SIZE * fields;
}

/** Encoded size of a DRECORDS head with a layout of `fields` fields. */
export function drecordsHeadSize(fields: number): number {
  return 17 + LAYOUT_FIXED_SIZE + LAYOUT_FIELD_SIZE * fields;
}

/** How a compressed op's bytes were filtered before zstd (the filter byte, decoded). */
export interface Filter {
  /** Element width in bytes. */
  readonly width: 1 | 2 | 4;
  /** Grouping of the residue's bytes or bits into planes. */
  readonly shuffle: "none" | "bytes" | "bits";
  /** How a DELTA's target and base make the residue (always "xor" for a ZLITERAL). */
  readonly combine: "xor" | "sub";
}

const WIDTHS = [1, 2, 4] as const;
const SHUFFLES = ["none", "bytes", "bits"] as const;
const COMBINES = ["xor", "sub"] as const;

/** The filter byte of `filter`. */
export function encodeFilter(filter: Filter): number {
  return WIDTHS.indexOf(filter.width) | (SHUFFLES.indexOf(filter.shuffle) << 2) |
    (COMBINES.indexOf(filter.combine) << 4);
}

/** The filter a byte stands for, or undefined for an invalid byte. */
export function decodeFilter(byte: number): Filter | undefined {
  const width = WIDTHS[byte & 3];
  const shuffle = SHUFFLES[(byte >> 2) & 3];
  const combine = COMBINES[(byte >> 4) & 3];
  if (width === undefined || shuffle === undefined || combine === undefined || byte > 0x3f) {
    return undefined;
  }
  return { width, shuffle, combine };
}

/** A filter's short name, as `inspect` prints it: e.g. `sub/bits/2`. */
export function filterName(filter: Filter): string {
  return `${filter.combine}/${filter.shuffle}/${filter.width}`;
}
/** Op byte of COPY: `offset u64, len u64`. */
export const OP_COPY = 0x01;
/** Op byte of LITERAL: `len u64` then `len` bytes. */
export const OP_LITERAL = 0x02;
/** Encoded size of a COPY op. */
export const COPY_OP_SIZE = 17;
/** Encoded size of a LITERAL op's head (the bytes before its data). */
export const LITERAL_HEAD_SIZE = 9;

/** A sampled base range of a v3 header: `base[offset .. offset+length]` has BLAKE3 `digest`. */
export interface BaseSample {
  readonly offset: number;
  readonly length: number;
  readonly digest: Uint8Array;
}

/**
 * What a header says (`baseDigest` in v2, v3 and v4, `samples` in v3 and v4;
 * a v4 sample's `digest` is the first 8 bytes of the range's BLAKE3).
 */
export interface PatchHeader {
  readonly version: number;
  readonly baseSize: number;
  readonly targetSize: number;
  readonly targetDigest: Uint8Array;
  readonly baseDigest?: Uint8Array;
  readonly samples?: readonly BaseSample[];
}

/** Size of the header of a version (for v3 and v4, with `sampleCount` samples). */
export function headerSize(version: number, sampleCount = 0): number {
  if (version === VERSION_4) return HEADER_V4_FIXED_SIZE + SAMPLE_DIGEST_V4_SIZE * sampleCount;
  if (version === VERSION_3) return HEADER_V3_FIXED_SIZE + SAMPLE_SIZE * sampleCount;
  return version === VERSION_2 ? HEADER_V2_SIZE : HEADER_V1_SIZE;
}

/** Encodes a v3 header (88 bytes + 44 per sample); throws `RangeError` for samples it may not carry. */
export function encodeHeaderV3(
  header: Omit<PatchHeader, "version" | "baseDigest" | "samples"> & {
    baseDigest: Uint8Array;
    samples: readonly BaseSample[];
  },
): Uint8Array {
  const { samples } = header;
  if (samples.length > MAX_SAMPLES) {
    throw new RangeError(
      `a v3 header carries at most ${MAX_SAMPLES} samples, not ${samples.length}`,
    );
  }
  const bytes = new Uint8Array(headerSize(VERSION_3, samples.length));
  bytes.set(encodeHeaderV2(header));
  const view = new DataView(bytes.buffer);
  view.setUint16(4, VERSION_3, true);
  view.setUint16(HEADER_V2_SIZE, samples.length, true);
  samples.forEach((sample, i) => {
    const problem = sampleProblem(sample.offset, sample.length, header.baseSize);
    if (problem !== undefined) throw new RangeError(`sample ${i}: ${problem}`);
    if (sample.digest.length !== DIGEST_LENGTH) {
      throw new RangeError(`sample digest must be ${DIGEST_LENGTH} bytes`);
    }
    const at = HEADER_V3_FIXED_SIZE + SAMPLE_SIZE * i;
    view.setBigUint64(at, BigInt(sample.offset), true);
    view.setUint32(at + 8, sample.length, true);
    bytes.set(sample.digest, at + 12);
  });
  return bytes;
}

/** Why a sample range is invalid for a base of `baseSize` bytes, or undefined if valid. */
function sampleProblem(offset: number, length: number, baseSize: number): string | undefined {
  if (!Number.isSafeInteger(length) || length < 1 || length > MAX_SAMPLE_LENGTH) {
    return `len ${length} must be 1 to ${MAX_SAMPLE_LENGTH}`;
  }
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > baseSize) {
    return `base bytes ${offset}..${offset + length} are beyond the base's ${baseSize} bytes`;
  }
  return undefined;
}

/**
 * The `sample_count` of a v3 header from its first 88 bytes (throws
 * `MalformedPatchError` above `MAX_SAMPLES`).
 */
export function decodeSampleCount(fixed: Uint8Array): number {
  if (fixed.length < HEADER_V3_FIXED_SIZE) {
    throw new MalformedPatchError(
      `patch is truncated: a v3 header is at least ${HEADER_V3_FIXED_SIZE} bytes, only ${fixed.length} present`,
    );
  }
  const count = new DataView(fixed.buffer, fixed.byteOffset, fixed.byteLength)
    .getUint16(HEADER_V2_SIZE, true);
  if (count > MAX_SAMPLES) {
    throw new MalformedPatchError(
      `v3 header claims ${count} base samples; at most ${MAX_SAMPLES} are allowed`,
    );
  }
  return count;
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

/**
 * Decodes a v1, v2, v3 or v4 header from its bytes (throws `MalformedPatchError`,
 * for v3 also for a sample count above 64, a sample `len` of 0 or above 1 MiB,
 * or a sample beyond `base_size`; for v4 for a sample count above the base's
 * `maxSampleCount` or a base above 2^52 − 1 bytes).
 */
export function decodeHeader(bytes: Uint8Array): PatchHeader {
  const version = decodePreamble(bytes);
  if (version === VERSION_1) return decodeHeaderV1(bytes);
  if (version === VERSION_4) return decodeHeaderV4(bytes);
  if (bytes.length < HEADER_V2_SIZE) {
    throw new MalformedPatchError(
      `patch is truncated: a v${version} header is at least ${HEADER_V2_SIZE} bytes, only ${bytes.length} present`,
    );
  }
  // The first 54 bytes are laid out as in v1 (with version 2 or 3).
  const v2 = { ...decodeHeaderV1(bytes), baseDigest: bytes.slice(54, 54 + DIGEST_LENGTH) };
  if (version === VERSION_2) return v2;
  const count = decodeSampleCount(bytes);
  const size = headerSize(VERSION_3, count);
  if (bytes.length < size) {
    throw new MalformedPatchError(
      `patch is truncated: its v3 header with ${count} base samples is ${size} bytes, only ${bytes.length} present`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const samples: BaseSample[] = [];
  for (let i = 0; i < count; i++) {
    const at = HEADER_V3_FIXED_SIZE + SAMPLE_SIZE * i;
    const offset = safeU64(view, at, `base sample ${i} offset`);
    const length = view.getUint32(at + 8, true);
    const problem = sampleProblem(offset, length, v2.baseSize);
    if (problem !== undefined) {
      throw new MalformedPatchError(`v3 header: base sample ${i}: ${problem}`);
    }
    samples.push({ offset, length, digest: bytes.slice(at + 12, at + 12 + DIGEST_LENGTH) });
  }
  return { ...v2, samples };
}

/** The plain filter: no combine step or planes. */
export const NO_FILTER: Filter = { width: 1, shuffle: "none", combine: "xor" };

/** Encodes the head of a ZLITERAL op (its compressed bytes follow). */
export function encodeZLiteralHead(
  rawLength: number,
  compressedLength: number,
  filter: Filter = NO_FILTER,
): Uint8Array {
  const bytes = new Uint8Array(ZLITERAL_HEAD_SIZE);
  const view = new DataView(bytes.buffer);
  bytes[0] = OP_ZLITERAL;
  view.setUint32(1, rawLength, true);
  view.setUint32(5, compressedLength, true);
  bytes[9] = encodeFilter(filter);
  return bytes;
}

/** Encodes the head of a DELTA op (its compressed bytes follow). */
export function encodeDeltaHead(
  baseOffset: number,
  rawLength: number,
  compressedLength: number,
  filter: Filter = NO_FILTER,
): Uint8Array {
  const bytes = new Uint8Array(DELTA_HEAD_SIZE);
  const view = new DataView(bytes.buffer);
  bytes[0] = OP_DELTA;
  view.setBigUint64(1, BigInt(baseOffset), true);
  view.setUint32(9, rawLength, true);
  view.setUint32(13, compressedLength, true);
  bytes[17] = encodeFilter(filter);
  return bytes;
}

/** Encodes a record layout as a record op's head carries it (`LAYOUT_FIXED_SIZE + 3·fields` bytes). */
export function encodeRecordLayout(layout: RecordLayout): Uint8Array {
  const bytes = new Uint8Array(LAYOUT_FIXED_SIZE + LAYOUT_FIELD_SIZE * layout.fields.length);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, layout.recordLength, true);
  bytes[2] = layout.fields.length;
  layout.fields.forEach((field, j) => {
    view.setUint16(LAYOUT_FIXED_SIZE + LAYOUT_FIELD_SIZE * j, field.length, true);
    bytes[LAYOUT_FIXED_SIZE + LAYOUT_FIELD_SIZE * j + 2] = encodeFilter(field.filter);
  });
  return bytes;
}

/** Encodes the head of a ZRECORDS op (its compressed bytes follow). */
export function encodeZRecordsHead(
  rawLength: number,
  compressedLength: number,
  layout: RecordLayout,
): Uint8Array {
  const fixed = encodeZLiteralHead(rawLength, compressedLength).subarray(0, 9);
  const bytes = new Uint8Array(zrecordsHeadSize(layout.fields.length));
  bytes.set(fixed);
  bytes[0] = OP_ZRECORDS;
  bytes.set(encodeRecordLayout(layout), 9);
  return bytes;
}

/** Encodes the head of a DRECORDS op (its compressed bytes follow). */
export function encodeDRecordsHead(
  baseOffset: number,
  rawLength: number,
  compressedLength: number,
  layout: RecordLayout,
): Uint8Array {
  const fixed = encodeDeltaHead(baseOffset, rawLength, compressedLength).subarray(0, 17);
  const bytes = new Uint8Array(drecordsHeadSize(layout.fields.length));
  bytes.set(fixed);
  bytes[0] = OP_DRECORDS;
  bytes.set(encodeRecordLayout(layout), 17);
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
  if (!READABLE_VERSIONS.includes(version)) {
    throw new MalformedPatchError(
      `unknown patch version ${version} (this poolboy reads versions ${
        READABLE_VERSIONS.join(", ")
      })`,
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

// ---------------------------------------------------------------------------
// Version 4: compact header and op heads (docs/spec/patch-v4.md)
// ---------------------------------------------------------------------------

/** The v4 version number (v3's ops with varint heads; 8-byte sample digests). */
export const VERSION_4 = 4;
/** Size of the fixed part of a v4 header: v2's 86 bytes and `sample_count` u8. */
export const HEADER_V4_FIXED_SIZE = 87;
/** Encoded size of one v4 sample: the first 8 bytes of its range's BLAKE3. */
export const SAMPLE_DIGEST_V4_SIZE = 8;
/** Length of every sample range but a short last piece (64 KiB; v3's encoder used it too). */
export const SAMPLE_RANGE_LENGTH = 64 * 1024;
/** Inner sample offsets are rounded down to this. */
export const SAMPLE_RANGE_ALIGN = 4096;
/** The largest `base_size` of a v4 patch (2^52 − 1), so that every relative offset fits a varint. */
export const MAX_V4_BASE_SIZE = 2 ** 52 - 1;
/** The most bytes a varint may take (a u64's; a canonical varint ≤ 2^53 − 1 takes at most 8). */
export const MAX_VARINT_BYTES = 10;

/** A base range whose digest a header carries: `base[offset .. offset+length]`. */
export interface SampleRange {
  readonly offset: number;
  readonly length: number;
}

/** How many 64 KiB pieces cover a base of `baseSize` bytes: the most samples a v4 header may carry for it (≤ 64). */
export function maxSampleCount(baseSize: number): number {
  return Math.min(MAX_SAMPLES, Math.ceil(baseSize / SAMPLE_RANGE_LENGTH));
}

/**
 * The ranges of `count` samples of a base of `baseSize` bytes (the rule of
 * docs/spec/patch-v4.md, "Sample ranges"): none for 0; for `count` equal to the
 * number of 64 KiB pieces of the base, those pieces; for fewer, the first
 * 64 KiB, then the last, and between them `count − 2` ranges of 64 KiB at
 * `floor(last · i / (count − 1))` rounded down to 4 KiB (`last = baseSize −
 * 65536`), in that order: first, inner, last. Throws `RangeError` for a count
 * above `maxSampleCount(baseSize)`.
 */
export function sampleRangesOf(baseSize: number, count: number): SampleRange[] {
  const pieces = Math.ceil(baseSize / SAMPLE_RANGE_LENGTH);
  if (!Number.isSafeInteger(count) || count < 0 || count > Math.min(pieces, MAX_SAMPLES)) {
    throw new RangeError(
      `${count} samples of a ${baseSize}-byte base: at most ${maxSampleCount(baseSize)}`,
    );
  }
  const ranges: SampleRange[] = [];
  if (count === pieces) {
    for (let at = 0; at < baseSize; at += SAMPLE_RANGE_LENGTH) {
      ranges.push({ offset: at, length: Math.min(SAMPLE_RANGE_LENGTH, baseSize - at) });
    }
    return ranges;
  }
  if (count === 0) return ranges;
  ranges.push({ offset: 0, length: SAMPLE_RANGE_LENGTH });
  if (count === 1) return ranges;
  const last = BigInt(baseSize - SAMPLE_RANGE_LENGTH);
  for (let i = 1; i <= count - 2; i++) {
    const spot = Number((last * BigInt(i)) / BigInt(count - 1));
    ranges.push({ offset: spot - (spot % SAMPLE_RANGE_ALIGN), length: SAMPLE_RANGE_LENGTH });
  }
  ranges.push({ offset: Number(last), length: SAMPLE_RANGE_LENGTH });
  return ranges;
}

/** Encoded size of the varint of `value` (a safe, non-negative integer): 1 to 8 bytes. */
export function varintSize(value: number): number {
  let size = 1;
  for (let v = value; v >= 0x80; v = Math.floor(v / 0x80)) size++;
  return size;
}

/** Appends the canonical unsigned LEB128 varint of `value` to `out`; throws `RangeError` outside 0 .. 2^53 − 1. */
export function pushVarint(out: number[], value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`a varint codes 0 to 2^53 - 1, not ${value}`);
  }
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

/** The zigzag code of a signed integer: 0, −1, 1, −2, 2 … → 0, 1, 2, 3, 4 … */
export function zigzag(value: number): number {
  return value >= 0 ? 2 * value : -2 * value - 1;
}

/** The signed integer of a zigzag code (inverse of `zigzag`). */
export function unzigzag(code: number): number {
  return code % 2 === 0 ? code / 2 : -(code + 1) / 2;
}

/** A varint as decoded from bytes: its value and size, or why it is refused. */
export type VarintResult =
  | { readonly ok: true; readonly value: number; readonly size: number }
  | {
    readonly ok: false;
    readonly problem: "truncated" | "too long" | "not canonical" | "too large";
  };

/**
 * Decodes the varint at `bytes[start ..]` (bytes up to `end`). Refuses one
 * that runs past `end` (truncated), has no last byte within 10 bytes (too
 * long), ends in a 0x00 byte after its first (not canonical: a shorter
 * encoding exists), or codes a value above 2^53 − 1 (too large).
 */
export function decodeVarint(bytes: Uint8Array, start: number, end = bytes.length): VarintResult {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (start + i >= end) return { ok: false, problem: "truncated" };
    const byte = bytes[start + i];
    value += (byte & 0x7f) * scale;
    scale *= 0x80;
    if (byte < 0x80) {
      if (byte === 0 && i > 0) return { ok: false, problem: "not canonical" };
      if (value > Number.MAX_SAFE_INTEGER) return { ok: false, problem: "too large" };
      return { ok: true, value, size: i + 1 };
    }
  }
  return { ok: false, problem: "too long" };
}

/**
 * An op's head as the writer gives it and `opHeadSize` prices it (the
 * payload's bytes are not part of it). `offset` is the absolute base offset.
 */
export type OpHead =
  | { readonly kind: "copy"; readonly offset: number; readonly length: number }
  | { readonly kind: "literal"; readonly length: number }
  | {
    readonly kind: "zliteral";
    readonly length: number;
    readonly payloadLength: number;
    readonly filter?: Filter;
  }
  | {
    readonly kind: "delta";
    readonly offset: number;
    readonly length: number;
    readonly payloadLength: number;
    readonly filter?: Filter;
  }
  | {
    readonly kind: "zrecords";
    readonly length: number;
    readonly payloadLength: number;
    readonly layout: RecordLayout;
  }
  | {
    readonly kind: "drecords";
    readonly offset: number;
    readonly length: number;
    readonly payloadLength: number;
    readonly layout: RecordLayout;
  };

/**
 * What an op's head costs in bytes (op byte included, payload not) in patch
 * format `version`. In v4 it depends on the values, and a base offset is coded
 * relative to `previousEnd`, the end of the previous base range the patch used
 * (0 before the first): the encoder's "is this COPY worth it" question.
 */
export function opHeadSize(version: number, op: OpHead, previousEnd = 0): number {
  if (version === VERSION_4) return encodeOpHeadV4(op, previousEnd).length;
  switch (op.kind) {
    case "copy":
      return COPY_OP_SIZE;
    case "literal":
      return LITERAL_HEAD_SIZE;
    case "zliteral":
      return ZLITERAL_HEAD_SIZE;
    case "delta":
      return DELTA_HEAD_SIZE;
    case "zrecords":
      return zrecordsHeadSize(op.layout.fields.length);
    case "drecords":
      return drecordsHeadSize(op.layout.fields.length);
  }
}

/**
 * Encodes a v4 op head: the op byte, then v3's fields in v3's order as
 * varints, a base offset as the zigzag varint of `offset − previousEnd`, filter
 * bytes as single bytes. Throws `RangeError` for a value no varint codes.
 */
export function encodeOpHeadV4(op: OpHead, previousEnd = 0): Uint8Array {
  const out: number[] = [];
  const relative = (offset: number) => pushVarint(out, zigzag(offset - previousEnd));
  switch (op.kind) {
    case "copy":
      out.push(OP_COPY);
      relative(op.offset);
      pushVarint(out, op.length);
      break;
    case "literal":
      out.push(OP_LITERAL);
      pushVarint(out, op.length);
      break;
    case "zliteral":
      out.push(OP_ZLITERAL);
      pushVarint(out, op.length);
      pushVarint(out, op.payloadLength);
      out.push(encodeFilter(op.filter ?? NO_FILTER));
      break;
    case "delta":
      out.push(OP_DELTA);
      relative(op.offset);
      pushVarint(out, op.length);
      pushVarint(out, op.payloadLength);
      out.push(encodeFilter(op.filter ?? NO_FILTER));
      break;
    case "zrecords":
    case "drecords":
      out.push(op.kind === "zrecords" ? OP_ZRECORDS : OP_DRECORDS);
      if (op.kind === "drecords") relative(op.offset);
      pushVarint(out, op.length);
      pushVarint(out, op.payloadLength);
      pushVarint(out, op.layout.recordLength);
      pushVarint(out, op.layout.fields.length);
      for (const field of op.layout.fields) {
        pushVarint(out, field.length);
        out.push(encodeFilter(field.filter));
      }
      break;
  }
  return new Uint8Array(out);
}

/**
 * Encodes a v4 header (87 bytes + 8 per sample). The samples' ranges must be
 * `sampleRangesOf(baseSize, samples.length)` and each digest 8 bytes (the
 * first 8 of the range's BLAKE3); throws `RangeError` otherwise, or for a base
 * above 2^52 − 1 bytes.
 */
export function encodeHeaderV4(
  header: Omit<PatchHeader, "version" | "baseDigest" | "samples"> & {
    baseDigest: Uint8Array;
    samples: readonly BaseSample[];
  },
): Uint8Array {
  const { samples, baseSize } = header;
  if (baseSize > MAX_V4_BASE_SIZE) {
    throw new RangeError(`a v4 patch's base is at most 2^52 - 1 bytes, not ${baseSize}`);
  }
  const ranges = sampleRangesOf(baseSize, samples.length);
  const bytes = new Uint8Array(headerSize(VERSION_4, samples.length));
  bytes.set(encodeHeaderV2(header));
  new DataView(bytes.buffer).setUint16(4, VERSION_4, true);
  bytes[HEADER_V2_SIZE] = samples.length;
  samples.forEach((sample, i) => {
    if (sample.offset !== ranges[i].offset || sample.length !== ranges[i].length) {
      throw new RangeError(
        `v4 sample ${i} must be base bytes ${ranges[i].offset}..${
          ranges[i].offset + ranges[i].length
        }, not ${sample.offset}..${sample.offset + sample.length}`,
      );
    }
    if (sample.digest.length !== SAMPLE_DIGEST_V4_SIZE) {
      throw new RangeError(`a v4 sample digest is ${SAMPLE_DIGEST_V4_SIZE} bytes`);
    }
    bytes.set(sample.digest, HEADER_V4_FIXED_SIZE + SAMPLE_DIGEST_V4_SIZE * i);
  });
  return bytes;
}

/**
 * The `sample_count` of a v4 header from its first 87 bytes; throws
 * `MalformedPatchError` for a short header, a base above 2^52 − 1 bytes, or a
 * count above 64 or above the base's 64 KiB pieces (`maxSampleCount`).
 */
export function decodeSampleCountV4(fixed: Uint8Array): number {
  if (fixed.length < HEADER_V4_FIXED_SIZE) {
    throw new MalformedPatchError(
      `patch is truncated: a v4 header is at least ${HEADER_V4_FIXED_SIZE} bytes, only ${fixed.length} present`,
    );
  }
  const { baseSize } = decodeHeaderV1(fixed);
  if (baseSize > MAX_V4_BASE_SIZE) {
    throw new MalformedPatchError(
      `v4 header: base_size ${baseSize} is above 2^52 - 1 (corrupt or hostile patch)`,
    );
  }
  const count = fixed[HEADER_V2_SIZE];
  const most = maxSampleCount(baseSize);
  if (count > most) {
    throw new MalformedPatchError(
      `v4 header claims ${count} base samples; a ${baseSize}-byte base has at most ${most}`,
    );
  }
  return count;
}

/** Decodes a whole v4 header (throws `MalformedPatchError`). */
function decodeHeaderV4(bytes: Uint8Array): PatchHeader {
  const count = decodeSampleCountV4(bytes);
  const size = headerSize(VERSION_4, count);
  if (bytes.length < size) {
    throw new MalformedPatchError(
      `patch is truncated: its v4 header with ${count} base samples is ${size} bytes, only ${bytes.length} present`,
    );
  }
  const v1 = decodeHeaderV1(bytes);
  const samples = sampleRangesOf(v1.baseSize, count).map((range, i) => {
    const at = HEADER_V4_FIXED_SIZE + SAMPLE_DIGEST_V4_SIZE * i;
    return { ...range, digest: bytes.slice(at, at + SAMPLE_DIGEST_V4_SIZE) };
  });
  return { ...v1, baseDigest: bytes.slice(54, 54 + DIGEST_LENGTH), samples };
}
