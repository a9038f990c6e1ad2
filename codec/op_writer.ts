/**
 * Writes a patch body: takes COPY ranges and literal bytes in target order,
 * merges a COPY that continues the previous one in the base, merges consecutive
 * literals into one LITERAL op (its length is filled in when the run ends), and
 * counts what it wrote.
 *
 * In format 4 (`version` 4) op heads are varints (`encodeOpHeadV4`), base
 * offsets relative to the end of the previous base range the writer used, and
 * a LITERAL's head size depends on its length: literal bytes are gathered in a
 * buffer of `LITERAL_RUN_V4` bytes and written as one LITERAL when the run ends
 * or the buffer is full (a longer piece is written as its own op, as given).
 * `headSize` prices an op head as this writer would write it next.
 *
 * @module
 */

import type { BufferedWriter } from "../kernel/file_io.ts";
import {
  encodeCopy,
  encodeDeltaHead,
  encodeDRecordsHead,
  encodeLiteralHead,
  encodeOpHeadV4,
  encodeZLiteralHead,
  encodeZRecordsHead,
  type Filter,
  LITERAL_HEAD_SIZE,
  type OpHead,
  opHeadSize,
  VERSION_4,
} from "./patch_format.ts";
import type { RecordLayout } from "./record_filter.ts";

/** What a patch body holds (compressed ops' bytes are the bytes they produce). */
export interface OpStats {
  copyOps: number;
  copyBytes: number;
  literalOps: number;
  literalBytes: number;
  zliteralOps: number;
  zliteralBytes: number;
  deltaOps: number;
  deltaBytes: number;
  /** v3 ZRECORDS ops. */
  zrecordsOps: number;
  zrecordsBytes: number;
  /** v3 DRECORDS ops. */
  drecordsOps: number;
  drecordsBytes: number;
}

/** Stats of an empty body. */
export function emptyStats(): OpStats {
  return {
    copyOps: 0,
    copyBytes: 0,
    literalOps: 0,
    literalBytes: 0,
    zliteralOps: 0,
    zliteralBytes: 0,
    deltaOps: 0,
    deltaBytes: 0,
    zrecordsOps: 0,
    zrecordsBytes: 0,
    drecordsOps: 0,
    drecordsBytes: 0,
  };
}

/** Size of format 4's buffer of literal bytes: the longest LITERAL it gathers from pieces (256 KiB). */
export const LITERAL_RUN_V4 = 256 * 1024;

/** Emits merged COPY / LITERAL ops to a writer. */
export class OpWriter {
  readonly stats: OpStats = emptyStats();
  #out: BufferedWriter;
  #v4: boolean;
  #version: number;
  #copyOffset = -1;
  #copyLength = 0;
  /** Position of the open LITERAL's head in the patch, or -1 (formats 1-3). */
  #literalHeadAt = -1;
  #literalLength = 0;
  /** Format 4: end of the previous base range an op used (relative offsets start there). */
  #previousEnd = 0;
  /** Format 4: literal bytes not yet written (`#pendingLength` of them), allocated on first use. */
  #pending: Uint8Array | undefined;
  #pendingLength = 0;

  /** A writer of ops in patch format `version` (1-3 write the same COPY/LITERAL heads; 4 varints). */
  constructor(out: BufferedWriter, version = 3) {
    this.#out = out;
    this.#version = version;
    this.#v4 = version === VERSION_4;
  }

  /**
   * What `op`'s head would cost if it came next (in format 4, relative to the
   * end of the previous base range, a COPY not yet written included; a COPY
   * that continues that one would merge into it and cost nothing more).
   */
  headSize(op: OpHead): number {
    const previousEnd = this.#copyOffset >= 0
      ? this.#copyOffset + this.#copyLength
      : this.#previousEnd;
    return opHeadSize(this.#version, op, previousEnd);
  }

  /** Writes a head: v4's varint one (moving the relative offsets' origin), or `v3` as given. */
  async #head(op: OpHead, v3: () => Uint8Array): Promise<void> {
    if (!this.#v4) {
      await this.#out.write(v3());
      return;
    }
    await this.#out.write(encodeOpHeadV4(op, this.#previousEnd));
    if ("offset" in op) this.#previousEnd = op.offset + op.length;
  }

  /** Target bytes equal to `base[offset .. offset+length)`. */
  async copy(offset: number, length: number): Promise<void> {
    if (length === 0) return;
    await this.#closeLiteral();
    if (this.#copyOffset >= 0 && this.#copyOffset + this.#copyLength === offset) {
      this.#copyLength += length;
      return;
    }
    await this.#flushCopy();
    this.#copyOffset = offset;
    this.#copyLength = length;
  }

  /** New target bytes. */
  async literal(data: Uint8Array): Promise<void> {
    if (data.length === 0) return;
    await this.#flushCopy();
    if (this.#v4) {
      await this.#literalV4(data);
      return;
    }
    if (this.#literalHeadAt < 0) {
      this.#literalHeadAt = this.#out.position;
      this.#literalLength = 0;
      await this.#out.write(encodeLiteralHead(0));
      this.stats.literalOps++;
    }
    await this.#out.write(data);
    this.#literalLength += data.length;
    this.stats.literalBytes += data.length;
  }

  /** A v2 ZLITERAL: `rawLength` target bytes, written as the zstd frame `compressed` of their `filter`ed bytes. */
  async zliteral(rawLength: number, compressed: Uint8Array, filter: Filter): Promise<void> {
    await this.#flushCopy();
    await this.#closeLiteral();
    const op: OpHead = {
      kind: "zliteral",
      length: rawLength,
      payloadLength: compressed.length,
      filter,
    };
    await this.#head(op, () => encodeZLiteralHead(rawLength, compressed.length, filter));
    await this.#out.write(compressed);
    this.stats.zliteralOps++;
    this.stats.zliteralBytes += rawLength;
  }

  /** A v2 DELTA: `rawLength` target bytes, written as the zstd frame `compressed` of their residue against base[baseOffset ..]. */
  async delta(
    baseOffset: number,
    rawLength: number,
    compressed: Uint8Array,
    filter: Filter,
  ): Promise<void> {
    await this.#flushCopy();
    await this.#closeLiteral();
    const op: OpHead = {
      kind: "delta",
      offset: baseOffset,
      length: rawLength,
      payloadLength: compressed.length,
      filter,
    };
    await this.#head(op, () => encodeDeltaHead(baseOffset, rawLength, compressed.length, filter));
    await this.#out.write(compressed);
    this.stats.deltaOps++;
    this.stats.deltaBytes += rawLength;
  }

  /** A v3 ZRECORDS: `rawLength` target bytes, written as the zstd frame `compressed` of their record transform under `layout`. */
  async zrecords(rawLength: number, compressed: Uint8Array, layout: RecordLayout): Promise<void> {
    await this.#flushCopy();
    await this.#closeLiteral();
    const op: OpHead = {
      kind: "zrecords",
      length: rawLength,
      payloadLength: compressed.length,
      layout,
    };
    await this.#head(op, () => encodeZRecordsHead(rawLength, compressed.length, layout));
    await this.#out.write(compressed);
    this.stats.zrecordsOps++;
    this.stats.zrecordsBytes += rawLength;
  }

  /** A v3 DRECORDS: `rawLength` target bytes, written as the zstd frame `compressed` of their record transform against base[baseOffset ..]. */
  async drecords(
    baseOffset: number,
    rawLength: number,
    compressed: Uint8Array,
    layout: RecordLayout,
  ): Promise<void> {
    await this.#flushCopy();
    await this.#closeLiteral();
    const op: OpHead = {
      kind: "drecords",
      offset: baseOffset,
      length: rawLength,
      payloadLength: compressed.length,
      layout,
    };
    await this.#head(
      op,
      () => encodeDRecordsHead(baseOffset, rawLength, compressed.length, layout),
    );
    await this.#out.write(compressed);
    this.stats.drecordsOps++;
    this.stats.drecordsBytes += rawLength;
  }

  /** Writes whatever op is still open. */
  async finish(): Promise<void> {
    await this.#flushCopy();
    await this.#closeLiteral();
  }

  async #flushCopy(): Promise<void> {
    if (this.#copyOffset < 0) return;
    const [offset, length] = [this.#copyOffset, this.#copyLength];
    await this.#head({ kind: "copy", offset, length }, () => encodeCopy(offset, length));
    this.stats.copyOps++;
    this.stats.copyBytes += this.#copyLength;
    this.#copyOffset = -1;
    this.#copyLength = 0;
  }

  /** Format 4: gathers `data` into the pending LITERAL, writing what does not fit. */
  async #literalV4(data: Uint8Array): Promise<void> {
    this.stats.literalBytes += data.length;
    if (this.#pendingLength + data.length > LITERAL_RUN_V4) await this.#closeLiteral();
    if (data.length > LITERAL_RUN_V4) {
      await this.#writeLiteralV4(data);
      return;
    }
    this.#pending ??= new Uint8Array(LITERAL_RUN_V4);
    this.#pending.set(data, this.#pendingLength);
    this.#pendingLength += data.length;
  }

  async #writeLiteralV4(data: Uint8Array): Promise<void> {
    await this.#out.write(encodeOpHeadV4({ kind: "literal", length: data.length }));
    await this.#out.write(data);
    this.stats.literalOps++;
  }

  async #closeLiteral(): Promise<void> {
    if (this.#v4) {
      if (this.#pendingLength === 0) return;
      const data = this.#pending!.subarray(0, this.#pendingLength);
      this.#pendingLength = 0;
      await this.#writeLiteralV4(data);
      return;
    }
    if (this.#literalHeadAt < 0) return;
    const head = encodeLiteralHead(this.#literalLength);
    await this.#out.overwrite(this.#literalHeadAt, head.subarray(0, LITERAL_HEAD_SIZE));
    this.#literalHeadAt = -1;
  }
}
