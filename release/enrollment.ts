/**
 * Device enrolment (issue 14): what the agent and the control plane exchange
 * on `POST /v1/enroll`, the enrolment token's form, the MAC by which the agent
 * knows that the control-plane key it is handed comes from the control plane
 * that issued its token, and the key pairs each side keeps in its data
 * directory (`device.key`/`.pub`, `controlplane.key`/`.pub`, the key-file
 * format of keys.ts).
 *
 * @module
 */

import { blake3, toHex } from "../kernel/blake3.ts";
import { IoError } from "../kernel/errors.ts";
import { canonicalBytes } from "./canonical_json.ts";
import {
  fromBase64Url,
  type KeyRole,
  readSigningKey,
  type SigningKey,
  toBase64Url,
  writeKeyPair,
} from "./keys.ts";

/** Prefix of every enrolment token. */
export const ENROLLMENT_TOKEN_PREFIX = "pbe_";
/** An enrolment token: the prefix and 32 random bytes in base64url (43 characters). */
export const ENROLLMENT_TOKEN_PATTERN = /^pbe_[A-Za-z0-9_-]{43}$/;
/** Largest `POST /v1/enroll` body. */
export const MAX_ENROLL_BODY = 4096;

/** `POST /v1/enroll`'s body: `token` absent asks to be accepted by an admin (pending). */
export interface EnrollRequest {
  readonly nodeId: string;
  readonly region: string;
  /** The device's raw Ed25519 public key, base64url. */
  readonly publicKey: string;
  readonly token?: string;
}

/**
 * `POST /v1/enroll`'s answer once the device is enrolled (200). `mac` is null
 * when it was accepted by an admin (no token: the agent trusts the key on first use).
 */
export interface EnrollAnswer {
  readonly nodeId: string;
  /** The control plane's raw Ed25519 public key, base64url. */
  readonly controlPlaneKey: string;
  readonly mac: string | null;
}

/** `POST /v1/enroll`'s answer while an admin has not accepted the device (202). */
export interface EnrollPending {
  readonly pending: true;
}

/** Makes a new enrolment token (shown once; the control plane keeps its hash). */
export function newEnrollmentToken(): string {
  return ENROLLMENT_TOKEN_PREFIX + toBase64Url(crypto.getRandomValues(new Uint8Array(32)));
}

/** The hex BLAKE3 of a token: what the control plane stores. */
export function enrollmentTokenHash(token: string): string {
  return toHex(blake3(new TextEncoder().encode(token)));
}

/**
 * base64url(HMAC-SHA256(key = the token's UTF-8 bytes, data = canonical JSON
 * of `{ nodeId, controlPlaneKey, devicePublicKey }`)).
 */
export async function enrollmentMac(
  token: string,
  fields: { nodeId: string; controlPlaneKey: string; devicePublicKey: string },
): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(token),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const data = canonicalBytes({
    nodeId: fields.nodeId,
    controlPlaneKey: fields.controlPlaneKey,
    devicePublicKey: fields.devicePublicKey,
  });
  return toBase64Url(new Uint8Array(await crypto.subtle.sign("HMAC", key, new Uint8Array(data))));
}

/** A raw Ed25519 public key from base64url; undefined unless 32 bytes. */
export function publicKeyOf(text: unknown): Uint8Array | undefined {
  if (typeof text !== "string") return undefined;
  const bytes = fromBase64Url(text);
  return bytes?.length === 32 ? bytes : undefined;
}

/**
 * `DIR/ROLE.key`, made (0600, with `DIR/ROLE.pub`) at first start; read as
 * it is afterwards (a key file with loose permissions is refused).
 */
export async function loadOrCreateKey(
  dir: string,
  role: Extract<KeyRole, "device" | "controlplane">,
): Promise<SigningKey> {
  const path = `${dir}/${role}.key`;
  try {
    await Deno.lstat(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      throw new IoError(`cannot read ${path}: ${err instanceof Error ? err.message : err}`);
    }
    await writeKeyPair(dir, role);
  }
  return await readSigningKey(path, role);
}
