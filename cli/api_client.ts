/**
 * The operator commands' HTTP client for the control plane's API
 * (controlplane/http_api.ts): JSON requests with the operator's token
 * (`Authorization: Bearer`), errors turned into one-line `PoolboyError`s
 * naming the control plane and what it said; a 401 or 403 says which.
 *
 * @module
 */

import { ExitCode, PoolboyError } from "../kernel/errors.ts";
import type { ErrorBody } from "../controlplane/api_types.ts";

/**
 * The control plane refused a request (`status` is its HTTP status, also the
 * error's `httpStatus`) or could not be reached (`status` 0, `httpStatus` 502).
 */
export class ApiError extends PoolboyError {
  readonly status: number;
  constructor(message: string, status: number) {
    super(
      message,
      status === 0 ? ExitCode.io : ExitCode.usage,
      undefined,
      status === 0 ? 502 : status,
    );
    this.status = status;
  }
}

/** Where the API is and who calls it (fleet_args.ts `apiTarget` makes one from the options). */
export interface ApiTarget {
  /** The control plane's base URL, e.g. http://100.64.0.1:7402. */
  readonly url: string;
  /** The operator's token (--token or POOLBOY_TOKEN); undefined: none is sent. */
  readonly token: string | undefined;
}

/** Sends a request to `api.url + path` with `api.token`; returns the parsed JSON answer. */
export async function callApi<T>(
  api: ApiTarget,
  method: string,
  path: string,
  body?: BodyInit,
  contentType = "application/json",
): Promise<T> {
  const baseUrl = api.url;
  const headers: Record<string, string> = {};
  if (body !== undefined) headers["content-type"] = contentType;
  if (api.token !== undefined) headers["authorization"] = `Bearer ${api.token}`;
  let response: Response;
  try {
    response = await fetch(`${baseUrl}${path}`, { method, body, headers });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new ApiError(`cannot reach the control plane at ${baseUrl}: ${why}`, 0);
  }
  const text = await response.text();
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ApiError(
      `the control plane at ${baseUrl} answered ${response.status} with non-JSON: ${
        text.slice(0, 200)
      }`,
      response.status,
    );
  }
  if (!response.ok) {
    const error = (value as Partial<ErrorBody>).error ?? text;
    if (response.status === 401) {
      const sent = api.token === undefined
        ? "no token was sent: pass --token T or set POOLBOY_TOKEN"
        : "the token was refused";
      throw new ApiError(
        `control plane: unauthorized (HTTP 401, ${sent}): ${error}`,
        response.status,
      );
    }
    if (response.status === 403) {
      throw new ApiError(
        `control plane: forbidden (HTTP 403, the token's role does not allow this): ${error}`,
        response.status,
      );
    }
    throw new ApiError(`control plane: ${error} (HTTP ${response.status})`, response.status);
  }
  return value as T;
}
