/**
 * Reading a request body with a bound (controlplane/http_api.ts, controlplane/ui/routes.ts):
 * counted while it streams, so a chunked body cannot grow past the bound either.
 *
 * @module
 */

import { PayloadTooLargeError } from "../kernel/errors.ts";

/**
 * A request body of at most `max` bytes, counted while it streams (chunked
 * too): past `max` it is cancelled and 413 thrown, the rest never read.
 */
export async function boundedBody(
  request: Request,
  max: number,
  tooLarge: string,
): Promise<Uint8Array> {
  const length = Number(request.headers.get("content-length") ?? "0");
  if (length > max) throw new PayloadTooLargeError(tooLarge);
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > max) {
      await reader.cancel().catch(() => {});
      throw new PayloadTooLargeError(tooLarge);
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  return bytes;
}
