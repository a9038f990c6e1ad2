/**
 * Specification of the blob transfer wire format (transfer/blob_protocol.ts):
 * the byte layouts of a request and a response header, pinned byte for byte,
 * and refusal of anything that does not follow them.
 */

import assert from "node:assert/strict";
import {
  BlobProtocolError,
  BlobStatus,
  decodeRequest,
  decodeResponseHeader,
  encodeRequest,
  encodeResponseHeader,
  MAGIC,
  REQUEST_SIZE,
  RESPONSE_HEADER_SIZE,
  statusName,
  VERSION,
} from "../transfer/blob_protocol.ts";
import { fromHex, toHex } from "../kernel/blake3.ts";

/** The digest `00 01 02 … 1f`. */
const COUNTING_DIGEST = Uint8Array.from({ length: 32 }, (_, i) => i);

/** A request written by hand, field by field: magic, version, digest, offset (u64 BE). */
function handRequest(fields: { magic?: string; version?: number; offset?: bigint }): Uint8Array {
  const bytes = new Uint8Array(45);
  bytes.set(new TextEncoder().encode(fields.magic ?? "PBLB"), 0);
  bytes[4] = fields.version ?? 1;
  bytes.set(COUNTING_DIGEST, 5);
  new DataView(bytes.buffer).setBigUint64(37, fields.offset ?? 0n, false);
  return bytes;
}

function refusedWith(status: number): (err: unknown) => boolean {
  return (err) => err instanceof BlobProtocolError && err.status === status;
}

Deno.test("the format constants are those of docs/spec/blob-protocol-v1.md", () => {
  assert.deepEqual(MAGIC, new TextEncoder().encode("PBLB"));
  assert.equal(VERSION, 1);
  assert.equal(REQUEST_SIZE, 45);
  assert.equal(RESPONSE_HEADER_SIZE, 9);
  assert.deepEqual(
    { ...BlobStatus },
    { OK: 0, NOT_FOUND: 1, BAD_REQUEST: 2, BAD_OFFSET: 3, BUSY: 4, FORBIDDEN: 5, NOT_YET: 6 },
  );
});

Deno.test("a request is magic, version, digest and a big-endian u64 offset, 45 bytes in all", () => {
  const bytes = encodeRequest({ digest: COUNTING_DIGEST, offset: 4096 });
  assert.equal(
    toHex(bytes),
    "50424c42" + "01" + "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" +
      "0000000000001000",
  );
  assert.deepEqual(bytes, handRequest({ offset: 4096n }));
});

Deno.test("requests round-trip, offsets past 32 bits included", () => {
  for (const offset of [0, 1, 4096, 2 ** 32 + 7, 5 * 2 ** 40 + 3, Number.MAX_SAFE_INTEGER]) {
    const decoded = decodeRequest(encodeRequest({ digest: COUNTING_DIGEST, offset }));
    assert.deepEqual(decoded, { digest: COUNTING_DIGEST, offset });
  }
});

Deno.test("a decoded request owns its digest: reusing the read buffer does not change it", () => {
  const bytes = handRequest({ offset: 9n });
  const request = decodeRequest(bytes);
  bytes.fill(0xee);
  assert.deepEqual(request.digest, COUNTING_DIGEST);
});

Deno.test("a response header is a status byte and a big-endian u64 length", () => {
  assert.equal(
    toHex(encodeResponseHeader({ status: BlobStatus.OK, length: 0x0102030405 })),
    "00" + "0000000102030405",
  );
  assert.equal(
    toHex(encodeResponseHeader({ status: BlobStatus.NOT_FOUND, length: 0 })),
    "01" + "0000000000000000",
  );
  assert.deepEqual(decodeResponseHeader(fromHex("000000000000001000")), {
    status: BlobStatus.OK,
    length: 4096,
  });
});

Deno.test("every status round-trips through a response header", () => {
  for (const status of Object.values(BlobStatus)) {
    const length = status === BlobStatus.OK ? 5 * 2 ** 40 : 0;
    assert.deepEqual(decodeResponseHeader(encodeResponseHeader({ status, length })), {
      status,
      length,
    });
  }
});

Deno.test("a request that is short, long, of another magic or another version is BAD_REQUEST", () => {
  const good = handRequest({});
  assert.throws(() => decodeRequest(good.subarray(0, 44)), refusedWith(BlobStatus.BAD_REQUEST));
  assert.throws(() => decodeRequest(new Uint8Array(0)), refusedWith(BlobStatus.BAD_REQUEST));
  assert.throws(
    () => decodeRequest(new Uint8Array([...good, 0])),
    refusedWith(BlobStatus.BAD_REQUEST),
  );
  assert.throws(
    () => decodeRequest(handRequest({ magic: "GET " })),
    refusedWith(BlobStatus.BAD_REQUEST),
  );
  assert.throws(
    () => decodeRequest(handRequest({ version: 2 })),
    refusedWith(BlobStatus.BAD_REQUEST),
  );
  assert.throws(
    () => decodeRequest(handRequest({ version: 0 })),
    refusedWith(BlobStatus.BAD_REQUEST),
  );
});

Deno.test("a request for an offset beyond 2^53 − 1 is BAD_OFFSET, not a wrong number", () => {
  assert.throws(
    () => decodeRequest(handRequest({ offset: 2n ** 53n })),
    refusedWith(BlobStatus.BAD_OFFSET),
  );
  assert.throws(
    () => decodeRequest(handRequest({ offset: 2n ** 64n - 1n })),
    refusedWith(BlobStatus.BAD_OFFSET),
  );
});

Deno.test("a response header that is short, of an unknown status or a body with an error is refused", () => {
  assert.throws(() => decodeResponseHeader(fromHex("0000000000000010")), BlobProtocolError);
  // 5 is FORBIDDEN since version 2, 6 NOT_YET since version 3; 7 is the first unknown status.
  assert.throws(() => decodeResponseHeader(fromHex("070000000000000000")), BlobProtocolError);
  assert.throws(() => decodeResponseHeader(fromHex("ff0000000000000000")), BlobProtocolError);
  assert.throws(() => decodeResponseHeader(fromHex("010000000000000001")), BlobProtocolError);
  assert.throws(() => decodeResponseHeader(fromHex("00000000000000000000")), BlobProtocolError);
  assert.throws(() => decodeResponseHeader(fromHex("00ffffffffffffffff")), BlobProtocolError);
});

Deno.test("the encoders refuse what the format cannot carry", () => {
  assert.throws(() => encodeRequest({ digest: new Uint8Array(31), offset: 0 }), RangeError);
  assert.throws(() => encodeRequest({ digest: COUNTING_DIGEST, offset: -1 }), RangeError);
  assert.throws(() => encodeRequest({ digest: COUNTING_DIGEST, offset: 1.5 }), RangeError);
  assert.throws(() => encodeRequest({ digest: COUNTING_DIGEST, offset: 2 ** 53 }), RangeError);
  assert.throws(
    () => encodeResponseHeader({ status: BlobStatus.BUSY, length: 1 }),
    RangeError,
  );
});

Deno.test("statusName names every status and says so for an unknown one", () => {
  assert.equal(statusName(BlobStatus.OK), "OK");
  assert.equal(statusName(BlobStatus.NOT_FOUND), "NOT_FOUND");
  assert.equal(statusName(BlobStatus.BAD_REQUEST), "BAD_REQUEST");
  assert.equal(statusName(BlobStatus.BAD_OFFSET), "BAD_OFFSET");
  assert.equal(statusName(BlobStatus.BUSY), "BUSY");
  assert.equal(statusName(BlobStatus.FORBIDDEN), "FORBIDDEN");
  assert.equal(statusName(BlobStatus.NOT_YET), "NOT_YET");
  assert.equal(statusName(77), "status 77");
});
