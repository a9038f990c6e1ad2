/**
 * The fleet simulator's shared piece store (testkit/fleet_sim/shared_piece_store.ts):
 * one buffer per blob per process, a bitmap per device, the whole blob's
 * BLAKE3 checked once per process.
 */

import assert from "node:assert/strict";
import { VerificationError } from "../kernel/errors.ts";
import { buildPieceListFromBytes, type PieceList, pieceRange } from "../transfer/piece_list.ts";
import { SharedBlobs } from "../testkit/fleet_sim/shared_piece_store.ts";

const PIECE = 64 * 1024;

function blobOf(size: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed * 7 + (i >> 9)) & 0xff;
  return bytes;
}

function piece(list: PieceList, blob: Uint8Array, index: number): Uint8Array {
  const { offset, length } = pieceRange(list, index);
  return blob.slice(offset, offset + length);
}

Deno.test("each device's store holds only the pieces that device put, though the bytes are shared", async () => {
  const blob = blobOf(3 * PIECE + 100, 1);
  const list = buildPieceListFromBytes(blob, PIECE);
  const shared = new SharedBlobs();
  const a = shared.storeFor(list);
  const b = shared.storeFor(list);
  assert.equal(shared.size, 1, "one buffer for the blob");
  await a.putPiece(1, piece(list, blob, 1));
  assert.ok(a.hasPiece(1) && !b.hasPiece(1), "b did not verify piece 1");
  assert.equal(a.heldCount, 1);
  assert.equal(b.heldCount, 0);
  assert.ok(a.has(PIECE, PIECE) && !b.has(PIECE, PIECE));
  assert.ok(!a.has(PIECE, PIECE + 1), "a range touching a missing piece is not held");
  assert.ok(!a.has(-1, 1) && !a.has(0, blob.length + 1), "ranges outside the blob are not held");
  const out = new Uint8Array(PIECE);
  assert.equal(await a.read(PIECE, out), PIECE);
  assert.deepEqual(out, piece(list, blob, 1));
  await assert.rejects(
    a.putPiece(0, new Uint8Array(10)),
    RangeError,
    "a piece of the wrong length",
  );
  await assert.rejects(a.putPiece(4, new Uint8Array(0)), RangeError, "a piece beyond the list");
});

Deno.test("the whole blob is hashed once per process however many devices complete it", async () => {
  const blob = blobOf(5 * PIECE + 7, 2);
  const list = buildPieceListFromBytes(blob, PIECE);
  const shared = new SharedBlobs();
  const stores = Array.from({ length: 10 }, () => shared.storeFor(list));
  for (const store of stores) {
    await assert.rejects(store.complete(), VerificationError, "incomplete: refused");
    for (let i = list.pieceCount - 1; i >= 0; i--) await store.putPiece(i, piece(list, blob, i));
    await store.complete();
    assert.deepEqual(store.bytes(), blob);
    assert.ok(store.has(0, blob.length));
  }
  assert.equal(shared.wholeBlobHashes, 1, "one BLAKE3 of the whole blob for ten devices");
});

Deno.test("pieces that each verify but do not make the blob are all forgotten at completion", async () => {
  const blob = blobOf(2 * PIECE, 3);
  const other = blobOf(2 * PIECE, 4);
  // A list whose piece digests are another blob's, but which names this blob's digest.
  const list = {
    ...buildPieceListFromBytes(other, PIECE),
    blobDigest: buildPieceListFromBytes(blob, PIECE).blobDigest,
  };
  const shared = new SharedBlobs();
  const store = shared.storeFor(list);
  for (let i = 0; i < list.pieceCount; i++) await store.putPiece(i, piece(list, other, i));
  await assert.rejects(store.complete(), VerificationError);
  assert.equal(store.heldCount, 0, "every piece forgotten");
  assert.ok(!store.has(0, 1), "nothing is served any more");
  assert.throws(() => store.bytes(), VerificationError);
});

Deno.test("two piece lists of one blob get buffers of their own", () => {
  const blob = blobOf(4 * PIECE, 5);
  const shared = new SharedBlobs();
  shared.storeFor(buildPieceListFromBytes(blob, PIECE));
  shared.storeFor(buildPieceListFromBytes(blob, 2 * PIECE));
  shared.storeFor(buildPieceListFromBytes(blob, PIECE));
  assert.equal(shared.size, 2);
});
