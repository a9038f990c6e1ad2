/**
 * The sampled base ranges of a v3 patch header: which ranges the encoder
 * samples (deterministically, from the base's size alone), their BLAKE3, and
 * the applier's check of them before it writes any output.
 *
 * The samples only stop honest mistakes early (the wrong version of a model,
 * a truncated or re-exported file): they are inside the patch, which is itself
 * only trusted once the output's BLAKE3 holds. A base that passes them but
 * differs elsewhere costs one wasted apply, never a committed wrong output.
 *
 * Specification: docs/spec/patch-v3.md ("Header", "What a reader MUST refuse").
 *
 * @module
 */

import { createHasher, digestsEqual, type Hasher, toHex } from "../kernel/blake3.ts";
import { ioError, VerificationError } from "../kernel/errors.ts";
import { readAtSync } from "../kernel/file_io.ts";
import type { BaseSample } from "./patch_format.ts";

/** Length of each sample the encoder writes (64 KiB). */
export const SAMPLE_LENGTH = 64 * 1024;
/**
 * Samples spread evenly between the first and the last one. Few: each costs 44
 * bytes in every patch's header (four samples: 176 bytes; eighteen cost 792,
 * more than a re-exported model's whole patch), and they only catch honest
 * mistakes early: the output's BLAKE3 is what decides.
 */
export const INNER_SAMPLES = 2;
/** Samples the encoder writes for a base larger than `SAMPLE_COUNT` × `SAMPLE_LENGTH`. */
export const SAMPLE_COUNT = INNER_SAMPLES + 2;
/** Sample offsets (but the last) are rounded down to this, for page-aligned reads. */
const SAMPLE_ALIGN = 4096;

/** A base range to sample: `base[offset .. offset+length]`. */
export interface SampleRange {
  readonly offset: number;
  readonly length: number;
}

/**
 * The ranges the encoder samples in a base of `baseSize` bytes: none for an
 * empty base; the whole base in 64 KiB pieces up to 4 × 64 KiB; otherwise
 * the first and the last 64 KiB and 2 ranges of 64 KiB evenly spaced between
 * them (offsets rounded down to 4 KiB). At most 4 ranges, 256 KiB.
 */
export function sampleRanges(baseSize: number): SampleRange[] {
  const count = SAMPLE_COUNT;
  const ranges: SampleRange[] = [];
  if (baseSize <= count * SAMPLE_LENGTH) {
    for (let at = 0; at < baseSize; at += SAMPLE_LENGTH) {
      ranges.push({ offset: at, length: Math.min(SAMPLE_LENGTH, baseSize - at) });
    }
    return ranges;
  }
  const last = baseSize - SAMPLE_LENGTH;
  ranges.push({ offset: 0, length: SAMPLE_LENGTH });
  for (let i = 1; i <= INNER_SAMPLES; i++) {
    const spot = Math.floor((last * i) / (INNER_SAMPLES + 1));
    ranges.push({ offset: spot - (spot % SAMPLE_ALIGN), length: SAMPLE_LENGTH });
  }
  ranges.push({ offset: last, length: SAMPLE_LENGTH });
  return ranges;
}

/**
 * BLAKE3 of `base[range]`, read with `readAtSync` into `scratch` (≥ the
 * range's length), with `hasher` started over (one hasher for all samples:
 * each new one is a WebAssembly instance of its own, ~0.4 MB of RSS until
 * collected).
 */
function hashRange(
  file: Deno.FsFile,
  path: string,
  range: SampleRange,
  scratch: Uint8Array,
  hasher: Hasher,
): Uint8Array {
  const buf = scratch.subarray(0, range.length);
  let n: number;
  try {
    n = readAtSync(file, range.offset, buf);
  } catch (err) {
    throw ioError("read base", path, err);
  }
  if (n < range.length) throw ioError("read base", path, new Error("file shrank while read"));
  return hasher.init().update(buf).digest();
}

/** The samples of `ranges` in the open base (read with positional reads). */
export function takeSamples(
  file: Deno.FsFile,
  path: string,
  ranges: readonly SampleRange[],
): BaseSample[] {
  const scratch = new Uint8Array(Math.max(0, ...ranges.map((r) => r.length)));
  const hasher = createHasher();
  return ranges.map((range) => ({
    ...range,
    digest: hashRange(file, path, range, scratch, hasher),
  }));
}

/**
 * Checks every sample against the open base, in order; throws
 * `VerificationError` naming the first that differs (its range and both
 * digests). Returns the base bytes read. `scratch` must hold the longest
 * sample (≤ 1 MiB); `hasher` is started over for each sample (and may be
 * reused after).
 */
export function checkSamples(
  file: Deno.FsFile,
  path: string,
  samples: readonly BaseSample[],
  scratch: Uint8Array,
  hasher: Hasher = createHasher(),
): number {
  let read = 0;
  samples.forEach((sample, i) => {
    const actual = hashRange(file, path, sample, scratch, hasher);
    read += sample.length;
    if (!digestsEqual(actual, sample.digest)) {
      throw new VerificationError(
        `wrong base: "${path}" bytes ${sample.offset}..${
          sample.offset + sample.length
        } (sample ${i} of ${samples.length}) have BLAKE3 ${
          toHex(actual)
        }, the patch was made from ${toHex(sample.digest)}; no output was written`,
      );
    }
  });
  return read;
}
