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
 * Specification: docs/spec/patch-v3.md ("Record ops") (the op heads, the
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
    } else if (forward) {
      for (let i = 0, at = within, s = stream; i < n; i++, at += r, s += l) {
        for (let c = 0; c < l; c++) out[s + c] = src[at + c];
      }
    } else {
      for (let i = 0, at = within, s = stream; i < n; i++, at += r, s += l) {
        for (let c = 0; c < l; c++) out[at + c] = src[s + c];
      }
    }
    stream += n * l;
    within += l;
  }
  out.set(src.subarray(n * r, length), n * r);
}

/** Smallest `small` buffer `fieldResidue` and `restoreRecords` accept (one field of one record). */
export const MIN_SMALL_BUFFER = MAX_RECORD_LENGTH;

/**
 * Stream `field` of `target`'s records into `out` (its `n·len` bytes), and
 * for a DRECORDS combined (`filter`) with the same stream of `base` (the same
 * length as `target`), which is gathered `small.length` bytes at a time into
 * `small` (at least `MIN_SMALL_BUFFER` bytes): no buffer of the whole base
 * stream is needed. Returns the stream's length.
 */
export function fieldResidue(
  target: Uint8Array,
  base: Uint8Array | undefined,
  layout: RecordLayout,
  field: number,
  filter: Filter,
  out: Uint8Array,
  small: Uint8Array,
): number {
  const n = recordCount(layout, target.length);
  const { length: l } = layout.fields[field];
  const within = fieldOffset(layout, field);
  const r = layout.recordLength;
  gatherField(target, r, within, l, 0, n, out);
  if (base === undefined) return n * l;
  const perChunk = Math.floor(small.length / l);
  for (let first = 0; first < n; first += perChunk) {
    const count = Math.min(perChunk, n - first);
    const chunk = small.subarray(0, count * l);
    gatherField(base, r, within, l, first, count, chunk);
    const part = out.subarray(first * l, (first + count) * l);
    combine(part, chunk, filter, part);
  }
  return n * l;
}

/** Bytes before field `field` in a record. */
/** Where field `field` starts inside a record. */
export function fieldOffset(layout: RecordLayout, field: number): number {
  let at = 0;
  for (let j = 0; j < field; j++) at += layout.fields[j].length;
  return at;
}

/** Field bytes [within, within + l) of records first .. first + count of `src` (records of r bytes) into `out`. */
export function gatherField(
  src: Uint8Array,
  r: number,
  within: number,
  l: number,
  first: number,
  count: number,
  out: Uint8Array,
): void {
  let at = first * r + within;
  if (l === 1) {
    for (let i = 0; i < count; i++, at += r) out[i] = src[at];
  } else if (l === 2) {
    for (let i = 0, o = 0; i < count; i++, at += r, o += 2) {
      out[o] = src[at];
      out[o + 1] = src[at + 1];
    }
  } else {
    for (let i = 0, o = 0; i < count; i++, at += r, o += l) {
      for (let c = 0; c < l; c++) out[o + c] = src[at + c];
    }
  }
}

/**
 * The record transform S of `target` (against `base`, the same length, for a
 * DRECORDS op; undefined for ZRECORDS) into `out`, using `scratch` (at least
 * `target.length` bytes) and `small` (at least `MIN_SMALL_BUFFER` bytes); none
 * of them `target` or `base`.
 */
export function encodeRecords(
  target: Uint8Array,
  base: Uint8Array | undefined,
  layout: RecordLayout,
  scratch: Uint8Array,
  out: Uint8Array,
  small: Uint8Array = new Uint8Array(MIN_SMALL_BUFFER),
): void {
  const length = target.length;
  const starts = streamStarts(layout, length);
  layout.fields.forEach(({ filter }, j) => {
    const residue = scratch.subarray(starts[j], starts[j + 1]);
    fieldResidue(target, base, layout, j, filter, residue, small);
    shuffle(residue, filter, out.subarray(starts[j], starts[j + 1]));
  });
  const tail = starts[starts.length - 1];
  if (base === undefined) out.set(target.subarray(tail), tail);
  else for (let i = tail; i < length; i++) out[i] = target[i] ^ base[i];
}

/**
 * First step of the inverse of `encodeRecords`: each stream of S `payload`
 * unshuffled, and the tail copied, into `out` (not `payload`).
 */
export function unshuffleRecords(payload: Uint8Array, layout: RecordLayout, out: Uint8Array): void {
  const length = payload.length;
  const starts = streamStarts(layout, length);
  layout.fields.forEach(({ filter }, j) => {
    unshuffle(
      payload.subarray(starts[j], starts[j + 1]),
      filter,
      out.subarray(starts[j], starts[j + 1]),
    );
  });
  const tail = starts[starts.length - 1];
  out.set(payload.subarray(tail), tail);
}

/**
 * Second step: the target bytes from the unshuffled streams `residue` (changed
 * in place), uncombined with `base` for a DRECORDS (its field streams gathered
 * through `small`, at least `MIN_SMALL_BUFFER` bytes), into `out` (not
 * `residue`; it may be `base`, which is read before `out` is written).
 */
export function restoreRecords(
  residue: Uint8Array,
  base: Uint8Array | undefined,
  layout: RecordLayout,
  small: Uint8Array,
  out: Uint8Array,
): void {
  const length = residue.length;
  const starts = streamStarts(layout, length);
  if (base !== undefined) {
    const n = recordCount(layout, length);
    const r = layout.recordLength;
    layout.fields.forEach(({ length: l, filter }, j) => {
      const within = fieldOffset(layout, j);
      const perChunk = Math.floor(small.length / l);
      for (let first = 0; first < n; first += perChunk) {
        const count = Math.min(perChunk, n - first);
        const chunk = small.subarray(0, count * l);
        gatherField(base, r, within, l, first, count, chunk);
        const part = residue.subarray(starts[j] + first * l, starts[j] + (first + count) * l);
        uncombine(part, chunk, filter, part);
      }
    });
    for (let i = starts[starts.length - 1]; i < length; i++) residue[i] ^= base[i];
  }
  joinRecords(residue, layout, out.subarray(0, length));
}

/**
 * Inverse of `encodeRecords`: the target bytes of S `payload` (against `base`
 * for DRECORDS) into `out`, using `scratch` (distinct from the others) and
 * `small`; `out` may be `payload` or `base`.
 */
export function decodeRecords(
  payload: Uint8Array,
  base: Uint8Array | undefined,
  layout: RecordLayout,
  scratch: Uint8Array,
  out: Uint8Array,
  small: Uint8Array = new Uint8Array(MIN_SMALL_BUFFER),
): void {
  const residue = scratch.subarray(0, payload.length);
  unshuffleRecords(payload, layout, residue);
  restoreRecords(residue, base, layout, small, out);
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
