/**
 * The v2 encoder's choice for target bytes no chunk of the base matches.
 *
 * 1. Runs: an unmatched chunk is compared with the base at the offset the
 *    previous COPY implies, at the offset the next COPY implies (the chunk is
 *    held until the next one is known) and at its own offset; runs of equal
 *    bytes become COPYs (`equal_runs.ts`). Bytes inserted at the front then
 *    cost about their own length.
 * 2. Pieces: the rest is cut into pieces of at most `MAX_OP_RAW` bytes, at
 *    tensor edges too, and each piece is written as the smallest of a raw
 *    LITERAL, a ZLITERAL and a DELTA against its aligned base range, trying the
 *    filters (`residue_filter.ts`) that pay on model weights: the element
 *    width is the tensor's dtype where the layout is known, else 2 and 4 are
 *    tried. The aligned base range is the same-named base tensor of the same
 *    length where the layouts are known (`tensor_layout.ts`), else the offset
 *    the last COPY implies, else the same offset.
 *
 * 3. Probing: trying every filter on a whole 1 MiB piece took 5-8 zstd runs;
 *    now each is tried on a 64 KiB sample of the piece and only the best one
 *    or two are compressed whole (`#probe`; measured on the corpus at 16 MiB:
 *    the same patches, byte for byte).
 *
 * zstd level 1 throughout: planes of float bytes compress smaller at level 1
 * than at 3 (measured on the corpus), plain bytes only a few bytes larger, and
 * one context is ~4 MB less than two. Memory: one buffer of `MAX_OP_RAW` (the
 * base window), one of the largest chunk plus `MAX_OP_RAW` (the held chunk),
 * two of 64 KiB (probe samples), one zstd context with its 1 MiB output (the
 * chosen bytes are written from it: the winner is compressed last, or again),
 * a reused hash table for the shift search, and this thread's WebAssembly
 * kernels (`filter_kernels.ts`, 2.25 MiB, whose memory holds each filtered
 * candidate: nothing is copied out).
 *
 * @module
 */

import { readAtSync } from "../kernel/file_io.ts";
import {
  type Alignment,
  alignmentAt,
  type ElementWidth,
  firstEndingAfter,
  type TensorRange,
} from "./tensor_layout.ts";
import type { OpWriter } from "./op_writer.ts";
import {
  DELTA_HEAD_SIZE,
  type Filter,
  LITERAL_HEAD_SIZE,
  MAX_OP_RAW,
  NO_FILTER,
  ZLITERAL_HEAD_SIZE,
} from "./patch_format.ts";
import { combineShuffle, shuffle } from "./residue_filter.ts";
import { filterKernels, KERNEL_REGION } from "./filter_kernels.ts";
import { ZstdCompressor } from "./zstd_context.ts";
import { chooseRuns, type Run, RunScanner, shiftCandidates, ShiftScratch } from "./equal_runs.ts";

/** zstd level of every candidate (level 3 measured larger on planes, no smaller on plain bytes). */
export const ZSTD_LEVEL = 1;
/** Shortest run of equal bytes copied out of an unmatched chunk. */
export const MIN_RUN = 24;
/** Runs at least this long are always copied; shorter ones only when few. */
export const LONG_RUN = 256;
/** Most short runs per chunk that are still copied. */
export const MAX_SHORT_RUNS = 8;
/** Gaps between runs are searched for bytes that moved otherwise in pieces of this size... */
export const LOCAL_GAP = 512 * 1024;
/** ...each in the base this far around its aligned position. */
export const LOCAL_REACH = 64 * 1024;

/**
 * Pieces at least this long are probed (`#probe`) before compressing: each
 * candidate filter is tried on a sample of `PROBE_SLICES` × `PROBE_SLICE`
 * bytes, and only the best (and those within `PROBE_MARGIN` of it, at most
 * `PROBE_KEEP`) are compressed whole. Measured on the corpus: 5-8 whole
 * compressions per 1 MiB piece became about 1.2, for patches within 0.1 %.
 */
export const PROBE_MIN_PIECE = 64 * 1024;
/** Slices of a probe sample... */
export const PROBE_SLICES = 4;
/** ...each this long (a multiple of 64, so that every filter's elements and bit groups align). */
export const PROBE_SLICE = 16 * 1024;
/** Candidates whose sample compressed at most this much larger than the best's are kept... */
export const PROBE_MARGIN = 0.03;
/** ...at most this many. */
export const PROBE_KEEP = 2;

/** One way to write a piece: a ZLITERAL or a DELTA with a filter. */
interface Candidate {
  readonly kind: "z" | "delta";
  readonly filter: Filter;
}

/** Where the coder finds the base and the layouts. */
export interface LiteralCoderOptions {
  /** Same-named tensors of base and target (sorted by target start). */
  readonly alignments?: readonly Alignment[];
  /** The target's tensors with their element widths (sorted by start). */
  readonly tensors?: readonly TensorRange[];
  /** Largest chunk the encoder passes (the held chunk's buffer). */
  readonly maxChunk: number;
  /**
   * Whether pieces are probed on a sample first (default true); false
   * compresses every candidate whole (what probing is measured against).
   */
  readonly probe?: boolean;
}

/** Encodes unmatched target bytes for a v2 patch. */
export class LiteralCoder {
  readonly #base: Deno.FsFile;
  readonly #baseSize: number;
  readonly #alignments: readonly Alignment[];
  readonly #tensors: readonly TensorRange[];
  readonly #maxChunk: number;
  readonly #probeOn: boolean;
  #window: Uint8Array | undefined;
  #residue: Uint8Array | undefined;
  #planes: Uint8Array | undefined;
  #probeTarget: Uint8Array | undefined;
  #probeBase: Uint8Array | undefined;
  #held: Uint8Array | undefined;
  #heldOffset = 0;
  #heldLength = 0;
  readonly #shiftScratch = new ShiftScratch();
  #zstd: ZstdCompressor | undefined;
  /** Base offset − target offset of the last COPY, if any. */
  #delta: number | undefined;

  constructor(base: Deno.FsFile, baseSize: number, options: LiteralCoderOptions) {
    this.#base = base;
    this.#baseSize = baseSize;
    this.#alignments = options.alignments ?? [];
    this.#tensors = options.tensors ?? [];
    this.#maxChunk = options.maxChunk;
    this.#probeOn = options.probe ?? true;
  }

  /**
   * A target chunk no base chunk matched: held until the next chunk is known.
   * A held chunk followed by another unmatched one is written but for its last
   * piece shorter than `MAX_OP_RAW`, which is held with the new chunk: pieces
   * then run across chunk boundaries at full length (measured 52.7% -> 49.6%
   * on the fp32 fine-tune).
   */
  async unmatched(ops: OpWriter, targetOffset: number, data: Uint8Array): Promise<void> {
    const capacity = this.#maxChunk + MAX_OP_RAW;
    this.#held ??= new Uint8Array(capacity);
    if (this.#heldLength > 0) {
      const held = this.#held.subarray(0, this.#heldLength);
      const contiguous = this.#heldOffset + this.#heldLength === targetOffset;
      const kept = await this.#writeBlock(ops, this.#heldOffset, held, undefined, contiguous);
      this.#held.copyWithin(0, this.#heldLength - kept, this.#heldLength);
      this.#heldOffset += this.#heldLength - kept;
      this.#heldLength = kept;
    }
    if (this.#heldLength + data.length > capacity) {
      await this.#flushHeld(ops, undefined);
      if (data.length > capacity) {
        await this.#writeBlock(ops, targetOffset, data, undefined, false);
        return;
      }
    }
    if (this.#heldLength === 0) this.#heldOffset = targetOffset;
    this.#held.set(data, this.#heldLength);
    this.#heldLength += data.length;
  }

  /** A COPY follows at `targetOffset` from `baseOffset`: writes the held chunk first. */
  async matched(ops: OpWriter, targetOffset: number, baseOffset: number): Promise<void> {
    await this.#flushHeld(ops, baseOffset - targetOffset);
    this.#delta = baseOffset - targetOffset;
  }

  /** Writes a chunk still held. */
  async finish(ops: OpWriter): Promise<void> {
    await this.#flushHeld(ops, undefined);
  }

  /** Frees the zstd context. */
  close(): void {
    this.#zstd?.close();
  }

  async #flushHeld(ops: OpWriter, nextDelta: number | undefined): Promise<void> {
    if (this.#heldLength === 0) return;
    const data = this.#held!.subarray(0, this.#heldLength);
    this.#heldLength = 0;
    await this.#writeBlock(ops, this.#heldOffset, data, nextDelta, false);
  }

  /**
   * Writes an unmatched block: equal runs as COPYs, the gaps as pieces. With
   * `keepTail`, a last piece shorter than `MAX_OP_RAW` that does not end at a
   * tensor edge is not written; returns its length (0 if none).
   */
  async #writeBlock(
    ops: OpWriter,
    targetOffset: number,
    data: Uint8Array,
    nextDelta: number | undefined,
    keepTail: boolean,
  ): Promise<number> {
    const runs = this.#runs(targetOffset, data, [this.#delta, nextDelta, 0]);
    runs.push(...this.#shiftedRuns(targetOffset, data, runs, nextDelta));
    runs.sort((a, b) => a.start - b.start);
    let at = 0;
    for (const run of runs) {
      await this.#writeRegion(ops, targetOffset + at, data.subarray(at, run.start));
      await ops.copy(targetOffset + run.start + run.delta, run.end - run.start);
      this.#delta = run.delta;
      at = run.end;
    }
    return await this.#writeRegion(ops, targetOffset + at, data.subarray(at), keepTail);
  }

  /**
   * Runs in the small gaps between `runs` at offset differences found by
   * looking the gap's bytes up in the base around it (`shiftCandidates`).
   */
  #shiftedRuns(
    targetOffset: number,
    data: Uint8Array,
    runs: readonly Run[],
    nextDelta: number | undefined,
  ): Run[] {
    const out: Run[] = [];
    for (let i = 0; i <= runs.length; i++) {
      const start = i === 0 ? 0 : runs[i - 1].end;
      const end = i === runs.length ? data.length : runs[i].start;
      if (end - start < 2 * MIN_RUN) continue;
      // Inside tensors both files have, DELTA ops do better than short runs.
      if (
        alignedBytes(this.#alignments, targetOffset + start, targetOffset + end) * 8 >=
          (end - start) * 7
      ) continue;
      const near = runs[i - 1]?.delta ?? runs[i]?.delta ?? this.#delta ?? nextDelta ?? 0;
      const deltas = new Set<number>();
      for (let at = start; at < end; at += LOCAL_GAP) {
        const pieceEnd = Math.min(at + LOCAL_GAP, end);
        const from = Math.max(0, targetOffset + at + near - LOCAL_REACH);
        const to = Math.min(this.#baseSize, targetOffset + pieceEnd + near + LOCAL_REACH);
        if (to - from < MIN_RUN) continue;
        this.#window ??= new Uint8Array(MAX_OP_RAW);
        const window = this.#window.subarray(
          0,
          readAtSync(this.#base, from, this.#window.subarray(0, to - from)),
        );
        const piece = data.subarray(at, pieceEnd);
        for (const shift of shiftCandidates(piece, window, MIN_RUN, 4, this.#shiftScratch)) {
          deltas.add(from + shift - (targetOffset + at));
        }
      }
      if (deltas.size === 0) continue;
      const gap = data.subarray(start, end);
      for (const run of this.#runs(targetOffset + start, gap, [...deltas].slice(0, 8))) {
        out.push({ start: start + run.start, end: start + run.end, delta: run.delta });
      }
    }
    return out;
  }

  #runs(targetOffset: number, data: Uint8Array, candidates: (number | undefined)[]): Run[] {
    const deltas = [...new Set(candidates)].filter((d): d is number =>
      d !== undefined && targetOffset + d < this.#baseSize && targetOffset + d + data.length > 0
    );
    if (deltas.length === 0) return [];
    this.#window ??= new Uint8Array(MAX_OP_RAW);
    const found: Run[] = [];
    for (const delta of deltas) {
      const scanner = new RunScanner(delta, MIN_RUN, {
        longRun: LONG_RUN,
        maxShort: MAX_SHORT_RUNS,
      });
      for (let at = 0; at < data.length; at += MAX_OP_RAW) {
        const target = data.subarray(at, Math.min(at + MAX_OP_RAW, data.length));
        const from = targetOffset + at + delta;
        if (from < 0) {
          // Before the base's start: unequal up to it.
          const skip = Math.min(-from, target.length);
          scanner.scan(target.subarray(0, skip), new Uint8Array(0));
          const rest = target.subarray(skip);
          const n = rest.length === 0
            ? 0
            : readAtSync(this.#base, 0, this.#window.subarray(0, rest.length));
          scanner.scan(rest, this.#window.subarray(0, n));
          continue;
        }
        const n = from >= this.#baseSize
          ? 0
          : readAtSync(this.#base, from, this.#window.subarray(0, target.length));
        scanner.scan(target, this.#window.subarray(0, n));
      }
      found.push(...scanner.finish());
    }
    return chooseRuns(found, { minRun: MIN_RUN, longRun: LONG_RUN, maxShort: MAX_SHORT_RUNS });
  }

  /**
   * Writes target bytes as pieces cut at `MAX_OP_RAW` and at tensor edges;
   * with `keepTail` the last piece is left unwritten if it is short and not cut
   * by a tensor edge. Returns the length left.
   */
  async #writeRegion(
    ops: OpWriter,
    targetOffset: number,
    data: Uint8Array,
    keepTail = false,
  ): Promise<number> {
    for (let at = 0; at < data.length;) {
      let end = Math.min(at + MAX_OP_RAW, data.length);
      const here = targetOffset + at;
      // The tensor holding `here`, or the next one.
      const t = this.#tensors[firstEndingAfter(this.#tensors, here, (r) => r.end)];
      const tensor = t && t.start <= here ? t : undefined;
      const next = tensor ? tensor.end : t?.start;
      const atEdge = next !== undefined && next - targetOffset <= end;
      if (next !== undefined && next - targetOffset < end) end = next - targetOffset;
      if (keepTail && end === data.length && end - at < MAX_OP_RAW && !atEdge) {
        return end - at;
      }
      await this.#writePiece(ops, here, data.subarray(at, end), tensor?.width);
      at = end;
    }
    return 0;
  }

  async #writePiece(
    ops: OpWriter,
    targetOffset: number,
    piece: Uint8Array,
    width: ElementWidth | undefined,
  ): Promise<void> {
    const length = piece.length;
    this.#window ??= new Uint8Array(MAX_OP_RAW);
    const zstd = this.#zstd ??= await ZstdCompressor.create(MAX_OP_RAW, ZSTD_LEVEL);

    // The candidates: ZLITERAL of the bytes (alone or in byte planes), DELTA
    // of the residue against the aligned base range (XOR, or SUB in planes).
    const widths: ElementWidth[] = width === undefined ? [2, 4] : width === 1 ? [] : [width];
    const candidates: Candidate[] = [{ kind: "z", filter: NO_FILTER }];
    for (const w of widths) {
      candidates.push({ kind: "z", filter: { width: w, shuffle: "bytes", combine: "xor" } });
    }
    const baseOffset = this.#alignedOffset(targetOffset, length);
    const range = this.#window.subarray(0, length);
    if (baseOffset !== undefined && readAtSync(this.#base, baseOffset, range) === length) {
      candidates.push({ kind: "delta", filter: NO_FILTER });
      for (const w of widths) {
        for (const shuffled of ["bytes", "bits"] as const) {
          candidates.push({
            kind: "delta",
            filter: { width: w, shuffle: shuffled, combine: "sub" },
          });
        }
      }
    }

    const tried = this.#probeOn && length >= PROBE_MIN_PIECE && candidates.length > 1
      ? this.#probe(zstd, piece, range, candidates)
      : candidates;

    // Compressed in the order given, the likeliest winner last: the winner's
    // bytes are then still in the compressor's buffer (no copy kept of the
    // best so far); an earlier winner is compressed again.
    let bestCost = LITERAL_HEAD_SIZE + length;
    let best: Candidate | undefined;
    let bytes: Uint8Array = new Uint8Array(0);
    for (const candidate of tried) {
      bytes = zstd.compress(this.#filtered(candidate, piece, range));
      const head = candidate.kind === "z" ? ZLITERAL_HEAD_SIZE : DELTA_HEAD_SIZE;
      if (bytes.length >= length || head + bytes.length >= bestCost) continue;
      bestCost = head + bytes.length;
      best = candidate;
    }
    const chosen = best as Candidate | undefined;
    if (chosen === undefined) return await ops.literal(piece);
    if (chosen !== tried[tried.length - 1]) {
      bytes = zstd.compress(this.#filtered(chosen, piece, range));
    }
    if (chosen.kind === "z") await ops.zliteral(length, bytes, chosen.filter);
    else await ops.delta(baseOffset!, length, bytes, chosen.filter);
  }

  /**
   * The bytes zstd compresses for `candidate`: `piece` itself, or its planes
   * or its residue's (in `out`; `scratch` is room for a residue).
   */
  #filtered(candidate: Candidate, piece: Uint8Array, range: Uint8Array): Uint8Array {
    const { kind, filter } = candidate;
    if (kind === "z" && filter.shuffle === "none") return piece;
    const kernels = piece.length <= KERNEL_REGION ? filterKernels() : undefined;
    if (kernels) {
      // The kernels' own memory holds the result: nothing to copy out.
      return kind === "z"
        ? kernels.planesView(piece, filter, true)
        : kernels.combineShuffleView(piece, range, filter);
    }
    const out = (this.#planes ??= new Uint8Array(MAX_OP_RAW)).subarray(0, piece.length);
    if (kind === "z") shuffle(piece, filter, out);
    else {
      const scratch = (this.#residue ??= new Uint8Array(MAX_OP_RAW)).subarray(0, piece.length);
      combineShuffle(piece, range, filter, out, scratch);
    }
    return out;
  }

  /**
   * The candidates worth compressing whole, best first: each is tried on a
   * sample of the piece (`PROBE_SLICES` slices spread over it, filtered as
   * one small piece), and those whose sample compressed within
   * `PROBE_MARGIN` of the best one's are kept, at most `PROBE_KEEP`.
   */
  #probe(
    zstd: ZstdCompressor,
    piece: Uint8Array,
    range: Uint8Array,
    candidates: readonly Candidate[],
  ): Candidate[] {
    // Slices of PROBE_SLICE bytes, or a quarter of the piece in all if shorter.
    const slice = Math.min(PROBE_SLICE, Math.floor(piece.length / 4 / PROBE_SLICES / 64) * 64);
    const sampleLength = PROBE_SLICES * slice;
    const sample = (this.#probeTarget ??= new Uint8Array(PROBE_SLICES * PROBE_SLICE))
      .subarray(0, sampleLength);
    const sampleBase = (this.#probeBase ??= new Uint8Array(PROBE_SLICES * PROBE_SLICE))
      .subarray(0, sampleLength);
    // Slice starts: evenly spread, multiples of PROBE_SLICE's alignment (64).
    const step = Math.floor((piece.length - slice) / (PROBE_SLICES - 1) / 64) * 64;
    const withBase = candidates.some((c) => c.kind === "delta");
    for (let i = 0; i < PROBE_SLICES; i++) {
      const from = i * step;
      sample.set(piece.subarray(from, from + slice), i * slice);
      if (withBase) sampleBase.set(range.subarray(from, from + slice), i * slice);
    }
    const scored = candidates.map((candidate) => ({
      candidate,
      size: zstd.compress(
        this.#filtered(candidate, sample, sampleBase),
      ).length,
    })).sort((a, b) => a.size - b.size);
    const limit = scored[0].size * (1 + PROBE_MARGIN);
    return scored.filter((s, i) => i < PROBE_KEEP && s.size <= limit).map((s) => s.candidate)
      .reverse();
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

/** How many bytes of target range [start, end) lie in `alignments`. */
function alignedBytes(alignments: readonly Alignment[], start: number, end: number): number {
  let covered = 0;
  for (
    let i = firstEndingAfter(alignments, start, (a) => a.targetEnd);
    i < alignments.length && alignments[i].targetStart < end;
    i++
  ) {
    covered += Math.min(end, alignments[i].targetEnd) - Math.max(start, alignments[i].targetStart);
  }
  return covered;
}
