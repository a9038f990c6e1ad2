/**
 * The download step of a simulated device — one small function, so that the
 * swarm protocol (pieces from several sources, blob protocol v3) can replace
 * it alone: `fetchBlob` gets a blob into memory from ordered sources (the
 * leader, then the control plane as the last resort), each attempt one
 * authenticated request (blob protocol v2, transfer/blob_client.ts
 * `fetchSmallBlob`, which returns only bytes whose BLAKE3 is the digest).
 *
 * A peer source that answers BUSY or fails is asked again with jittered
 * back-off for `peerPatienceMs` before the next source is tried: a leader
 * with hundreds of followers turns most of them away at first, and falling
 * back to the control plane at once would multiply its egress. Every attempt
 * holds a slot of the process's `slots` semaphore (bounded sockets).
 *
 * @module
 */

import type { BlobCredentials } from "../../transfer/blob_auth.ts";
import { BlobDownloadError, type BlobSource, fetchSmallBlob } from "../../transfer/blob_client.ts";
import { backoff, type Semaphore, sleep } from "./limiter.ts";

/** A source of a blob: a peer (asked patiently) or the control plane. */
export interface FetchSource extends BlobSource {
  readonly kind: "peer" | "controlPlane";
}

/** What `fetchBlob` needs. */
export interface FetchRequest {
  readonly digest: Uint8Array;
  readonly size: number;
  /** Tried in order. */
  readonly sources: readonly FetchSource[];
  readonly credentials: BlobCredentials;
  /** Slots for connections of this process (one per attempt). */
  readonly slots: Semaphore;
  /** How long a peer is asked again before the next source (default 60 s). */
  readonly peerPatienceMs?: number;
  /** Attempts at the control plane before giving up (default 20). */
  readonly controlPlaneAttempts?: number;
  /** Deadline of one attempt (default 30 s). */
  readonly attemptDeadlineMs?: number;
  readonly signal?: AbortSignal;
}

/** A verified blob and where it came from. */
export interface Fetched {
  readonly bytes: Uint8Array;
  /** The label of the source that delivered it. */
  readonly source: string;
  readonly kind: FetchSource["kind"];
  readonly attempts: number;
}

/** The blob, verified (its BLAKE3 is `digest`), from the first source that delivers it. */
export async function fetchBlob(request: FetchRequest): Promise<Fetched> {
  let attempts = 0;
  const failures: string[] = [];
  for (const source of request.sources) {
    const patience = request.peerPatienceMs ?? 60_000;
    const until = Date.now() + patience;
    const maxTries = source.kind === "peer" ? Infinity : (request.controlPlaneAttempts ?? 20);
    for (let tries = 1; tries <= maxTries; tries++) {
      request.signal?.throwIfAborted();
      attempts++;
      try {
        const bytes = await request.slots.run(() =>
          fetchSmallBlob({
            source,
            digest: request.digest,
            maxBytes: request.size,
            deadlineMs: request.attemptDeadlineMs ?? 30_000,
            signal: request.signal,
            credentials: request.credentials,
          })
        );
        if (bytes.length !== request.size) {
          failures.push(`${source.label}: ${bytes.length} bytes, expected ${request.size}`);
          break;
        }
        return { bytes, source: source.label, kind: source.kind, attempts };
      } catch (err) {
        if (!(err instanceof BlobDownloadError)) throw err;
        if (tries === 1 || tries % 20 === 0) failures.push(err.message);
        if (source.kind === "peer" && Date.now() >= until) break;
        await sleep(backoff(tries, 100, 2000), request.signal);
      }
    }
  }
  throw new BlobDownloadError(
    `no source delivered the blob in ${attempts} attempts: ${failures.slice(-4).join("; ")}`,
    [],
  );
}
