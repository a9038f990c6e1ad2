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
 * Version 2 (issue 14: servers serve only authenticated, enrolled devices):
 * the server first sends a 37-byte hello (magic `PBLH`, version 2, a fresh
 * 32-byte nonce); the request is version 1's with version 2, then the asking
 * node id, an optional ticket of the control plane, and an Ed25519 signature
 * by the device over `REQUEST_DOMAIN ‖ nonce ‖ request`; a request not
 * admitted is answered `FORBIDDEN`. Who is admitted: `blob_auth.ts`.
 *
 * Version 3 (issue 15: swarms): version 2's request with a u64 `length` after
 * the offset (0: to the end), signed under its own domain tag, so a client
 * asks for one piece of a blob; a server that holds the blob only in part
 * (it is downloading it, `BlobServer.sharePartial`) answers `NOT_YET` for a
 * range it has not verified every piece of.
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
  /** Version 2: the request is not by an authenticated, enrolled device (or its ticket does not admit it). */
  FORBIDDEN: 5,
  /** Version 3: the server holds the blob only in part and has not verified the whole range yet: ask later, or elsewhere. */
  NOT_YET: 6,
} as const;

/** One of the `BlobStatus` codes. */
export type BlobStatusCode = (typeof BlobStatus)[keyof typeof BlobStatus];

/** A request for a blob, from `offset` to its end (or `length` bytes of it, version 3). */
export interface BlobRequest {
  /** BLAKE3 digest of the whole blob (32 bytes). */
  digest: Uint8Array;
  /** First byte wanted; 0 for the whole blob. */
  offset: number;
  /** Version 3 only: bytes wanted from `offset`; 0 or absent: to the end. */
  length?: number;
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
  [BlobStatus.FORBIDDEN]: "FORBIDDEN",
  [BlobStatus.NOT_YET]: "NOT_YET",
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

// --- Version 2: authenticated requests (issue 14; docs/spec/blob-protocol-v1.md, "Version 2") ---

/** The version of the authenticated protocol. */
export const VERSION_2 = 2;
/** The hello's first four bytes: ASCII `PBLH`. */
export const HELLO_MAGIC: Uint8Array = new Uint8Array([0x50, 0x42, 0x4c, 0x48]);
/** Bytes of the hello's nonce. */
export const NONCE_LENGTH = 32;
/** Byte size of a hello: magic (4) + version (1) + nonce (32). */
export const HELLO_SIZE = 4 + 1 + NONCE_LENGTH;
/** Bytes of an Ed25519 signature. */
export const REQUEST_SIGNATURE_LENGTH = 64;
/** Longest node id in a request, in bytes. */
export const MAX_REQUEST_NODE_ID = 128;
/** Longest ticket in a request, in bytes. */
export const MAX_TICKET = 512;
/** What a version-2 request signature covers first: this tag, then the nonce, then the request's bytes before the signature. */
export const REQUEST_DOMAIN: Uint8Array = new TextEncoder().encode("poolboy blob request v2\0");

/** The version of the ranged protocol (issue 15). */
export const VERSION_3 = 3;
/** Byte size of a version-3 request head: version 2's 45 bytes + length (8). */
export const REQUEST_V3_SIZE = REQUEST_SIZE + 8;
/** What a version-3 request signature covers first. */
export const REQUEST_DOMAIN_V3: Uint8Array = new TextEncoder().encode("poolboy blob request v3\0");

/** The authenticated versions. */
export type AuthenticatedVersion = typeof VERSION_2 | typeof VERSION_3;

/** A version-2 or -3 request: the version-1 fields, who asks, the ticket it presents, and its signature. */
export interface AuthenticatedBlobRequest extends BlobRequest {
  /** 2 or 3 (3 carries `length`). */
  version: AuthenticatedVersion;
  /** Bytes wanted from `offset`; 0: to the end (always 0 in version 2). */
  length: number;
  /** The asking device's node id. */
  nodeId: string;
  /** A control plane's ticket (for an agent's server); null when none. */
  ticket: Uint8Array | null;
  /** Ed25519 by the device's key over `REQUEST_DOMAIN ‖ nonce ‖ signed` (`REQUEST_DOMAIN_V3` in version 3). */
  signature: Uint8Array;
  /** The request's bytes before the signature. */
  signed: Uint8Array;
}

/** The 37 bytes of a hello carrying `nonce`. */
export function encodeHello(nonce: Uint8Array): Uint8Array<ArrayBuffer> {
  if (nonce.length !== NONCE_LENGTH) throw new RangeError(`nonce must be ${NONCE_LENGTH} bytes`);
  const bytes = new Uint8Array(HELLO_SIZE);
  bytes.set(HELLO_MAGIC, 0);
  bytes[4] = VERSION_2;
  bytes.set(nonce, 5);
  return bytes;
}

/** The nonce of a hello of exactly `HELLO_SIZE` bytes; throws `BlobProtocolError` on anything else. */
export function decodeHello(bytes: Uint8Array): Uint8Array {
  if (bytes.length !== HELLO_SIZE) throw new BlobProtocolError(`a hello is ${HELLO_SIZE} bytes`);
  for (let i = 0; i < HELLO_MAGIC.length; i++) {
    if (bytes[i] !== HELLO_MAGIC[i]) throw new BlobProtocolError("not a blob hello: bad magic");
  }
  if (bytes[4] !== VERSION_2) {
    throw new BlobProtocolError(`unsupported blob hello version ${bytes[4]}`);
  }
  return bytes.slice(5);
}

/**
 * The bytes of a version-2 request before its signature: magic, version 2,
 * digest, offset (as version 1), a u8 node-id length and the node id (UTF-8),
 * a u16 ticket length (0: none) and the ticket. Version 3: a u64 `length`
 * (0: to the end) after the offset.
 */
export function encodeRequestBody(
  request: BlobRequest,
  nodeId: string,
  ticket: Uint8Array | null,
  version: AuthenticatedVersion = VERSION_2,
): Uint8Array<ArrayBuffer> {
  const head = encodeRequestHead(request, version);
  const id = new TextEncoder().encode(nodeId);
  if (id.length === 0 || id.length > MAX_REQUEST_NODE_ID) {
    throw new RangeError(`node id must be 1-${MAX_REQUEST_NODE_ID} bytes`);
  }
  const t = ticket ?? new Uint8Array(0);
  if (t.length > MAX_TICKET) throw new RangeError(`ticket over ${MAX_TICKET} bytes`);
  const h = head.length;
  const bytes = new Uint8Array(h + 1 + id.length + 2 + t.length);
  bytes.set(head, 0);
  bytes[h] = id.length;
  bytes.set(id, h + 1);
  new DataView(bytes.buffer).setUint16(h + 1 + id.length, t.length, false);
  bytes.set(t, h + 3 + id.length);
  return bytes;
}

/** The head of an authenticated request: 45 bytes (version 2) or 53 with the length (version 3). */
export function encodeRequestHead(
  request: BlobRequest,
  version: AuthenticatedVersion,
): Uint8Array<ArrayBuffer> {
  const v1 = encodeRequest(request);
  if (version === VERSION_2) {
    if ((request.length ?? 0) !== 0) throw new RangeError("a version-2 request has no length");
    v1[4] = VERSION_2;
    return v1;
  }
  const length = request.length ?? 0;
  checkUint(length, "length");
  const head = new Uint8Array(REQUEST_V3_SIZE);
  head.set(v1, 0);
  head[4] = VERSION_3;
  new DataView(head.buffer).setBigUint64(REQUEST_SIZE, BigInt(length), false);
  return head;
}

/** What a request's signature covers: `REQUEST_DOMAIN ‖ nonce ‖ signed` (`REQUEST_DOMAIN_V3` for version 3). */
export function requestSignatureInput(
  nonce: Uint8Array,
  signed: Uint8Array,
  version: AuthenticatedVersion = VERSION_2,
): Uint8Array<ArrayBuffer> {
  const domain = version === VERSION_3 ? REQUEST_DOMAIN_V3 : REQUEST_DOMAIN;
  const out = new Uint8Array(domain.length + nonce.length + signed.length);
  out.set(domain, 0);
  out.set(nonce, domain.length);
  out.set(signed, domain.length + nonce.length);
  return out;
}

/**
 * A whole version-2 (or, with `version` 3, ranged) request, signed by
 * `privateKey` (Ed25519) for the connection whose hello carried `nonce`.
 */
export async function signRequest(
  request: BlobRequest,
  nodeId: string,
  ticket: Uint8Array | null,
  nonce: Uint8Array,
  privateKey: CryptoKey,
  version: AuthenticatedVersion = VERSION_2,
): Promise<Uint8Array<ArrayBuffer>> {
  const body = encodeRequestBody(request, nodeId, ticket, version);
  const signature = new Uint8Array(
    await crypto.subtle.sign(
      { name: "Ed25519" },
      privateKey,
      requestSignatureInput(nonce, body, version),
    ),
  );
  const bytes = new Uint8Array(body.length + REQUEST_SIGNATURE_LENGTH);
  bytes.set(body, 0);
  bytes.set(signature, body.length);
  return bytes;
}

/**
 * Decodes the parts of a version-2 or -3 request as the server reads them:
 * `head` (the first `REQUEST_SIZE` bytes of version 2, or `REQUEST_V3_SIZE`
 * of version 3), the node id, the ticket and the signature. Throws
 * `BlobProtocolError` on a bad head, an offset or length beyond 2^53 − 1
 * (status `BAD_OFFSET`) or an empty node id.
 */
export function decodeAuthenticatedRequest(
  head: Uint8Array,
  nodeIdBytes: Uint8Array,
  ticket: Uint8Array,
  signature: Uint8Array,
): AuthenticatedBlobRequest {
  const version = head[4];
  if (
    !(head.length === REQUEST_SIZE && version === VERSION_2) &&
    !(head.length === REQUEST_V3_SIZE && version === VERSION_3)
  ) {
    throw new BlobProtocolError("not a version-2 or version-3 blob request");
  }
  const v1 = head.slice(0, REQUEST_SIZE);
  v1[4] = VERSION;
  const request = decodeRequest(v1);
  let length = 0;
  if (version === VERSION_3) {
    const big = new DataView(head.buffer, head.byteOffset, head.byteLength)
      .getBigUint64(REQUEST_SIZE, false);
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new BlobProtocolError(`length ${big} is out of range`, BlobStatus.BAD_OFFSET);
    }
    length = Number(big);
  }
  let nodeId: string;
  try {
    nodeId = new TextDecoder("utf-8", { fatal: true }).decode(nodeIdBytes);
  } catch {
    throw new BlobProtocolError("node id is not UTF-8");
  }
  if (nodeId.length === 0) throw new BlobProtocolError("empty node id");
  const h = head.length;
  const signed = new Uint8Array(h + 3 + nodeIdBytes.length + ticket.length);
  signed.set(head, 0);
  signed[h] = nodeIdBytes.length;
  signed.set(nodeIdBytes, h + 1);
  new DataView(signed.buffer).setUint16(h + 1 + nodeIdBytes.length, ticket.length, false);
  signed.set(ticket, h + 3 + nodeIdBytes.length);
  return {
    ...request,
    version: version === VERSION_3 ? VERSION_3 : VERSION_2,
    length,
    nodeId,
    ticket: ticket.length === 0 ? null : ticket.slice(),
    signature: signature.slice(),
    signed,
  };
}
