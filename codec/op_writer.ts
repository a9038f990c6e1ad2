/**
 * Writes a v1 patch body: takes COPY ranges and literal bytes in target order,
 * merges a COPY that continues the previous one in the base, merges consecutive
 * literals into one LITERAL op (its length is filled in when the run ends), and
 * counts what it wrote.
 *
 * @module
 */

import type { BufferedWriter } from "./file_io.ts";
import { encodeCopy, encodeLiteralHead, LITERAL_HEAD_SIZE } from "./patch_format.ts";

/** What a patch body holds. */
export interface OpStats {
  copyOps: number;
  copyBytes: number;
  literalOps: number;
  literalBytes: number;
}

/** Emits merged COPY / LITERAL ops to a writer. */
export class OpWriter {
  readonly stats: OpStats = { copyOps: 0, copyBytes: 0, literalOps: 0, literalBytes: 0 };
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
