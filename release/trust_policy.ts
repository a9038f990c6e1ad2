/**
 * Whether a device may install an announced release: the decision a device
 * makes before any byte is downloaded and again before it switches
 * (docs/spec/release-v1.md, "What a device checks"). Pure but for WebCrypto's
 * signature checks: every fact — the pinned root key, the documents' bytes,
 * what the announce claims, the device's class, what it has installed, the
 * time — comes in as an argument, and the answer is a typed record.
 *
 * Order of the checks (the first that fails is the reason):
 * 1. both documents parse; 2. the delegation is signed by the pinned root key;
 * 3. its version is not lower than the highest the device has seen;
 * 4. it has not expired; 5. the manifest is signed by a key it names;
 * 6. the manifest has not expired; 7. it is for the announced model;
 * 8. its target (digest, size) and version are the announced ones;
 * 9. its counter is not lower than the highest installed for the model (and
 * equal only for the same target); 10. its device class, if any, is the device's.
 *
 * @module
 */

import {
  type Delegation,
  MalformedDocumentError,
  parseDelegation,
  parseRelease,
  type Release,
  type SignedDocument,
  verifiedSigners,
} from "./documents.ts";
import { formatTime } from "./documents.ts";
import type { PublicKeyInfo } from "./keys.ts";

/** Why a release was refused; `kind` is stable (tests and status use it). */
export type RefusalKind =
  | "unsigned"
  | "malformed"
  | "untrustedDelegation"
  | "staleDelegation"
  | "expiredDelegation"
  | "unknownKey"
  | "expired"
  | "wrongModel"
  | "wrongTarget"
  | "rollback"
  | "wrongDeviceClass";

/**
 * The decision. A refusal carries the delegation when that delegation itself
 * passed (signed by the pinned root, not older than the memory, not expired):
 * a device remembers its version even when the release is refused, so a key
 * that a newer delegation dropped stays revoked on that device.
 */
export type TrustDecision =
  | { readonly ok: true; readonly release: Release; readonly delegation: Delegation }
  | {
    readonly ok: false;
    readonly kind: RefusalKind;
    readonly reason: string;
    readonly delegation?: Delegation;
  };

/** What a device remembers between releases (persisted crash-safely by the agent). */
export interface TrustMemory {
  /** The highest delegation version seen (0: none yet). */
  readonly delegationVersion: number;
  /** Per model: the highest release counter installed, and its target. */
  readonly counters: Readonly<
    Record<string, { readonly counter: number; readonly target: string }>
  >;
}

/** A device that has installed nothing signed yet. */
export const EMPTY_TRUST_MEMORY: TrustMemory = { delegationVersion: 0, counters: {} };

/** What the announce claims (it comes from the network: nothing in it is trusted). */
export interface Announced {
  readonly model: string;
  readonly version: string;
  /** Target BLAKE3, hex. */
  readonly target: string;
  readonly targetSize: number;
}

/** Everything the decision needs. */
export interface TrustFacts {
  readonly root: PublicKeyInfo;
  /** The documents' bytes as fetched; null when the announce named none. */
  readonly delegation: Uint8Array | null;
  readonly release: Uint8Array | null;
  readonly announced: Announced;
  /** This device's class (`agent --device-class`), or null. */
  readonly deviceClass: string | null;
  readonly memory: TrustMemory;
  /** Now, ms since the epoch. */
  readonly now: number;
}

/** Decides whether the announced release may be installed. */
export async function checkRelease(facts: TrustFacts): Promise<TrustDecision> {
  if (facts.release === null || facts.delegation === null) {
    return refuse("unsigned", "unsigned release: the announce carries no signed manifest");
  }
  let delegation: SignedDocument<Delegation>;
  let release: SignedDocument<Release>;
  try {
    delegation = parseDelegation(facts.delegation);
    release = parseRelease(facts.release);
  } catch (err) {
    if (err instanceof MalformedDocumentError) return refuse("malformed", err.message);
    throw err;
  }
  const d = delegation.signed;
  const rootKey = { keyId: facts.root.keyId, publicKey: facts.root.publicKey };
  if (d.rootKeyId !== rootKey.keyId || !(await verifiedSigners(delegation, [rootKey])).size) {
    return refuse(
      "untrustedDelegation",
      `delegation not signed by the pinned root key ${short(rootKey.keyId)}`,
    );
  }
  if (d.version < facts.memory.delegationVersion) {
    return refuse(
      "staleDelegation",
      `delegation version ${d.version} is older than version ${facts.memory.delegationVersion} already seen`,
    );
  }
  if (d.expires <= facts.now) {
    return refuse(
      "expiredDelegation",
      `delegation version ${d.version} expired at ${formatTime(d.expires)}`,
    );
  }
  const r = release.signed;
  const refuseRelease = (kind: RefusalKind, reason: string) => refuseUnder(d, kind, reason);
  if (release.signatures.length === 0) {
    return refuseRelease("unsigned", "unsigned release: the manifest has no signature");
  }
  if ((await verifiedSigners(release, d.releaseKeys)).size === 0) {
    const ids = release.signatures.map((s) => short(s.keyId)).join(", ");
    return refuseRelease(
      "unknownKey",
      `release not signed by a key of delegation version ${d.version} (signed by ${ids}: unknown, revoked or a bad signature)`,
    );
  }
  if (r.expires <= facts.now) {
    return refuseRelease(
      "expired",
      `release ${r.model} ${r.version} expired at ${formatTime(r.expires)}`,
    );
  }
  const a = facts.announced;
  if (r.model !== a.model) {
    return refuseRelease(
      "wrongModel",
      `the manifest is for model ${r.model}, the announce names ${a.model}`,
    );
  }
  if (r.target.blake3 !== a.target || r.target.size !== a.targetSize || r.version !== a.version) {
    return refuseRelease(
      "wrongTarget",
      `the announced target (${a.version} ${
        short(a.target)
      }, ${a.targetSize} bytes) is not the signed one (${r.version} ${
        short(r.target.blake3)
      }, ${r.target.size} bytes)`,
    );
  }
  const installed = facts.memory.counters[r.model];
  if (
    installed && (r.counter < installed.counter ||
      (r.counter === installed.counter && r.target.blake3 !== installed.target))
  ) {
    return refuseRelease(
      "rollback",
      `release counter ${r.counter} of ${r.model} is not above ${installed.counter}, already installed (a rollback needs a newly signed manifest)`,
    );
  }
  if (r.deviceClass !== null && r.deviceClass !== facts.deviceClass) {
    return refuseRelease(
      "wrongDeviceClass",
      `release for device class ${r.deviceClass}; this device is ${
        facts.deviceClass ?? "of no class"
      }`,
    );
  }
  return { ok: true, release: r, delegation: d };
}

/** The memory after seeing `delegation` pass (its version only grows). */
export function rememberDelegation(memory: TrustMemory, delegation: Delegation): TrustMemory {
  return delegation.version > memory.delegationVersion
    ? { ...memory, delegationVersion: delegation.version }
    : memory;
}

/** The memory after installing `release` under `delegation` (counters only grow). */
export function remember(
  memory: TrustMemory,
  release: Release,
  delegation: Delegation,
): TrustMemory {
  const previous = memory.counters[release.model];
  const counters = previous && previous.counter > release.counter ? memory.counters : {
    ...memory.counters,
    [release.model]: { counter: release.counter, target: release.target.blake3 },
  };
  return { delegationVersion: Math.max(memory.delegationVersion, delegation.version), counters };
}

function refuse(kind: RefusalKind, reason: string): TrustDecision {
  return { ok: false, kind, reason: `refused: ${reason}` };
}

/** A refusal of the release under `delegation`, which itself passed. */
function refuseUnder(delegation: Delegation, kind: RefusalKind, reason: string): TrustDecision {
  return { ok: false, kind, reason: `refused: ${reason}`, delegation };
}

function short(hex: string): string {
  return hex.slice(0, 16);
}
