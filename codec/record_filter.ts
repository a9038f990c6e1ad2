/**
 * Record layouts and the record transform of v3's ZRECORDS and DRECORDS ops,
 * as pure functions over caller-owned byte arrays (nothing is allocated per op).
 *
 * A record layout cuts bytes into records of `recordLength` bytes, each made of
 * up to 8 fields (e.g. a GGUF Q8_0 block: a 2-byte f16 scale, then 32 bytes of
 * int8 quants). The transform of L bytes with n = floor(L / recordLength):
 *
 * 1. split: field j of every record, in record order, forms stream j
 *    (n · length_j bytes); the streams are laid end to end in field order,
 *    then the L − n·recordLength tail bytes follow unchanged;
 * 2. for a DRECORDS op, each stream is combined (`residue_filter.ts`
 *    `combine`, with its field's filter) with the same stream of the base
 *    range (split the same way), and the tail is XORed with the base's tail;
 * 3. each stream is shuffled with its field's filter (`shuffle`).
 *
 * The result S is what the op's zstd frames hold. Scales and quants then
 * compress apart, each with the filter that suits it: a fine-tune nudges f16
 * scales by a few units in the last place (SUB + byte planes), and changes
 * quants by ±1 here and there (XOR or SUB of bytes).
 *
 * Specification: docs/spec/patch-v3-record-ops.md (the op heads, the
 * transform exactly, the per-ggml-type layouts, what a reader must refuse).
 *
 * @module
 */

import type { Filter } from "./patch_format.ts";
import { combine, shuffle, uncombine, unshuffle } from "./residue_filter.ts";

/** One field of a record: `length` bytes, filtered with `filter` (length a multiple of its width). */
export interface RecordField {
  readonly length: number;
  readonly filter: Filter;
}

/** How records of `recordLength` bytes are cut into fields (their lengths sum to it). */
export interface RecordLayout {
  readonly recordLength: number;
  readonly fields: readonly RecordField[];
}

/** Longest record a layout may describe. */
export const MAX_RECORD_LENGTH = 256;
/** Most fields a layout may have. */
export const MAX_RECORD_FIELDS = 8;

/**
 * Why `layout` is not a valid record layout, or undefined if it is: 1 to 8
 * fields, each 1 to 256 bytes and a multiple of its filter's width, summing to
 * a record length of 1 to 256 bytes.
 */
export function layoutProblem(layout: RecordLayout): string | undefined {
  const { recordLength, fields } = layout;
  if (!Number.isInteger(recordLength) || recordLength < 1 || recordLength > MAX_RECORD_LENGTH) {
    return `record length ${recordLength} is not 1 to ${MAX_RECORD_LENGTH}`;
  }
  if (fields.length < 1 || fields.length > MAX_RECORD_FIELDS) {
    return `${fields.length} fields; a record has 1 to ${MAX_RECORD_FIELDS}`;
  }
  let sum = 0;
  for (let j = 0; j < fields.length; j++) {
    const { length, filter } = fields[j];
    if (!Number.isInteger(length) || length < 1 || length > MAX_RECORD_LENGTH) {
      return `field ${j} has length ${length}, not 1 to ${MAX_RECORD_LENGTH}`;
    }
    if (length % filter.width !== 0) {
      return `field ${j}'s length ${length} is not a multiple of its filter's width ${filter.width}`;
    }
    sum += length;
  }
  if (sum !== recordLength) {
    return `the fields' lengths sum to ${sum}, not the record length ${recordLength}`;
  }
  return undefined;
}

/** Records (whole ones) in `length` bytes. */
export function recordCount(layout: RecordLayout, length: number): number {
  return Math.floor(length / layout.recordLength);
}

/**
 * Where each stream starts in the split of `length` bytes: `fields.length + 1`
 * offsets, the last being where the tail starts.
 */
export function streamStarts(layout: RecordLayout, length: number): number[] {
  const n = recordCount(layout, length);
  const starts = [0];
  for (const field of layout.fields) starts.push(starts[starts.length - 1] + n * field.length);
  return starts;
}

/** Splits `src` into its field streams and tail, into `out` (same length, not `src`). */
export function splitRecords(src: Uint8Array, layout: RecordLayout, out: Uint8Array): void {
  gather(src, layout, out, true);
}

/** Inverse of `splitRecords`: streams and tail in `src` back into records in `out` (not `src`). */
export function joinRecords(src: Uint8Array, layout: RecordLayout, out: Uint8Array): void {
  gather(src, layout, out, false);
}

function gather(src: Uint8Array, layout: RecordLayout, out: Uint8Array, forward: boolean): void {
  const length = src.length;
  const r = layout.recordLength;
  const n = Math.floor(length / r);
  let stream = 0;
  let within = 0; // offset of the field inside a record
  for (const { length: l } of layout.fields) {
    if (l === 1) {
      if (forward) { for (let i = 0, at = within; i < n; i++, at += r) out[stream + i] = src[at]; }
      else for (let i = 0, at = within; i < n; i++, at += r) out[at] = src[stream + i];
    } else if (l === 2) {
      for (let i = 0, at = within, s = stream; i < n; i++, at += r, s += 2) {
        if (forward) {
          out[s] = src[at];
          out[s + 1] = src[at + 1];
        } else {
          out[at] = src[s];
          out[at + 1] = src[s + 1];
        }
      }
    } else {
      for (let i = 0, at = within, s = stream; i < n; i++, at += r, s += l) {
        if (forward) out.set(src.subarray(at, at + l), s);
        else out.set(src.subarray(s, s + l), at);
      }
    }
    stream += n * l;
    within += l;
  }
  out.set(src.subarray(n * r, length), n * r);
}

/**
 * The record transform S of `target` (against `base`, the same length, for a
 * DRECORDS op; undefined for ZRECORDS) into `out`, using `scratch`: two
 * distinct arrays of at least `target.length` bytes, neither of them `target`
 * or `base`.
 */
export function encodeRecords(
  target: Uint8Array,
  base: Uint8Array | undefined,
  layout: RecordLayout,
  scratch: Uint8Array,
  out: Uint8Array,
): void {
  const length = target.length;
  const streams = scratch.subarray(0, length);
  const dest = out.subarray(0, length);
  splitRecords(target, layout, streams);
  if (base !== undefined) splitRecords(base, layout, dest); // base streams, overwritten field by field
  const starts = streamStarts(layout, length);
  layout.fields.forEach(({ filter }, j) => {
    const s = streams.subarray(starts[j], starts[j + 1]);
    const o = dest.subarray(starts[j], starts[j + 1]);
    if (base !== undefined) combine(s, o, filter, s);
    shuffle(s, filter, o);
  });
  const tail = starts[starts.length - 1];
  if (base === undefined) dest.set(streams.subarray(tail), tail);
  else for (let i = tail; i < length; i++) dest[i] = streams[i] ^ base[i];
}

/**
 * Inverse of `encodeRecords`: the target bytes of S `payload` (against `base`
 * for DRECORDS) into `out`, using `scratch` (distinct from the others; `out`
 * may be `payload`, but not `base`).
 */
export function decodeRecords(
  payload: Uint8Array,
  base: Uint8Array | undefined,
  layout: RecordLayout,
  scratch: Uint8Array,
  out: Uint8Array,
): void {
  const length = payload.length;
  const residue = scratch.subarray(0, length);
  const dest = out.subarray(0, length);
  const starts = streamStarts(layout, length);
  layout.fields.forEach(({ filter }, j) => {
    unshuffle(
      payload.subarray(starts[j], starts[j + 1]),
      filter,
      residue.subarray(starts[j], starts[j + 1]),
    );
  });
  const tail = starts[starts.length - 1];
  if (base === undefined) residue.set(payload.subarray(tail), tail);
  else {
    for (let i = tail; i < length; i++) residue[i] = payload[i] ^ base[i];
    splitRecords(base, layout, dest); // base streams, read field by field below
    layout.fields.forEach(({ filter }, j) => {
      const r = residue.subarray(starts[j], starts[j + 1]);
      uncombine(r, dest.subarray(starts[j], starts[j + 1]), filter, r);
    });
  }
  joinRecords(residue, layout, dest);
}

/**
 * `layout` for bytes starting `phase` bytes into a record (0 ≤ phase <
 * recordLength): the same fields rotated so that records begin where the
 * bytes do. A field the rotation cuts in two becomes two fields whose filters
 * have width 1 if the cut leaves a part that is not a multiple of the width.
 * Returns undefined if that would need more than `MAX_RECORD_FIELDS` fields.
 */
export function rotateLayout(layout: RecordLayout, phase: number): RecordLayout | undefined {
  if (phase === 0) return layout;
  const head: RecordField[] = [];
  const rest: RecordField[] = [];
  let at = 0;
  for (const field of layout.fields) {
    const end = at + field.length;
    if (end <= phase) head.push(field);
    else if (at >= phase) rest.push(field);
    else {
      const before = phase - at;
      const after = end - phase;
      const w = field.filter.width;
      const filter: Filter = before % w === 0 && after % w === 0
        ? field.filter
        : { ...field.filter, width: 1 };
      head.push({ length: before, filter });
      rest.push({ length: after, filter });
    }
    at = end;
  }
  const fields = [...rest, ...head];
  return fields.length > MAX_RECORD_FIELDS
    ? undefined
    : { recordLength: layout.recordLength, fields };
}
