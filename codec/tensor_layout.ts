/**
 * Where a model file's tensors are, for the v2 encoder's DELTA alignment and
 * element widths: a target tensor is a DELTA against the base tensor of the
 * same name and byte length, wherever each sits in its file (a tensor inserted before it, or a
 * longer header, moves it).
 *
 * Recognised: SafeTensors (an 8-byte little-endian header length N, then N
 * bytes of JSON `{ name: { dtype, shape, data_offsets: [begin, end] } }`, data
 * offsets relative to byte 8 + N) and GGUF v2/v3 (magic "GGUF", version u32,
 * tensor count u64, metadata count u64, metadata key/values, then per tensor
 * name, n_dims u32, dims u64[n], type u32, offset u64 relative to the data
 * section, which starts at the next multiple of `general.alignment`, default
 * 32; a tensor's bytes run to the next tensor's offset, the last to the end of
 * the file; quantized types' blocks as record layouts, `GGML_BLOCKS`) and ONNX
 * (every tensor whose bytes are in the file: initializers, sparse
 * initializers, Constant nodes, subgraphs and functions, by a protobuf walk:
 * `onnxLayout` in onnx_layout.ts, which also lays out ONNX side files of
 * external data). Other files have no layout here; the encoder then infers
 * alignment from its COPY matches.
 *
 * @module
 */

import { readAtSync } from "../kernel/file_io.ts";
import { FileCursor, LayoutError } from "./file_cursor.ts";
import { onnxLayout } from "./onnx_layout.ts";
import type { Filter } from "./patch_format.ts";
import type { RecordLayout } from "./record_filter.ts";

export { onnxLayout };

/** Bytes per element of a tensor's dtype, where planes of that width make sense. */
export type ElementWidth = 1 | 2 | 4;

/**
 * A tensor's bytes in a file: [start, end), its element width if known, and
 * for quantized blocks (GGUF) the layout of a block (`records`, from `start`).
 */
export interface TensorRange {
  readonly name: string;
  readonly start: number;
  readonly end: number;
  readonly width?: ElementWidth;
  readonly records?: RecordLayout;
}

/** A target range to delta against the base range starting at `baseStart` (same length). */
export interface Alignment {
  readonly targetStart: number;
  readonly targetEnd: number;
  readonly baseStart: number;
  readonly width?: ElementWidth;
}

/** Element widths of SafeTensors dtypes (8-byte types are left to the encoder to guess). */
const SAFETENSORS_WIDTH: Readonly<Record<string, ElementWidth>> = {
  F32: 4,
  I32: 4,
  U32: 4,
  F16: 2,
  BF16: 2,
  I16: 2,
  U16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

/** Element widths of GGML tensor types: F32, F16, BF16, I8, I16, I32; quantized blocks are bytes. */
function ggmlWidth(type: number): ElementWidth {
  if (type === 0 || type === 26) return 4;
  if (type === 1 || type === 30 || type === 25) return 2;
  return 1;
}

/** An f16 field of a quant block (a scale or a min): the nominal filter, SUB of byte planes. */
const F16_FIELD: Filter = { width: 2, shuffle: "bytes", combine: "sub" };
/** A field of quants (or packed sub-block scales): bytes. */
const BYTES_FIELD: Filter = { width: 1, shuffle: "none", combine: "xor" };

/** A record layout from field lengths, "h" marking an f16 field. */
function block(...fields: (number | "h")[]): RecordLayout {
  const out = fields.map((f) =>
    f === "h" ? { length: 2, filter: F16_FIELD } : { length: f, filter: BYTES_FIELD }
  );
  return { recordLength: out.reduce((sum, f) => sum + f.length, 0), fields: out };
}

/**
 * The block layouts of GGML's quantized types (ggml-common.h's block structs,
 * all little-endian and unpadded): a tensor of these types is a run of blocks.
 * The filters are nominal (the encoder tries others per field); the field
 * lengths and widths are what matter. Q8_K (292-byte blocks, over the
 * 256-byte record limit, and used only for intermediate results) and the IQ
 * types are not listed: they stay bytes. Specification:
 * docs/spec/patch-v3.md ("Record ops").
 */
export const GGML_BLOCKS: Readonly<Record<number, RecordLayout>> = {
  2: block("h", 16), // Q4_0: d, qs[16] (32 weights, 4 bits)
  3: block("h", "h", 16), // Q4_1: d, m, qs[16]
  6: block("h", 4, 16), // Q5_0: d, qh[4], qs[16]
  7: block("h", "h", 4, 16), // Q5_1: d, m, qh[4], qs[16]
  8: block("h", 32), // Q8_0: d, qs[32] (int8)
  9: block("h", "h", 32), // Q8_1: d, s, qs[32]
  10: block(16, 64, "h", "h"), // Q2_K: scales[16], qs[64], d, dmin (256 weights)
  11: block(32, 64, 12, "h"), // Q3_K: hmask[32], qs[64], scales[12], d
  12: block("h", "h", 12, 128), // Q4_K: d, dmin, scales[12], qs[128]
  13: block("h", "h", 12, 32, 128), // Q5_K: d, dmin, scales[12], qh[32], qs[128]
  14: block(128, 64, 16, "h"), // Q6_K: ql[128], qh[64], scales[16] (int8), d
};

/** Largest SafeTensors header read (real ones are well under a few MiB). */
export const MAX_HEADER = 64 * 1024 * 1024;

/** The tensors of a SafeTensors file, or null if the file is not one (or is inconsistent). */
export function safeTensorsLayout(file: Deno.FsFile, fileSize: number): TensorRange[] | null {
  if (fileSize < 10) return null;
  const prefix = new Uint8Array(9);
  if (readAtSync(file, 0, prefix) < 9 || prefix[8] !== 0x7b /* "{" */) return null;
  const headerLength = Number(new DataView(prefix.buffer).getBigUint64(0, true));
  if (headerLength > MAX_HEADER || 8 + headerLength > fileSize) return null;
  const header = new Uint8Array(headerLength);
  if (readAtSync(file, 8, header) < headerLength) return null;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(header));
  } catch {
    return null;
  }
  if (typeof json !== "object" || json === null) return null;
  const dataStart = 8 + headerLength;
  const out: TensorRange[] = [];
  for (const [name, info] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") continue;
    const offsets = (info as { data_offsets?: unknown })?.data_offsets;
    const dtype = (info as { dtype?: unknown })?.dtype;
    if (!Array.isArray(offsets) || offsets.length !== 2) return null;
    const [begin, end] = offsets;
    if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin > end) return null;
    if (dataStart + end > fileSize) return null;
    const width = typeof dtype === "string" ? SAFETENSORS_WIDTH[dtype] : undefined;
    out.push({ name, start: dataStart + begin, end: dataStart + end, ...(width && { width }) });
  }
  return out.sort((a, b) => a.start - b.start);
}

/** The tensors of a GGUF (v2 or v3) file, or null if the file is not one. */
export function ggufLayout(file: Deno.FsFile, fileSize: number): TensorRange[] | null {
  const r = new GgufCursor(file, fileSize);
  try {
    if (r.ascii(4) !== "GGUF") return null;
    const version = r.u32();
    if (version < 2 || version > 3) return null;
    const tensorCount = r.u64();
    const kvCount = r.u64();
    if (tensorCount > 1_000_000 || kvCount > 1_000_000) return null;
    let alignment = 32;
    for (let i = 0; i < kvCount; i++) {
      const key = r.string();
      const type = r.u32();
      const value = r.value(type);
      if (key === "general.alignment" && typeof value === "number" && value > 0) alignment = value;
    }
    const infos: {
      name: string;
      offset: number;
      width: ElementWidth;
      records: RecordLayout | undefined;
    }[] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = r.string();
      const dims = r.u32();
      if (dims > 8) return null;
      for (let d = 0; d < dims; d++) r.u64();
      const type = r.u32();
      infos.push({ name, width: ggmlWidth(type), records: GGML_BLOCKS[type], offset: r.u64() });
    }
    const dataStart = Math.ceil(r.position / alignment) * alignment;
    infos.sort((a, b) => a.offset - b.offset);
    const out: TensorRange[] = [];
    for (let i = 0; i < infos.length; i++) {
      const start = dataStart + infos[i].offset;
      const end = i + 1 < infos.length ? dataStart + infos[i + 1].offset : fileSize;
      if (start > end || end > fileSize) return null;
      const { name, width, records } = infos[i];
      out.push({ name, start, end, width, ...(records && { records }) });
    }
    return out;
  } catch (err) {
    if (err instanceof LayoutError) return null;
    throw err;
  }
}

/** The layout of a model file in a format poolboy reads (SafeTensors, GGUF, ONNX), or null. */
export function modelLayout(file: Deno.FsFile, fileSize: number): TensorRange[] | null {
  return safeTensorsLayout(file, fileSize) ?? ggufLayout(file, fileSize) ??
    onnxLayout(file, fileSize);
}

/** A GGUF header's reads: strings and metadata values besides `FileCursor`'s. */
class GgufCursor extends FileCursor {
  string(): string {
    return new TextDecoder().decode(this.bytes(this.u64()));
  }

  /** A metadata value of GGUF type `type` (numbers as numbers, the rest skipped). */
  value(type: number): number | string | undefined {
    const sizes: Record<number, number> = {
      0: 1,
      1: 1,
      2: 2,
      3: 2,
      4: 4,
      5: 4,
      6: 4,
      7: 1,
      10: 8,
      11: 8,
      12: 8,
    };
    if (type === 4) return this.u32();
    if (type === 8) return this.string();
    if (type === 9) {
      const itemType = this.u32();
      const count = this.u64();
      if (count > 100_000_000) throw new LayoutError("array too long");
      if (itemType in sizes) {
        this.position += sizes[itemType] * count;
        if (this.position > this.size) throw new LayoutError("past the end");
      } else for (let i = 0; i < count; i++) this.value(itemType);
      return undefined;
    }
    if (!(type in sizes)) throw new LayoutError(`unknown GGUF value type ${type}`);
    this.bytes(sizes[type]);
    return undefined;
  }
}

/** Pairs each target tensor with the base tensor of the same name and length. */
export function alignTensors(base: TensorRange[], target: TensorRange[]): Alignment[] {
  const byName = new Map(base.map((t) => [t.name, t]));
  const out: Alignment[] = [];
  for (const t of target) {
    const b = byName.get(t.name);
    if (b && b.end - b.start === t.end - t.start && t.end > t.start) {
      const width = t.width === b.width ? t.width : undefined;
      out.push({
        targetStart: t.start,
        targetEnd: t.end,
        baseStart: b.start,
        ...(width && { width }),
      });
    }
  }
  return out.sort((a, b) => a.targetStart - b.targetStart);
}

/**
 * Index of the first of `ranges` (sorted, disjoint) that ends after `at`, or
 * `ranges.length`, by binary search: the range holding `at` if any holds it,
 * else the next one.
 */
export function firstEndingAfter<T>(
  ranges: readonly T[],
  at: number,
  endOf: (range: T) => number,
): number {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (endOf(ranges[mid]) <= at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The alignment containing target offset `at`, if any. */
export function alignmentAt(alignments: readonly Alignment[], at: number): Alignment | undefined {
  const a = alignments[firstEndingAfter(alignments, at, (r) => r.targetEnd)];
  return a && a.targetStart <= at ? a : undefined;
}
