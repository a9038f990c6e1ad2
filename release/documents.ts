/**
 * The two signed documents of a release (docs/spec/release-v1.md): the
 * **delegation**, signed by the offline root key, naming the release keys
 * allowed to sign; and the **release manifest**, signed by one of those keys,
 * naming what a device may install: model, version, target BLAKE3 and size, a
 * per-model counter that only grows, an expiry and optionally a device class.
 *
 * Both are JSON envelopes `{ "signed": {...}, "signatures": [...] }`; each
 * signature covers the canonical bytes (canonical_json.ts) of `signed`, whose
 * `type` field keeps a signature of one kind from passing as the other.
 * `parse…` functions check structure only (every field, every bound) and
 * throw `MalformedDocumentError`; whether a document is trusted is decided by
 * trust_policy.ts after `verifySignatures` says who signed it.
 *
 * @module
 */

import { PoolboyError } from "../kernel/errors.ts";
import { isName, NAME_RULE } from "../kernel/names.ts";
import { canonicalBytes } from "./canonical_json.ts";
import { fromBase64Url, keyIdOf, sign, type SigningKey, toBase64Url, verify } from "./keys.ts";

/** `signed.type` of a delegation. */
export const DELEGATION_TYPE = "poolboy.delegation";
/** `signed.type` of a release manifest. */
export const RELEASE_TYPE = "poolboy.release";
/** The version of this specification, `signed.spec`. */
export const SPEC_VERSION = 1;
/** Largest document accepted, in bytes (from a file, the API or a blob). */
export const MAX_DOCUMENT_BYTES = 64 * 1024;
/** Most signatures on one document. */
export const MAX_SIGNATURES = 8;
/** Most release keys one delegation names. */
export const MAX_RELEASE_KEYS = 32;
/** Largest counter or delegation version (a safe integer). */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

const HEX64 = /^[0-9a-f]{64}$/;
/** `YYYY-MM-DDTHH:MM:SSZ`, UTC, whole seconds. */
const TIME = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$/;

/** A document that does not follow the specification: refused before any key is tried. */
export class MalformedDocumentError extends PoolboyError {
  constructor(message: string) {
    super(message, 4, undefined, 400);
  }
}

/** One signature: who (key id) and the 64 signature bytes. */
export interface Signature {
  readonly keyId: string;
  readonly signature: Uint8Array;
}

/** A release key named by a delegation. */
export interface DelegatedKey {
  readonly keyId: string;
  readonly publicKey: Uint8Array;
}

/** What a delegation's root key signs. */
export interface Delegation {
  readonly type: typeof DELEGATION_TYPE;
  readonly spec: typeof SPEC_VERSION;
  /** Grows with every new delegation; a device never goes back to a lower one. */
  readonly version: number;
  /** Expiry, ms since the epoch (written as `YYYY-MM-DDTHH:MM:SSZ`). */
  readonly expires: number;
  /** Key id of the root key that signs it. */
  readonly rootKeyId: string;
  readonly releaseKeys: readonly DelegatedKey[];
}

/** What a release key signs. */
export interface Release {
  readonly type: typeof RELEASE_TYPE;
  readonly spec: typeof SPEC_VERSION;
  readonly model: string;
  readonly version: string;
  /** The target file's BLAKE3 (hex) and size. */
  readonly target: { readonly blake3: string; readonly size: number };
  /** Grows with every release of the model; a device never installs a lower one. */
  readonly counter: number;
  /** Expiry, ms since the epoch. */
  readonly expires: number;
  /** Only devices of this class may install it; null: every device. */
  readonly deviceClass: string | null;
}

/** A parsed document: what was signed, the exact bytes signed, and the signatures. */
export interface SignedDocument<T> {
  readonly signed: T;
  readonly signedBytes: Uint8Array;
  readonly signatures: readonly Signature[];
}

/** `YYYY-MM-DDTHH:MM:SSZ` of a time (ms, rounded down to the second). */
export function formatTime(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/** Ms since the epoch of `YYYY-MM-DDTHH:MM:SSZ`; undefined when not exactly that. */
export function parseTime(text: string): number | undefined {
  if (!TIME.test(text)) return undefined;
  const ms = Date.parse(text);
  return Number.isFinite(ms) && formatTime(ms) === text ? ms : undefined;
}

/** The JSON value of a delegation's `signed` (what the canonical bytes are made of). */
function delegationJson(d: Delegation) {
  return {
    type: d.type,
    spec: d.spec,
    version: d.version,
    expires: formatTime(d.expires),
    rootKeyId: d.rootKeyId,
    releaseKeys: d.releaseKeys.map((k) => ({
      keyId: k.keyId,
      publicKey: toBase64Url(k.publicKey),
    })),
  };
}

/** The JSON value of a release's `signed`. */
function releaseJson(r: Release) {
  return {
    type: r.type,
    spec: r.spec,
    model: r.model,
    version: r.version,
    target: { blake3: r.target.blake3, size: r.target.size },
    counter: r.counter,
    expires: formatTime(r.expires),
    deviceClass: r.deviceClass,
  };
}

/** Signs a delegation with the root key: the document's JSON text. */
export async function signDelegation(d: Delegation, root: SigningKey): Promise<string> {
  return await envelope(delegationJson(d), [root]);
}

/** Signs a release manifest with a release key: the document's JSON text. */
export async function signRelease(r: Release, key: SigningKey): Promise<string> {
  return await envelope(releaseJson(r), [key]);
}

async function envelope(signed: Record<string, unknown>, keys: SigningKey[]): Promise<string> {
  const bytes = canonicalBytes(signed);
  const signatures = [];
  for (const key of keys) {
    signatures.push({ keyId: key.keyId, signature: toBase64Url(await sign(key, bytes)) });
  }
  return JSON.stringify({ signed, signatures }, null, 2) + "\n";
}

/** Parses a delegation's bytes (structure and bounds only). */
export function parseDelegation(bytes: Uint8Array): SignedDocument<Delegation> {
  const { signed, signatures } = parseEnvelope(bytes, "delegation");
  const s = fields(signed, "delegation", [
    "type",
    "spec",
    "version",
    "expires",
    "rootKeyId",
    "releaseKeys",
  ]);
  if (s.type !== DELEGATION_TYPE) {
    throw new MalformedDocumentError(`not a delegation (type ${JSON.stringify(s.type)})`);
  }
  specOf(s.spec, "delegation");
  const keys = s.releaseKeys;
  if (!Array.isArray(keys) || keys.length > MAX_RELEASE_KEYS) {
    throw new MalformedDocumentError(
      `delegation: releaseKeys must be a list of at most ${MAX_RELEASE_KEYS} keys`,
    );
  }
  const releaseKeys = keys.map((k) => {
    const f = fields(k, "delegation release key", ["keyId", "publicKey"]);
    const publicKey = typeof f.publicKey === "string" ? fromBase64Url(f.publicKey) : undefined;
    if (!publicKey || publicKey.length !== 32) {
      throw new MalformedDocumentError("delegation: a release key is not 32 bytes of base64url");
    }
    const keyId = hex64(f.keyId, "delegation: keyId");
    if (keyId !== keyIdOf(publicKey)) {
      throw new MalformedDocumentError(
        `delegation: keyId ${keyId.slice(0, 16)} is not the BLAKE3 of its publicKey`,
      );
    }
    return { keyId, publicKey };
  });
  const signedValue: Delegation = {
    type: DELEGATION_TYPE,
    spec: SPEC_VERSION,
    version: counterOf(s.version, "delegation: version"),
    expires: timeOf(s.expires, "delegation: expires"),
    rootKeyId: hex64(s.rootKeyId, "delegation: rootKeyId"),
    releaseKeys,
  };
  return { signed: signedValue, signedBytes: canonicalBytes(signed), signatures };
}

/** Parses a release manifest's bytes (structure and bounds only). */
export function parseRelease(bytes: Uint8Array): SignedDocument<Release> {
  const { signed, signatures } = parseEnvelope(bytes, "release manifest");
  const s = fields(signed, "release manifest", [
    "type",
    "spec",
    "model",
    "version",
    "target",
    "counter",
    "expires",
    "deviceClass",
  ]);
  if (s.type !== RELEASE_TYPE) {
    throw new MalformedDocumentError(`not a release manifest (type ${JSON.stringify(s.type)})`);
  }
  specOf(s.spec, "release manifest");
  const target = fields(s.target, "release manifest target", ["blake3", "size"]);
  if (
    !Number.isSafeInteger(target.size) || (target.size as number) < 0 || Object.is(target.size, -0)
  ) {
    throw new MalformedDocumentError("release manifest: target.size must be a whole number");
  }
  const signedValue: Release = {
    type: RELEASE_TYPE,
    spec: SPEC_VERSION,
    model: name(s.model, "model"),
    version: name(s.version, "version"),
    target: {
      blake3: hex64(target.blake3, "release manifest: target.blake3"),
      size: target.size as number,
    },
    counter: counterOf(s.counter, "release manifest: counter"),
    expires: timeOf(s.expires, "release manifest: expires"),
    deviceClass: s.deviceClass === null ? null : name(s.deviceClass, "deviceClass"),
  };
  return { signed: signedValue, signedBytes: canonicalBytes(signed), signatures };
}

/**
 * The key ids among `keys` whose signature on `doc` verifies (each key counted
 * once). A signature by a key not in `keys` is ignored, not an error.
 */
export async function verifiedSigners<T>(
  doc: SignedDocument<T>,
  keys: readonly DelegatedKey[],
): Promise<Set<string>> {
  const out = new Set<string>();
  for (const sig of doc.signatures) {
    const key = keys.find((k) => k.keyId === sig.keyId);
    if (!key || out.has(key.keyId)) continue;
    if (await verify(key.publicKey, sig.signature, doc.signedBytes)) out.add(key.keyId);
  }
  return out;
}

function parseEnvelope(
  bytes: Uint8Array,
  what: string,
): { signed: Record<string, unknown>; signatures: Signature[] } {
  if (bytes.length > MAX_DOCUMENT_BYTES) {
    throw new MalformedDocumentError(`${what} over ${MAX_DOCUMENT_BYTES} bytes`);
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new MalformedDocumentError(`${what} is not UTF-8 JSON`);
  }
  const env = fields(value, what, ["signed", "signatures"]);
  if (!Array.isArray(env.signatures) || env.signatures.length > MAX_SIGNATURES) {
    throw new MalformedDocumentError(
      `${what}: signatures must be a list of at most ${MAX_SIGNATURES}`,
    );
  }
  const signatures = env.signatures.map((sig) => {
    const f = fields(sig, `${what} signature`, ["keyId", "signature"]);
    const signature = typeof f.signature === "string" ? fromBase64Url(f.signature) : undefined;
    if (!signature || signature.length !== 64) {
      throw new MalformedDocumentError(`${what}: a signature is not 64 bytes of base64url`);
    }
    return { keyId: hex64(f.keyId, `${what}: signature keyId`), signature };
  });
  if (typeof env.signed !== "object" || env.signed === null || Array.isArray(env.signed)) {
    throw new MalformedDocumentError(`${what}: signed must be an object`);
  }
  return { signed: env.signed as Record<string, unknown>, signatures };
}

/** The object's fields, exactly `names` (no more, no fewer). */
function fields(value: unknown, what: string, names: string[]): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new MalformedDocumentError(`${what} must be a JSON object`);
  }
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  for (const key of keys) {
    if (!names.includes(key)) {
      throw new MalformedDocumentError(`${what}: unknown field ${JSON.stringify(key)}`);
    }
  }
  for (const key of names) {
    if (!(key in record)) throw new MalformedDocumentError(`${what}: missing field "${key}"`);
  }
  return record;
}

function specOf(value: unknown, what: string): void {
  if (value !== SPEC_VERSION) {
    throw new MalformedDocumentError(
      `${what} of spec ${JSON.stringify(value)}; this poolboy reads spec ${SPEC_VERSION}`,
    );
  }
}

function hex64(value: unknown, what: string): string {
  if (typeof value !== "string" || !HEX64.test(value)) {
    throw new MalformedDocumentError(`${what} must be 64 lowercase hex digits`);
  }
  return value;
}

function counterOf(value: unknown, what: string): number {
  if (!Number.isSafeInteger(value) || (value as number) < 1) {
    throw new MalformedDocumentError(`${what} must be a whole number from 1 to 2^53-1`);
  }
  return value as number;
}

function timeOf(value: unknown, what: string): number {
  const ms = typeof value === "string" ? parseTime(value) : undefined;
  if (ms === undefined) throw new MalformedDocumentError(`${what} must be YYYY-MM-DDTHH:MM:SSZ`);
  return ms;
}

function name(value: unknown, what: string): string {
  if (!isName(value)) {
    throw new MalformedDocumentError(`release manifest: ${what} must be ${NAME_RULE}`);
  }
  return value;
}
