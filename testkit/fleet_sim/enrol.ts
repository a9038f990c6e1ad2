/**
 * Enrolment of one simulated device over the control plane's real HTTP API
 * (`POST /v1/enroll` with a many-use token), as agent/enrollment.ts does it
 * but without files: the device's Ed25519 key lives in memory, and the
 * answer's MAC is checked before the control plane's key is pinned. Refused
 * answers and malformed ones are errors; a busy API (connection refused or
 * reset, 429, 5xx) is retried with back-off until a deadline.
 *
 * @module
 */

import { IoError, VerificationError } from "../../kernel/errors.ts";
import { type EnrollAnswer, enrollmentMac, publicKeyOf } from "../../release/enrollment.ts";
import { generateKey, type SigningKey, toBase64Url } from "../../release/keys.ts";
import { backoff, sleep } from "./limiter.ts";

/** What a device needs to enrol. */
export interface EnrolRequest {
  readonly nodeId: string;
  readonly region: string;
  /** The control plane's API, `http://host:port`. */
  readonly url: string;
  readonly token: string;
  /** Give up after this long (ms). */
  readonly deadlineMs: number;
  readonly signal?: AbortSignal;
}

/** An enrolled device: its key and the control plane's pinned key. */
export interface Enrolled {
  readonly key: SigningKey;
  /** The control plane's raw Ed25519 public key. */
  readonly controlPlaneKey: Uint8Array;
  /** HTTP attempts it took. */
  readonly attempts: number;
}

/** A new device key (in memory only). */
export async function newDeviceKey(): Promise<SigningKey> {
  return (await generateKey("device")).key;
}

/** Enrols `key` as `request.nodeId`; retries while the API is busy. */
export async function enrol(request: EnrolRequest, key: SigningKey): Promise<Enrolled> {
  const devicePublicKey = toBase64Url(key.publicKey);
  const body = JSON.stringify({
    nodeId: request.nodeId,
    region: request.region,
    publicKey: devicePublicKey,
    token: request.token,
  });
  const deadline = Date.now() + request.deadlineMs;
  let lastError = "";
  for (let attempt = 1; Date.now() < deadline; attempt++) {
    request.signal?.throwIfAborted();
    let status: number;
    let text: string;
    try {
      const r = await fetch(`${request.url}/v1/enroll`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
        signal: AbortSignal.timeout(Math.max(1, Math.min(30_000, deadline - Date.now()))),
      });
      status = r.status;
      text = await r.text();
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
      await sleep(backoff(attempt, 100, 2000), request.signal);
      continue;
    }
    if (status === 429 || status >= 500) {
      lastError = `HTTP ${status}`;
      await sleep(backoff(attempt, 100, 2000), request.signal);
      continue;
    }
    if (status !== 200) {
      throw new VerificationError(
        `enrolment of ${request.nodeId} refused (HTTP ${status}): ${text.slice(0, 200)}`,
      );
    }
    let answer: EnrollAnswer;
    try {
      answer = JSON.parse(text) as EnrollAnswer;
    } catch {
      throw new VerificationError(`enrolment answer for ${request.nodeId} is not JSON`);
    }
    const controlPlaneKey = publicKeyOf(answer.controlPlaneKey);
    if (answer.nodeId !== request.nodeId || controlPlaneKey === undefined) {
      throw new VerificationError(`enrolment answer for ${request.nodeId} is malformed`);
    }
    const expected = await enrollmentMac(request.token, {
      nodeId: request.nodeId,
      controlPlaneKey: answer.controlPlaneKey,
      devicePublicKey,
    });
    if (answer.mac !== expected) {
      throw new VerificationError(`enrolment answer for ${request.nodeId}: MAC mismatch`);
    }
    return { key, controlPlaneKey, attempts: attempt };
  }
  throw new IoError(`enrolment of ${request.nodeId} timed out: ${lastError}`);
}
