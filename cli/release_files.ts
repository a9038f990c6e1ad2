/**
 * What the release commands (keygen, delegate, publish, rollback) share on the
 * operator's workstation: reading a delegation file (keys.json), expiry
 * options (`90d`, `12h`, `30m` or `YYYY-MM-DDTHH:MM:SSZ`), and the check
 * that a release key is one the delegation names — done before anything is
 * uploaded. The documents themselves are release/documents.ts's.
 *
 * @module
 */

import { ioError, UsageError } from "../kernel/errors.ts";
import {
  type Delegation,
  MalformedDocumentError,
  MAX_DOCUMENT_BYTES,
  parseDelegation,
  parseTime,
  type SignedDocument,
} from "../release/documents.ts";
import type { PublicKeyInfo } from "../release/keys.ts";

/** A delegation file as read: its exact bytes and what they say. */
export interface DelegationFile {
  readonly path: string;
  readonly bytes: Uint8Array;
  readonly document: SignedDocument<Delegation>;
}

/** Reads and parses a delegation file; a usage error naming the file if it is not one. */
export async function readDelegationFile(path: string): Promise<DelegationFile> {
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (info.size > MAX_DOCUMENT_BYTES) {
      throw new UsageError(`${path} is not a delegation (over ${MAX_DOCUMENT_BYTES} bytes)`);
    }
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw ioError("read delegation file", path, err);
  }
  try {
    return { path, bytes, document: parseDelegation(bytes) };
  } catch (err) {
    if (err instanceof MalformedDocumentError) {
      throw new UsageError(`${path} is not a valid delegation: ${err.message}`);
    }
    throw err;
  }
}

/** Refuses a release key the delegation does not name (before anything is signed or sent). */
export function requireDelegated(key: PublicKeyInfo, keyPath: string, file: DelegationFile): void {
  const d = file.document.signed;
  if (!d.releaseKeys.some((k) => k.keyId === key.keyId)) {
    throw new UsageError(
      `${keyPath} (key ${
        key.keyId.slice(0, 16)
      }) is not a release key of ${file.path} (delegation version ${d.version}): devices would refuse what it signs; run poolboy delegate --release ${
        keyPath.replace(/\.key$/, ".pub")
      } ... first`,
    );
  }
}

/**
 * An expiry option: a duration from `now` (`90d`, `12h`, `30m`) or an
 * absolute `YYYY-MM-DDTHH:MM:SSZ`; ms since the epoch, whole seconds.
 */
export function expiryOption(
  name: string,
  value: string | undefined,
  fallbackMs: number,
  now: number,
): number {
  if (value === undefined) return Math.floor((now + fallbackMs) / 1000) * 1000;
  const absolute = parseTime(value);
  if (absolute !== undefined) {
    if (absolute <= now) throw new UsageError(`--${name}: ${value} is in the past`);
    return absolute;
  }
  const m = /^([0-9]{1,6})([dhm])$/.exec(value);
  if (!m || Number(m[1]) < 1) {
    throw new UsageError(
      `--${name}: "${value}" is not an expiry (examples: 90d, 12h, 30m, 2027-01-01T00:00:00Z)`,
    );
  }
  const unit = { d: 86_400_000, h: 3_600_000, m: 60_000 }[m[2] as "d" | "h" | "m"];
  return Math.floor((now + Number(m[1]) * unit) / 1000) * 1000;
}

/** A whole-number option from 1 to 2^53-1 (counters, versions). */
export function counterOption(name: string, value: string): number {
  const n = /^[0-9]{1,16}$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new UsageError(`--${name}: "${value}" is not a whole number from 1 to 2^53-1`);
  }
  return n;
}

/** Days in ms. */
export const DAY_MS = 86_400_000;
