/**
 * Specification of chunk index files (codec/index_format.ts,
 * codec/index_file.ts, `poolboy index`, `encode --base-index`; called
 * signatures before the rename): an index file is a file's chunk list in the
 * documented layout; encoding against it reads only the target and gives the
 * same patch byte for byte; an index file that no longer matches its base, or
 * is damaged, is refused with a clear error and nothing is written. Files
 * written under the old name are still read, and the old command and option
 * names say what to type instead.
 */

import assert from "node:assert/strict";
import { blake3 } from "../kernel/blake3.ts";
import { encodeFile, indexFile } from "../codec/encoder.ts";
import { ChunkPipeline } from "../codec/chunk_pipeline.ts";
import { HashPool } from "../codec/hash_pool.ts";
import { VerificationError } from "../kernel/errors.ts";
import type { ChunkParams } from "../codec/fastcdc.ts";
import { readIndexFile, writeIndexFile } from "../codec/index_file.ts";
import {
  INDEX_FILE_ENTRY_SIZE,
  INDEX_FILE_HEADER_SIZE,
  INDEX_FILE_TRAILER_SIZE,
  MalformedIndexFileError,
} from "../codec/index_format.ts";
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

Deno.test("an index file lays out header, one 36-byte entry per chunk, and a trailer, as documented", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    const summary = await writeIndexFile(`${dir}/base`, `${dir}/base.idx`, { chunk: SMALL });
    const bytes = await readFile(`${dir}/base.idx`);
    const view = new DataView(bytes.buffer);
    assert.equal(
      bytes.length,
      INDEX_FILE_HEADER_SIZE + INDEX_FILE_ENTRY_SIZE * summary.chunkCount + INDEX_FILE_TRAILER_SIZE,
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
    const entriesEnd = bytes.length - INDEX_FILE_TRAILER_SIZE;
    assert.deepEqual(
      bytes.subarray(entriesEnd),
      blake3(
        concat(bytes.subarray(INDEX_FILE_HEADER_SIZE, entriesEnd), bytes.subarray(0, 80)),
      ),
    );
  });
});

Deno.test("reading an index file gives the same chunk index as chunking the file", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeIndexFile(`${dir}/base`, `${dir}/base.idx`, { chunk: SMALL });
    const { header, index } = await readIndexFile(`${dir}/base.idx`);
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

Deno.test("encoding with the base's index file writes the same patch as encoding with the base", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeFile(`${dir}/target`, TARGET);
    await writeIndexFile(`${dir}/base`, `${dir}/base.idx`, { chunk: SMALL });
    const plain = await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/p1`, { chunk: SMALL });
    const viaIndex = await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/p2`, {
      baseIndex: `${dir}/base.idx`,
    });
    assert.equal(plain.usedBaseIndex, false);
    assert.equal(viaIndex.usedBaseIndex, true);
    assert.deepEqual(viaIndex.chunk, SMALL, "chunk sizes come from the index file");
    assert.deepEqual(await readFile(`${dir}/p2`), await readFile(`${dir}/p1`));
    assert.ok(viaIndex.copyBytes > TARGET.length / 2);
  });
});

Deno.test("an index file of an empty file has no chunks and still encodes", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/empty`, new Uint8Array());
    await writeFile(`${dir}/target`, TARGET.subarray(0, 1000));
    const s = await writeIndexFile(`${dir}/empty`, `${dir}/empty.idx`);
    assert.equal(s.chunkCount, 0);
    assert.equal(s.indexSize, INDEX_FILE_HEADER_SIZE + INDEX_FILE_TRAILER_SIZE);
    const e = await encodeFile(`${dir}/empty`, `${dir}/target`, `${dir}/p`, {
      baseIndex: `${dir}/empty.idx`,
    });
    assert.equal(e.literalBytes, 1000);
  });
});

Deno.test("an index file whose base changed size or modification time is refused, and no patch is written", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeFile(`${dir}/target`, TARGET);
    await writeIndexFile(`${dir}/base`, `${dir}/base.idx`, { chunk: SMALL });
    const encode = () =>
      encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/p`, { baseIndex: `${dir}/base.idx` });
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

Deno.test("a damaged, truncated or foreign index file is refused as malformed", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeIndexFile(`${dir}/base`, `${dir}/base.idx`, { chunk: SMALL });
    const good = await readFile(`${dir}/base.idx`);
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
      ["bad magic", flip(0), /not a poolboy index file/],
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
      await writeFile(`${dir}/bad.idx`, bytes);
      await assert.rejects(
        () => readIndexFile(`${dir}/bad.idx`),
        (e) => e instanceof MalformedIndexFileError && message.test(e.message),
        name,
      );
    }
  });
});

Deno.test("poolboy index and encode --base-index work end to end, with clear errors", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeFile(`${dir}/target`, TARGET);
    const small = ["--min-chunk", "4KiB", "--avg-chunk", "16KiB", "--max-chunk", "64KiB"];
    const indexed = await poolboy(dir, "index", "base", "-o", "base.idx", "--json", ...small);
    assert.equal(indexed.code, EXIT.ok, indexed.stderr);
    const summary = JSON.parse(indexed.stdout);
    assert.equal(summary.fileSize, BASE.length);
    assert.ok(summary.chunkCount > 50);

    const plain = await poolboy(dir, "encode", "base", "target", "-o", "p1", ...small);
    assert.equal(plain.code, EXIT.ok, plain.stderr);
    const viaIndex = await poolboy(
      dir,
      "encode",
      "base",
      "target",
      "-o",
      "p2",
      "--base-index",
      "base.idx",
    );
    assert.equal(viaIndex.code, EXIT.ok, viaIndex.stderr);
    assert.match(viaIndex.stdout, /from its index file/);
    assert.deepEqual(await readFile(`${dir}/p2`), await readFile(`${dir}/p1`));

    assertUserError(
      await poolboy(
        dir,
        "encode",
        "base",
        "target",
        "-o",
        "p3",
        "--base-index",
        "base.idx",
        "--avg-chunk",
        "64KiB",
      ),
      EXIT.usage,
      "come from the index file",
    );
    assertUserError(
      await poolboy(dir, "encode", "base", "target", "-o", "p3", "--base-index", "p1"),
      EXIT.malformed,
      "not a poolboy index file",
    );
    assertUserError(await poolboy(dir, "index", "base"), EXIT.usage, "-o IDX is required");
    assertUserError(
      await poolboy(dir, "index", "base", "-o", "base"),
      EXIT.usage,
      "must not be FILE",
    );
    await Deno.utime(`${dir}/base`, new Date(), new Date(Date.now() + 5000));
    assertUserError(
      await poolboy(dir, "encode", "base", "target", "-o", "p3", "--base-index", "base.idx"),
      EXIT.verification,
      "modified after index file",
    );
    assert.equal((await poolboy(dir, "index", "--help")).code, EXIT.ok);
    assert.deepEqual(await tempFilesIn(dir), []);
    await assert.rejects(() => Deno.stat(`${dir}/p3`), Deno.errors.NotFound);
  });
});

/**
 * The bytes the v1 writer produced before the rename (when the command was
 * `poolboy signature FILE -o FILE.sig`), built here field by field from the
 * documented layout rather than by the writer under test: a file shorter than
 * the smallest chunk is one chunk, so its chunk list is known without FastCDC.
 */
function handBuiltV1(file: Uint8Array, chunk: ChunkParams, mtimeMs: number): Uint8Array {
  assert.ok(file.length > 0 && file.length < chunk.min, "one chunk: the whole file");
  const header = new Uint8Array(80);
  const view = new DataView(header.buffer);
  header.set(new TextEncoder().encode("PBSG"), 0);
  view.setUint16(4, 1, true);
  view.setUint32(8, chunk.min, true);
  view.setUint32(12, chunk.avg, true);
  view.setUint32(16, chunk.max, true);
  view.setBigUint64(24, BigInt(file.length), true);
  view.setBigInt64(32, BigInt(mtimeMs), true);
  view.setBigUint64(40, 1n, true);
  header.set(blake3(file), 48);
  const entry = new Uint8Array(36);
  new DataView(entry.buffer).setUint32(0, file.length, true);
  entry.set(blake3(file), 4);
  return concat(header, entry, blake3(concat(entry, header)));
}

Deno.test("a .sig file written before the rename is still read: encode --base-index takes it and the patch is the same", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(3000, 21);
    await writeFile(`${dir}/base`, base);
    await writeFile(`${dir}/target`, base);
    const mtime = (await Deno.stat(`${dir}/base`)).mtime!.getTime();
    const old = handBuiltV1(base, SMALL, mtime);
    await writeFile(`${dir}/base.sig`, old);

    // The format did not change: today's writer produces the very same bytes.
    await writeIndexFile(`${dir}/base`, `${dir}/base.idx`, { chunk: SMALL });
    assert.deepEqual(await readFile(`${dir}/base.idx`), old);

    const small = ["--min-chunk", "4KiB", "--avg-chunk", "16KiB", "--max-chunk", "64KiB"];
    const plain = await poolboy(dir, "encode", "base", "target", "-o", "p1", ...small);
    assert.equal(plain.code, EXIT.ok, plain.stderr);
    const viaOld = await poolboy(
      dir,
      "encode",
      "base",
      "target",
      "-o",
      "p2",
      "--base-index",
      "base.sig",
      "--json",
    );
    assert.equal(viaOld.code, EXIT.ok, viaOld.stderr);
    const summary = JSON.parse(viaOld.stdout);
    assert.equal(summary.usedBaseIndex, true);
    assert.equal(summary.copyBytes, base.length);
    assert.deepEqual(await readFile(`${dir}/p2`), await readFile(`${dir}/p1`));
    const applied = await poolboy(dir, "apply", "base", "p2", "-o", "out");
    assert.equal(applied.code, EXIT.ok, applied.stderr);
    assert.deepEqual(await readFile(`${dir}/out`), base);
  });
});

Deno.test("encode --json says whether the base's chunks came from an index file (usedBaseIndex), under that name only", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeFile(`${dir}/target`, TARGET);
    const small = ["--min-chunk", "4KiB", "--avg-chunk", "16KiB", "--max-chunk", "64KiB"];
    assert.equal((await poolboy(dir, "index", "base", "-o", "base.idx", ...small)).code, EXIT.ok);
    const plain = await poolboy(dir, "encode", "base", "target", "-o", "p1", "--json", ...small);
    const viaIndex = await poolboy(
      dir,
      "encode",
      "base",
      "target",
      "-o",
      "p2",
      "--json",
      "--base-index",
      "base.idx",
    );
    assert.equal(plain.code, EXIT.ok, plain.stderr);
    assert.equal(viaIndex.code, EXIT.ok, viaIndex.stderr);
    assert.equal(JSON.parse(plain.stdout).usedBaseIndex, false);
    assert.equal(JSON.parse(viaIndex.stdout).usedBaseIndex, true);
    assert.ok(!("usedSignature" in JSON.parse(viaIndex.stdout)));
  });
});

Deno.test("poolboy index --json names the command, the file, the index file and its size", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    const run = await poolboy(dir, "index", "base", "-o", "base.idx", "--json");
    assert.equal(run.code, EXIT.ok, run.stderr);
    const summary = JSON.parse(run.stdout);
    assert.equal(summary.command, "index");
    assert.equal(summary.file, "base");
    assert.equal(summary.index, "base.idx");
    assert.equal(summary.indexSize, (await Deno.stat(`${dir}/base.idx`)).size);
  });
});

Deno.test("the old command name `poolboy signature` is a usage error that says what to type instead, and writes nothing", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    const expected =
      '"signature" was renamed: use poolboy index FILE -o FILE.idx (old .sig files still work with encode --base-index)';
    for (
      const args of [
        ["signature", "base", "-o", "base.sig"],
        ["signature", "--help"],
        ["help", "signature"],
      ]
    ) {
      const run = await poolboy(dir, ...args);
      assertUserError(run, EXIT.usage, expected);
      assert.equal(run.stderr, `poolboy: error: ${expected}\n`, args.join(" "));
    }
    await assert.rejects(() => Deno.stat(`${dir}/base.sig`), Deno.errors.NotFound);
    assert.deepEqual(await tempFilesIn(dir), []);
  });
});

Deno.test("the old option encode --base-sig is a usage error naming --base-index, and writes nothing", async () => {
  await withTempDir(async (dir) => {
    await writeFile(`${dir}/base`, BASE);
    await writeFile(`${dir}/target`, TARGET);
    await writeIndexFile(`${dir}/base`, `${dir}/base.sig`, { chunk: SMALL });
    for (const option of [["--base-sig", "base.sig"], ["--base-sig=base.sig"]]) {
      assertUserError(
        await poolboy(dir, "encode", "base", "target", "-o", "p", ...option),
        EXIT.usage,
        "--base-sig was renamed",
        "--base-index",
        "poolboy index",
      );
    }
    await assert.rejects(() => Deno.stat(`${dir}/p`), Deno.errors.NotFound);
    assert.deepEqual(await tempFilesIn(dir), []);
  });
});
