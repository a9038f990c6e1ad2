/**
 * Specification of BLAKE3 hashing (kernel/blake3.ts) and of whole-file hashing
 * (codec/hash_file.ts).
 */

import assert from "node:assert/strict";
import {
  blake3,
  createHasher,
  DIGEST_LENGTH,
  digestsEqual,
  fromHex,
  toHex,
} from "../kernel/blake3.ts";
import { hashFile } from "../codec/hash_file.ts";
import { IoError } from "../kernel/errors.ts";
import { randomBytes, withTempDir, writeFile } from "./helpers.ts";

/** The input of BLAKE3's test_vectors.json: byte i is i % 251. */
function vectorInput(length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = i % 251;
  return bytes;
}

/**
 * Unkeyed 32-byte digests from the BLAKE3 team's test_vectors.json
 * (https://github.com/BLAKE3-team/BLAKE3/blob/master/test_vectors/test_vectors.json).
 */
const VECTORS: [number, string][] = [
  [0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"],
  [1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"],
  [1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"],
  [1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"],
  [1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"],
  [2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"],
  [3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"],
];

Deno.test("blake3 of the empty input is the official digest", () => {
  assert.equal(
    toHex(blake3(new Uint8Array(0))),
    "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
  );
});

Deno.test("blake3 matches the official test vectors (byte i = i % 251)", () => {
  for (const [length, hex] of VECTORS) {
    const digest = blake3(vectorInput(length));
    assert.equal(digest.length, DIGEST_LENGTH);
    assert.equal(toHex(digest), hex, `input of ${length} bytes`);
  }
});

Deno.test("an incremental hasher fed in pieces gives the one-shot digest", () => {
  const data = randomBytes(100_000, 1);
  const hasher = createHasher();
  for (let at = 0; at < data.length; at += 7777) hasher.update(data.subarray(at, at + 7777));
  assert.deepEqual(hasher.digest(), blake3(data));
  // And it can be reset with init() and reused.
  hasher.init();
  hasher.update(vectorInput(1023));
  assert.equal(toHex(hasher.digest()), VECTORS[2][1]);
});

Deno.test("toHex gives lower-case hex and fromHex reverses it", () => {
  const bytes = new Uint8Array([0x00, 0x01, 0x7f, 0x80, 0xab, 0xff]);
  assert.equal(toHex(bytes), "00017f80abff");
  assert.deepEqual(fromHex("00017f80abff"), bytes);
  assert.deepEqual(fromHex("00017F80ABFF"), bytes, "upper case is read too");
  assert.equal(toHex(new Uint8Array(0)), "");
  assert.deepEqual(fromHex(""), new Uint8Array(0));
  const random = randomBytes(257, 2);
  assert.deepEqual(fromHex(toHex(random)), random);
  for (const [, hex] of VECTORS) assert.equal(toHex(fromHex(hex)), hex);
});

Deno.test("fromHex rejects an odd number of digits or anything but hex digits", () => {
  for (const bad of ["a", "abc", "zz", "0g", "12 34", "0x12", "-1", "ab\n", "éé"]) {
    assert.throws(() => fromHex(bad), RangeError, JSON.stringify(bad));
  }
});

Deno.test("digestsEqual compares length and every byte", () => {
  const a = randomBytes(32, 3);
  assert.ok(digestsEqual(a, a.slice()));
  const b = a.slice();
  b[31] ^= 1;
  assert.ok(!digestsEqual(a, b));
  assert.ok(!digestsEqual(a, a.subarray(0, 31)));
});

Deno.test("hashFile equals blake3 of the same bytes for a file bigger than its 4 MiB buffer", async () => {
  await withTempDir(async (dir) => {
    for (const size of [4 * 1024 * 1024, 9 * 1024 * 1024 + 123]) {
      const data = randomBytes(size, size);
      const path = `${dir}/f-${size}.bin`;
      await writeFile(path, data);
      const reported: [number, number][] = [];
      const hex = await hashFile(path, (done, total) => reported.push([done, total]));
      assert.equal(hex, toHex(blake3(data)), `file of ${size} bytes`);
      assert.deepEqual(reported[reported.length - 1], [size, size], "progress ends at the size");
    }
  });
});

Deno.test("hashFile of an empty file is the empty input's digest", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/empty.bin`;
    await writeFile(path, new Uint8Array(0));
    assert.equal(await hashFile(path), VECTORS[0][1]);
  });
});

Deno.test("hashFile refuses a missing file and a directory with an IoError", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(() => hashFile(`${dir}/missing.bin`), IoError);
    await assert.rejects(() => hashFile(dir), IoError);
  });
});

Deno.test("digest() starts the hasher over, and hashers do not share state", () => {
  const a = createHasher();
  const b = createHasher();
  a.update(vectorInput(1023));
  b.update(vectorInput(1));
  assert.equal(toHex(a.digest()), VECTORS[2][1]);
  a.update(vectorInput(1023));
  assert.equal(toHex(a.digest()), VECTORS[2][1], "after digest() the hasher is fresh");
  assert.deepEqual(b.digest(), blake3(vectorInput(1)));
});
