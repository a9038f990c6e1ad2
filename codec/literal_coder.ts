/**
 * The v2 encoder's choice for target bytes no chunk of the base matches: per
 * piece of at most `MAX_OP_RAW` bytes, the smallest of a raw LITERAL, a
 * zstd-compressed ZLITERAL, and an XOR against an aligned base range (target
 * XOR base, zstd-compressed) — small where weights changed only a little.
 *
 * The aligned base offset comes from the files' tensor layouts where known
 * (`tensor_layout.ts`: the same-named base tensor of the same length; pieces
 * never straddle a tensor's edge), else it is inferred: the offset the last
 * COPY implies (target offset + the last match's base − target delta), else
 * the same offset when the base is that long.
 *
 * @module
 */

import { constants, zstdCompressSync } from "node:zlib";
import { readAtSync } from "./file_io.ts";
import { type Alignment, alignmentAt } from "./tensor_layout.ts";
import type { OpWriter } from "./op_writer.ts";
import {
  LITERAL_HEAD_SIZE,
  MAX_OP_RAW,
  XOR_HEAD_SIZE,
  ZLITERAL_HEAD_SIZE,
} from "./patch_format.ts";

/** zstd level of ZLITERAL and XOR payloads. */
export const ZSTD_LEVEL = 3;

/** Encodes unmatched target bytes for a v2 patch. */
export class LiteralCoder {
  readonly #base: Deno.FsFile;
  readonly #baseSize: number;
  readonly #baseRange = new Uint8Array(MAX_OP_RAW);
  readonly #xored = new Uint8Array(MAX_OP_RAW);
  /** Base offset − target offset of the last COPY, if any. */
  #delta: number | undefined;

  readonly #alignments: readonly Alignment[];

  constructor(base: Deno.FsFile, baseSize: number, alignments: readonly Alignment[] = []) {
    this.#base = base;
    this.#baseSize = baseSize;
    this.#alignments = alignments;
  }

  /** Remembers the alignment a COPY implies. */
  matched(targetOffset: number, baseOffset: number): void {
    this.#delta = baseOffset - targetOffset;
  }

  /** Writes `data` (target bytes at `targetOffset`) as the smallest ops. */
  async write(ops: OpWriter, targetOffset: number, data: Uint8Array): Promise<void> {
    for (let at = 0; at < data.length;) {
      let end = Math.min(at + MAX_OP_RAW, data.length);
      // Cut at tensor edges, so that a piece is XORed against one base tensor.
      const here = targetOffset + at;
      const tensor = alignmentAt(this.#alignments, here);
      const next = tensor ? tensor.targetEnd : this.#nextAlignmentStart(here);
      if (next !== undefined && next - targetOffset < end) end = next - targetOffset;
      await this.#writePiece(ops, here, data.subarray(at, end));
      at = end;
    }
  }

  async #writePiece(ops: OpWriter, targetOffset: number, piece: Uint8Array): Promise<void> {
    const literalCost = LITERAL_HEAD_SIZE + piece.length;
    const z = compress(piece);
    let best: "literal" | "z" | "xor" = "literal";
    let bestCost = literalCost;
    if (z.length < piece.length && ZLITERAL_HEAD_SIZE + z.length < bestCost) {
      best = "z";
      bestCost = ZLITERAL_HEAD_SIZE + z.length;
    }
    const baseOffset = this.#alignedOffset(targetOffset, piece.length);
    let x: Uint8Array | undefined;
    if (baseOffset !== undefined) {
      const range = this.#baseRange.subarray(0, piece.length);
      if (readAtSync(this.#base, baseOffset, range) === piece.length) {
        const xored = this.#xored.subarray(0, piece.length);
        for (let i = 0; i < piece.length; i++) xored[i] = piece[i] ^ range[i];
        x = compress(xored);
        if (x.length < piece.length && XOR_HEAD_SIZE + x.length < bestCost) {
          best = "xor";
          bestCost = XOR_HEAD_SIZE + x.length;
        }
      }
    }
    if (best === "xor") await ops.xor(baseOffset!, piece.length, x!);
    else if (best === "z") await ops.zliteral(piece.length, z);
    else await ops.literal(piece);
  }

  #nextAlignmentStart(at: number): number | undefined {
    let lo = 0;
    let hi = this.#alignments.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#alignments[mid].targetStart <= at) lo = mid + 1;
      else hi = mid;
    }
    return this.#alignments[lo]?.targetStart;
  }

  #alignedOffset(targetOffset: number, length: number): number | undefined {
    const tensor = alignmentAt(this.#alignments, targetOffset);
    if (tensor && targetOffset + length <= tensor.targetEnd) {
      return tensor.baseStart + (targetOffset - tensor.targetStart);
    }
    for (
      const candidate of [
        this.#delta === undefined ? undefined : targetOffset + this.#delta,
        targetOffset,
      ]
    ) {
      if (candidate !== undefined && candidate >= 0 && candidate + length <= this.#baseSize) {
        return candidate;
      }
    }
    return undefined;
  }
}

function compress(data: Uint8Array): Uint8Array {
  return zstdCompressSync(data, { params: { [constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL } });
}
