/**
 * Specification of blob protocol version 3 at the server (issue 15;
 * docs/spec/blob-protocol-v1.md, "Version 3"): ranged requests, blobs served
 * in part while they download (NOT_YET for a range not wholly verified), and
 * the upload caps (`maxUploads` bodies in flight, `uploadBytesPerSecond` over
 * all of them). Version-2 requests are served as before.
 *
 * @module
 */

import assert from "node:assert/strict";
import { blake3, fromHex, toHex } from "../kernel/blake3.ts";
import type { BlobCredentials } from "../transfer/blob_auth.ts";
import {
  type AuthenticatedVersion,
  BlobStatus,
  decodeAuthenticatedRequest,
  decodeHello,
  decodeResponseHeader,
  encodeRequestBody,
  encodeRequestHead,
  HELLO_SIZE,
  REQUEST_SIZE,
  REQUEST_V3_SIZE,
  requestSignatureInput,
  RESPONSE_HEADER_SIZE,
  signRequest,
  VERSION_2,
  VERSION_3,
} from "../transfer/blob_protocol.ts";
import { BlobServer } from "../transfer/blob_server.ts";
import { BlobStore } from "../transfer/blob_store.ts";
import { buildPieceListFromBytes, pieceRange } from "../transfer/piece_list.ts";
import { MemoryPieceStore } from "../transfer/piece_store.ts";
import { randomBytes, withTempDir } from "./helpers.ts";
import { storeWith, swarmIdentity } from "./support/swarm.ts";

const HOST = "127.0.0.1";
const KiB = 1024;
const BLOB = randomBytes(5 * 64 * KiB + 777, 15);
const DIGEST = blake3(BLOB);
const COUNTING_DIGEST = Uint8Array.from({ length: 32 }, (_, i) => i);

async function readExactly(conn: Deno.Conn, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  for (let filled = 0; filled < length;) {
    const n = await conn.read(out.subarray(filled));
    if (n === null) throw new Error(`closed after ${filled} of ${length} bytes`);
    filled += n;
  }
  return out;
}

/** One signed request on one connection; the status and the body received. */
async function ask(
  server: BlobServer,
  credentials: BlobCredentials,
  range: { offset: number; length?: number },
  version: AuthenticatedVersion = VERSION_3,
): Promise<{ status: number; body: Uint8Array }> {
  const conn = await Deno.connect({ hostname: server.hostname, port: server.port });
  try {
    const nonce = decodeHello(await readExactly(conn, HELLO_SIZE));
    const request = await signRequest(
      { digest: DIGEST, ...range },
      credentials.nodeId,
      credentials.ticket ?? null,
      nonce,
      credentials.privateKey,
      version,
    );
    for (let done = 0; done < request.length;) done += await conn.write(request.subarray(done));
    const header = decodeResponseHeader(await readExactly(conn, RESPONSE_HEADER_SIZE));
    const body = await readExactly(conn, header.length);
    assert.equal(await conn.read(new Uint8Array(1)), null);
    return { status: header.status, body };
  } finally {
    conn.close();
  }
}

Deno.test("the version-3 request head of the spec's test vector carries the length after the offset", () => {
  const head = encodeRequestHead(
    { digest: COUNTING_DIGEST, offset: 4096, length: 65536 },
    VERSION_3,
  );
  assert.equal(head.length, REQUEST_V3_SIZE);
  assert.equal(
    toHex(head),
    "50424c42" + "03" + toHex(COUNTING_DIGEST) + "0000000000001000" + "0000000000010000",
  );
  assert.equal(
    new TextDecoder().decode(
      requestSignatureInput(new Uint8Array(0), new Uint8Array(0), VERSION_3),
    ),
    "poolboy blob request v3\0",
  );
  const body = encodeRequestBody(
    { digest: COUNTING_DIGEST, offset: 4096, length: 65536 },
    "n1",
    null,
    VERSION_3,
  );
  const decoded = decodeAuthenticatedRequest(
    body.subarray(0, REQUEST_V3_SIZE),
    new TextEncoder().encode("n1"),
    new Uint8Array(0),
    new Uint8Array(64),
  );
  assert.equal(decoded.version, VERSION_3);
  assert.equal(decoded.offset, 4096);
  assert.equal(decoded.length, 65536);
  assert.deepEqual(decoded.signed, body);
  // Version 2 is unchanged: 45 bytes of head, no length.
  const v2 = encodeRequestHead({ digest: COUNTING_DIGEST, offset: 4096 }, VERSION_2);
  assert.equal(v2.length, REQUEST_SIZE);
  assert.equal(toHex(v2), "50424c42" + "02" + toHex(COUNTING_DIGEST) + "0000000000001000");
  assert.throws(
    () => encodeRequestHead({ digest: COUNTING_DIGEST, offset: 0, length: 1 }, VERSION_2),
    RangeError,
  );
  assert.equal(fromHex("06")[0], BlobStatus.NOT_YET);
});

Deno.test("a version-3 request gets exactly its range, length 0 the rest of the blob, and a range past the end is cut at the end", async () => {
  await withTempDir(async (dir) => {
    const id = await swarmIdentity();
    const server = BlobServer.start({
      hostname: HOST,
      store: await storeWith(`${dir}/s`, BLOB),
      ...id.serverAuth,
    });
    try {
      const me = await id.credentials("node-a", DIGEST);
      const mid = await ask(server, me, { offset: 1000, length: 70_000 });
      assert.equal(mid.status, BlobStatus.OK);
      assert.deepEqual(mid.body, BLOB.subarray(1000, 71_000));
      const rest = await ask(server, me, { offset: 300_000, length: 0 });
      assert.deepEqual(rest.body, BLOB.subarray(300_000));
      const past = await ask(server, me, { offset: BLOB.length - 10, length: 1000 });
      assert.deepEqual(past.body, BLOB.subarray(BLOB.length - 10));
      assert.equal(
        (await ask(server, me, { offset: BLOB.length + 1, length: 1 })).status,
        BlobStatus.BAD_OFFSET,
      );
      // Version 2 still served: the whole blob from the offset.
      const v2 = await ask(server, me, { offset: 5 }, VERSION_2);
      assert.deepEqual(v2.body, BLOB.subarray(5));
      // A ticket for another node is refused, as in version 2.
      const other = await id.credentials("node-b", DIGEST);
      const forged = { ...other, nodeId: "node-a" };
      assert.equal(
        (await ask(server, forged, { offset: 0, length: 10 })).status,
        BlobStatus.FORBIDDEN,
      );
    } finally {
      await server.close();
    }
  });
});

Deno.test("a partial holder answers NOT_YET for a range touching a piece it lacks, serves ranges of verified pieces, and version-2 requests never see it", async () => {
  await withTempDir(async (dir) => {
    const id = await swarmIdentity();
    const server = BlobServer.start({
      hostname: HOST,
      store: await BlobStore.open(`${dir}/empty`),
      ...id.serverAuth,
    });
    try {
      const list = buildPieceListFromBytes(BLOB, 64 * KiB);
      const partial = new MemoryPieceStore(list);
      for (const i of [0, 1, 3]) {
        const { offset, length } = pieceRange(list, i);
        await partial.putPiece(i, BLOB.subarray(offset, offset + length));
      }
      const me = await id.credentials("node-a", DIGEST);
      assert.equal(
        (await ask(server, me, { offset: 0, length: 100 })).status,
        BlobStatus.NOT_FOUND,
      );
      server.sharePartial(DIGEST, partial);
      const held = await ask(server, me, { offset: 10, length: 2 * 64 * KiB - 10 });
      assert.equal(held.status, BlobStatus.OK);
      assert.deepEqual(held.body, BLOB.subarray(10, 2 * 64 * KiB));
      const p3 = pieceRange(list, 3);
      assert.deepEqual(
        (await ask(server, me, { offset: p3.offset, length: p3.length })).body,
        BLOB.subarray(p3.offset, p3.offset + p3.length),
      );
      // Piece 2 is missing: any range touching it, and "to the end", is NOT_YET.
      assert.equal(
        (await ask(server, me, { offset: 2 * 64 * KiB - 1, length: 2 })).status,
        BlobStatus.NOT_YET,
      );
      assert.equal((await ask(server, me, { offset: 0, length: 0 })).status, BlobStatus.NOT_YET);
      assert.equal(
        (await ask(server, me, { offset: p3.offset, length: 0 })).status,
        BlobStatus.NOT_YET,
      );
      assert.equal(server.notYet, 3);
      // A version-2 client would take the whole rest: a partial blob is not found for it.
      assert.equal((await ask(server, me, { offset: 0 }, VERSION_2)).status, BlobStatus.NOT_FOUND);
      server.unsharePartial(DIGEST);
      assert.equal(
        (await ask(server, me, { offset: 0, length: 100 })).status,
        BlobStatus.NOT_FOUND,
      );
    } finally {
      await server.close();
    }
  });
});

Deno.test("with maxUploads 1 and three clients at once, the server never has more than one body in flight and answers the others BUSY", async () => {
  await withTempDir(async (dir) => {
    const id = await swarmIdentity();
    const server = BlobServer.start({
      hostname: HOST,
      store: await storeWith(`${dir}/s`, BLOB),
      ...id.serverAuth,
      maxUploads: 1,
      // Slow bodies, so the three requests overlap.
      faults: { serveBytesPerSecond: 512 * KiB },
    });
    try {
      const clients = await Promise.all(
        ["a", "b", "c"].map((n) => id.credentials(`node-${n}`, DIGEST)),
      );
      const answers = await Promise.all(
        clients.map((c) => ask(server, c, { offset: 0, length: 0 })),
      );
      const ok = answers.filter((a) => a.status === BlobStatus.OK);
      assert.ok(ok.length >= 1);
      for (const a of ok) assert.deepEqual(a.body, BLOB);
      for (const a of answers) {
        assert.ok(a.status === BlobStatus.OK || a.status === BlobStatus.BUSY);
      }
      assert.equal(server.busy, answers.length - ok.length);
      assert.equal(server.peakUploads, 1);
      assert.equal(server.uploadsInFlight, 0);
    } finally {
      await server.close();
    }
  });
});

Deno.test("with uploadBytesPerSecond, the bytes served to three clients at once stay within the bucket: its burst plus the rate times the time taken", async () => {
  await withTempDir(async (dir) => {
    const id = await swarmIdentity();
    const rate = 512 * KiB;
    const server = BlobServer.start({
      hostname: HOST,
      store: await storeWith(`${dir}/s`, BLOB),
      ...id.serverAuth,
      uploadBytesPerSecond: rate,
    });
    try {
      const clients = await Promise.all(
        ["a", "b", "c"].map((n) => id.credentials(`node-${n}`, DIGEST)),
      );
      const started = performance.now();
      const answers = await Promise.all(
        clients.map((c) => ask(server, c, { offset: 0, length: 0 })),
      );
      const seconds = (performance.now() - started) / 1000;
      for (const a of answers) assert.deepEqual(a.body, BLOB);
      assert.equal(server.bytesServed, 3 * BLOB.length);
      // An upper bound only: a slow machine serves less, never more.
      assert.ok(server.uploadBurstBytes > 0 && server.uploadBurstBytes <= rate);
      assert.ok(
        server.bytesServed <= server.uploadBurstBytes + rate * seconds,
        `${server.bytesServed} bytes in ${seconds} s at a cap of ${rate} B/s`,
      );
    } finally {
      await server.close();
    }
  });
});

Deno.test("an upload held back by the server's own uploadBytesPerSecond below its minimum rate is not cut as a slow peer", async () => {
  await withTempDir(async (dir) => {
    const id = await swarmIdentity();
    const server = BlobServer.start({
      hostname: HOST,
      store: await storeWith(`${dir}/s`, BLOB),
      ...id.serverAuth,
      // The cap (32 KiB/s) is below the minimum rate the server asks of its peers (64 KiB/s).
      uploadBytesPerSecond: 32 * KiB,
      minRate: { bytesPerSecond: 64 * KiB, windowMs: 400 },
    });
    try {
      const me = await id.credentials("node-a", DIGEST);
      const answer = await ask(server, me, { offset: 0, length: 40 * KiB });
      assert.equal(answer.status, BlobStatus.OK);
      assert.deepEqual(answer.body, BLOB.subarray(0, 40 * KiB));
      assert.equal(server.cut, 0);
      assert.equal(server.errors, 0);
    } finally {
      await server.close();
    }
  });
});
