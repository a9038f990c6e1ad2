/**
 * The hashing a `HashPool` job does, as plain functions: run by the hashing
 * Workers (`hash_worker.ts`) and by a pool of no Workers (`HashPool.start(0)`,
 * which hashes on the calling thread).
 *
 * @module
 */

import { DIGEST_LENGTH, type Hasher } from "../kernel/blake3.ts";

/** The BLAKE3 of each chunk of `bytes` that ends at `cuts` (the first starts at 0), 32 bytes each. */
export function hashCuts(
  hasher: Hasher,
  bytes: Uint8Array,
  cuts: Uint32Array,
): Uint8Array<ArrayBuffer> {
  const digests = new Uint8Array(cuts.length * DIGEST_LENGTH);
  let start = 0;
  for (let i = 0; i < cuts.length; i++) {
    const end = cuts[i];
    hasher.init().update(bytes.subarray(start, end));
    digests.set(hasher.digest(), i * DIGEST_LENGTH);
    start = end;
  }
  return digests;
}
