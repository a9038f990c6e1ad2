/**
 * Device enrolment on the control plane's side (issue 14): enrolment tokens
 * (only their hashes stored, with uses left and an expiry), the enrolled
 * devices' public keys (stored; loaded at start), and the pending requests of
 * devices that came without a token (in memory only: at most
 * `MAX_PENDING`, the oldest dropped, each forgotten after `PENDING_TTL_MS`;
 * the first request under an id is kept, not replaced by a later one)
 * until an admin accepts one, naming its key id. Only an enrolled device takes part in anything.
 *
 * @module
 */

import {
  ConflictError,
  ForbiddenError,
  InvalidArgumentError,
  NotFoundError,
  UnauthorizedError,
} from "../kernel/errors.ts";
import { isName, NAME_RULE } from "../kernel/names.ts";
import {
  type EnrollAnswer,
  ENROLLMENT_TOKEN_PATTERN,
  enrollmentMac,
  enrollmentTokenHash,
  newEnrollmentToken,
  publicKeyOf,
} from "../release/enrollment.ts";
import { keyIdOf, type SigningKey, toBase64Url } from "../release/keys.ts";
import type { DeviceKeyRecord, StateStore } from "./state_store.ts";

/** Most pending (token-less) enrolment requests kept; the oldest goes first. */
export const MAX_PENDING = 1000;
/** A pending request is forgotten after this long. */
export const PENDING_TTL_MS = 24 * 3600 * 1000;
/** Most enrolments one token may allow. */
export const MAX_TOKEN_USES = 100_000;

/** A device waiting for an admin's `device accept`. */
export interface PendingDevice {
  readonly nodeId: string;
  readonly region: string;
  readonly publicKey: string;
  /** `keyIdOf` its public key (hex BLAKE3): what `device list` shows and `accept` must name. */
  readonly keyId: string;
  readonly requested: number;
}

/** Fewest leading hex digits of a pending device's key id that `accept` must be given. */
export const MIN_ACCEPT_KEY_ID = 16;
const KEY_ID_PREFIX = /^[0-9a-f]{16,64}$/;

/** What `enroll` answers: enrolled (200), or pending an admin's acceptance (202). */
export type EnrollOutcome =
  | { readonly kind: "enrolled"; readonly answer: EnrollAnswer }
  | { readonly kind: "pending" };

/** A made enrolment token: shown once. */
export interface NewEnrollmentToken {
  readonly token: string;
  readonly uses: number;
  readonly expires: number;
}

/** The enrolled devices, the tokens and the pending requests. */
export class Enrollment {
  readonly key: SigningKey;
  readonly #store: StateStore;
  readonly #devices = new Map<string, DeviceKeyRecord>();
  readonly #pending = new Map<string, PendingDevice>();

  constructor(store: StateStore, key: SigningKey, devices: readonly DeviceKeyRecord[]) {
    this.#store = store;
    this.key = key;
    for (const d of devices) this.#devices.set(d.nodeId, d);
  }

  /** The control plane's public key, base64url (devices pin it). */
  get publicKey(): string {
    return toBase64Url(this.key.publicKey);
  }

  /** The enrolled device `nodeId`, if it is. */
  device(nodeId: string): DeviceKeyRecord | undefined {
    return this.#devices.get(nodeId);
  }

  /** Every enrolled device. */
  devices(): DeviceKeyRecord[] {
    return [...this.#devices.values()];
  }

  /** The pending requests at `now` (expired ones are forgotten). */
  pending(now: number): PendingDevice[] {
    this.#expire(now);
    return [...this.#pending.values()];
  }

  /** Makes a token allowing `uses` enrolments until `now + expiresMs`. */
  async createToken(uses: number, expiresMs: number, now: number): Promise<NewEnrollmentToken> {
    if (!Number.isSafeInteger(uses) || uses < 1 || uses > MAX_TOKEN_USES) {
      throw new InvalidArgumentError(`uses must be a whole number from 1 to ${MAX_TOKEN_USES}`);
    }
    if (!Number.isSafeInteger(expiresMs) || expiresMs < 1) {
      throw new InvalidArgumentError("expiresMs must be a positive whole number of milliseconds");
    }
    const token = newEnrollmentToken();
    const expires = now + expiresMs;
    await this.#store.putEnrollmentToken({
      hash: enrollmentTokenHash(token),
      usesLeft: uses,
      expires,
      created: now,
    });
    return { token, uses, expires };
  }

  /**
   * A device's request (`POST /v1/enroll`'s body). With a token: checked
   * (401 unknown or malformed, 403 used up or expired), the device enrolled
   * and the token's uses decremented. Without: the device is pending until an
   * admin accepts it. A device enrolled before with the same key gets its
   * answer again (a token's use is not taken again); with another key it is
   * refused (409) until an admin removes the enrolled device.
   */
  async enroll(body: Record<string, unknown>, now: number): Promise<EnrollOutcome> {
    const nodeId = body.nodeId;
    const region = body.region ?? "default";
    if (!isName(nodeId)) {
      throw new InvalidArgumentError(`nodeId must be ${NAME_RULE}`);
    }
    if (!isName(region)) throw new InvalidArgumentError(`region must be ${NAME_RULE}`);
    const key = publicKeyOf(body.publicKey);
    if (!key) throw new InvalidArgumentError("publicKey must be 32 bytes of base64url");
    const publicKey = toBase64Url(key);
    if (body.token === undefined || body.token === null) {
      return this.#withoutToken(nodeId, region, publicKey, keyIdOf(key), now);
    }
    const token = body.token;
    if (typeof token !== "string" || !ENROLLMENT_TOKEN_PATTERN.test(token)) {
      throw new UnauthorizedError("malformed enrolment token");
    }
    const hash = enrollmentTokenHash(token);
    const record = await this.#store.enrollmentToken(hash);
    if (!record) throw new UnauthorizedError("unknown enrolment token");
    if (record.expires <= now) throw new ForbiddenError("the enrolment token has expired");
    this.#refuseTakeover(nodeId, publicKey);
    const again = this.#devices.get(nodeId)?.publicKey === publicKey;
    if (!again) {
      if (record.usesLeft < 1) throw new ForbiddenError("the enrolment token is used up");
      // Taken atomically: of concurrent requests on its last use, only one gets it.
      if (!await this.#store.consumeEnrollmentToken(hash, now)) {
        throw new ForbiddenError("the enrolment token is used up");
      }
      // Checked again, with no await before the key is set in memory: of
      // concurrent requests for one id with different keys, one wins.
      this.#refuseTakeover(nodeId, publicKey);
      await this.#admit({ nodeId, region, publicKey, enrolled: now });
    }
    const mac = await enrollmentMac(token, {
      nodeId,
      controlPlaneKey: this.publicKey,
      devicePublicKey: publicKey,
    });
    return { kind: "enrolled", answer: { nodeId, controlPlaneKey: this.publicKey, mac } };
  }

  /**
   * An admin accepts a pending device, naming the key it saw in `device list`:
   * `keyId` is at least `MIN_ACCEPT_KEY_ID` leading hex digits of the pending
   * key's id. NotFoundError if none is pending under that id,
   * InvalidArgumentError for a malformed `keyId`, ConflictError if it is not
   * the pending key's.
   */
  async accept(nodeId: string, keyId: unknown, now: number): Promise<DeviceKeyRecord> {
    this.#expire(now);
    const pending = this.#pending.get(nodeId);
    if (!pending) throw new NotFoundError(`no pending device "${nodeId}"`);
    const wanted = typeof keyId === "string" ? keyId.toLowerCase() : undefined;
    if (wanted === undefined || !KEY_ID_PREFIX.test(wanted)) {
      throw new InvalidArgumentError(
        `keyId must be ${MIN_ACCEPT_KEY_ID} to 64 hex digits of the pending key's id (poolboy device list shows it)`,
      );
    }
    if (!pending.keyId.startsWith(wanted)) {
      throw new ConflictError(
        `device "${nodeId}" is pending with key ${
          pending.keyId.slice(0, MIN_ACCEPT_KEY_ID)
        }, not ${wanted}: check the device's key before accepting it`,
      );
    }
    const record = {
      nodeId,
      region: pending.region,
      publicKey: pending.publicKey,
      enrolled: now,
    };
    await this.#admit(record);
    // Its next request (it retries) is answered with the control plane's key.
    this.#pending.delete(nodeId);
    return record;
  }

  /** Forgets a device's key and any pending request; whether there was one. */
  async remove(nodeId: string): Promise<boolean> {
    const pending = this.#pending.delete(nodeId);
    if (!this.#devices.delete(nodeId)) return pending;
    await this.#store.removeDeviceKey(nodeId);
    return true;
  }

  async #admit(record: DeviceKeyRecord): Promise<void> {
    this.#devices.set(record.nodeId, record);
    try {
      await this.#store.putDeviceKey(record);
    } catch (err) {
      if (this.#devices.get(record.nodeId) === record) this.#devices.delete(record.nodeId);
      throw err;
    }
  }

  /**
   * A ConflictError if `nodeId` is enrolled with a key other than
   * `publicKey`: a token enrols new ids, it does not hand over an enrolled
   * one (an admin removes it first).
   */
  #refuseTakeover(nodeId: string, publicKey: string): void {
    const enrolled = this.#devices.get(nodeId);
    if (enrolled && enrolled.publicKey !== publicKey) {
      throw new ConflictError(
        `device "${nodeId}" is already enrolled with another key: an admin must \`poolboy device remove ${nodeId}\` first`,
      );
    }
  }

  #withoutToken(
    nodeId: string,
    region: string,
    publicKey: string,
    keyId: string,
    now: number,
  ): EnrollOutcome {
    const enrolled = this.#devices.get(nodeId);
    if (enrolled && enrolled.publicKey === publicKey) {
      this.#pending.delete(nodeId);
      return {
        kind: "enrolled",
        answer: { nodeId, controlPlaneKey: this.publicKey, mac: null },
      };
    }
    this.#expire(now);
    // The first request under an id is the one listed until it expires or an
    // admin accepts or removes it: a later one (the same key or another) does
    // not replace it, so what the admin checked is what is accepted.
    if (!this.#pending.has(nodeId)) {
      this.#pending.set(nodeId, { nodeId, region, publicKey, keyId, requested: now });
      while (this.#pending.size > MAX_PENDING) {
        this.#pending.delete(this.#pending.keys().next().value as string);
      }
    }
    return { kind: "pending" };
  }

  #expire(now: number): void {
    for (const [id, p] of this.#pending) {
      if (now - p.requested > PENDING_TTL_MS) this.#pending.delete(id);
    }
  }
}
