/**
 * Specification of piece lists (transfer/piece_list.ts, docs/spec/piece-list-v1.md):
 * the format's test vectors, the default piece size, round trips, lists built
 * from a file equal lists built from the same bytes, and every MUST-refuse case.
 *
 * @module
 */

import assert from "node:assert/strict";
import { blake3, fromHex, toHex } from "../kernel/blake3.ts";
import {
  buildPieceListFromBytes,
  buildPieceListFromFile,
  choosePieceSize,
  decodePieceList,
  decodePieceListFor,
  encodePieceList,
  MAX_PIECES,
  PIECE_LIST_HEADER_SIZE,
  pieceDigest,
  PieceListError,
  pieceRange,
  verifyPiece,
} from "../transfer/piece_list.ts";
import { randomBytes, withTempDir, writeFile } from "./helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

const ABC_VECTOR = "5042504c" + "01" + "10" + "0000" + "0000000000000003" +
  "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85" + "00000001" +
  "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
const EMPTY_VECTOR = "5042504c" + "01" + "10" + "0000" + "0000000000000000" +
  "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" + "00000000";

Deno.test("the spec's test vectors are what the writer produces and what the reader reads", () => {
  const abc = buildPieceListFromBytes(new TextEncoder().encode("abc"), 64 * KiB);
  assert.equal(toHex(encodePieceList(abc)), ABC_VECTOR);
  const read = decodePieceList(fromHex(ABC_VECTOR));
  assert.equal(read.pieceSize, 64 * KiB);
  assert.equal(read.blobSize, 3);
  assert.equal(read.pieceCount, 1);
  assert.deepEqual(read.blobDigest, blake3(new TextEncoder().encode("abc")));
  assert.equal(
    toHex(encodePieceList(buildPieceListFromBytes(new Uint8Array(0), 64 * KiB))),
    EMPTY_VECTOR,
  );
  assert.equal(decodePieceList(fromHex(EMPTY_VECTOR)).pieceCount, 0);
});

Deno.test("the default piece size is the smallest power of two giving at most 256 pieces, within 64 KiB .. 16 MiB", () => {
  assert.equal(choosePieceSize(0), 64 * KiB);
  assert.equal(choosePieceSize(1), 64 * KiB);
  assert.equal(choosePieceSize(16 * MiB), 64 * KiB);
  assert.equal(choosePieceSize(16 * MiB + 1), 128 * KiB);
  assert.equal(choosePieceSize(100 * MiB), 512 * KiB);
  assert.equal(choosePieceSize(1024 * MiB), 4 * MiB);
  assert.equal(choosePieceSize(4096 * MiB), 16 * MiB);
  assert.equal(choosePieceSize(8 * 1024 * MiB), 16 * MiB);
});

Deno.test("pieces cover the blob in order, the last one shorter, and each verifies against its digest", () => {
  const blob = randomBytes(3 * 64 * KiB + 100, 7);
  const list = buildPieceListFromBytes(blob, 64 * KiB);
  assert.equal(list.pieceCount, 4);
  assert.deepEqual(pieceRange(list, 0), { offset: 0, length: 64 * KiB });
  assert.deepEqual(pieceRange(list, 3), { offset: 3 * 64 * KiB, length: 100 });
  assert.throws(() => pieceRange(list, 4), RangeError);
  assert.throws(() => pieceRange(list, -1), RangeError);
  for (let i = 0; i < 4; i++) {
    const { offset, length } = pieceRange(list, i);
    const bytes = blob.slice(offset, offset + length);
    assert.ok(verifyPiece(list, i, bytes));
    assert.deepEqual(pieceDigest(list, i), blake3(bytes));
    bytes[0] ^= 1;
    assert.equal(verifyPiece(list, i, bytes), false);
  }
  assert.equal(verifyPiece(list, 3, blob.slice(0, 99)), false);
  assert.deepEqual(decodePieceList(encodePieceList(list)), list);
});

Deno.test("a list built from a file, streaming, equals the list built from the same bytes", async () => {
  await withTempDir(async (dir) => {
    for (const size of [0, 1, 64 * KiB, 64 * KiB + 1, 5 * MiB + 3]) {
      const blob = randomBytes(size, size + 1);
      await writeFile(`${dir}/b`, blob);
      assert.deepEqual(await buildPieceListFromFile(`${dir}/b`), buildPieceListFromBytes(blob));
      assert.deepEqual(
        await buildPieceListFromFile(`${dir}/b`, 128 * KiB),
        buildPieceListFromBytes(blob, 128 * KiB),
      );
    }
  });
});

Deno.test("the writer refuses piece sizes outside the format and blobs of too many pieces", () => {
  assert.throws(() => buildPieceListFromBytes(new Uint8Array(10), 32 * KiB), RangeError);
  assert.throws(() => buildPieceListFromBytes(new Uint8Array(10), 100 * KiB), RangeError);
  assert.throws(() => buildPieceListFromBytes(new Uint8Array(10), 128 * MiB), RangeError);
  const list = buildPieceListFromBytes(new Uint8Array(10), 64 * KiB);
  assert.throws(() => encodePieceList({ ...list, pieceCount: 2 }), RangeError);
  assert.ok(MAX_PIECES === 65536);
});

Deno.test("the reader refuses every malformed list with a PieceListError", () => {
  const good = encodePieceList(buildPieceListFromBytes(randomBytes(200 * KiB, 3), 64 * KiB));
  const edit = (f: (b: Uint8Array, v: DataView) => void): Uint8Array => {
    const b = good.slice();
    f(b, new DataView(b.buffer));
    return b;
  };
  const bad: [string, Uint8Array][] = [
    ["too short", good.slice(0, PIECE_LIST_HEADER_SIZE - 1)],
    ["bad magic", edit((b) => b[0] = 0x51)],
    ["version 2", edit((b) => b[4] = 2)],
    ["version 0", edit((b) => b[4] = 0)],
    ["piece size 2^15", edit((b) => b[5] = 15)],
    ["piece size 2^27", edit((b) => b[5] = 27)],
    ["reserved not zero", edit((_, v) => v.setUint16(6, 1))],
    ["blob size above 2^53", edit((_, v) => v.setBigUint64(8, 2n ** 53n))],
    ["count too small", edit((_, v) => v.setUint32(48, 3))],
    ["count too large", edit((_, v) => v.setUint32(48, 5))],
    ["count over the maximum", edit((_, v) => v.setUint32(48, MAX_PIECES + 1))],
    ["blob size not matching the count", edit((_, v) => v.setBigUint64(8, 4n * 65536n + 1n))],
    ["a digest missing", good.slice(0, good.length - 32)],
    ["a byte missing", good.slice(0, good.length - 1)],
    ["a trailing byte", new Uint8Array([...good, 0])],
    ["a trailing digest", new Uint8Array([...good, ...new Uint8Array(32)])],
  ];
  assert.ok(decodePieceList(good).pieceCount === 4);
  for (const [why, bytes] of bad) {
    assert.throws(() => decodePieceList(bytes), PieceListError, why);
  }
});

Deno.test("a list for another blob than the one announced is refused", () => {
  const blob = randomBytes(100 * KiB, 9);
  const bytes = encodePieceList(buildPieceListFromBytes(blob));
  assert.equal(decodePieceListFor(bytes, blake3(blob), blob.length).blobSize, blob.length);
  assert.throws(() => decodePieceListFor(bytes, blake3(blob), blob.length + 1), PieceListError);
  assert.throws(() => decodePieceListFor(bytes, new Uint8Array(32), blob.length), PieceListError);
});
