/**
 * The hashing Worker: BLAKE3 of chunks, and of one running stream, off the main
 * thread. Started by `HashPool` (`hash_pool.ts`), which owns the protocol below.
 *
 * Every buffer arrives transferred (not copied) and is transferred back in the
 * reply, so a buffer is only ever in one thread. Requests are answered in the
 * order they arrive; the stream hasher relies on that.
 *
 * - `chunks`: `cuts` are the ends of consecutive chunks that start at byte 0 of
 *   `buffer`; the reply carries their digests, 32 bytes each, in order.
 * - `stream`: hashes `buffer[0..length)` after everything streamed so far.
 * - `digest`: the digest of everything streamed; the stream starts over.
 *
 * @module
 */

import { createHasher } from "../kernel/blake3.ts";
import { hashCuts } from "./hash_jobs.ts";

/** A request to the hashing Worker. */
export type HashRequest =
  | {
    readonly kind: "chunks";
    readonly id: number;
    readonly buffer: ArrayBuffer;
    readonly cuts: Uint32Array<ArrayBuffer>;
  }
  | {
    readonly kind: "stream";
    readonly id: number;
    readonly buffer: ArrayBuffer;
    readonly length: number;
  }
  | { readonly kind: "digest"; readonly id: number };

/** The Worker's reply: to request `id`, or `ready` once, when it has started. */
export type HashReply =
  | { readonly kind: "ready" }
  | {
    readonly kind: "done";
    readonly id: number;
    readonly buffer?: ArrayBuffer;
    readonly digests?: Uint8Array;
  }
  | { readonly kind: "failed"; readonly id: number; readonly message: string };

interface WorkerScope {
  onmessage: ((event: MessageEvent<HashRequest>) => void) | null;
  postMessage(message: HashReply, transfer?: Transferable[]): void;
}

const scope = globalThis as unknown as WorkerScope;
const chunkHasher = createHasher();
const streamHasher = createHasher();

function answer(request: HashRequest): [HashReply, Transferable[]] {
  switch (request.kind) {
    case "chunks": {
      const digests = hashCuts(chunkHasher, new Uint8Array(request.buffer), request.cuts);
      const reply = { kind: "done", id: request.id, buffer: request.buffer, digests } as const;
      return [reply, [request.buffer, digests.buffer]];
    }
    case "stream": {
      streamHasher.update(new Uint8Array(request.buffer, 0, request.length));
      return [{ kind: "done", id: request.id, buffer: request.buffer }, [request.buffer]];
    }
    case "digest": {
      const digests = streamHasher.digest();
      return [{ kind: "done", id: request.id, digests }, [digests.buffer]];
    }
  }
}

scope.onmessage = (event) => {
  const request = event.data;
  try {
    const [reply, transfer] = answer(request);
    scope.postMessage(reply, transfer);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    scope.postMessage({ kind: "failed", id: request.id, message });
  }
};
scope.postMessage({ kind: "ready" });
