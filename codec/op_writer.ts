/**
 * Writes a patch body: takes COPY ranges and literal bytes in target order,
 * merges a COPY that continues the previous one in the base, merges consecutive
 * literals into one LITERAL op (its length is filled in when the run ends), and
 * counts what it wrote.
 *
 * @module
 */

import type { BufferedWriter } from "../kernel/file_io.ts";
import {
  encodeCopy,
  encodeDeltaHead,
  encodeDRecordsHead,
  encodeLiteralHead,
  encodeZLiteralHead,
  encodeZRecordsHead,
  type Filter,
  LITERAL_HEAD_SIZE,
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

/** Emits merged COPY / LITERAL ops to a writer. */
export class OpWriter {
  readonly stats: OpStats = emptyStats();
  #out: BufferedWriter;
  #copyOffset = -1;
  #copyLength = 0;
  /** Position of the open LITERAL's head in the patch, or -1. */
  #literalHeadAt = -1;
  #literalLength = 0;

  constructor(out: BufferedWriter) {
    this.#out = out;
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
    await this.#out.write(encodeZLiteralHead(rawLength, compressed.length, filter));
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
    await this.#out.write(encodeDeltaHead(baseOffset, rawLength, compressed.length, filter));
    await this.#out.write(compressed);
    this.stats.deltaOps++;
    this.stats.deltaBytes += rawLength;
  }

  /** A v3 ZRECORDS: `rawLength` target bytes, written as the zstd frame `compressed` of their record transform under `layout`. */
  async zrecords(rawLength: number, compressed: Uint8Array, layout: RecordLayout): Promise<void> {
    await this.#flushCopy();
    await this.#closeLiteral();
    await this.#out.write(encodeZRecordsHead(rawLength, compressed.length, layout));
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
    await this.#out.write(encodeDRecordsHead(baseOffset, rawLength, compressed.length, layout));
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
    await this.#out.write(encodeCopy(this.#copyOffset, this.#copyLength));
    this.stats.copyOps++;
    this.stats.copyBytes += this.#copyLength;
    this.#copyOffset = -1;
    this.#copyLength = 0;
  }

  async #closeLiteral(): Promise<void> {
    if (this.#literalHeadAt < 0) return;
    const head = encodeLiteralHead(this.#literalLength);
    await this.#out.overwrite(this.#literalHeadAt, head.subarray(0, LITERAL_HEAD_SIZE));
    this.#literalHeadAt = -1;
  }
}
