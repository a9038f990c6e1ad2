/**
 * Ed25519 keys of releases, through WebCrypto (no hand-written crypto): the
 * offline root key that signs delegations, and the release keys a delegation
 * names. Key files are small JSON documents (docs/spec/release-v1.md, "Key
 * files"): `NAME.pub` anyone may read; `NAME.key` holds the private key, is
 * written with mode 0600, never overwritten, and refused when group or others
 * may read it.
 *
 * A key's id is the lowercase hex BLAKE3 of its 32 raw public-key bytes.
 *
 * @module
 */

import { blake3, toHex } from "../kernel/blake3.ts";
import { InvalidArgumentError, IoError, ioError } from "../kernel/errors.ts";

/** What a key is for. */
export type KeyRole = "root" | "release" | "device" | "controlplane";

/** Every key role, as key files name them. */
export const KEY_ROLES: readonly KeyRole[] = ["root", "release", "device", "controlplane"];

/** The public half of a key, as files and documents carry it. */
export interface PublicKeyInfo {
  readonly role: KeyRole;
  /** Hex BLAKE3 of the raw public key. */
  readonly keyId: string;
  /** The 32 raw public-key bytes. */
  readonly publicKey: Uint8Array;
}

/** A private key ready to sign, with its public half. */
export interface SigningKey extends PublicKeyInfo {
  readonly privateKey: CryptoKey;
}

/** Type tags of the key files. */
export const PUBLIC_KEY_TYPE = "poolboy.public-key";
export const PRIVATE_KEY_TYPE = "poolboy.private-key";
/** Largest key file read (they are a few hundred bytes). */
export const MAX_KEY_FILE = 4096;

const ED25519 = { name: "Ed25519" } as const;
const HEX64 = /^[0-9a-f]{64}$/;

/** Hex BLAKE3 of the raw public key: its id in documents and file names. */
export function keyIdOf(publicKey: Uint8Array): string {
  return toHex(blake3(publicKey));
}

/** Base64url without padding (RFC 4648 §5), as every binary field of the documents. */
export function toBase64Url(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Decodes unpadded base64url; undefined for anything else. */
export function fromBase64Url(text: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return undefined;
  const padded = text.replaceAll("-", "+").replaceAll("_", "/") +
    "=".repeat((4 - text.length % 4) % 4);
  let raw: string;
  try {
    raw = atob(padded);
  } catch {
    return undefined;
  }
  const out = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  // Only the one canonical spelling: the unused bits of the last character must be zero.
  return toBase64Url(out) === text ? out : undefined;
}

/** Makes a new key pair for `role`. */
export async function generateKey(role: KeyRole): Promise<{ key: SigningKey; pkcs8: Uint8Array }> {
  const pair = await crypto.subtle.generateKey(ED25519, true, ["sign", "verify"]) as CryptoKeyPair;
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, ED25519, false, ["sign"]);
  return { key: { role, keyId: keyIdOf(publicKey), publicKey, privateKey }, pkcs8 };
}

/** Signs `data`; 64 bytes. */
export async function sign(key: SigningKey, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign(ED25519, key.privateKey, new Uint8Array(data)));
}

/** Whether `signature` is `publicKey`'s over `data` (false for any malformed input). */
export async function verify(
  publicKey: Uint8Array,
  signature: Uint8Array,
  data: Uint8Array,
): Promise<boolean> {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    const key = await crypto.subtle.importKey("raw", new Uint8Array(publicKey), ED25519, false, [
      "verify",
    ]);
    return await crypto.subtle.verify(
      ED25519,
      key,
      new Uint8Array(signature),
      new Uint8Array(data),
    );
  } catch {
    return false;
  }
}

/** The JSON text of a public key file. */
export function publicKeyFileText(key: PublicKeyInfo): string {
  return JSON.stringify(
    {
      type: PUBLIC_KEY_TYPE,
      role: key.role,
      algorithm: "ed25519",
      keyId: key.keyId,
      publicKey: toBase64Url(key.publicKey),
    },
    null,
    2,
  ) + "\n";
}

/** The JSON text of a private key file. */
export function privateKeyFileText(key: PublicKeyInfo, pkcs8: Uint8Array): string {
  return JSON.stringify(
    {
      type: PRIVATE_KEY_TYPE,
      role: key.role,
      algorithm: "ed25519",
      keyId: key.keyId,
      publicKey: toBase64Url(key.publicKey),
      privateKey: toBase64Url(pkcs8),
    },
    null,
    2,
  ) + "\n";
}

/**
 * Writes `DIR/ROLE.key` (mode 0600) and `DIR/ROLE.pub` for a new key; refuses
 * to replace either (a lost root key cannot be made again).
 */
export async function writeKeyPair(
  dir: string,
  role: KeyRole,
): Promise<{ key: PublicKeyInfo; privatePath: string; publicPath: string }> {
  const { key, pkcs8 } = await generateKey(role);
  const privatePath = `${dir}/${role}.key`;
  const publicPath = `${dir}/${role}.pub`;
  for (const path of [privatePath, publicPath]) {
    if (await exists(path)) {
      throw new IoError(
        `${path} already exists: keys are never overwritten (move it away, or choose another -o)`,
      );
    }
  }
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(privatePath, privateKeyFileText(key, pkcs8), {
      createNew: true,
      mode: 0o600,
    });
    await Deno.chmod(privatePath, 0o600);
    await Deno.writeTextFile(publicPath, publicKeyFileText(key), { createNew: true, mode: 0o644 });
  } catch (err) {
    throw ioError("write key files in", dir, err);
  }
  return { key, privatePath, publicPath };
}

/** Reads a public key file (or the public half of a private key file). */
export async function readPublicKey(path: string, role?: KeyRole): Promise<PublicKeyInfo> {
  const value = await readKeyJson(path);
  return parseKeyFields(path, value, role);
}

/** Reads a private key file; refused when group or others may read it. */
export async function readSigningKey(path: string, role?: KeyRole): Promise<SigningKey> {
  let mode: number | null;
  try {
    mode = (await Deno.stat(path)).mode;
  } catch (err) {
    throw ioError("read key file", path, err);
  }
  if (mode !== null && (mode & 0o077) !== 0) {
    throw new IoError(
      `${path} may be read by group or others (mode ${
        (mode & 0o777).toString(8).padStart(3, "0")
      }): run chmod 600 ${path}, and if others could read it, make and delegate a new key`,
    );
  }
  const value = await readKeyJson(path);
  const info = parseKeyFields(path, value, role);
  if (value.type !== PRIVATE_KEY_TYPE) {
    throw new InvalidArgumentError(`${path} is not a private key file (it is a ${value.type})`);
  }
  const pkcs8 = typeof value.privateKey === "string" ? fromBase64Url(value.privateKey) : undefined;
  let privateKey: CryptoKey;
  try {
    if (!pkcs8) throw new Error("no privateKey");
    privateKey = await crypto.subtle.importKey("pkcs8", new Uint8Array(pkcs8), ED25519, true, [
      "sign",
    ]);
    // The private key must be the public key's other half.
    const jwk = await crypto.subtle.exportKey("jwk", privateKey);
    if (jwk.x !== toBase64Url(info.publicKey)) throw new Error("halves differ");
    privateKey = await crypto.subtle.importKey("pkcs8", new Uint8Array(pkcs8), ED25519, false, [
      "sign",
    ]);
  } catch {
    throw new InvalidArgumentError(
      `${path}: the private key is damaged or does not match its public key`,
    );
  }
  return { ...info, privateKey };
}

async function readKeyJson(path: string): Promise<Record<string, unknown>> {
  let bytes: Uint8Array;
  try {
    const file = await Deno.open(path);
    try {
      const info = await file.stat();
      if (info.size > MAX_KEY_FILE) {
        throw new InvalidArgumentError(`${path} is not a poolboy key file (over 4 KiB)`);
      }
      bytes = new Uint8Array(info.size);
      let done = 0;
      while (done < bytes.length) {
        const n = await file.read(bytes.subarray(done));
        if (n === null) break;
        done += n;
      }
      bytes = bytes.subarray(0, done);
    } finally {
      file.close();
    }
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw err;
    throw ioError("read key file", path, err);
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new InvalidArgumentError(`${path} is not a poolboy key file (not JSON)`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(`${path} is not a poolboy key file`);
  }
  return value as Record<string, unknown>;
}

function parseKeyFields(
  path: string,
  value: Record<string, unknown>,
  role: KeyRole | undefined,
): PublicKeyInfo {
  if (value.type !== PUBLIC_KEY_TYPE && value.type !== PRIVATE_KEY_TYPE) {
    throw new InvalidArgumentError(`${path} is not a poolboy key file`);
  }
  if (value.algorithm !== "ed25519") {
    throw new InvalidArgumentError(`${path}: algorithm ${String(value.algorithm)} (want ed25519)`);
  }
  if (!(KEY_ROLES as readonly unknown[]).includes(value.role)) {
    throw new InvalidArgumentError(`${path}: unknown key role ${JSON.stringify(value.role)}`);
  }
  if (role !== undefined && value.role !== role) {
    throw new InvalidArgumentError(`${path} is a ${value.role} key; a ${role} key is needed here`);
  }
  const publicKey = typeof value.publicKey === "string"
    ? fromBase64Url(value.publicKey)
    : undefined;
  if (!publicKey || publicKey.length !== 32) {
    throw new InvalidArgumentError(`${path}: publicKey is not 32 bytes of base64url`);
  }
  const keyId = keyIdOf(publicKey);
  if (typeof value.keyId !== "string" || !HEX64.test(value.keyId) || value.keyId !== keyId) {
    throw new InvalidArgumentError(`${path}: keyId does not match the public key`);
  }
  return { role: value.role as KeyRole, keyId, publicKey };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw ioError("look at", path, err);
  }
}
