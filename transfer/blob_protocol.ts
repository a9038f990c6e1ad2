/**
 * Blob transfer wire format: how a client asks a peer (the control plane or a
 * leader agent) for a content-addressed blob over TCP, and how the peer
 * answers. Pure encoding and decoding; the I/O is in `blob_server.ts` and
 * `blob_client.ts`.
 *
 * One request per connection: the client sends 45 bytes (magic `PBLB`,
 * version 1, the blob's BLAKE3, a u64 offset to resume from), the server
 * answers a status byte (`BlobStatus`), a u64 length and that many bytes of
 * the blob from the offset, then closes. Integers are big-endian. The format
 * carries no checksum: a client must verify the whole blob's BLAKE3 before it
 * uses it. Offsets and lengths above 2^53 − 1 are refused here.
 *
 * Specification: docs/spec/blob-protocol-v1.md (field tables, status codes,
 * server and client rules, resuming, test vectors).
 *
 * @module
 */

import { DIGEST_LENGTH } from "../kernel/blake3.ts";
import { ProtocolError } from "../kernel/errors.ts";

/** The request's first four bytes: ASCII `PBLB`. */
export const MAGIC: Uint8Array = new Uint8Array([0x50, 0x42, 0x4c, 0x42]);

/** The protocol version this module speaks. */
export const VERSION = 1;

/** Byte size of a request: magic (4) + version (1) + digest (32) + offset (8). */
export const REQUEST_SIZE = 4 + 1 + DIGEST_LENGTH + 8;

/** Byte size of a response header: status (1) + length (8). */
export const RESPONSE_HEADER_SIZE = 1 + 8;

/** Response status codes. */
export const BlobStatus = {
  /** The body follows. */
  OK: 0,
  /** The server does not hold this blob. */
  NOT_FOUND: 1,
  /** Bad magic or unsupported version. */
  BAD_REQUEST: 2,
  /** The offset is past the blob's end. */
  BAD_OFFSET: 3,
  /** Too many connections: try again later. */
  BUSY: 4,
} as const;

/** One of the `BlobStatus` codes. */
export type BlobStatusCode = (typeof BlobStatus)[keyof typeof BlobStatus];

/** A request for a blob, from `offset` to its end. */
export interface BlobRequest {
  /** BLAKE3 digest of the whole blob (32 bytes). */
  digest: Uint8Array;
  /** First byte wanted; 0 for the whole blob. */
  offset: number;
}

/** A response header. */
export interface BlobResponseHeader {
  status: BlobStatusCode;
  /** Body bytes that follow the header (0 unless `status` is OK). */
  length: number;
}

/**
 * Bytes that do not follow the format. `status` is the status a server answers
 * such a request with (`BAD_REQUEST`, or `BAD_OFFSET` for an offset beyond
 * 2^53 − 1).
 */
export class BlobProtocolError extends ProtocolError {
  readonly status: BlobStatusCode;
  constructor(message: string, status: BlobStatusCode = BlobStatus.BAD_REQUEST) {
    super(message);
    this.status = status;
  }
}

const STATUS_NAMES: Record<number, string> = {
  [BlobStatus.OK]: "OK",
  [BlobStatus.NOT_FOUND]: "NOT_FOUND",
  [BlobStatus.BAD_REQUEST]: "BAD_REQUEST",
  [BlobStatus.BAD_OFFSET]: "BAD_OFFSET",
  [BlobStatus.BUSY]: "BUSY",
};

/** The name of a status code (`"NOT_FOUND"`), or `"status N"` for an unknown one. */
export function statusName(code: number): string {
  return STATUS_NAMES[code] ?? `status ${code}`;
}

/** Whether `code` is one of the `BlobStatus` codes. */
export function isBlobStatus(code: number): code is BlobStatusCode {
  return STATUS_NAMES[code] !== undefined;
}

function checkUint(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${what} must be an integer in [0, 2^53), got ${value}`);
  }
}

/** The 45 bytes of a request. Throws `RangeError` on a digest not 32 bytes long or a bad offset. */
export function encodeRequest(request: BlobRequest): Uint8Array<ArrayBuffer> {
  if (request.digest.length !== DIGEST_LENGTH) {
    throw new RangeError(`digest must be ${DIGEST_LENGTH} bytes, got ${request.digest.length}`);
  }
  checkUint(request.offset, "offset");
  const bytes = new Uint8Array(REQUEST_SIZE);
  bytes.set(MAGIC, 0);
  bytes[4] = VERSION;
  bytes.set(request.digest, 5);
  new DataView(bytes.buffer).setBigUint64(5 + DIGEST_LENGTH, BigInt(request.offset), false);
  return bytes;
}

/**
 * Decodes a request of exactly `REQUEST_SIZE` bytes. Throws `BlobProtocolError`
 * on another length, bad magic, another version, or an offset beyond 2^53 − 1
 * (whose `status` is then `BAD_OFFSET`). The digest is a copy.
 */
export function decodeRequest(bytes: Uint8Array): BlobRequest {
  if (bytes.length !== REQUEST_SIZE) {
    throw new BlobProtocolError(
      `a blob request is ${REQUEST_SIZE} bytes, got ${bytes.length}`,
    );
  }
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw new BlobProtocolError("not a blob request: bad magic");
  }
  if (bytes[4] !== VERSION) {
    throw new BlobProtocolError(
      `unsupported blob protocol version ${bytes[4]} (this side speaks ${VERSION})`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const offset = view.getBigUint64(5 + DIGEST_LENGTH, false);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new BlobProtocolError(`offset ${offset} is out of range`, BlobStatus.BAD_OFFSET);
  }
  return { digest: bytes.slice(5, 5 + DIGEST_LENGTH), offset: Number(offset) };
}

/**
 * The 9 bytes of a response header. Throws `RangeError` on an unknown status,
 * a bad length, or a non-zero length with a status other than OK.
 */
export function encodeResponseHeader(header: BlobResponseHeader): Uint8Array<ArrayBuffer> {
  if (!isBlobStatus(header.status)) throw new RangeError(`unknown status ${header.status}`);
  checkUint(header.length, "length");
  if (header.status !== BlobStatus.OK && header.length !== 0) {
    throw new RangeError(`a ${statusName(header.status)} response has no body`);
  }
  const bytes = new Uint8Array(RESPONSE_HEADER_SIZE);
  bytes[0] = header.status;
  new DataView(bytes.buffer).setBigUint64(1, BigInt(header.length), false);
  return bytes;
}

/**
 * Decodes a response header of exactly `RESPONSE_HEADER_SIZE` bytes. Throws
 * `BlobProtocolError` on another length, an unknown status, a length beyond
 * 2^53 − 1, or a body announced with a status other than OK.
 */
export function decodeResponseHeader(bytes: Uint8Array): BlobResponseHeader {
  if (bytes.length !== RESPONSE_HEADER_SIZE) {
    throw new BlobProtocolError(
      `a blob response header is ${RESPONSE_HEADER_SIZE} bytes, got ${bytes.length}`,
    );
  }
  const status = bytes[0];
  if (!isBlobStatus(status)) throw new BlobProtocolError(`unknown response status ${status}`);
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    .getBigUint64(1, false);
  if (length > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new BlobProtocolError(`response length ${length} is out of range`);
  }
  if (status !== BlobStatus.OK && length !== 0n) {
    throw new BlobProtocolError(`a ${statusName(status)} response announces ${length} bytes`);
  }
  return { status, length: Number(length) };
}
