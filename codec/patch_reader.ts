/**
 * Streaming, validating reader of a patch's ops.
 *
 * It reads the patch once, front to back, through one fixed buffer, and checks
 * every bound before the caller acts on an op: COPY ranges inside the base, no
 * op past `target_size`, an op byte it knows, no truncation, no trailing bytes.
 * A length field never causes an allocation, so a hostile LITERAL claiming 2^63
 * bytes is refused (it overruns `target_size`) without using memory. Both
 * `apply` and `inspect` read patches through it.
 *
 * Version 4's heads are varints (`decodeVarint`: refused when truncated, longer
 * than 10 bytes, not canonical or above 2^53 − 1) with base offsets relative to
 * the end of the previous base range, refused before they leave the base.
 *
 * Specification: docs/spec/patch-v1.md, docs/spec/patch-v2.md,
 * docs/spec/patch-v3.md and docs/spec/patch-v4.md ("What a reader MUST refuse": this reader checks those
 * rules, except the base's samples and digests and the output's digest, which
 * `applier.ts` checks, and what only decompressing the data shows).
 *
 * @module
 */

import type { ByteSource } from "./chunk_stream.ts";
import { MalformedPatchError } from "../kernel/errors.ts";
import {
  decodeFilter,
  decodeHeader,
  decodePreamble,
  decodeSampleCount,
  decodeSampleCountV4,
  decodeVarint,
  type Filter,
  headerSize,
  LAYOUT_FIELD_SIZE,
  MAX_OP_RAW,
  MAX_VARINT_BYTES,
  OP_COPY,
  OP_DELTA,
  OP_DRECORDS,
  OP_LITERAL,
  OP_ZLITERAL,
  OP_ZRECORDS,
  type OpHead,
  type PatchHeader,
  PREAMBLE_SIZE,
  safeU64,
  SAMPLE_SIZE,
  unzigzag,
  VERSION_2,
  VERSION_3,
  VERSION_4,
} from "./patch_format.ts";
import {
  layoutProblem,
  MAX_RECORD_FIELDS,
  type RecordField,
  type RecordLayout,
} from "./record_filter.ts";

/**
 * An op as read: a COPY range, or a LITERAL, ZLITERAL, DELTA, ZRECORDS or
 * DRECORDS whose payload (`payloadLength` bytes: raw for a LITERAL, zstd
 * frames for the others) the
 * caller must then read with `readLiteral`. `length` is what the op produces.
 */
export type PatchOp =
  | Exclude<OpHead, { readonly kind: "zliteral" | "delta" }>
  // As read, a ZLITERAL's or DELTA's filter is always known.
  | (Extract<OpHead, { readonly kind: "zliteral" | "delta" }> & { readonly filter: Filter });

/** `layout` if it is valid, else the reader's error naming the op at `at`. */
function validLayout(name: string, at: number, layout: RecordLayout): RecordLayout {
  const problem = layoutProblem(layout);
  if (problem !== undefined) {
    throw new MalformedPatchError(
      `${name} at patch offset ${at} has an invalid record layout: ${problem}`,
    );
  }
  return layout;
}

/** Reads a patch's header and ops from a byte source, validating as it goes. */
export class PatchReader {
  readonly header: PatchHeader;
  #source: ByteSource;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #eof = false;
  /** Patch bytes consumed so far. */
  #position = 0;
  /** Target bytes the ops read so far produce. */
  #produced = 0;
  /** Bytes of the current LITERAL not yet read by the caller. */
  #literalLeft = 0;
  #scratch = new Uint8Array(16);
  /** v4: end of the previous base range an op used (relative offsets start there). */
  #previousEnd = 0;

  private constructor(source: ByteSource, buf: Uint8Array, header: PatchHeader) {
    this.#source = source;
    this.#buf = buf;
    this.header = header;
  }

  /** Reads and validates the header. */
  static async open(source: ByteSource, bufferSize = 1 << 20): Promise<PatchReader> {
    const reader = new PatchReader(source, new Uint8Array(Math.max(bufferSize, 64)), {
      version: 0,
      baseSize: 0,
      targetSize: 0,
      targetDigest: new Uint8Array(),
    });
    const preamble = (await reader.#readUpTo(PREAMBLE_SIZE)).slice();
    const version = decodePreamble(preamble);
    const fixed = await reader.#readBytes(preamble, headerSize(version));
    if (version !== VERSION_3 && version !== VERSION_4) {
      (reader as { header: PatchHeader }).header = decodeHeader(fixed);
      return reader;
    }
    // v3 and v4: the sample count (≤ 64, checked before anything is read for it), then the samples.
    const count = version === VERSION_3 ? decodeSampleCount(fixed) : decodeSampleCountV4(fixed);
    const all = await reader.#readBytes(fixed, headerSize(version, count));
    (reader as { header: PatchHeader }).header = decodeHeader(all);
    return reader;
  }

  /**
   * `start` followed by further header bytes up to `size` (≤ 2,904) in all,
   * read in pieces of at most 44 bytes; fewer only where the patch ends.
   */
  async #readBytes(start: Uint8Array, size: number): Promise<Uint8Array> {
    const bytes = new Uint8Array(size);
    bytes.set(start);
    let filled = start.length;
    while (filled < size) {
      const piece = await this.#readUpTo(Math.min(SAMPLE_SIZE, size - filled));
      if (piece.length === 0) break;
      bytes.set(piece, filled);
      filled += piece.length;
    }
    return bytes.subarray(0, filled);
  }

  /** Patch bytes consumed so far. */
  get position(): number {
    return this.#position;
  }

  /** Target bytes produced by the ops read so far. */
  get produced(): number {
    return this.#produced;
  }

  /**
   * The next op, or `null` once the ops have produced exactly `target_size` bytes
   * and the patch ends there. Throws `MalformedPatchError` for anything else.
   * After a LITERAL, read its bytes with `readLiteral` before calling again.
   */
  async next(): Promise<PatchOp | null> {
    if (this.#literalLeft > 0) {
      throw new Error("PatchReader.next() called before the LITERAL's bytes were read");
    }
    const { baseSize, targetSize } = this.header;
    if (this.#produced === targetSize) {
      if (!(await this.#atEnd())) {
        throw new MalformedPatchError(
          `trailing bytes after the last op at patch offset ${this.#position} (the target is complete)`,
        );
      }
      return null;
    }
    const at = this.#position;
    const opBytes = await this.#readUpTo(1);
    if (opBytes.length === 0) {
      throw new MalformedPatchError(
        `patch is truncated: it ends at offset ${at} after producing ${this.#produced} of ${targetSize} target bytes`,
      );
    }
    const op = opBytes[0];
    const left = targetSize - this.#produced;
    if (this.header.version === VERSION_4) return await this.#nextV4(op, at, left);
    if (op === OP_COPY) {
      const view = await this.#fields(16, "COPY", at);
      const offset = safeU64(view, 0, `COPY offset at patch offset ${at}`);
      const length = safeU64(view, 8, `COPY length at patch offset ${at}`);
      if (offset + length > baseSize) {
        throw new MalformedPatchError(
          `COPY at patch offset ${at} reads base bytes ${offset}..${
            offset + length
          }, beyond the base's ${baseSize} bytes`,
        );
      }
      this.#checkFits(length, left, "COPY", at);
      this.#produced += length;
      return { kind: "copy", offset, length };
    }
    if (op === OP_LITERAL) {
      const view = await this.#fields(8, "LITERAL", at);
      const length = safeU64(view, 0, `LITERAL length at patch offset ${at}`);
      this.#checkFits(length, left, "LITERAL", at);
      this.#produced += length;
      this.#literalLeft = length;
      return { kind: "literal", length };
    }
    if (this.header.version >= VERSION_2 && (op === OP_ZLITERAL || op === OP_DELTA)) {
      const delta = op === OP_DELTA;
      const name = delta ? "DELTA" : "ZLITERAL";
      const view = await this.#fields(delta ? 17 : 9, name, at);
      const offset = delta ? safeU64(view, 0, `DELTA base offset at patch offset ${at}`) : 0;
      const length = view.getUint32(delta ? 8 : 0, true);
      const payloadLength = view.getUint32(delta ? 12 : 4, true);
      const filterByte = view.getUint8(delta ? 16 : 8);
      checkCompressedSizes(name, at, length, payloadLength);
      const filter = decodeFilter(filterByte);
      if (filter === undefined || (!delta && filter.combine !== "xor")) {
        throw new MalformedPatchError(
          `${name} at patch offset ${at} has an invalid filter byte 0x${
            filterByte.toString(16).padStart(2, "0")
          }`,
        );
      }
      if (delta && offset + length > baseSize) {
        throw new MalformedPatchError(
          `DELTA at patch offset ${at} reads base bytes ${offset}..${
            offset + length
          }, beyond the base's ${baseSize} bytes`,
        );
      }
      this.#checkFits(length, left, name, at);
      this.#produced += length;
      this.#literalLeft = payloadLength;
      return delta
        ? { kind: "delta", offset, length, payloadLength, filter }
        : { kind: "zliteral", length, payloadLength, filter };
    }
    if (this.header.version >= VERSION_3 && (op === OP_ZRECORDS || op === OP_DRECORDS)) {
      return await this.#recordOp(op === OP_DRECORDS, at, left);
    }
    throw new MalformedPatchError(
      `unknown op 0x${op.toString(16).padStart(2, "0")} at patch offset ${at}`,
    );
  }

  /** The rest of a ZRECORDS or DRECORDS op, every field of its head checked before its data. */
  async #recordOp(delta: boolean, at: number, left: number): Promise<PatchOp> {
    const name = delta ? "DRECORDS" : "ZRECORDS";
    const view = await this.#fields(delta ? 19 : 11, name, at);
    const offset = delta ? safeU64(view, 0, `DRECORDS base offset at patch offset ${at}`) : 0;
    const length = view.getUint32(delta ? 8 : 0, true);
    const payloadLength = view.getUint32(delta ? 12 : 4, true);
    const recordLength = view.getUint16(delta ? 16 : 8, true);
    const fieldCount = view.getUint8(delta ? 18 : 10);
    if (fieldCount < 1 || fieldCount > MAX_RECORD_FIELDS) {
      throw new MalformedPatchError(
        `${name} at patch offset ${at} has ${fieldCount} record fields; it must be 1 to ${MAX_RECORD_FIELDS}`,
      );
    }
    const fieldView = await this.#fields(LAYOUT_FIELD_SIZE * fieldCount, name, at);
    const fields: RecordField[] = [];
    for (let j = 0; j < fieldCount; j++) {
      const fieldLength = fieldView.getUint16(LAYOUT_FIELD_SIZE * j, true);
      const filterByte = fieldView.getUint8(LAYOUT_FIELD_SIZE * j + 2);
      const filter = decodeFilter(filterByte);
      if (filter === undefined || (!delta && filter.combine !== "xor")) {
        throw new MalformedPatchError(
          `${name} at patch offset ${at} has an invalid filter byte 0x${
            filterByte.toString(16).padStart(2, "0")
          } for record field ${j}`,
        );
      }
      fields.push({ length: fieldLength, filter });
    }
    const layout = validLayout(name, at, { recordLength, fields });
    checkCompressedSizes(name, at, length, payloadLength);
    if (delta && offset + length > this.header.baseSize) {
      throw new MalformedPatchError(
        `DRECORDS at patch offset ${at} reads base bytes ${offset}..${
          offset + length
        }, beyond the base's ${this.header.baseSize} bytes`,
      );
    }
    this.#checkFits(length, left, name, at);
    this.#produced += length;
    this.#literalLeft = payloadLength;
    return delta
      ? { kind: "drecords", offset, length, payloadLength, layout }
      : { kind: "zrecords", length, payloadLength, layout };
  }

  /** A v4 op after its op byte: varint fields, each checked before the op's data is read. */
  async #nextV4(op: number, at: number, left: number): Promise<PatchOp> {
    const name = OP_NAMES_V4[op];
    if (name === undefined) {
      throw new MalformedPatchError(
        `unknown op 0x${op.toString(16).padStart(2, "0")} at patch offset ${at}`,
      );
    }
    const field = (what: string) => this.#varint(name, what, at);
    const based = op === OP_COPY || op === OP_DELTA || op === OP_DRECORDS;
    const relative = based ? unzigzag(await field("base offset")) : 0;
    const length = await field(op === OP_COPY || op === OP_LITERAL ? "length" : "raw_len");
    if (op === OP_COPY || op === OP_LITERAL) {
      if (op === OP_COPY) this.#baseRange(name, at, relative, length);
      this.#checkFits(length, left, name, at);
      this.#produced += length;
      if (op === OP_COPY) return { kind: "copy", offset: this.#previousEnd - length, length };
      this.#literalLeft = length;
      return { kind: "literal", length };
    }
    const payloadLength = await field("comp_len");
    const delta = op === OP_DELTA || op === OP_DRECORDS;
    let result: PatchOp;
    if (op === OP_ZLITERAL || op === OP_DELTA) {
      const filter = await this.#filter(name, at, delta, "");
      checkCompressedSizes(name, at, length, payloadLength);
      result = delta
        ? { kind: "delta", offset: 0, length, payloadLength, filter }
        : { kind: "zliteral", length, payloadLength, filter };
    } else {
      const recordLength = await field("record_len");
      const fieldCount = await field("field_count");
      if (fieldCount < 1 || fieldCount > MAX_RECORD_FIELDS) {
        throw new MalformedPatchError(
          `${name} at patch offset ${at} has ${fieldCount} record fields; it must be 1 to ${MAX_RECORD_FIELDS}`,
        );
      }
      const fields: RecordField[] = [];
      for (let j = 0; j < fieldCount; j++) {
        const fieldLength = await field(`record field ${j} len`);
        fields.push({
          length: fieldLength,
          filter: await this.#filter(name, at, delta, ` for record field ${j}`),
        });
      }
      const layout = validLayout(name, at, { recordLength, fields });
      checkCompressedSizes(name, at, length, payloadLength);
      result = delta
        ? { kind: "drecords", offset: 0, length, payloadLength, layout }
        : { kind: "zrecords", length, payloadLength, layout };
    }
    if (delta) this.#baseRange(name, at, relative, length);
    this.#checkFits(length, left, name, at);
    this.#produced += length;
    this.#literalLeft = payloadLength;
    return "offset" in result ? { ...result, offset: this.#previousEnd - length } : result;
  }

  /**
   * v4: checks that the base range `relative` past the previous one's end,
   * `length` bytes long, is inside the base, and makes its end the next origin.
   */
  #baseRange(name: string, at: number, relative: number, length: number): void {
    const offset = this.#previousEnd + relative;
    if (offset < 0) {
      throw new MalformedPatchError(
        `${name} at patch offset ${at} has base offset ${relative} relative to ${this.#previousEnd}: ${offset}, before the base's first byte`,
      );
    }
    if (offset + length > this.header.baseSize) {
      throw new MalformedPatchError(
        `${name} at patch offset ${at} reads base bytes ${offset}..${
          offset + length
        }, beyond the base's ${this.header.baseSize} bytes`,
      );
    }
    this.#previousEnd = offset + length;
  }

  /** v4: a filter byte, refused if invalid (or SUB outside a DELTA or DRECORDS). */
  async #filter(name: string, at: number, delta: boolean, where: string): Promise<Filter> {
    const bytes = await this.#readUpTo(1);
    if (bytes.length < 1) {
      throw new MalformedPatchError(
        `patch is truncated: the ${name} op at offset ${at} ends before its filter byte`,
      );
    }
    const filter = decodeFilter(bytes[0]);
    if (filter === undefined || (!delta && filter.combine !== "xor")) {
      throw new MalformedPatchError(
        `${name} at patch offset ${at} has an invalid filter byte 0x${
          bytes[0].toString(16).padStart(2, "0")
        }${where}`,
      );
    }
    return filter;
  }

  /** v4: the next varint of an op head, or `MalformedPatchError` saying what is wrong with it. */
  async #varint(name: string, what: string, at: number): Promise<number> {
    if (this.#end - this.#start < MAX_VARINT_BYTES) await this.#fill(MAX_VARINT_BYTES);
    const result = decodeVarint(this.#buf, this.#start, this.#end);
    if (!result.ok) {
      throw new MalformedPatchError(
        result.problem === "truncated"
          ? `patch is truncated: the ${name} op at offset ${at} ends inside its ${what}`
          : `${name} at patch offset ${at}: its ${what} is a varint ${
            VARINT_PROBLEMS[result.problem]
          }`,
      );
    }
    this.#start += result.size;
    this.#position += result.size;
    return result.value;
  }

  /**
   * Reads up to `dest.length` bytes of the current LITERAL into `dest`; returns
   * how many (0 once the literal is exhausted). Throws if the patch ends early.
   */
  async readLiteral(dest: Uint8Array): Promise<number> {
    const want = Math.min(dest.length, this.#literalLeft);
    if (want === 0) return 0;
    let got = 0;
    // Drain the buffer first, then read large pieces straight into dest.
    if (this.#end > this.#start) {
      got = Math.min(want, this.#end - this.#start);
      dest.set(this.#buf.subarray(this.#start, this.#start + got));
      this.#start += got;
    }
    while (got < want && !this.#eof) {
      const n = await this.#source.read(dest.subarray(got, want));
      if (n === null) this.#eof = true;
      else got += n;
    }
    this.#position += got;
    this.#literalLeft -= got;
    if (got < want) {
      throw new MalformedPatchError(
        `patch is truncated: it ends at offset ${this.#position} inside a LITERAL, ${this.#literalLeft} bytes short`,
      );
    }
    return got;
  }

  /** Skips the rest of the current LITERAL (used by `inspect`). */
  async skipLiteral(scratch: Uint8Array): Promise<void> {
    while (this.#literalLeft > 0) await this.readLiteral(scratch);
  }

  #checkFits(length: number, left: number, name: string, at: number): void {
    if (length > left) {
      throw new MalformedPatchError(
        `${name} at patch offset ${at} produces ${length} bytes, but only ${left} of target_size ${this.header.targetSize} remain`,
      );
    }
  }

  async #fields(size: number, name: string, at: number): Promise<DataView> {
    const bytes = await this.#readUpTo(size);
    if (bytes.length < size) {
      throw new MalformedPatchError(
        `patch is truncated: the ${name} op at offset ${at} needs ${size} bytes of fields, ${bytes.length} present`,
      );
    }
    return new DataView(bytes.buffer, bytes.byteOffset, size);
  }

  /** Up to `n` (≤ 64) bytes, fewer only at end of patch; the result is valid until the next read. */
  async #readUpTo(n: number): Promise<Uint8Array> {
    if (this.#end - this.#start < n) await this.#fill(n);
    const got = Math.min(n, this.#end - this.#start);
    const out = this.#scratch.length >= got ? this.#scratch : new Uint8Array(got);
    out.set(this.#buf.subarray(this.#start, this.#start + got));
    this.#start += got;
    this.#position += got;
    return out.subarray(0, got);
  }

  async #atEnd(): Promise<boolean> {
    if (this.#end > this.#start) return false;
    await this.#fill(1);
    return this.#end === this.#start;
  }

  async #fill(atLeast: number): Promise<void> {
    if (this.#start > 0) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    while (!this.#eof && this.#end < atLeast) {
      const n = await this.#source.read(this.#buf.subarray(this.#end));
      if (n === null) this.#eof = true;
      else this.#end += n;
    }
  }
}

/** Names of the op bytes a v4 patch may hold. */
const OP_NAMES_V4: Readonly<Record<number, string>> = {
  [OP_COPY]: "COPY",
  [OP_LITERAL]: "LITERAL",
  [OP_ZLITERAL]: "ZLITERAL",
  [OP_DELTA]: "DELTA",
  [OP_ZRECORDS]: "ZRECORDS",
  [OP_DRECORDS]: "DRECORDS",
};

/** What the reader says of a refused varint. */
const VARINT_PROBLEMS = {
  "too long": "longer than 10 bytes",
  "not canonical": "that is not canonical (a shorter encoding exists)",
  "too large": "above 2^53 - 1",
} as const;

/**
 * The sizes every compressed op (ZLITERAL, DELTA, ZRECORDS, DRECORDS) must
 * have: `raw_len` 1 to `MAX_OP_RAW`, `comp_len` 1 to `raw_len` − 1.
 */
function checkCompressedSizes(name: string, at: number, length: number, payloadLength: number) {
  if (length === 0 || length > MAX_OP_RAW) {
    throw new MalformedPatchError(
      `${name} at patch offset ${at} claims ${length} bytes; it must be 1 to ${MAX_OP_RAW}`,
    );
  }
  if (payloadLength === 0 || payloadLength >= length) {
    throw new MalformedPatchError(
      `${name} at patch offset ${at} has ${payloadLength} compressed bytes for ${length}; it must be 1 to ${
        length - 1
      }`,
    );
  }
}
