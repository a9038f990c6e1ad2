/**
 * One encode → apply → inspect round trip at a given patch format, with
 * small chunks, for the tests of formats 2-4 (tests/record_ops_test.ts,
 * tests/patch_v4_test.ts): the output must be the target, and the encoder's,
 * applier's and inspector's summaries must agree.
 */

import assert from "node:assert/strict";
import { applyFile } from "../../codec/applier.ts";
import { encodeFile, type EncodeSummary } from "../../codec/encoder.ts";
import type { ChunkParams } from "../../codec/fastcdc.ts";
import { inspectPatch } from "../../codec/inspect.ts";
import { blake3, toHex } from "../../kernel/blake3.ts";

const KiB = 1024;

/** Chunks small enough that a few hundred KiB make many of them. */
export const SMALL_CHUNKS: ChunkParams = { min: 4 * KiB, avg: 16 * KiB, max: 64 * KiB };

/**
 * Writes `base` and `target` into `dir`, encodes with `format` (small chunks,
 * one hashing Worker), applies and inspects; checks the output is the target,
 * its BLAKE3, the patch's version and size, and every op kind's bytes as the
 * three report them. Returns the encoder's summary.
 */
export async function roundtripFormat(
  dir: string,
  base: Uint8Array,
  target: Uint8Array,
  format: 2 | 3 | 4,
): Promise<EncodeSummary> {
  await Deno.writeFile(`${dir}/base`, base);
  await Deno.writeFile(`${dir}/target`, target);
  const patch = `${dir}/patch${format}`;
  const encoded = await encodeFile(`${dir}/base`, `${dir}/target`, patch, {
    chunk: SMALL_CHUNKS,
    threads: 1,
    format,
  });
  const applied = await applyFile(`${dir}/base`, patch, `${dir}/out${format}`);
  assert.deepEqual(await Deno.readFile(`${dir}/out${format}`), target, "the output is the target");
  assert.equal(applied.targetBlake3, toHex(blake3(target)));
  const inspected = await inspectPatch(patch);
  assert.equal(inspected.version, format);
  assert.equal(inspected.patchSize, encoded.patchSize);
  for (
    const k of [
      "copyBytes",
      "literalBytes",
      "zliteralBytes",
      "deltaBytes",
      "zrecordsBytes",
      "drecordsBytes",
    ] as const
  ) {
    assert.equal(inspected[k], encoded[k], k);
    assert.equal(applied[k], encoded[k], k);
  }
  return encoded;
}
