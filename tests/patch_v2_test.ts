/**
 * Patch format v2 (codec/patch_format.ts, literal_coder.ts, patch_reader.ts,
 * applier.ts): round trips through every op, the base digest checked before
 * any work, and malformed v2 patches refused with clear errors and no output.
 */

import { safetensors } from "./support/safetensors.ts";
import assert from "node:assert/strict";
import { applyFile } from "../codec/applier.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { encodeFile, type EncodeSummary, WORKER_PIECE } from "../codec/encoder.ts";
import { MalformedPatchError, VerificationError } from "../kernel/errors.ts";
import type { ChunkParams } from "../codec/fastcdc.ts";
import { inspectPatch } from "../codec/inspect.ts";
import {
  encodeCopy,
  encodeDeltaHead,
  encodeLiteralHead,
  encodeZLiteralHead,
  MAX_OP_RAW,
} from "../codec/patch_format.ts";
import { concat, randomBytes, withTempDir } from "./helpers.ts";
import { v2Patch, zstd } from "./support/v2_patches.ts";
import { gguf } from "./support/model_files.ts";

const KiB = 1024;
const SMALL: ChunkParams = { min: 4 * KiB, avg: 16 * KiB, max: 64 * KiB };

async function roundtrip(
  dir: string,
  base: Uint8Array,
  target: Uint8Array,
  format: 1 | 2 = 2,
): Promise<EncodeSummary> {
  await Deno.writeFile(`${dir}/base`, base);
  await Deno.writeFile(`${dir}/target`, target);
  const encoded = await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/patch${format}`, {
    chunk: SMALL,
    threads: 1,
    format,
  });
  const applied = await applyFile(`${dir}/base`, `${dir}/patch${format}`, `${dir}/out${format}`);
  assert.deepEqual(await Deno.readFile(`${dir}/out${format}`), target, "the output is the target");
  assert.equal(applied.targetBlake3, toHex(blake3(target)));
  const inspected = await inspectPatch(`${dir}/patch${format}`);
  assert.equal(inspected.version, format);
  for (const k of ["copyBytes", "literalBytes", "zliteralBytes", "deltaBytes"] as const) {
    assert.equal(inspected[k], encoded[k], k);
    assert.equal(applied[k], encoded[k], k);
  }
  return encoded;
}

/** float32 weights, and the same nudged by a small relative amount (a fine-tune). */
function weights(n: number, seed: number, nudge = 0): Uint8Array {
  const out = new Float32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    const w = ((x >>> 8) / 2 ** 24 - 0.5) * 0.1;
    out[i] = w;
  }
  if (nudge > 0) {
    let y = seed ^ 0x5555;
    for (let i = 0; i < n; i++) {
      y = (y * 1103515245 + 12345) >>> 0;
      out[i] *= 1 + ((y >>> 8) / 2 ** 24 - 0.5) * nudge;
    }
  }
  return new Uint8Array(out.buffer);
}

Deno.test("v2 round-trips edits and insertions, and is never larger than v1 by more than its header", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(600 * KiB, 1);
    const target = concat(
      base.subarray(0, 100 * KiB),
      randomBytes(5000, 2),
      base.subarray(100 * KiB, 400 * KiB),
      new Uint8Array(30 * KiB).fill(7),
      base.subarray(430 * KiB),
    );
    const v2 = await roundtrip(dir, base, target, 2);
    const v1 = await roundtrip(dir, base, target, 1);
    assert.ok(v2.patchSize <= v1.patchSize + 32, `v2 ${v2.patchSize}, v1 ${v1.patchSize}`);
    assert.ok(v2.zliteralOps >= 1, "the run of 7s is compressed");
  });
});

Deno.test("a fine-tune that nudges every weight: DELTA ops make v2 far smaller than v1", async () => {
  await withTempDir(async (dir) => {
    const base = weights(256 * KiB, 3);
    const target = weights(256 * KiB, 3, 1e-3);
    const v2 = await roundtrip(dir, base, target, 2);
    const v1 = await roundtrip(dir, base, target, 1);
    assert.equal(v1.copyBytes, 0, "CDC finds nothing to reuse");
    assert.ok(v2.deltaOps > 0, "DELTA against the aligned base");
    assert.ok(v2.patchSize < 0.75 * v1.patchSize, `v2 ${v2.patchSize} vs v1 ${v1.patchSize}`);
  });
});

Deno.test("DELTA pieces run across chunk boundaries at their full size (512 KiB beside a hashing Worker), not one per chunk", async () => {
  await withTempDir(async (dir) => {
    // 3 MiB of nudged weights in ~190 chunks of 16 KiB (SMALL): nothing matches.
    const base = weights(768 * KiB, 5);
    const target = weights(768 * KiB, 5, 1e-3);
    const v2 = await roundtrip(dir, base, target, 2);
    assert.equal(v2.deltaBytes, target.length, "all DELTA");
    assert.ok(v2.targetChunks > 100, `many chunks: ${v2.targetChunks}`);
    // roundtrip encodes with threads: 1, so pieces are WORKER_PIECE long
    assert.ok(
      v2.deltaOps <= Math.ceil(target.length / WORKER_PIECE) + 1,
      `${v2.deltaOps} DELTA ops`,
    );
  });
});

Deno.test("the DELTA alignment follows the last COPY when bytes were inserted before", async () => {
  await withTempDir(async (dir) => {
    const base = weights(192 * KiB, 4);
    const nudged = weights(192 * KiB, 4, 1e-3);
    // 1000 bytes inserted at the front shift everything; the first 256 KiB are unchanged.
    const target = concat(
      randomBytes(1000, 5),
      base.subarray(0, 256 * KiB),
      nudged.subarray(256 * KiB),
    );
    const v2 = await roundtrip(dir, base, target, 2);
    assert.ok(v2.copyBytes > 0 && v2.deltaOps > 0, JSON.stringify(v2));
  });
});

Deno.test("a v2 patch refuses a wrong base before writing anything, naming both digests", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(100 * KiB, 6);
    const target = concat(base.subarray(0, 50 * KiB), randomBytes(100, 7));
    await roundtrip(dir, base, target, 2);
    const other = randomBytes(100 * KiB, 8); // same size, other bytes
    await Deno.writeFile(`${dir}/other`, other);
    await assert.rejects(
      () => applyFile(`${dir}/other`, `${dir}/patch2`, `${dir}/never`),
      (err: unknown) => {
        assert.ok(err instanceof VerificationError);
        assert.ok(err.message.includes(toHex(blake3(other))), err.message);
        assert.ok(err.message.includes(toHex(blake3(base))), err.message);
        return true;
      },
    );
    await assert.rejects(() => Deno.stat(`${dir}/never`), Deno.errors.NotFound);
  });
});

/** `bytes` with byte `at` set to `value`. */
function withByte(bytes: Uint8Array, at: number, value: number): Uint8Array {
  const out = bytes.slice();
  out[at] = value;
  return out;
}

Deno.test("hand-made v2 patches with every op apply byte for byte", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(8 * KiB, 9);
    const ones = new Uint8Array(4 * KiB).fill(1);
    const xored = base.slice(2 * KiB, 6 * KiB).map((b, i) => b ^ (i % 3 === 0 ? 1 : 0));
    const target = concat(base.subarray(0, KiB), ones, xored, new Uint8Array([42]));
    const delta = xored.map((b, i) => b ^ base[2 * KiB + i]);
    const zOnes = zstd(ones);
    const zDelta = zstd(delta);
    const patch = v2Patch(
      base,
      target,
      encodeCopy(0, KiB),
      encodeZLiteralHead(ones.length, zOnes.length),
      zOnes,
      encodeDeltaHead(2 * KiB, delta.length, zDelta.length),
      zDelta,
      encodeLiteralHead(1),
      new Uint8Array([42]),
    );
    await Deno.writeFile(`${dir}/base`, base);
    await Deno.writeFile(`${dir}/patch`, patch);
    const applied = await applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`);
    assert.deepEqual(await Deno.readFile(`${dir}/out`), target);
    assert.deepEqual(
      [applied.copyOps, applied.zliteralOps, applied.deltaOps, applied.literalOps],
      [1, 1, 1, 1],
    );
  });
});

Deno.test("malformed v2 patches fail with clear errors and leave no output", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(8 * KiB, 10);
    const data = new Uint8Array(4 * KiB).fill(3);
    const target = data;
    const z = zstd(data);
    await Deno.writeFile(`${dir}/base`, base);
    const cases: [string, Uint8Array, RegExp][] = [
      [
        "truncated compressed data",
        v2Patch(
          base,
          target,
          encodeZLiteralHead(data.length, z.length),
          z.subarray(0, z.length - 3),
        ),
        /truncated/,
      ],
      [
        "a compressed length that lies (longer than the frame)",
        v2Patch(base, target, encodeZLiteralHead(data.length, z.length + 2), z, new Uint8Array(2)),
        /does not decompress/,
      ],
      [
        "a compressed length not smaller than the raw length",
        v2Patch(base, target, encodeZLiteralHead(data.length, data.length), data),
        /compressed bytes for 4096; it must be 1 to 4095/,
      ],
      [
        "a raw length over the cap",
        v2Patch(base, target, encodeZLiteralHead(MAX_OP_RAW + 1, 10), new Uint8Array(10)),
        /claims 1048577 bytes; it must be 1 to 1048576/,
      ],
      [
        "a frame that decompresses to fewer bytes than claimed",
        v2Patch(
          base,
          concat(target, target),
          encodeZLiteralHead(2 * data.length, z.length),
          z,
        ),
        /does not decompress to its 8192 bytes|decompresses to 4096 bytes, not the 8192/,
      ],
      [
        "a DELTA range outside the base",
        v2Patch(base, target, encodeDeltaHead(6 * KiB, data.length, z.length), z),
        /DELTA at patch offset 86 reads base bytes 6144\.\.10240, beyond the base's 8192 bytes/,
      ],
      [
        "a filter byte with a reserved value",
        v2Patch(base, target, withByte(encodeZLiteralHead(data.length, z.length), 9, 0x03), z),
        /ZLITERAL at patch offset 86 has an invalid filter byte 0x03/,
      ],
      [
        "a filter byte with the high bits set",
        v2Patch(base, target, withByte(encodeDeltaHead(0, data.length, z.length), 17, 0x40), z),
        /DELTA at patch offset 86 has an invalid filter byte 0x40/,
      ],
      [
        "a ZLITERAL whose filter combines with a base it does not have",
        v2Patch(base, target, withByte(encodeZLiteralHead(data.length, z.length), 9, 0x10), z),
        /ZLITERAL at patch offset 86 has an invalid filter byte 0x10/,
      ],
    ];
    for (const [name, patch, message] of cases) {
      await Deno.writeFile(`${dir}/patch`, patch);
      await assert.rejects(
        () => applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`),
        (err: unknown) => {
          assert.ok(err instanceof MalformedPatchError, `${name}: ${err}`);
          assert.match(err.message, message, name);
          return true;
        },
        name,
      );
      await assert.rejects(() => Deno.stat(`${dir}/out`), Deno.errors.NotFound, name);
      const leftovers = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".tmp"));
      assert.deepEqual(leftovers, [], name);
    }
  });
});

Deno.test("v1 patches never contain v2 ops: 0x03 in a v1 patch is an unknown op", async () => {
  await withTempDir(async (dir) => {
    const { encodeHeaderV1 } = await import("../codec/patch_format.ts");
    const base = randomBytes(KiB, 11);
    const target = new Uint8Array(KiB).fill(1);
    const z = zstd(target);
    const patch = concat(
      encodeHeaderV1({
        baseSize: base.length,
        targetSize: target.length,
        targetDigest: blake3(target),
      }),
      encodeZLiteralHead(target.length, z.length),
      z,
    );
    await Deno.writeFile(`${dir}/base`, base);
    await Deno.writeFile(`${dir}/patch`, patch);
    await assert.rejects(
      () => applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`),
      /unknown op 0x03 at patch offset 54/,
    );
  });
});

Deno.test("SafeTensors: a nudged tensor is a DELTA against the same-named base tensor even after it moved", async () => {
  await withTempDir(async (dir) => {
    const a = weights(64 * KiB, 21);
    const b = weights(64 * KiB, 22);
    const inserted = weights(40 * KiB, 23);
    const base = safetensors([["a", a], ["b", b]]);
    // A new tensor before "b" moves it; "b" itself was fine-tuned (every weight nudged).
    const target = safetensors([["a", a], ["new", inserted], ["b", weights(64 * KiB, 22, 1e-3)]]);
    const v2 = await roundtrip(dir, base, target, 2);
    assert.ok(
      v2.deltaBytes >= 4 * 64 * KiB - 64 * KiB,
      `most of b by DELTA: ${JSON.stringify(v2)}`,
    );
    const v1 = await roundtrip(dir, base, target, 1);
    assert.ok(v2.patchSize < 0.8 * v1.patchSize, `v2 ${v2.patchSize} vs v1 ${v1.patchSize}`);
  });
});

Deno.test("GGUF: a nudged tensor moved by an inserted one is a DELTA against its base tensor", async () => {
  await withTempDir(async (dir) => {
    const a = weights(64 * KiB, 31);
    const b = weights(64 * KiB, 32);
    const base = gguf([["a", a], ["b", b]]);
    const target = gguf([["a", a], ["new", weights(40 * KiB, 33)], [
      "b",
      weights(64 * KiB, 32, 1e-3),
    ]]);
    const v2 = await roundtrip(dir, base, target, 2);
    assert.ok(v2.deltaBytes >= 3 * 64 * KiB, `most of b by DELTA: ${JSON.stringify(v2)}`);
  });
});
