/**
 * The v2 encoder's choice for target bytes no chunk of the base matches.
 *
 * 1. Runs: an unmatched chunk is compared with the base at the offset the
 *    previous COPY implies, at the offset the next COPY implies (the chunk is
 *    held until the next one is known) and at its own offset, and its parts
 *    inside same-named tensors at that tensor's offset; runs of equal bytes
 *    become COPYs (`equal_runs.ts`). Bytes inserted at the front then cost
 *    about their own length. In the gaps left, bytes that moved by other
 *    amounts are looked for near the implied offset (`shiftCandidates`) and,
 *    with a match finder (`match_finder.ts`), anywhere in the base.
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
 *    the same patches, byte for byte). A sample's byte planes that zstd
 *    stored raw in one frame are measured again a frame per plane
 *    (`probeSize`), as the whole piece's blocks see them.
 *
 * zstd level 1 for tensor bytes: planes of float bytes compress smaller at
 * level 1 than at 3 (measured on the corpus), plain bytes only a few bytes
 * larger, and one context is ~4 MB less than two. Pieces of at most 64 KiB
 * outside every known tensor (a container's metadata: a .tflite's flatbuffer
 * tables and names) are tried again at level 19 (`STRONG_*`: a context with
 * 64 KiB tables, at most 1 MiB of such pieces per encode). What the op heads
 * cost (`OpCosts`, v3's by default) is a parameter: a COPY and each piece's
 * op are weighed with it.
 * Memory: one buffer of `MAX_OP_RAW` (the
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
  COPY_OP_SIZE,
  DELTA_HEAD_SIZE,
  drecordsHeadSize,
  type Filter,
  LITERAL_HEAD_SIZE,
  MAX_OP_RAW,
  NO_FILTER,
  opHeadSize,
  VERSION_4,
  ZLITERAL_HEAD_SIZE,
  zrecordsHeadSize,
} from "./patch_format.ts";
import { fieldResidue, type RecordLayout, rotateLayout, streamStarts } from "./record_filter.ts";
import { combine, combineShuffle, shuffle } from "./residue_filter.ts";
import { filterKernels, KERNEL_REGION } from "./filter_kernels.ts";
import { ZstdCompressor } from "./zstd_context.ts";
import { chooseRuns, type Run, RunScanner, shiftCandidates, ShiftScratch } from "./equal_runs.ts";
import type { MatchFinder } from "./match_finder.ts";

/** zstd level of every candidate (level 3 measured larger on planes, no smaller on plain bytes). */
export const ZSTD_LEVEL = 1;
/**
 * What the ops' heads cost in the format being written: the coder's only
 * notion of the format's sizes when it weighs a COPY against coding the
 * bytes (pass `LiteralCoderOptions.costs`; a format with compact heads makes
 * shorter runs worth a COPY).
 */
export interface OpCosts {
  /** A whole COPY op (v3: 17 bytes). */
  readonly copy: number;
  /** A LITERAL's head (v3: 9 bytes). */
  readonly literal: number;
  /** A ZLITERAL's head (v3: 10 bytes). */
  readonly zliteral: number;
  /** A DELTA's head (v3: 18 bytes). */
  readonly delta: number;
}

/** Version 2's and 3's op heads (docs/spec/patch-v2.md), the default. */
export const V3_OP_COSTS: OpCosts = {
  copy: COPY_OP_SIZE,
  literal: LITERAL_HEAD_SIZE,
  zliteral: ZLITERAL_HEAD_SIZE,
  delta: DELTA_HEAD_SIZE,
};

/**
 * What op heads cost the coder's decisions in patch format `version`: v1-v3's
 * fixed sizes, or v4's varint heads at typical values (`opHeadSize`): a base
 * range 1 MiB away from the previous one, 1 KiB copied, 64 KiB compressed
 * into 8 KiB — COPY 7 bytes, LITERAL 3, ZLITERAL 7, DELTA 11.
 */
export function opCostsFor(version: number): OpCosts {
  if (version < VERSION_4) return V3_OP_COSTS;
  const far = 1 << 20;
  const piece = { length: 65536, payloadLength: 8192 };
  return {
    copy: opHeadSize(VERSION_4, { kind: "copy", offset: far, length: 1024 }),
    literal: opHeadSize(VERSION_4, { kind: "literal", length: 1024 }),
    zliteral: opHeadSize(VERSION_4, { kind: "zliteral", ...piece }),
    delta: opHeadSize(VERSION_4, { kind: "delta", offset: far, ...piece }),
  };
}

/**
 * Shortest run of equal bytes copied out of an unmatched chunk, whatever a
 * COPY costs: with 6-byte COPY heads, copying runs of 13 bytes and more
 * (COPY + 7) cut a .tflite's metadata into more pieces that compress worse
 * (openWakeWord hey_jarvis: payload 4,280 -> 4,484 B), so the length measured
 * with v3's heads stays.
 */
export const MIN_RUN = 24;
/** Runs at least this long are always copied; shorter ones only when few. */
export const LONG_RUN = 256;
/** Most short runs per chunk that are still copied. */
export const MAX_SHORT_RUNS = 8;
/**
 * Runs the match finder found at least this long are always copied (shorter
 * ones only when few): they are verified at an offset no COPY implies, where
 * a fine-tune's scattered equal bytes do not come from (a re-export's small
 * tensors, e.g. 192-byte norms, are).
 */
export const MOVED_LONG_RUN = 128;
/**
 * Runs the match finder found shorter than this are copied only where a zstd
 * trial says copying pays (`#copyingPays`), in gaps of at most
 * `MOVED_TRIAL_GAP` bytes (larger gaps keep them).
 */
export const MOVED_SURE_RUN = 4096;
/** Largest gap the trial of `MOVED_SURE_RUN` compresses (twice, at most). */
export const MOVED_TRIAL_GAP = 2 * MAX_OP_RAW;
/**
 * Pieces of no known tensor of at most this many bytes (and at least
 * `STRONG_MIN_PIECE`) are tried again at `STRONG_ZSTD_LEVEL` (their best
 * candidate at `ZSTD_LEVEL`):
 * a container's metadata (a .tflite's flatbuffer tables, an ONNX graph) is
 * not float planes, and compresses 10-15 % smaller at level 19 than at 1
 * (measured on openWakeWord's .tflite headers: 10,332 bytes 3,539 -> 3,071).
 */
export const STRONG_MAX_PIECE = 64 * 1024;
/** Shorter pieces are not tried again (zstd's frame costs more than it saves). */
export const STRONG_MIN_PIECE = 64;
/** The strong level. */
export const STRONG_ZSTD_LEVEL = 19;
/** log2 of its window, hash and chain tables (a piece is at most `STRONG_MAX_PIECE`). */
export const STRONG_TABLES_LOG = 16;
/**
 * Most piece bytes one coder compresses at the strong level (level 19 runs at
 * a few MB/s: this bounds the time on files with many small unmatched pieces).
 */
export const STRONG_BUDGET = 1024 * 1024;
/** Gaps between runs are searched for bytes that moved otherwise in pieces of this size... */
export const LOCAL_GAP = 512 * 1024;
/** ...each in the base this far around its aligned position. */
export const LOCAL_REACH = 64 * 1024;

/**
 * zstd level of a record op's frames (its filters are chosen at `ZSTD_LEVEL`
 * on a sample). Quantized weights' residues are small integers that a
 * stronger entropy stage pays on, unlike float planes: on 16 MiB Q8_0 / Q4_0
 * updates level 12 made patches 6-12 % smaller than level 1 (q8-finetune
 * 1,140,526 -> 1,034,803 B, q4-lora 491,511 -> 432,052 B; level 19 another
 * 9 % at ten times the time), so that they are smaller than bsdiff's; but
 * q4-finetune's grew 599,448 -> 633,749 B, so each stream keeps the smaller
 * of its level-1 and level-12 frames.
 */
export const RECORD_ZSTD_LEVEL = 12;
/**
 * log2 of that context's window, hash and chain tables: a frame is at most 1
 * MiB, and level 12's own tables (2^22-2^23 entries) cost ~30 MB of RSS.
 */
export const RECORD_ZSTD_TABLES_LOG = 18;

/** Bytes of records on which a record op's filters are chosen (per piece). */
export const RECORD_SAMPLE = 128 * 1024;
/** Buffer a DRECORDS's base field streams are gathered through. */
export const RECORD_GATHER = 16 * 1024;
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
/** ...at most this many... */
export const PROBE_KEEP = 3;
/** ...and the best of the other kind (ZLITERAL or DELTA) too, if its sample is at most this much larger. */
export const PROBE_KIND_MARGIN = 0.1;

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
   * Largest piece it writes as one op, `MIN_PIECE` to `MAX_OP_RAW` (default):
   * its four scratch buffers, its zstd context and its held chunk grow with
   * it. The encoder gives half of `MAX_OP_RAW` when a hashing Worker holds
   * memory too.
   */
  readonly maxPiece?: number;
  /** Whether v3's record ops (ZRECORDS, DRECORDS) may be written (format ≥ 3). */
  readonly recordOps?: boolean;
  /**
   * The base's anchors (`match_finder.ts`): bytes that moved anywhere in the
   * base are looked up in the gaps the runs above leave.
   */
  readonly matches?: MatchFinder;
  /** What op heads cost in the format being written (default `V3_OP_COSTS`). */
  readonly costs?: OpCosts;
  /**
   * Whether pieces are probed on a sample first (default true); false
   * compresses every candidate whole (what probing is measured against).
   */
  readonly probe?: boolean;
}

/** The smallest `maxPiece` a coder takes. */
export const MIN_PIECE = 64 * 1024;

/** Most same-named tensors of one block whose offset difference is tried for runs. */
export const MAX_ALIGNED_RANGES = 64;

/** Part of a block inside a same-named tensor, and that tensor's base − target offset. */
interface AlignedRange {
  readonly start: number;
  readonly end: number;
  readonly delta: number;
}

/** Encodes unmatched target bytes for a v2 patch. */
export class LiteralCoder {
  readonly #base: Deno.FsFile;
  readonly #baseSize: number;
  readonly #alignments: readonly Alignment[];
  readonly #tensors: readonly TensorRange[];
  readonly #maxChunk: number;
  /** Largest piece (op) it writes: `MAX_OP_RAW` unless told smaller. */
  readonly #maxPiece: number;
  readonly #recordOps: boolean;
  readonly #matches: MatchFinder | undefined;
  readonly #probeOn: boolean;
  readonly #costs: OpCosts;
  #window: Uint8Array | undefined;
  /** Record ops' filter samples and base gathering (made on first use). */
  #recordScratch: Uint8Array | undefined;
  #residue: Uint8Array | undefined;
  #planes: Uint8Array | undefined;
  /** A record op's frames while v2's candidates are tried (record pieces only). */
  #best: Uint8Array | undefined;
  #probeTarget: Uint8Array | undefined;
  #probeBase: Uint8Array | undefined;
  #held: Uint8Array | undefined;
  #heldOffset = 0;
  #heldLength = 0;
  readonly #shiftScratch = new ShiftScratch();
  #zstd: ZstdCompressor | undefined;
  /** The record ops' stronger context (made on the first record op). */
  #recordZstd: ZstdCompressor | undefined;
  /** Small pieces' strong context (made on the first such piece), and the bytes it compressed. */
  #strongZstd: ZstdCompressor | undefined;
  #strongSpent = 0;
  /** Base offset − target offset of the last COPY, if any. */
  #delta: number | undefined;

  constructor(base: Deno.FsFile, baseSize: number, options: LiteralCoderOptions) {
    this.#base = base;
    this.#baseSize = baseSize;
    this.#alignments = options.alignments ?? [];
    this.#tensors = options.tensors ?? [];
    this.#maxChunk = options.maxChunk;
    const maxPiece = options.maxPiece ?? MAX_OP_RAW;
    if (!Number.isInteger(maxPiece) || maxPiece < MIN_PIECE || maxPiece > MAX_OP_RAW) {
      throw new RangeError(
        `maxPiece must be a whole number from ${MIN_PIECE} to ${MAX_OP_RAW}, got ${maxPiece}`,
      );
    }
    this.#maxPiece = maxPiece;
    this.#recordOps = options.recordOps ?? false;
    this.#matches = options.matches;
    this.#probeOn = options.probe ?? true;
    this.#costs = options.costs ?? V3_OP_COSTS;
  }

  /**
   * A target chunk no base chunk matched: held until the next chunk is known.
   * A held chunk followed by another unmatched one is written but for its last
   * piece shorter than the largest piece, which is held with the new chunk: pieces
   * then run across chunk boundaries at full length (measured 52.7% -> 49.6%
   * on the fp32 fine-tune).
   */
  async unmatched(ops: OpWriter, targetOffset: number, data: Uint8Array): Promise<void> {
    const capacity = this.#maxChunk + this.#maxPiece;
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
    this.#recordZstd?.close();
    this.#strongZstd?.close();
  }

  async #flushHeld(ops: OpWriter, nextDelta: number | undefined): Promise<void> {
    if (this.#heldLength === 0) return;
    const data = this.#held!.subarray(0, this.#heldLength);
    this.#heldLength = 0;
    await this.#writeBlock(ops, this.#heldOffset, data, nextDelta, false);
  }

  /**
   * Writes an unmatched block: equal runs as COPYs, the gaps as pieces. With
   * `keepTail`, a last piece shorter than the largest piece that does not end at a
   * tensor edge is not written; returns its length (0 if none).
   */
  async #writeBlock(
    ops: OpWriter,
    targetOffset: number,
    data: Uint8Array,
    nextDelta: number | undefined,
    keepTail: boolean,
  ): Promise<number> {
    const runs = this.#runs(
      targetOffset,
      data,
      [this.#delta, nextDelta, 0],
      this.#alignedRanges(targetOffset, data.length),
    );
    runs.push(...this.#shiftedRuns(targetOffset, data, runs, nextDelta));
    runs.sort((a, b) => a.start - b.start);
    if (this.#matches) {
      runs.push(...await this.#movedRuns(this.#matches, targetOffset, data, runs));
      runs.sort((a, b) => a.start - b.start);
    }
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
   * The gaps between `runs` (sorted) in `data` worth searching for more runs:
   * at least 2 × `MIN_RUN` long and not mostly inside tensors both files have
   * (there DELTA ops do better than short runs). `i` is the run after the gap.
   */
  *#gaps(
    targetOffset: number,
    data: Uint8Array,
    runs: readonly Run[],
  ): Generator<{ i: number; start: number; end: number }> {
    for (let i = 0; i <= runs.length; i++) {
      const start = i === 0 ? 0 : runs[i - 1].end;
      const end = i === runs.length ? data.length : runs[i].start;
      if (end - start < 2 * MIN_RUN) continue;
      if (
        alignedBytes(this.#alignments, targetOffset + start, targetOffset + end) * 8 >=
          (end - start) * 7
      ) continue;
      yield { i, start, end };
    }
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
    for (const { i, start, end } of this.#gaps(targetOffset, data, runs)) {
      const near = runs[i - 1]?.delta ?? runs[i]?.delta ?? this.#delta ?? nextDelta ?? 0;
      const deltas = new Set<number>();
      for (let at = start; at < end; at += LOCAL_GAP) {
        const pieceEnd = Math.min(at + LOCAL_GAP, end);
        const from = Math.max(0, targetOffset + at + near - LOCAL_REACH);
        const to = Math.min(this.#baseSize, targetOffset + pieceEnd + near + LOCAL_REACH);
        if (to - from < MIN_RUN) continue;
        this.#window ??= new Uint8Array(this.#maxPiece);
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

  /**
   * Runs in the gaps between `runs` found anywhere in the base by the match
   * finder (each verified against the base's bytes), under the same cost
   * rules (`chooseRuns`). Gaps mostly inside tensors both files have are left
   * to DELTA ops, as in `#shiftedRuns`.
   */
  async #movedRuns(
    finder: MatchFinder,
    targetOffset: number,
    data: Uint8Array,
    runs: readonly Run[],
  ): Promise<Run[]> {
    const found: Run[] = [];
    const read = (position: number, buf: Uint8Array) => readAtSync(this.#base, position, buf);
    for (const { start, end } of this.#gaps(targetOffset, data, runs)) {
      let moved: Run[] = finder.find(read, targetOffset + start, data.subarray(start, end))
        .map((run) => ({ start: start + run.start, end: start + run.end, delta: run.delta }));
      if (
        moved.some((r) => r.end - r.start < MOVED_SURE_RUN) && end - start <= MOVED_TRIAL_GAP &&
        !(await this.#copyingPays(data, start, end, moved))
      ) {
        moved = moved.filter((r) => r.end - r.start >= MOVED_SURE_RUN);
      }
      found.push(...moved);
    }
    return chooseRuns(found, {
      minRun: MIN_RUN,
      longRun: MOVED_LONG_RUN,
      maxShort: MAX_SHORT_RUNS,
    });
  }

  /**
   * Whether copying `runs` (in order, inside [start, end) of `data`) costs
   * less than coding the whole gap: the bytes around them as ZLITERALs (or
   * LITERALs) plus a COPY each, against the gap alone. Bytes that compress
   * well (a header's text) lose more by being cut than a short COPY saves.
   */
  async #copyingPays(
    data: Uint8Array,
    start: number,
    end: number,
    runs: readonly Run[],
  ): Promise<boolean> {
    const zstd = this.#zstd ??= await ZstdCompressor.create(this.#maxPiece, ZSTD_LEVEL);
    const cost = (from: number, to: number): number => {
      let bytes = 0;
      for (let at = from; at < to; at += this.#maxPiece) {
        const piece = data.subarray(at, Math.min(at + this.#maxPiece, to));
        bytes += Math.min(
          this.#costs.literal + piece.length,
          this.#costs.zliteral + zstd.compress(piece).length,
        );
      }
      return bytes;
    };
    let withRuns = 0;
    let at = start;
    for (const run of runs) {
      withRuns += cost(at, run.start) + this.#costs.copy;
      at = run.end;
    }
    return withRuns + cost(at, end) < cost(start, end);
  }

  /**
   * The parts of the block [targetOffset, + length) inside same-named tensors
   * (block-relative), each with its tensor's offset difference: a tensor the
   * exporter moved may be unchanged, and a COPY is cheaper than a DELTA of
   * zeros. At most `MAX_ALIGNED_RANGES`.
   */
  #alignedRanges(targetOffset: number, length: number): AlignedRange[] {
    const out: AlignedRange[] = [];
    const end = targetOffset + length;
    for (
      let i = firstEndingAfter(this.#alignments, targetOffset, (a) => a.targetEnd);
      i < this.#alignments.length && this.#alignments[i].targetStart < end &&
      out.length < MAX_ALIGNED_RANGES;
      i++
    ) {
      const a = this.#alignments[i];
      out.push({
        start: Math.max(a.targetStart, targetOffset) - targetOffset,
        end: Math.min(a.targetEnd, end) - targetOffset,
        delta: a.baseStart - a.targetStart,
      });
    }
    return out;
  }

  /**
   * Runs of the block equal to the base at each of the `candidates` offset
   * differences, and inside each of `ranged` at its own (unless one of the
   * candidates already covers it), chosen by `chooseRuns`.
   */
  #runs(
    targetOffset: number,
    data: Uint8Array,
    candidates: (number | undefined)[],
    ranged: readonly AlignedRange[] = [],
  ): Run[] {
    const deltas = [...new Set(candidates)].filter((d): d is number =>
      d !== undefined && targetOffset + d < this.#baseSize && targetOffset + d + data.length > 0
    );
    const found: Run[] = [];
    for (const range of ranged) {
      if (deltas.includes(range.delta) || range.end - range.start < MIN_RUN) continue;
      for (
        const run of this.#scan(
          targetOffset + range.start,
          data.subarray(range.start, range.end),
          range.delta,
        )
      ) {
        found.push({
          start: range.start + run.start,
          end: range.start + run.end,
          delta: run.delta,
        });
      }
    }
    for (const delta of deltas) found.push(...this.#scan(targetOffset, data, delta));
    return chooseRuns(found, { minRun: MIN_RUN, longRun: LONG_RUN, maxShort: MAX_SHORT_RUNS });
  }

  /** Runs of `data` (target bytes at `targetOffset`) equal to the base at `delta`. */
  #scan(targetOffset: number, data: Uint8Array, delta: number): Run[] {
    this.#window ??= new Uint8Array(this.#maxPiece);
    const scanner = new RunScanner(delta, MIN_RUN, {
      longRun: LONG_RUN,
      maxShort: MAX_SHORT_RUNS,
    });
    for (let at = 0; at < data.length; at += this.#maxPiece) {
      const target = data.subarray(at, Math.min(at + this.#maxPiece, data.length));
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
    return scanner.finish();
  }

  /**
   * Writes target bytes as pieces cut at the largest piece and at tensor edges;
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
      const here = targetOffset + at;
      // The tensor holding `here`, or the next one.
      const t = this.#tensors[firstEndingAfter(this.#tensors, here, (r) => r.end)];
      const tensor = t && t.start <= here ? t : undefined;
      // Pieces of record tensors are whole records (but the first and last).
      const maxPiece = this.#recordOps && tensor?.records
        ? this.#maxPiece - this.#maxPiece % tensor.records.recordLength
        : this.#maxPiece;
      let end = Math.min(at + maxPiece, data.length);
      const next = tensor ? tensor.end : t?.start;
      const atEdge = next !== undefined && next - targetOffset <= end;
      if (next !== undefined && next - targetOffset < end) end = next - targetOffset;
      if (keepTail && end === data.length && end - at < maxPiece && !atEdge) {
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
    if (await this.#writeRecordPiece(ops, targetOffset, piece)) return;
    const length = piece.length;
    this.#window ??= new Uint8Array(this.#maxPiece);
    const zstd = this.#zstd ??= await ZstdCompressor.create(this.#maxPiece, ZSTD_LEVEL);

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
    let bestCost = this.#costs.literal + length;
    let best: Candidate | undefined;
    let bytes: Uint8Array = new Uint8Array(0);
    for (const candidate of tried) {
      bytes = zstd.compress(this.#filtered(candidate, piece, range));
      const head = candidate.kind === "z" ? this.#costs.zliteral : this.#costs.delta;
      if (bytes.length >= length || head + bytes.length >= bestCost) continue;
      bestCost = head + bytes.length;
      best = candidate;
    }
    let chosen = best as Candidate | undefined;
    if (chosen !== undefined && chosen !== tried[tried.length - 1]) {
      bytes = zstd.compress(this.#filtered(chosen, piece, range));
    }
    // A small piece of no known tensor (a container's metadata: a
    // flatbuffer's tables, an ONNX graph) is tried again at a strong level:
    // its winner, or its bytes if none beat a LITERAL.
    const strong = width === undefined ? await this.#strongFor(length) : undefined;
    if (strong) {
      const retried: Candidate = chosen ?? { kind: "z", filter: NO_FILTER };
      const head = retried.kind === "z" ? this.#costs.zliteral : this.#costs.delta;
      const stronger = strong.compress(this.#filtered(retried, piece, range));
      this.#strongSpent += length;
      if (
        stronger.length < length &&
        head + stronger.length < (chosen ? head + bytes.length : bestCost)
      ) {
        chosen = retried;
        bytes = stronger;
      }
    }
    if (chosen === undefined) return await ops.literal(piece);
    if (chosen.kind === "z") await ops.zliteral(length, bytes, chosen.filter);
    else await ops.delta(baseOffset!, length, bytes, chosen.filter);
  }

  /**
   * The strong context if a piece of `length` bytes is to be tried at
   * `STRONG_ZSTD_LEVEL`: at least `STRONG_MIN_PIECE` and at most
   * `STRONG_MAX_PIECE` bytes, while this coder has compressed fewer than
   * `STRONG_BUDGET` bytes so.
   */
  async #strongFor(length: number): Promise<ZstdCompressor | undefined> {
    if (
      length < STRONG_MIN_PIECE || length > STRONG_MAX_PIECE ||
      this.#strongSpent + length > STRONG_BUDGET
    ) return undefined;
    return this.#strongZstd ??= await ZstdCompressor.create(
      STRONG_MAX_PIECE,
      STRONG_ZSTD_LEVEL,
      STRONG_TABLES_LOG,
    );
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
    const out = (this.#planes ??= new Uint8Array(this.#maxPiece)).subarray(0, piece.length);
    if (kind === "z") shuffle(piece, filter, out);
    else {
      const scratch = (this.#residue ??= new Uint8Array(this.#maxPiece)).subarray(0, piece.length);
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
      size: probeSize(zstd, this.#filtered(candidate, sample, sampleBase), candidate.filter),
    })).sort((a, b) => a.size - b.size);
    const limit = scored[0].size * (1 + PROBE_MARGIN);
    const kept = scored.filter((s, i) => i < PROBE_KEEP && s.size <= limit);
    // The best of the other kind (ZLITERAL or DELTA) stays in if close: a
    // sample ranks filters of one kind better than it ranks a ZLITERAL against
    // a DELTA of a retrained tensor (new values against old ones).
    const other = scored.find((s) => s.candidate.kind !== scored[0].candidate.kind);
    if (
      other !== undefined && !kept.includes(other) &&
      other.size <= scored[0].size * (1 + PROBE_KIND_MARGIN)
    ) kept.push(other);
    return kept.sort((a, b) => a.size - b.size).map((s) => s.candidate).reverse();
  }

  /**
   * Writes a piece of a tensor of records (GGUF quant blocks) if record ops
   * are on, and returns whether it did. The filter of each field is chosen on
   * a sample (the piece's first `RECORD_SAMPLE` bytes of records): the one
   * whose stream alone compresses smallest; with an aligned base tensor, with
   * and without it, and the smaller on the sample wins. Then the record op is
   * built, each stream and the tail one zstd frame: a DRECORDS against the
   * aligned base tensor, or a ZRECORDS. The smallest of it, the two v2
   * ops `#writePiece` tries on bytes (ZLITERAL, DELTA with no filter) and a
   * LITERAL is written. Memory: the v2 buffers and one of
   * 2·`RECORD_SAMPLE` + `RECORD_GATHER` bytes.
   */
  async #writeRecordPiece(
    ops: OpWriter,
    targetOffset: number,
    piece: Uint8Array,
  ): Promise<boolean> {
    if (!this.#recordOps) return false;
    const t = this.#tensors[firstEndingAfter(this.#tensors, targetOffset, (r) => r.end)];
    const length = piece.length;
    if (!t?.records || t.start > targetOffset || targetOffset + length > t.end) return false;
    const layout = rotateLayout(t.records, (targetOffset - t.start) % t.records.recordLength);
    if (layout === undefined || length < 2 * layout.recordLength) return false;
    const residue = this.#residue ??= new Uint8Array(this.#maxPiece);
    const planes = this.#planes ??= new Uint8Array(this.#maxPiece);
    const best = this.#best ??= new Uint8Array(this.#maxPiece);
    const window = this.#window ??= new Uint8Array(this.#maxPiece);
    const scratch = this.#recordScratch ??= new Uint8Array(2 * RECORD_SAMPLE + RECORD_GATHER);
    const sampleResidue = scratch.subarray(0, RECORD_SAMPLE);
    const samplePlanes = scratch.subarray(RECORD_SAMPLE, 2 * RECORD_SAMPLE);
    const gather = scratch.subarray(2 * RECORD_SAMPLE);
    const zstd = this.#zstd ??= await ZstdCompressor.create(this.#maxPiece, ZSTD_LEVEL);

    const baseOffset = this.#alignedOffset(targetOffset, length);
    const range = window.subarray(0, length);
    const hasBase = baseOffset !== undefined &&
      readAtSync(this.#base, baseOffset, range) === length;
    // Against an aligned tensor a DRECORDS; else (no base tensor: a new or
    // requantized tensor) a ZRECORDS.
    const aligned = hasBase && alignmentAt(this.#alignments, targetOffset) !== undefined;

    /** The stream of field j filtered (against `base` if any) into `out` (planes through `spare`); returns the bytes to compress. */
    const stream = (
      target: Uint8Array,
      base: Uint8Array | undefined,
      j: number,
      filter: Filter,
      out: Uint8Array,
      spare: Uint8Array,
    ) => {
      const m = fieldResidue(
        target,
        base?.subarray(0, target.length),
        layout,
        j,
        filter,
        out,
        gather,
      );
      if (filter.shuffle === "none") return out.subarray(0, m);
      shuffle(out.subarray(0, m), filter, spare.subarray(0, m));
      return spare.subarray(0, m);
    };
    const sampleRecords = Math.max(1, Math.floor(RECORD_SAMPLE / layout.recordLength));
    const sample = piece.subarray(0, Math.min(length, sampleRecords * layout.recordLength));
    /** Each field's best filter on the sample, with or without the base, and the sample's size so. */
    const choose = (base: Uint8Array | undefined, measure: boolean) => {
      let total = 0;
      const fields = layout.fields.map((field, j) => {
        const candidates = recordFilters(field.filter.width, base !== undefined);
        let chosen = candidates[0];
        let smallest = Infinity;
        for (const filter of candidates.length > 1 || measure ? candidates : []) {
          const bytes = stream(sample, base, j, filter, sampleResidue, samplePlanes);
          const size = zstd.compress(bytes).length;
          if (size < smallest) {
            smallest = size;
            chosen = filter;
          }
        }
        total += smallest;
        return { length: field.length, filter: chosen };
      });
      return { fields, total };
    };
    // Against an aligned tensor a DRECORDS, unless the sample says its bytes
    // alone compress smaller (a retrained tensor); else (no base tensor: a new
    // or requantized tensor) a ZRECORDS.
    let base: Uint8Array | undefined;
    let fields: RecordLayout["fields"];
    if (aligned) {
      const against = choose(range, true);
      const alone = choose(undefined, true);
      base = against.total <= alone.total ? range : undefined;
      fields = base ? against.fields : alone.fields;
    } else fields = choose(undefined, false).fields;

    // The record op into `best`, its frames at RECORD_ZSTD_LEVEL.
    const strong = this.#recordZstd ??= await ZstdCompressor.create(
      this.#maxPiece,
      RECORD_ZSTD_LEVEL,
      RECORD_ZSTD_TABLES_LOG,
    );
    /** The smaller of the stream's frames at level 1 and at `RECORD_ZSTD_LEVEL`. */
    const smaller = (bytes: Uint8Array): Uint8Array => {
      const high = strong.compress(bytes);
      const low = zstd.compress(bytes);
      return low.length < high.length ? low : high;
    };
    let written = 0;
    for (let j = 0; j < fields.length && written < length; j++) {
      const frame = smaller(stream(piece, base, j, fields[j].filter, residue, planes));
      if (written + frame.length < length) best.set(frame, written);
      written += frame.length;
    }
    const tailStart = streamStarts(layout, length)[fields.length];
    if (written < length && tailStart < length) {
      const tail = residue.subarray(tailStart, length);
      if (base) combine(piece.subarray(tailStart), base.subarray(tailStart), NO_FILTER, tail);
      else tail.set(piece.subarray(tailStart));
      const frame = smaller(tail);
      if (written + frame.length < length) best.set(frame, written);
      written += frame.length;
    }
    const recordLayout: RecordLayout = { recordLength: layout.recordLength, fields };
    const recordHead = base ? drecordsHeadSize(fields.length) : zrecordsHeadSize(fields.length);
    let kind: "literal" | "records" | "z" | "delta" = "literal";
    let bestCost = this.#costs.literal + length;
    let size = 0;
    if (written < length && recordHead + written < bestCost) {
      kind = "records";
      bestCost = recordHead + written;
      size = written;
    }

    // v2's two candidates on bytes (they replace the record op in `best` only if smaller).
    const consider = (candidate: "z" | "delta", bytes: Uint8Array, head: number) => {
      if (bytes.length >= length || head + bytes.length >= bestCost) return;
      bestCost = head + bytes.length;
      kind = candidate;
      size = bytes.length;
      best.set(bytes);
    };
    consider("z", zstd.compress(piece), this.#costs.zliteral);
    if (hasBase) {
      combine(piece, range, NO_FILTER, residue.subarray(0, length));
      consider("delta", zstd.compress(residue.subarray(0, length)), this.#costs.delta);
    }

    const bytes = best.subarray(0, size);
    const chosenKind = kind as "literal" | "records" | "z" | "delta";
    if (chosenKind === "literal") await ops.literal(piece);
    else if (chosenKind === "z") await ops.zliteral(length, bytes, NO_FILTER);
    else if (chosenKind === "delta") await ops.delta(baseOffset!, length, bytes, NO_FILTER);
    else if (base) await ops.drecords(baseOffset!, length, bytes, recordLayout);
    else await ops.zrecords(length, bytes, recordLayout);
    return true;
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

/**
 * The filters tried on a record field's stream of elements of `width` bytes:
 * against a base (DRECORDS), XOR and SUB of bytes and, for wider elements,
 * SUB in byte and bit planes; alone (ZRECORDS), the bytes and their planes.
 */
function recordFilters(width: ElementWidth, againstBase: boolean): Filter[] {
  const out: Filter[] = [NO_FILTER];
  if (againstBase) {
    out.push({ width: 1, shuffle: "none", combine: "sub" });
    if (width > 1) {
      out.push({ width, shuffle: "bytes", combine: "sub" });
      out.push({ width, shuffle: "bits", combine: "sub" });
    } else out.push({ width: 1, shuffle: "bits", combine: "sub" });
  } else if (width > 1) out.push({ width, shuffle: "bytes", combine: "xor" });
  return out;
}

/**
 * The compressed size of a probe sample filtered with `filter`: one frame;
 * but byte planes the frame stored raw are measured again one frame per
 * plane, as a whole piece's zstd blocks see them (a 1 MiB piece's plane is
 * 128 KiB or more: blocks of one plane), and the smaller size counts. The
 * sample in one frame is one block with every plane, and zstd stores a
 * block's literals raw when its first and last 4 KiB look random (HUF's
 * "suspect incompressible" check): float planes with the low mantissa bytes
 * at both ends measured 65,545 bytes (stored) where the piece's planes
 * compress 15 % (openWakeWord's .tflite embedding model, whose pieces start 2
 * bytes before an element: its 4-byte planes were never tried whole).
 * Samples that compress are measured as before (measured per plane always,
 * the corpus's fp32 fine-tunes grew 0.03-0.06 %).
 */
function probeSize(zstd: ZstdCompressor, filtered: Uint8Array, filter: Filter): number {
  const whole = zstd.compress(filtered).length;
  if (filter.shuffle !== "bytes" || filter.width === 1 || whole < filtered.length) return whole;
  const plane = filtered.length / filter.width;
  let size = 0;
  for (let at = 0; at < filtered.length; at += plane) {
    size += zstd.compress(filtered.subarray(at, at + plane)).length;
  }
  return Math.min(whole, size);
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
