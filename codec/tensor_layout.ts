/**
 * Where a model file's tensors are, for the v2 encoder's XOR alignment: a
 * target tensor is XORed against the base tensor of the same name and byte
 * length, wherever each sits in its file (a tensor inserted before it, or a
 * longer header, moves it).
 *
 * Recognised: SafeTensors (an 8-byte little-endian header length N, then N
 * bytes of JSON `{ name: { dtype, shape, data_offsets: [begin, end] } }`, data
 * offsets relative to byte 8 + N). Other files have no layout here; the encoder
 * then infers alignment from its COPY matches.
 *
 * @module
 */

import { readAtSync } from "./file_io.ts";

/** A tensor's bytes in a file: [start, end). */
export interface TensorRange {
  readonly name: string;
  readonly start: number;
  readonly end: number;
}

/** A target range to XOR against the base range starting at `baseStart` (same length). */
export interface Alignment {
  readonly targetStart: number;
  readonly targetEnd: number;
  readonly baseStart: number;
}

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
    if (!Array.isArray(offsets) || offsets.length !== 2) return null;
    const [begin, end] = offsets;
    if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin > end) return null;
    if (dataStart + end > fileSize) return null;
    out.push({ name, start: dataStart + begin, end: dataStart + end });
  }
  return out.sort((a, b) => a.start - b.start);
}

/** Pairs each target tensor with the base tensor of the same name and length. */
export function alignTensors(base: TensorRange[], target: TensorRange[]): Alignment[] {
  const byName = new Map(base.map((t) => [t.name, t]));
  const out: Alignment[] = [];
  for (const t of target) {
    const b = byName.get(t.name);
    if (b && b.end - b.start === t.end - t.start && t.end > t.start) {
      out.push({ targetStart: t.start, targetEnd: t.end, baseStart: b.start });
    }
  }
  return out.sort((a, b) => a.targetStart - b.targetStart);
}

/** The alignment containing target offset `at`, by binary search, if any. */
export function alignmentAt(alignments: readonly Alignment[], at: number): Alignment | undefined {
  let lo = 0;
  let hi = alignments.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const a = alignments[mid];
    if (at < a.targetStart) hi = mid - 1;
    else if (at >= a.targetEnd) lo = mid + 1;
    else return a;
  }
  return undefined;
}
