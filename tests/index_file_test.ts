/**
 * Specification of signatures (codec/signature_format.ts, codec/signature.ts,
 * `poolboy signature`, `encode --base-sig`): a signature is a file's chunk list
 * in the documented layout; encoding against it reads only the target and gives
 * the same patch byte for byte; a signature that no longer matches its base, or
 * is damaged, is refused with a clear error and nothing is written.
 */

import assert from "node:assert/strict";
import { blake3 } from "../kernel/blake3.ts";
import { encodeFile, indexFile } from "../codec/encoder.ts";
import { ChunkPipeline } from "../codec/chunk_pipeline.ts";
import { HashPool } from "../codec/hash_pool.ts";
import { VerificationError } from "../kernel/errors.ts";
import type { ChunkParams } from "../codec/fastcdc.ts";
import { readSignature, writeSignature } from "../codec/signature.ts";
import {
  MalformedSignatureError,
  SIGNATURE_ENTRY_SIZE,
  SIGNATURE_HEADER_SIZE,
  SIGNATURE_TRAILER_SIZE,
} from "../codec/signature_format.ts";
import { assertUserError, EXIT, poolboy, tempFilesIn } from "./cli_helpers.ts";
import { concat, randomBytes, readFile, withTempDir, writeFile } from "./helpers.ts";

const KiB = 1024;
const SMALL: ChunkParams = { min: 4 * KiB, avg: 16 * KiB, max: 64 * KiB };
const BASE = randomBytes(2 << 20, 11);
const TARGET = concat(
  randomBytes(333, 12),
  BASE.subarray(0, 700_000),
  randomBytes(50_000, 13),
  BASE.subarray(900_000),
);

Deno.test("a signature lays out header, one 36-byte entry per chunk, and a trailer, as documented", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    const summary = await writeSignature(`${dir}/base`, `${dir}/base.sig`, { chunk: SMALL });
    const bytes = await readFile(`${dir}/base.sig`);
    const view = new DataView(bytes.buffer);
    assert.equal(
      bytes.length,
      SIGNATURE_HEADER_SIZE + SIGNATURE_ENTRY_SIZE * summary.chunkCount + SIGNATURE_TRAILER_SIZE,
    );
    assert.equal(new TextDecoder().decode(bytes.subarray(0, 4)), "PBSG");
    assert.equal(view.getUint16(4, true), 1);
    assert.deepEqual(
      [view.getUint32(8, true), view.getUint32(12, true), view.getUint32(16, true)],
      [SMALL.min, SMALL.avg, SMALL.max],
    );
    assert.equal(Number(view.getBigUint64(24, true)), BASE.length);
    const mtime = (await Deno.stat(`${dir}/base`)).mtime!.getTime();
    assert.equal(Number(view.getBigInt64(32, true)), mtime);
    assert.equal(Number(view.getBigUint64(40, true)), summary.chunkCount);
    assert.deepEqual(bytes.subarray(48, 80), blake3(BASE));
    // The first entry is the first chunk's length and BLAKE3.
    const firstLength = view.getUint32(80, true);
    assert.deepEqual(bytes.subarray(84, 116), blake3(BASE.subarray(0, firstLength)));
    // The trailer is BLAKE3 of the entries followed by the header.
    const entriesEnd = bytes.length - SIGNATURE_TRAILER_SIZE;
    assert.deepEqual(
      bytes.subarray(entriesEnd),
      blake3(
        concat(bytes.subarray(SIGNATURE_HEADER_SIZE, entriesEnd), bytes.subarray(0, 80)),
      ),
    );
  });
});

Deno.test("reading a signature gives the same chunk index as chunking the file", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeSignature(`${dir}/base`, `${dir}/base.sig`, { chunk: SMALL });
    const { header, index } = await readSignature(`${dir}/base.sig`);
    const file = await Deno.open(`${dir}/base`);
    using pool = await HashPool.start(2);
    const direct = await indexFile(file, new ChunkPipeline(pool, SMALL)).finally(() =>
      file.close()
    );
    assert.deepEqual(header.chunk, SMALL);
    assert.equal(index.size, direct.size);
    assert.ok(index.size > 50, `expected many chunks, got ${index.size}`);
    for (let i = 0; i < index.size; i++) {
      assert.deepEqual(index.at(i), direct.at(i));
      assert.deepEqual(index.digestOf(i), direct.digestOf(i));
    }
  });
});

Deno.test("encoding with the base's signature writes the same patch as encoding with the base", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeFile(`${dir}/target`, TARGET);
    await writeSignature(`${dir}/base`, `${dir}/base.sig`, { chunk: SMALL });
    const plain = await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/p1`, { chunk: SMALL });
    const signed = await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/p2`, {
      baseSignature: `${dir}/base.sig`,
    });
    assert.equal(plain.usedSignature, false);
    assert.equal(signed.usedSignature, true);
    assert.deepEqual(signed.chunk, SMALL, "chunk sizes come from the signature");
    assert.deepEqual(await readFile(`${dir}/p2`), await readFile(`${dir}/p1`));
    assert.ok(signed.copyBytes > TARGET.length / 2);
  });
});

Deno.test("a signature of an empty file has no chunks and still encodes", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/empty`, new Uint8Array());
    await writeFile(`${dir}/target`, TARGET.subarray(0, 1000));
    const s = await writeSignature(`${dir}/empty`, `${dir}/empty.sig`);
    assert.equal(s.chunkCount, 0);
    assert.equal(s.signatureSize, SIGNATURE_HEADER_SIZE + SIGNATURE_TRAILER_SIZE);
    const e = await encodeFile(`${dir}/empty`, `${dir}/target`, `${dir}/p`, {
      baseSignature: `${dir}/empty.sig`,
    });
    assert.equal(e.literalBytes, 1000);
  });
});

Deno.test("a signature whose base changed size or modification time is refused, and no patch is written", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeFile(`${dir}/target`, TARGET);
    await writeSignature(`${dir}/base`, `${dir}/base.sig`, { chunk: SMALL });
    const encode = () =>
      encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/p`, { baseSignature: `${dir}/base.sig` });
    await Deno.utime(`${dir}/base`, new Date(), new Date(Date.now() + 5000));
    await assert.rejects(
      encode,
      (e) => e instanceof VerificationError && /modified/.test(e.message),
    );
    await writeFile(`${dir}/base`, BASE.subarray(1));
    await assert.rejects(encode, (e) => e instanceof VerificationError && /bytes/.test(e.message));
    assert.deepEqual(await tempFilesIn(dir), []);
    await assert.rejects(() => Deno.stat(`${dir}/p`), Deno.errors.NotFound);
  });
});

Deno.test("a damaged, truncated or foreign signature is refused as malformed", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeSignature(`${dir}/base`, `${dir}/base.sig`, { chunk: SMALL });
    const good = await readFile(`${dir}/base.sig`);
    const flip = (at: number) => {
      const b = good.slice();
      b[at] ^= 0x40;
      return b;
    };
    const lengthsOff = good.slice();
    new DataView(lengthsOff.buffer).setUint32(
      80,
      new DataView(good.buffer).getUint32(80, true) + 1,
      true,
    );
    const cases: [string, Uint8Array, RegExp][] = [
      ["empty file", new Uint8Array(), /truncated/],
      ["cut inside the header", good.subarray(0, 40), /truncated/],
      ["cut inside the entries", good.subarray(0, 200), /bytes; its header/],
      ["trailer missing", good.subarray(0, good.length - 32), /bytes; its header/],
      ["a digest bit flipped", flip(100), /damaged/],
      ["the file digest flipped", flip(50), /damaged/],
      ["bad magic", flip(0), /not a poolboy signature/],
      [
        "version 2",
        (() => {
          const b = good.slice();
          b[4] = 2;
          return b;
        })(),
        /version 2/,
      ],
      ["chunk lengths that overrun the file", lengthsOff, /outside the file|cover/],
    ];
    for (const [name, bytes, message] of cases) {
      await writeFile(`${dir}/bad.sig`, bytes);
      await assert.rejects(
        () => readSignature(`${dir}/bad.sig`),
        (e) => e instanceof MalformedSignatureError && message.test(e.message),
        name,
      );
    }
  });
});

Deno.test("poolboy signature and encode --base-sig work end to end, with clear errors", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeFile(`${dir}/target`, TARGET);
    const small = ["--min-chunk", "4KiB", "--avg-chunk", "16KiB", "--max-chunk", "64KiB"];
    const signed = await poolboy(dir, "signature", "base", "-o", "base.sig", "--json", ...small);
    assert.equal(signed.code, EXIT.ok, signed.stderr);
    const summary = JSON.parse(signed.stdout);
    assert.equal(summary.fileSize, BASE.length);
    assert.ok(summary.chunkCount > 50);

    const plain = await poolboy(dir, "encode", "base", "target", "-o", "p1", ...small);
    assert.equal(plain.code, EXIT.ok, plain.stderr);
    const viaSig = await poolboy(
      dir,
      "encode",
      "base",
      "target",
      "-o",
      "p2",
      "--base-sig",
      "base.sig",
    );
    assert.equal(viaSig.code, EXIT.ok, viaSig.stderr);
    assert.match(viaSig.stdout, /from its signature/);
    assert.deepEqual(await readFile(`${dir}/p2`), await readFile(`${dir}/p1`));

    assertUserError(
      await poolboy(
        dir,
        "encode",
        "base",
        "target",
        "-o",
        "p3",
        "--base-sig",
        "base.sig",
        "--avg-chunk",
        "64KiB",
      ),
      EXIT.usage,
      "come from the signature",
    );
    assertUserError(
      await poolboy(dir, "encode", "base", "target", "-o", "p3", "--base-sig", "p1"),
      EXIT.malformed,
      "not a poolboy signature",
    );
    assertUserError(await poolboy(dir, "signature", "base"), EXIT.usage, "-o SIG is required");
    assertUserError(
      await poolboy(dir, "signature", "base", "-o", "base"),
      EXIT.usage,
      "must not be FILE",
    );
    await Deno.utime(`${dir}/base`, new Date(), new Date(Date.now() + 5000));
    assertUserError(
      await poolboy(dir, "encode", "base", "target", "-o", "p3", "--base-sig", "base.sig"),
      EXIT.verification,
      "modified after signature",
    );
    assert.equal((await poolboy(dir, "signature", "--help")).code, EXIT.ok);
    assert.deepEqual(await tempFilesIn(dir), []);
    await assert.rejects(() => Deno.stat(`${dir}/p3`), Deno.errors.NotFound);
  });
});
