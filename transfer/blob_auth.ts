/**
 * Who a blob server serves (blob protocol version 2, issue 14): the checks a
 * server runs on an authenticated request, and the control plane's tickets.
 *
 * The control plane knows every enrolled device's key, so its server admits a
 * request signed by the key enrolled under the request's node id
 * (`enrolledDevices`). An agent's server knows no other device's key: the
 * control plane vouches with a ticket (`signTicket`) — its signature over
 * (domain tag, manifest id, blob digest, follower node id, follower public
 * key, expiry) — sent to each follower in ElectionClosed; the agent's server
 * admits a request whose ticket verifies under its pinned control-plane key,
 * names the digest asked, the requesting node and is not expired, and whose
 * signature verifies under the key inside the ticket (`ticketHolders`).
 * Specification: docs/spec/blob-protocol-v1.md, "Version 2".
 *
 * @module
 */

import { DIGEST_LENGTH } from "../kernel/blake3.ts";
import { type AuthenticatedBlobRequest, requestSignatureInput } from "./blob_protocol.ts";

/** Whether a server serves a request; `nonce` is the one its hello sent on this connection. */
export type BlobAuthorizer = (
  request: AuthenticatedBlobRequest,
  nonce: Uint8Array,
  now: number,
) => Promise<boolean>;

/** What a client signs its version-2 requests with. */
export interface BlobCredentials {
  readonly nodeId: string;
  /** The device's Ed25519 private key. */
  readonly privateKey: CryptoKey;
  /** A control plane's ticket for the blob (needed by agents' servers; ignored by the control plane's). */
  readonly ticket?: Uint8Array | null;
}

/** What a ticket's signature covers first. */
export const TICKET_DOMAIN: Uint8Array = new TextEncoder().encode("poolboy blob ticket v1\0");
/** Version byte of the ticket format. */
export const TICKET_VERSION = 1;
/** How long a ticket the control plane signs stays valid. */
export const TICKET_TTL_MS = 3600_000;

/** A ticket's fields. */
export interface BlobTicket {
  readonly manifestId: string;
  readonly digest: Uint8Array;
  readonly nodeId: string;
  /** The follower's raw Ed25519 public key (32 bytes). */
  readonly publicKey: Uint8Array;
  /** Ms since the epoch after which it admits nothing. */
  readonly expires: number;
}

const encoder = new TextEncoder();

function ticketBody(t: BlobTicket): Uint8Array<ArrayBuffer> {
  const m = encoder.encode(t.manifestId);
  const n = encoder.encode(t.nodeId);
  if (m.length > 255 || n.length > 255) throw new RangeError("ticket name over 255 bytes");
  if (t.digest.length !== DIGEST_LENGTH || t.publicKey.length !== 32) {
    throw new RangeError("ticket digest or key of the wrong length");
  }
  const out = new Uint8Array(1 + 1 + m.length + 32 + 1 + n.length + 32 + 8);
  let at = 0;
  out[at++] = TICKET_VERSION;
  out[at++] = m.length;
  out.set(m, at);
  at += m.length;
  out.set(t.digest, at);
  at += 32;
  out[at++] = n.length;
  out.set(n, at);
  at += n.length;
  out.set(t.publicKey, at);
  at += 32;
  new DataView(out.buffer).setBigUint64(at, BigInt(t.expires), false);
  return out;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** The ticket's bytes: its fields, then the control plane's Ed25519 signature over `TICKET_DOMAIN ‖ fields`. */
export async function signTicket(
  ticket: BlobTicket,
  controlPlaneKey: CryptoKey,
): Promise<Uint8Array> {
  const body = ticketBody(ticket);
  const signature = new Uint8Array(
    await crypto.subtle.sign({ name: "Ed25519" }, controlPlaneKey, concat(TICKET_DOMAIN, body)),
  );
  return concat(body, signature);
}

/** A ticket's fields, or null when its bytes are not a ticket. The signature is not checked. */
export function decodeTicket(bytes: Uint8Array): BlobTicket | null {
  try {
    let at = 0;
    if (bytes[at++] !== TICKET_VERSION) return null;
    const decoder = new TextDecoder("utf-8", { fatal: true });
    const mLen = bytes[at++];
    const manifestId = decoder.decode(bytes.subarray(at, at + mLen));
    at += mLen;
    const digest = bytes.slice(at, at + 32);
    at += 32;
    const nLen = bytes[at++];
    const nodeId = decoder.decode(bytes.subarray(at, at + nLen));
    at += nLen;
    const publicKey = bytes.slice(at, at + 32);
    at += 32;
    if (at + 8 + 64 !== bytes.length) return null;
    const expires = Number(
      new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(at, false),
    );
    if (digest.length !== 32 || publicKey.length !== 32) return null;
    return { manifestId, digest, nodeId, publicKey, expires };
  } catch {
    return null;
  }
}

async function verifyWith(publicKey: Uint8Array, signature: Uint8Array, data: Uint8Array) {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const key = await crypto.subtle.importKey(
      "raw",
      new Uint8Array(publicKey),
      { name: "Ed25519" },
      false,
      ["verify"],
    );
    return await crypto.subtle.verify(
      { name: "Ed25519" },
      key,
      new Uint8Array(signature),
      new Uint8Array(data),
    );
  } catch {
    return false;
  }
}

/** Whether `ticket`'s signature is by `controlPlaneKey` (raw). */
export async function verifyTicket(
  ticket: Uint8Array,
  controlPlaneKey: Uint8Array,
): Promise<boolean> {
  if (ticket.length < 64 + 1) return false;
  const body = ticket.subarray(0, ticket.length - 64);
  return await verifyWith(
    controlPlaneKey,
    ticket.subarray(ticket.length - 64),
    concat(TICKET_DOMAIN, body),
  );
}

/** Whether the request's signature is by `publicKey` for the connection of `nonce`. */
export async function verifyRequest(
  request: AuthenticatedBlobRequest,
  nonce: Uint8Array,
  publicKey: Uint8Array,
): Promise<boolean> {
  return await verifyWith(
    publicKey,
    request.signature,
    requestSignatureInput(nonce, request.signed, request.version),
  );
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The control plane's check: the request is signed by the key enrolled for its node id (`keyOf`: undefined when not enrolled). */
export function enrolledDevices(keyOf: (nodeId: string) => Uint8Array | undefined): BlobAuthorizer {
  return async (request, nonce) => {
    const key = keyOf(request.nodeId);
    if (key === undefined) return false;
    return await verifyRequest(request, nonce, key);
  };
}

/**
 * An agent's check: the request carries a ticket signed by the control plane
 * (`controlPlaneKey()`: its raw key, undefined while the agent has none
 * pinned) for this digest and this node, not expired, and the request is
 * signed by the key inside the ticket.
 */
export function ticketHolders(controlPlaneKey: () => Uint8Array | undefined): BlobAuthorizer {
  return async (request, nonce, now) => {
    const pinned = controlPlaneKey();
    if (pinned === undefined || request.ticket === null) return false;
    const ticket = decodeTicket(request.ticket);
    if (ticket === null) return false;
    if (ticket.nodeId !== request.nodeId) return false;
    if (!equalBytes(ticket.digest, request.digest)) return false;
    if (ticket.expires <= now) return false;
    if (!(await verifyTicket(request.ticket, pinned))) return false;
    return await verifyRequest(request, nonce, ticket.publicKey);
  };
}
