/**
 * Chunk identity by fingerprint: the fingerprint kernel tells different bytes
 * apart and gives equal bytes equal fingerprints, and a match found by digest
 * becomes a COPY only when the base's bytes are the chunk's, so that a
 * fingerprint collision can never put wrong bytes in a patch.
 */

import assert from "node:assert/strict";
import { ChunkIndex } from "../codec/chunk_index.ts";
import { BaseComparer, verifiedMatch, VERIFY_PIECE } from "../codec/chunk_verify.ts";
import { filterKernels, FINGERPRINT_LENGTH, KERNEL_REGION } from "../codec/filter_kernels.ts";
import { concat, randomBytes, withTempDir, writeFile } from "./helpers.ts";

function fingerprint(data: Uint8Array): string {
  const out = new Uint8Array(FINGERPRINT_LENGTH);
  filterKernels()!.fingerprint(data, out);
  return Array.from(out).join(",");
}

Deno.test("equal bytes have equal fingerprints, whatever the lengths, across kernel regions", () => {
  for (
    const n of [0, 1, 31, 32, 33, 1000, KERNEL_REGION, KERNEL_REGION + 7, 2 * KERNEL_REGION + 40]
  ) {
    const data = randomBytes(n, n + 1);
    assert.equal(fingerprint(data), fingerprint(data.slice()), `${n} bytes`);
  }
});

Deno.test("one flipped bit anywhere, or trailing zeros, changes the fingerprint", () => {
  const data = randomBytes(2 * KERNEL_REGION + 45, 3);
  const seen = new Set([fingerprint(data)]);
  for (const at of [0, 31, 32, KERNEL_REGION - 1, KERNEL_REGION, 2 * KERNEL_REGION + 44]) {
    const changed = data.slice();
    changed[at] ^= 0x10;
    seen.add(fingerprint(changed));
  }
  seen.add(fingerprint(concat(data, new Uint8Array(1))));
  seen.add(fingerprint(concat(data, new Uint8Array(19))));
  seen.add(fingerprint(data.subarray(0, data.length - 1)));
  seen.add(fingerprint(new Uint8Array(0)));
  seen.add(fingerprint(new Uint8Array(32)));
  assert.equal(seen.size, 12, "all twelve inputs have distinct fingerprints");
});

Deno.test("the base comparer says equal only for the exact bytes at that offset, over several pieces", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(2 * VERIFY_PIECE + 1234, 5);
    await writeFile(`${dir}/base`, base);
    using file = await Deno.open(`${dir}/base`);
    const comparer = new BaseComparer(file, base.length);
    const range = base.slice(100, 100 + VERIFY_PIECE + 999);
    assert.equal(comparer.equals(100, range), true);
    assert.equal(comparer.equals(101, range), false, "another offset");
    const last = range.slice();
    last[last.length - 1] ^= 1;
    assert.equal(comparer.equals(100, last), false, "the last byte differs (second piece)");
    assert.equal(comparer.equals(base.length - 10, base.slice(base.length - 10)), true);
    assert.equal(comparer.equals(base.length - 10, new Uint8Array(11)), false, "past the end");
    assert.equal(comparer.equals(-1, range), false, "a negative offset");
    assert.equal(comparer.compared, 6);
    assert.equal(comparer.unequal, 4);
  });
});

Deno.test("a chunk whose digest is in the index but whose bytes differ from the base is no match", async () => {
  await withTempDir(async (dir) => {
    const a = randomBytes(5000, 6);
    const b = randomBytes(5000, 7);
    const c = randomBytes(5000, 8);
    await writeFile(`${dir}/base`, concat(a, b, c));
    using file = await Deno.open(`${dir}/base`);
    const comparer = new BaseComparer(file, 15000);
    // A deliberate collision: every chunk has the same digest.
    const digest = new Uint8Array(32).fill(9);
    const index = new ChunkIndex();
    index.add(0, 5000, digest);
    index.add(5000, 5000, digest);
    index.add(10000, 5000, digest);
    const other = randomBytes(5000, 10);
    assert.equal(verifiedMatch(index, -1, { data: other, digest }, comparer), undefined);
    assert.equal(verifiedMatch(index, 1, { data: other, digest }, comparer), undefined);
    assert.equal(
      verifiedMatch(index, 1, { data: b, digest }, comparer)?.offset,
      5000,
      "the next chunk, checked",
    );
    assert.equal(
      verifiedMatch(index, -1, { data: a, digest }, comparer)?.offset,
      0,
      "the first with the digest",
    );
    assert.equal(
      verifiedMatch(index, 2, { data: b, digest }, comparer),
      undefined,
      "only the next chunk and the first with the digest are candidates",
    );
    assert.equal(
      verifiedMatch(index, 1, { data: other, digest })?.offset,
      5000,
      "no comparer: the digest decides",
    );
  });
});
