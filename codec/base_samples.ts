/**
 * The sampled base ranges of a v3 or v4 patch header: which ranges the encoder
 * samples (deterministically, from the base's size alone), their BLAKE3, and
 * the applier's check of them before it writes any output.
 *
 * The samples only stop honest mistakes early (the wrong version of a model,
 * a truncated or re-exported file): they are inside the patch, which is itself
 * only trusted once the output's BLAKE3 holds. A base that passes them but
 * differs elsewhere costs one wasted apply, never a committed wrong output.
 *
 * Specification: docs/spec/patch-v3.md ("Header", "What a reader MUST refuse")
 * and docs/spec/patch-v4.md ("Sample ranges").
 *
 * @module
 */

import { createHasher, digestsEqual, type Hasher, toHex } from "../kernel/blake3.ts";
import { ioError, VerificationError } from "../kernel/errors.ts";
import { readAtSync } from "../kernel/file_io.ts";
import {
  type BaseSample,
  maxSampleCount,
  SAMPLE_RANGE_LENGTH,
  type SampleRange,
  sampleRangesOf,
} from "./patch_format.ts";

export type { SampleRange };

/** Length of each sample the encoder writes (64 KiB). */
export const SAMPLE_LENGTH = SAMPLE_RANGE_LENGTH;
/**
 * Samples spread evenly between the first and the last one. Few: each costs 44
 * bytes in every patch's header (four samples: 176 bytes; eighteen cost 792,
 * more than a re-exported model's whole patch), and they only catch honest
 * mistakes early: the output's BLAKE3 is what decides.
 */
export const INNER_SAMPLES = 2;
/** Samples the encoder writes for a base larger than `SAMPLE_COUNT` × `SAMPLE_LENGTH`. */
export const SAMPLE_COUNT = INNER_SAMPLES + 2;
/**
 * The ranges the encoder samples in a base of `baseSize` bytes: none for an
 * empty base; the whole base in 64 KiB pieces up to 4 × 64 KiB; otherwise
 * the first and the last 64 KiB and 2 ranges of 64 KiB evenly spaced between
 * them (offsets rounded down to 4 KiB). At most 4 ranges, 256 KiB. The same
 * ranges in v3 (which stores them) and v4 (where they are `sampleRangesOf`
 * the base's size and `sampleCountFor` it).
 */
export function sampleRanges(baseSize: number): SampleRange[] {
  return sampleRangesOf(baseSize, sampleCountFor(baseSize));
}

/** How many samples the encoder takes of a base of `baseSize` bytes: 4, or fewer 64 KiB pieces. */
export function sampleCountFor(baseSize: number): number {
  return Math.min(SAMPLE_COUNT, maxSampleCount(baseSize));
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

/**
 * The samples of `ranges` in the open base (read with positional reads), each
 * digest the first `digestLength` bytes of the range's BLAKE3 (32 for v3, 8
 * for v4).
 */
export function takeSamples(
  file: Deno.FsFile,
  path: string,
  ranges: readonly SampleRange[],
  digestLength = 32,
): BaseSample[] {
  const scratch = new Uint8Array(Math.max(0, ...ranges.map((r) => r.length)));
  const hasher = createHasher();
  return ranges.map((range) => ({
    ...range,
    digest: hashRange(file, path, range, scratch, hasher).slice(0, digestLength),
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
    // A v4 sample carries the first 8 bytes of the BLAKE3, a v3 sample all 32.
    const actual = hashRange(file, path, sample, scratch, hasher).subarray(0, sample.digest.length);
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
