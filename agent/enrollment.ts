/**
 * The agent's side of device enrolment (issue 14): its key pair
 * (DATA/device.key, 0600, and DATA/device.pub, made at first start), the
 * request to the control plane's `POST /v1/enroll` (with an enrolment token,
 * or without one to wait for an admin's `device accept`), the check of the
 * answer's MAC (with a token: only the control plane that issued it can hand
 * over a key to pin), and DATA/enrollment.json, written atomically, which
 * pins the control plane's key from then on.
 *
 * @module
 */

import { AtomicFile } from "../kernel/atomic_file.ts";
import { InvalidArgumentError, IoError, ioError, VerificationError } from "../kernel/errors.ts";
import { writeAll } from "../kernel/file_io.ts";
import { isName } from "../kernel/names.ts";
import {
  type EnrollAnswer,
  ENROLLMENT_TOKEN_PATTERN,
  enrollmentMac,
  type EnrollRequest,
  loadOrCreateKey,
  publicKeyOf,
} from "../release/enrollment.ts";
import { type SigningKey, toBase64Url } from "../release/keys.ts";

/** DATA/enrollment.json: the device is enrolled and pins this control-plane key. */
export interface EnrollmentFile {
  readonly format: 1;
  readonly nodeId: string;
  /** The control plane's raw Ed25519 public key, base64url. */
  readonly controlPlaneKey: string;
  /** The control plane's HTTP API it enrolled with, `host:port`. */
  readonly controlPlane: string;
}

/** The enrolment file's name in the data directory. */
export const ENROLLMENT_FILE = "enrollment.json";

/** The control plane refused to enrol this device (a bad token), or its answer failed the check. */
export class EnrollmentRefusedError extends VerificationError {}

/** The device's key: DATA/device.key, made at first start. */
export function deviceKey(dataDir: string): Promise<SigningKey> {
  return loadOrCreateKey(dataDir, "device");
}

/** DATA/enrollment.json, or undefined before the device is enrolled; a damaged one is an error. */
export async function readEnrollment(dataDir: string): Promise<EnrollmentFile | undefined> {
  const path = `${dataDir}/${ENROLLMENT_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw ioError("read", path, err);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new IoError(`${path} is damaged (not JSON): remove it to enrol again`);
  }
  const v = value as Record<string, unknown>;
  if (
    typeof value !== "object" || value === null || v.format !== 1 || !isName(v.nodeId) ||
    !publicKeyOf(v.controlPlaneKey) || typeof v.controlPlane !== "string"
  ) {
    throw new IoError(`${path} is damaged (not an enrolment file): remove it to enrol again`);
  }
  return {
    format: 1,
    nodeId: v.nodeId,
    controlPlaneKey: v.controlPlaneKey as string,
    controlPlane: v.controlPlane,
  };
}

/** Writes DATA/enrollment.json atomically and durably. */
export async function writeEnrollment(dataDir: string, enrollment: EnrollmentFile): Promise<void> {
  const path = `${dataDir}/${ENROLLMENT_FILE}`;
  const file = await AtomicFile.create(path, "enrolment file");
  try {
    await writeAll(file.file, new TextEncoder().encode(JSON.stringify(enrollment, null, 2) + "\n"));
    await file.commit();
  } catch (err) {
    await file.abort();
    throw ioError("write the enrolment file", path, err);
  }
}

/** What one enrolment request came to. */
export type EnrollResult =
  | { readonly kind: "enrolled"; readonly enrollment: EnrollmentFile }
  | { readonly kind: "pending" };

/** Where and as whom to enrol. */
export interface EnrollRequestOptions {
  readonly dataDir: string;
  readonly nodeId: string;
  readonly region: string;
  readonly key: SigningKey;
  /** The control plane's HTTP API, `host:port`. */
  readonly controlPlane: string;
  readonly token?: string;
}

/**
 * Asks the control plane to enrol this device once. Enrolled: the answer is
 * checked (with a token, its MAC) and DATA/enrollment.json written. Pending:
 * nothing is written (ask again later). A refusal (401/403, a bad MAC) is an
 * `EnrollmentRefusedError`; an unreachable control plane an `IoError`.
 */
export async function requestEnrollment(options: EnrollRequestOptions): Promise<EnrollResult> {
  const devicePublicKey = toBase64Url(options.key.publicKey);
  const body: EnrollRequest = {
    nodeId: options.nodeId,
    region: options.region,
    publicKey: devicePublicKey,
    ...(options.token === undefined ? {} : { token: options.token }),
  };
  const url = `http://${options.controlPlane}/v1/enroll`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new IoError(
      `cannot reach the control plane at ${url} to enrol: ${
        err instanceof Error ? err.message : err
      }`,
    );
  }
  const text = await response.text();
  if (response.status === 202) return { kind: "pending" };
  if (response.status === 401 || response.status === 403) {
    throw new EnrollmentRefusedError(
      `the control plane refused to enrol ${options.nodeId}: ${errorOf(text)}`,
    );
  }
  if (response.status !== 200) {
    throw new IoError(`enrolment at ${url} failed (${response.status}): ${errorOf(text)}`);
  }
  let answer: EnrollAnswer;
  try {
    answer = JSON.parse(text) as EnrollAnswer;
  } catch {
    throw new EnrollmentRefusedError(`the control plane's enrolment answer is not JSON`);
  }
  if (answer.nodeId !== options.nodeId || !publicKeyOf(answer.controlPlaneKey)) {
    throw new EnrollmentRefusedError(`the control plane's enrolment answer is malformed`);
  }
  if (options.token !== undefined) {
    const expected = await enrollmentMac(options.token, {
      nodeId: options.nodeId,
      controlPlaneKey: answer.controlPlaneKey,
      devicePublicKey,
    });
    if (answer.mac !== expected) {
      throw new EnrollmentRefusedError(
        "the enrolment answer's MAC does not match the token: not the control plane that issued it; no key pinned",
      );
    }
  }
  const enrollment: EnrollmentFile = {
    format: 1,
    nodeId: options.nodeId,
    controlPlaneKey: answer.controlPlaneKey,
    controlPlane: options.controlPlane,
  };
  await writeEnrollment(options.dataDir, enrollment);
  return { kind: "enrolled", enrollment };
}

function errorOf(text: string): string {
  try {
    const v = JSON.parse(text) as { error?: unknown };
    if (typeof v.error === "string") return v.error;
  } catch {
    // not JSON: the text itself
  }
  return text.slice(0, 200);
}

/** Checks that an enrolment token looks like one before anything is sent. */
export function checkEnrollToken(token: string): string {
  if (!ENROLLMENT_TOKEN_PATTERN.test(token)) {
    throw new InvalidArgumentError(
      "--enroll: not an enrolment token (pbe_ and 43 characters; poolboy device enroll-token makes one)",
    );
  }
  return token;
}
