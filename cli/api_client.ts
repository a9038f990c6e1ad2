/**
 * The operator commands' HTTP client for the control plane's API
 * (controlplane/http_api.ts): JSON requests, errors turned into one-line
 * `PoolboyError`s naming the control plane and what it said.
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

/** Sends a request to `baseUrl + path`; returns the parsed JSON answer. */
export async function callApi<T>(
  baseUrl: string,
  method: string,
  path: string,
  body?: BodyInit,
  contentType = "application/json",
): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`${baseUrl}${path}`, {
      method,
      body,
      headers: body === undefined ? undefined : { "content-type": contentType },
    });
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
    throw new ApiError(`control plane: ${error} (HTTP ${response.status})`, response.status);
  }
  return value as T;
}
