/**
 * The release check of a simulated device: the bytes of the delegation and
 * release manifest an Announce names are fetched by every device (from the
 * control plane's blob server, each digest checked), and the trust policy's
 * decision (release/trust_policy.ts, against an empty trust memory: a
 * simulated device keeps none) is computed once per process for each
 * (delegation, release, announced target) and shared: the signature checks
 * are the same for every device.
 *
 * @module
 */

import { toHex } from "../../kernel/blake3.ts";
import type { Announce } from "../../transfer/control_messages.ts";
import type { PublicKeyInfo } from "../../release/keys.ts";
import {
  checkRelease,
  EMPTY_TRUST_MEMORY,
  type TrustDecision,
} from "../../release/trust_policy.ts";

/** Most decisions kept (releases seen by one process; bounded all the same). */
const MAX_CACHED = 256;

/** Decisions per (delegation, release, announce) in this process. */
export class ReleaseChecks {
  readonly root: PublicKeyInfo;
  readonly #decisions = new Map<string, Promise<TrustDecision>>();

  constructor(root: PublicKeyInfo) {
    this.root = root;
  }

  /**
   * The trust policy's decision on `delegation` and `release` (the bytes the
   * device fetched, their digests checked) for `announce`.
   */
  decide(
    announce: Announce,
    delegation: Uint8Array | null,
    release: Uint8Array | null,
  ): Promise<TrustDecision> {
    const hex = (d: Uint8Array | null) => (d === null ? "-" : toHex(d));
    const key = [
      hex(announce.delegationDigest),
      hex(announce.releaseDigest),
      announce.model,
      announce.version,
      toHex(announce.targetDigest),
      announce.targetSize,
      delegation === null ? 0 : delegation.length,
      release === null ? 0 : release.length,
    ].join(" ");
    let decision = this.#decisions.get(key);
    if (!decision) {
      decision = checkRelease({
        root: this.root,
        delegation,
        release,
        announced: {
          model: announce.model,
          version: announce.version,
          target: toHex(announce.targetDigest),
          targetSize: announce.targetSize,
        },
        deviceClass: null,
        memory: EMPTY_TRUST_MEMORY,
        now: Date.now(),
      });
      if (this.#decisions.size >= MAX_CACHED) {
        this.#decisions.delete(this.#decisions.keys().next().value!);
      }
      this.#decisions.set(key, decision);
    }
    return decision;
  }
}
