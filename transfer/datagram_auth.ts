/**
 * The receiving side of authenticated control messages (protocol 3): a
 * datagram is accepted only from a known sender (a device enrolled with the
 * control plane; the control plane whose key an agent pinned), with a valid
 * Ed25519 signature by that sender's key, a sequence number above every one
 * accepted from it before (a replay is dropped), and a sequence number whose
 * time part (`seq / 1000`, ms) is within `MAX_CLOCK_SKEW_MS` of now (a
 * datagram captured long ago is dropped even when nothing newer came).
 * The signature is checked over the datagram as signed for this receiver
 * (`receiver`: an agent's node id, or `CONTROL_PLANE_RECEIVER`), so a
 * datagram signed for another receiver is dropped as `badSignature`.
 * Everything else is dropped and counted by reason.
 *
 * Imported keys are cached per sender (one WebCrypto import per key, one
 * verification per datagram); state is kept only for senders that are known,
 * so unauthenticated datagrams cost nothing that stays.
 *
 * `accept` checks one datagram. A receiver that verifies many datagrams at
 * once (the control plane) uses `verify` — which changes nothing but the key
 * cache, so verifications may run concurrently — and then `commit`, called in
 * the order the datagrams arrived, which applies the replay rule.
 *
 * @module
 */

import { importVerifyKey, type OpenedMessage, verifyControlMessage } from "./control_messages.ts";

/** How far a sequence number's time part may be from now, either way. */
export const MAX_CLOCK_SKEW_MS = 60_000;

/** Why an authenticated datagram was dropped. */
export type AuthDrop = "unknownSender" | "badSignature" | "replayed" | "stale";

/** Counters of dropped datagrams, by reason. */
export type AuthDropCounters = Record<AuthDrop, number>;

/** A new set of counters at zero. */
export function authDropCounters(): AuthDropCounters {
  return { unknownSender: 0, badSignature: 0, replayed: 0, stale: 0 };
}

/** Checks senders' datagrams; counts what it drops in `drops`. */
export class DatagramAuthenticator {
  readonly drops: AuthDropCounters;
  /** Who this receiver is: the identity senders sign for. */
  readonly receiver: string;
  readonly #keys = new Map<string, { readonly raw: Uint8Array; readonly key: CryptoKey }>();
  readonly #highest = new Map<string, number>();

  constructor(receiver: string, drops: AuthDropCounters = authDropCounters()) {
    this.receiver = receiver;
    this.drops = drops;
  }

  /**
   * Whether to accept `opened` from `sender`, whose public key is `publicKey`
   * (undefined: not a known sender). Counts the reason when it is dropped.
   */
  async accept(
    sender: string,
    publicKey: Uint8Array | undefined,
    opened: OpenedMessage,
    now: number,
  ): Promise<boolean> {
    return this.commit(sender, opened, await this.verify(sender, publicKey, opened, now));
  }

  /**
   * The first half of `accept`: why `opened` is to be dropped as far as its
   * sender, time and signature tell (a sequence number not above the highest
   * accepted so far counts as "replayed"), or null. Counts nothing and
   * records no sequence number: `commit` does.
   */
  async verify(
    sender: string,
    publicKey: Uint8Array | undefined,
    opened: OpenedMessage,
    now: number,
  ): Promise<AuthDrop | null> {
    if (publicKey === undefined) return "unknownSender";
    if (Math.abs(opened.seq / 1000 - now) > MAX_CLOCK_SKEW_MS) return "stale";
    if (opened.seq <= (this.#highest.get(sender) ?? 0)) return "replayed";
    const key = await this.#keyOf(sender, publicKey);
    if (key === undefined || !(await verifyControlMessage(opened, key, this.receiver))) {
      return "badSignature";
    }
    return null;
  }

  /**
   * The second half of `accept`, called in arrival order: `verdict` (from
   * `verify`) is counted if it drops the datagram; otherwise the datagram is
   * accepted if its sequence number is above every one accepted from its
   * sender (another may have been accepted since `verify`), and becomes the
   * highest.
   */
  commit(sender: string, opened: OpenedMessage, verdict: AuthDrop | null): boolean {
    const reason = verdict ?? (opened.seq <= (this.#highest.get(sender) ?? 0) ? "replayed" : null);
    if (reason !== null) {
      this.drops[reason]++;
      return false;
    }
    this.#highest.set(sender, opened.seq);
    return true;
  }

  /** Forgets a sender (it was removed): its key and its highest sequence number. */
  forget(sender: string): void {
    this.#keys.delete(sender);
    this.#highest.delete(sender);
  }

  async #keyOf(sender: string, publicKey: Uint8Array): Promise<CryptoKey | undefined> {
    const cached = this.#keys.get(sender);
    if (cached !== undefined && sameBytes(cached.raw, publicKey)) return cached.key;
    const raw = publicKey.slice();
    try {
      const key = await importVerifyKey(publicKey);
      this.#keys.set(sender, { raw, key });
      // A new key starts its sequence afresh only if the sender re-enrolled: keep the highest.
      return key;
    } catch {
      return undefined;
    }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
