/**
 * Specification of the v1 patch format (codec/patch_format.ts) as the encoder
 * writes it (codec/encoder.ts) and as the applier reads it (codec/applier.ts).
 * The byte layouts here are written out by hand from docs/spec/patch-v1.md, not through the
 * codec's own encoders, so a change of the format cannot pass unnoticed.
 */

import assert from "node:assert/strict";
import {
  COPY_OP_SIZE,
  decodeHeaderV1,
  decodePreamble,
  encodeCopy,
  encodeHeaderV1,
  encodeLiteralHead,
  HEADER_V1_SIZE,
  LITERAL_HEAD_SIZE,
  MAGIC,
  OP_COPY,
  OP_LITERAL,
  PREAMBLE_SIZE,
  VERSION_1,
} from "../codec/patch_format.ts";
import { encodeFile } from "../codec/encoder.ts";
import { applyFile } from "../codec/applier.ts";
import { blake3, toHex } from "../kernel/blake3.ts";
import { MalformedPatchError, VerificationError } from "../kernel/errors.ts";
import {
  concat,
  copyOp,
  header,
  literalOp,
  randomBytes,
  readFile,
  withTempDir,
  writeFile,
} from "./helpers.ts";

const SMALL = { min: 4096, avg: 16384, max: 65536 };

Deno.test("the format constants are those of docs/spec/patch-v1.md", () => {
  assert.deepEqual(MAGIC, new TextEncoder().encode("POOL"));
  assert.equal(VERSION_1, 1);
  assert.equal(HEADER_V1_SIZE, 54);
  assert.equal(PREAMBLE_SIZE, 6);
  assert.equal(OP_COPY, 0x01);
  assert.equal(OP_LITERAL, 0x02);
  assert.equal(COPY_OP_SIZE, 17);
  assert.equal(LITERAL_HEAD_SIZE, 9);
});

Deno.test("the encoder's header matches the v1 layout field by field", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(300_000, 1);
    const target = concat(base.subarray(0, 200_000), randomBytes(50_001, 2));
    await writeFile(`${dir}/base`, base);
    await writeFile(`${dir}/target`, target);
    await encodeFile(`${dir}/base`, `${dir}/target`, `${dir}/patch`, { chunk: SMALL, format: 1 });
    const patch = await readFile(`${dir}/patch`);
    const view = new DataView(patch.buffer, patch.byteOffset, patch.byteLength);

    assert.equal(new TextDecoder().decode(patch.subarray(0, 4)), "POOL", "magic at 0..4");
    assert.deepEqual(Array.from(patch.subarray(0, 4)), [0x50, 0x4f, 0x4f, 0x4c]);
    assert.equal(view.getUint16(4, true), 1, "u16 version at 4");
    assert.equal(view.getBigUint64(6, true), BigInt(base.length), "u64 LE base_size at 6");
    assert.equal(view.getBigUint64(14, true), BigInt(target.length), "u64 LE target_size at 14");
    assert.deepEqual(patch.subarray(22, 54), blake3(target), "BLAKE3 of target at 22..54");
    // The target starts with base bytes, so the first op is a COPY from offset 0.
    assert.equal(patch[54], 0x01, "first op byte at 54 is COPY");
    assert.equal(view.getBigUint64(55, true), 0n, "the COPY starts at base offset 0");
  });
});

Deno.test("a hand-built v1 patch (COPY, LITERAL, COPY) applies to the expected output", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(100, 3);
    const literal = new TextEncoder().encode("hello, edge device");
    const expected = concat(base.subarray(10, 40), literal, base.subarray(50, 100));
    const patch = concat(
      header({
        baseSize: base.length,
        targetSize: expected.length,
        digest: blake3(expected),
      }),
      copyOp(10, 30),
      literalOp(literal.length, literal),
      copyOp(50, 50),
    );
    await writeFile(`${dir}/base`, base);
    await writeFile(`${dir}/patch`, patch);
    const summary = await applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`);
    assert.deepEqual(await readFile(`${dir}/out`), expected);
    assert.equal(summary.copyOps, 2);
    assert.equal(summary.copyBytes, 80);
    assert.equal(summary.literalOps, 1);
    assert.equal(summary.literalBytes, literal.length);
    assert.equal(summary.patchSize, patch.length);
    assert.equal(summary.targetBlake3, toHex(blake3(expected)));
  });
});

Deno.test("a patch whose output does not match its digest is refused; an existing output is kept", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(100, 4);
    const wrongDigest = blake3(base.subarray(1, 61)); // not the digest of base[0..60]
    const old = new TextEncoder().encode("the previous version");
    await writeFile(`${dir}/base`, base);
    await writeFile(`${dir}/out`, old);
    await writeFile(
      `${dir}/patch`,
      concat(header({ baseSize: 100, targetSize: 60, digest: wrongDigest }), copyOp(0, 60)),
    );
    await assert.rejects(
      () => applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`),
      VerificationError,
    );
    assert.deepEqual(await readFile(`${dir}/out`), old, "the destination is untouched");
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["base", "out", "patch"], "no temporary file is left");
  });
});

Deno.test("a base of another size than the header's base_size is refused with VerificationError", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(100, 4);
    const target = base.subarray(0, 60);
    await writeFile(`${dir}/base`, base.subarray(0, 99));
    await writeFile(
      `${dir}/patch`,
      concat(
        header({ baseSize: 100, targetSize: 60, digest: blake3(target) }),
        copyOp(0, 60),
      ),
    );
    await assert.rejects(
      () => applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`),
      VerificationError,
    );
    await assert.rejects(() => Deno.stat(`${dir}/out`), Deno.errors.NotFound);
  });
});

Deno.test("hand-built patches that break a bound are refused with MalformedPatchError", async () => {
  await withTempDir(async (dir) => {
    const base = randomBytes(100, 5);
    const target = base.subarray(0, 60);
    const digest = blake3(target);
    await writeFile(`${dir}/base`, base);
    const head = header({ baseSize: 100, targetSize: 60, digest });
    const hugeLiteral = new Uint8Array(9);
    hugeLiteral[0] = 0x02;
    new DataView(hugeLiteral.buffer).setBigUint64(1, 2n ** 63n, true);
    const cases: [string, Uint8Array][] = [
      ["COPY beyond the base", concat(head, copyOp(50, 60))],
      ["op past target_size", concat(head, copyOp(0, 61))],
      ["trailing byte", concat(head, copyOp(0, 60), new Uint8Array([0x01]))],
      ["unknown op", concat(head, new Uint8Array([0x03]), copyOp(0, 60).subarray(1))],
      ["truncated body", concat(head, copyOp(0, 30))],
      ["truncated COPY fields", concat(head, copyOp(0, 60).subarray(0, 10))],
      ["truncated LITERAL", concat(head, literalOp(target.length, target).subarray(0, 40))],
      ["truncated header", head.subarray(0, 30)],
      ["empty patch", new Uint8Array(0)],
      ["LITERAL longer than target_size", concat(head, literalOp(61, new Uint8Array(61)))],
      ["LITERAL claiming 2^63 bytes", concat(head, hugeLiteral)],
      [
        "bad magic",
        concat(header({ baseSize: 100, targetSize: 60, digest, magic: "LOOP" }), copyOp(0, 60)),
      ],
      [
        "version 2",
        concat(
          header({ baseSize: 100, targetSize: 60, digest, magic: "POOL", version: 2 }),
          copyOp(0, 60),
        ),
      ],
    ];
    for (const [what, patch] of cases) {
      await writeFile(`${dir}/patch`, patch);
      await assert.rejects(
        () => applyFile(`${dir}/base`, `${dir}/patch`, `${dir}/out`),
        MalformedPatchError,
        what,
      );
    }
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["base", "patch"], "no output and no temporary file is left");
  });
});

Deno.test("encodeHeaderV1 writes the hand layout and decodeHeaderV1 reads it back", () => {
  const digest = randomBytes(32, 6);
  const fields = { baseSize: 200 * 1024 ** 3 + 7, targetSize: 123_456_789, targetDigest: digest };
  const bytes = encodeHeaderV1(fields);
  assert.deepEqual(
    bytes,
    header({ baseSize: fields.baseSize, targetSize: fields.targetSize, digest }),
  );
  assert.deepEqual(decodeHeaderV1(bytes), { version: 1, ...fields });
  // Also from a view that does not start at the beginning of its buffer.
  const shifted = concat(new Uint8Array(3), bytes).subarray(3);
  assert.deepEqual(decodeHeaderV1(shifted), { version: 1, ...fields });
  // Sizes up to 2^53 - 1 round-trip; a header for empty files too.
  const max = Number.MAX_SAFE_INTEGER;
  const big = { baseSize: max, targetSize: max, targetDigest: digest };
  assert.deepEqual(decodeHeaderV1(encodeHeaderV1(big)), { version: 1, ...big });
  const empty = { baseSize: 0, targetSize: 0, targetDigest: digest };
  assert.deepEqual(decodeHeaderV1(encodeHeaderV1(empty)), { version: 1, ...empty });
});

Deno.test("encodeHeaderV1 refuses a digest that is not 32 bytes", () => {
  assert.throws(
    () => encodeHeaderV1({ baseSize: 0, targetSize: 0, targetDigest: new Uint8Array(31) }),
    RangeError,
  );
});

Deno.test("decodeHeaderV1 refuses a short header and sizes above 2^53 - 1", () => {
  const head = header({ baseSize: 1, targetSize: 1, digest: new Uint8Array(32) });
  assert.throws(() => decodeHeaderV1(head.subarray(0, 53)), MalformedPatchError);
  const huge = head.slice();
  new DataView(huge.buffer).setBigUint64(6, 2n ** 53n, true);
  assert.throws(() => decodeHeaderV1(huge), MalformedPatchError);
  const hugeTarget = head.slice();
  new DataView(hugeTarget.buffer).setBigUint64(14, 2n ** 64n - 1n, true);
  assert.throws(() => decodeHeaderV1(hugeTarget), MalformedPatchError);
});

Deno.test("encodeCopy and encodeLiteralHead write the hand layout of the ops", () => {
  assert.deepEqual(encodeCopy(0x0102030405, 4096), copyOp(0x0102030405, 4096));
  assert.deepEqual(
    encodeLiteralHead(5),
    literalOp(5, new Uint8Array(5)).subarray(0, LITERAL_HEAD_SIZE),
  );
});

Deno.test("decodePreamble accepts POOL version 1 and returns the version", () => {
  assert.equal(
    decodePreamble(
      header({ baseSize: 0, targetSize: 0, digest: new Uint8Array(32) }).subarray(0, 6),
    ),
    1,
  );
});

Deno.test("decodePreamble rejects bad magic, versions 0, 5 and 65535 (1, 2, 3 and 4 are read), and short input", () => {
  const digest = new Uint8Array(32);
  for (const magic of ["LOOP", "pool", "POOM", "\0\0\0\0"]) {
    assert.throws(
      () => decodePreamble(header({ baseSize: 0, targetSize: 0, digest, magic: magic })),
      MalformedPatchError,
      magic,
    );
  }
  for (const version of [0, 5, 65535]) {
    assert.throws(
      () =>
        decodePreamble(
          header({ baseSize: 0, targetSize: 0, digest, magic: "POOL", version: version }),
        ),
      MalformedPatchError,
      `version ${version}`,
    );
  }
  for (const length of [0, 3, 5]) {
    assert.throws(
      () => decodePreamble(header({ baseSize: 0, targetSize: 0, digest }).subarray(0, length)),
      MalformedPatchError,
      `${length} bytes`,
    );
  }
});
