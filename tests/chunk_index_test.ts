/**
 * Specification of the base's chunk index (codec/chunk_index.ts): an ordered list
 * of chunks with lookup by BLAKE3 digest.
 */

import assert from "node:assert/strict";
import { ChunkIndex } from "../codec/chunk_index.ts";
import { blake3, DIGEST_LENGTH } from "../kernel/blake3.ts";
import { randomBytes } from "./helpers.ts";

/** A distinct pseudo-random 32-byte digest for each seed. */
function digest(seed: number): Uint8Array {
  return randomBytes(DIGEST_LENGTH, seed + 1);
}

Deno.test("an empty index has size 0 and finds nothing", () => {
  const index = new ChunkIndex();
  assert.equal(index.size, 0);
  assert.equal(index.find(digest(1)), undefined);
  assert.equal(index.matchAt(0, digest(1)), undefined);
  assert.throws(() => index.at(0), RangeError);
});

Deno.test("added chunks are numbered in order and found by their digest", () => {
  const index = new ChunkIndex();
  const digests = [
    blake3(new TextEncoder().encode("first")),
    blake3(new TextEncoder().encode("second")),
    blake3(new TextEncoder().encode("third")),
  ];
  index.add(0, 100, digests[0]);
  index.add(100, 250, digests[1]);
  index.add(350, 7, digests[2]);
  assert.equal(index.size, 3);
  assert.deepEqual(index.find(digests[0]), { index: 0, offset: 0, length: 100 });
  assert.deepEqual(index.find(digests[1]), { index: 1, offset: 100, length: 250 });
  assert.deepEqual(index.find(digests[2]), { index: 2, offset: 350, length: 7 });
  assert.equal(index.find(blake3(new TextEncoder().encode("fourth"))), undefined);
  assert.deepEqual(index.at(1), { index: 1, offset: 100, length: 250 });
  assert.deepEqual(index.digestOf(2), digests[2]);
});

Deno.test("the index keeps its own copy of each digest", () => {
  const index = new ChunkIndex();
  const d = digest(5);
  const kept = d.slice();
  index.add(0, 10, d);
  d.fill(0);
  assert.deepEqual(index.digestOf(0), kept);
  assert.deepEqual(index.find(kept)?.index, 0);
});

Deno.test("matchAt returns chunk i only if it exists and has that digest", () => {
  const index = new ChunkIndex();
  index.add(0, 10, digest(1));
  index.add(10, 20, digest(2));
  assert.deepEqual(index.matchAt(1, digest(2)), { index: 1, offset: 10, length: 20 });
  assert.equal(index.matchAt(0, digest(2)), undefined, "wrong digest at that position");
  assert.equal(index.matchAt(-1, digest(1)), undefined, "before the first chunk");
  assert.equal(index.matchAt(2, digest(2)), undefined, "past the last chunk");
});

Deno.test("at refuses a chunk number outside the index", () => {
  const index = new ChunkIndex();
  index.add(0, 10, digest(1));
  assert.throws(() => index.at(-1), RangeError);
  assert.throws(() => index.at(1), RangeError);
});

Deno.test("duplicate chunks: find returns the first occurrence, matchAt any of them", () => {
  const index = new ChunkIndex();
  const same = digest(9);
  index.add(0, 64, digest(1));
  index.add(64, 64, same);
  index.add(128, 64, digest(2));
  index.add(192, 64, same);
  assert.deepEqual(index.find(same), { index: 1, offset: 64, length: 64 });
  assert.deepEqual(index.matchAt(3, same), { index: 3, offset: 192, length: 64 });
});

Deno.test("two digests equal in their first 48 bits but different later are both found", () => {
  const index = new ChunkIndex();
  const a = digest(1);
  const b = a.slice();
  b[31] ^= 0xff; // same 6-byte key, different digest
  const c = a.slice();
  c[6] ^= 0x01; // also the same key, never added
  index.add(0, 10, a);
  index.add(10, 20, b);
  assert.deepEqual(index.find(a), { index: 0, offset: 0, length: 10 });
  assert.deepEqual(index.find(b), { index: 1, offset: 10, length: 20 });
  assert.equal(index.find(c), undefined);
  // A later duplicate of the colliding digest still resolves to its first occurrence.
  index.add(30, 20, b);
  assert.deepEqual(index.find(b), { index: 1, offset: 10, length: 20 });
  // And the colliding chunks are distinguished by matchAt.
  assert.equal(index.matchAt(0, b), undefined);
  assert.deepEqual(index.matchAt(2, b)?.index, 2);
});

Deno.test("the colliding digest may come first: the order of add does not matter", () => {
  const index = new ChunkIndex();
  const a = digest(2);
  const b = a.slice();
  b[20] ^= 0x80;
  index.add(0, 10, b);
  index.add(10, 10, a);
  assert.equal(index.find(b)?.index, 0);
  assert.equal(index.find(a)?.index, 1);
});

Deno.test("the index grows past its initial 1024 entries without losing any", () => {
  const index = new ChunkIndex();
  const n = 5000;
  const chunk = 1 << 20;
  for (let i = 0; i < n; i++) index.add(i * chunk, chunk - (i % 7), digest(i));
  assert.equal(index.size, n);
  for (const i of [0, 1, 1023, 1024, 1025, 2047, 2048, 4096, n - 1]) {
    assert.deepEqual(index.at(i), { index: i, offset: i * chunk, length: chunk - (i % 7) });
    assert.deepEqual(index.digestOf(i), digest(i));
    assert.equal(index.find(digest(i))?.index, i);
    assert.equal(index.matchAt(i, digest(i))?.index, i);
  }
  for (let i = 0; i < n; i++) assert.equal(index.find(digest(i))?.index, i);
});

Deno.test("offsets beyond 4 GiB and lengths up to 64 MiB are kept exactly", () => {
  const index = new ChunkIndex();
  const offset = 200 * 1024 ** 3 + 12345; // a 200 GB base
  index.add(offset, 64 * 1024 * 1024, digest(3));
  assert.deepEqual(index.at(0), { index: 0, offset, length: 64 * 1024 * 1024 });
});

Deno.test("an index sized for 16 chunks takes 50,000 (table rehashed many times) and still finds each first occurrence", () => {
  const index = new ChunkIndex(16);
  const digestFor = (k: number) => {
    const d = new Uint8Array(32);
    new DataView(d.buffer).setUint32(0, Math.imul(k, 0x9e3779b1) >>> 0, true);
    new DataView(d.buffer).setUint32(28, k, true);
    return d;
  };
  // Every 10th chunk repeats the digest of chunk k - 5: the first occurrence must win.
  for (let i = 0; i < 50_000; i++) {
    index.add(i * 100, 100, digestFor(i % 10 === 9 ? i - 5 : i));
  }
  assert.equal(index.size, 50_000);
  for (let i = 0; i < 50_000; i++) {
    const found = index.find(digestFor(i));
    if (i % 10 === 9) {
      assert.equal(found, undefined, `digest ${i} was never added`);
    } else {
      assert.equal(found?.index, i, `chunk ${i}`);
      assert.equal(found?.offset, i * 100);
    }
  }
  assert.equal(index.matchAt(49_999, digestFor(49_994))?.offset, 4_999_900);
});
