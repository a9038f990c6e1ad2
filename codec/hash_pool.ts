/**
 * A fixed pool of hashing Workers (`hash_worker.ts`).
 *
 * Chunk jobs go to the Worker with the fewest jobs outstanding; stream jobs all
 * go to Worker 0, in order, so one running BLAKE3 (the whole file's) proceeds
 * beside the chunk hashing. Buffers are transferred to the Worker and back with
 * the reply: the caller must not touch a buffer between handing it over and
 * getting it back.
 *
 * Memory: each Worker costs about 20 MB of resident memory (a V8 isolate and a
 * small WebAssembly instance); the pool holds no buffers of its own. A pool
 * of 0 Workers (`start(0)`) hashes on the calling thread instead: ~20 MB less,
 * at the price of hashing no longer overlapping the caller's own work.
 *
 * @module
 */

import type { HashReply, HashRequest } from "./hash_worker.ts";
import { createHasher, type Hasher } from "../kernel/blake3.ts";
import { hashCuts } from "./hash_jobs.ts";

/**
 * The number of hashing Workers used unless told otherwise: one per core but
 * one, at least one. The main thread is a busy stage of its own (it reads and
 * finds chunk boundaries at about 900 MB/s), and on 2 cores a second Worker
 * measured only 0-6% faster for 7 MB more memory.
 */
export function defaultThreads(): number {
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  return Math.max(1, Math.min(cores - 1, MAX_THREADS));
}

/** The most hashing threads a pool accepts. */
export const MAX_THREADS = 64;

/** The digests of a chunk job, and its buffer back. */
export interface ChunkDigests {
  readonly buffer: ArrayBuffer;
  /** 32 bytes per chunk, in order. */
  readonly digests: Uint8Array;
}

interface Pending {
  resolve(reply: Extract<HashReply, { kind: "done" }>): void;
  reject(err: Error): void;
}

interface Slot {
  readonly worker: Worker;
  readonly pending: Map<number, Pending>;
  failure?: Error;
}

/**
 * The hashing Worker's module: `hash_worker.ts` beside this file in the
 * sources (and in `deno compile`'s binary), `hash_worker.js` beside the
 * bundle `deno task package` makes (the bundler leaves this URL alone; the
 * package ships the Worker bundled on its own under that name).
 */
const WORKER_SOURCE = new URL("./hash_worker.ts", import.meta.url);
const WORKER_MODULE = import.meta.url.endsWith(".ts")
  ? WORKER_SOURCE
  : new URL(WORKER_SOURCE.href.replace(/\.ts$/, ".js"));

/** Workers that hash chunks and streams; `close()` it when done. */
export class HashPool {
  readonly #slots: Slot[];
  /** With no Workers: the hashers of the calling thread. */
  readonly #inline: { readonly chunks: Hasher; readonly stream: Hasher } | undefined;
  #nextId = 1;
  #closed = false;

  private constructor(slots: Slot[]) {
    this.#slots = slots;
    this.#inline = slots.length === 0
      ? { chunks: createHasher(), stream: createHasher() }
      : undefined;
  }

  /** Starts `threads` Workers (0: none, hash on this thread) and waits until each is ready. */
  static async start(threads: number = defaultThreads()): Promise<HashPool> {
    if (!Number.isSafeInteger(threads) || threads < 0 || threads > MAX_THREADS) {
      throw new RangeError(
        `threads must be a whole number from 0 to ${MAX_THREADS}, got ${threads}`,
      );
    }
    const slots: Slot[] = [];
    const ready: Promise<void>[] = [];
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(WORKER_MODULE, { type: "module" });
      const slot: Slot = { worker, pending: new Map() };
      slots.push(slot);
      ready.push(
        new Promise((resolve, reject) => {
          worker.onmessage = (event: MessageEvent<HashReply>) => {
            if (event.data.kind === "ready") resolve();
            else settle(slot, event.data);
          };
          worker.onerror = (event) => {
            event.preventDefault();
            const err = new Error(`hashing thread failed: ${event.message}`);
            slot.failure = err;
            reject(err);
            for (const pending of slot.pending.values()) pending.reject(err);
            slot.pending.clear();
          };
        }),
      );
    }
    const pool = new HashPool(slots);
    try {
      await Promise.all(ready);
    } catch (err) {
      pool.close();
      throw err;
    }
    return pool;
  }

  /** How many Workers the pool has (0: it hashes on the calling thread). */
  get threads(): number {
    return this.#slots.length;
  }

  /** Hashes the chunks of `buffer` that end at `cuts` (the first starts at 0). */
  async hashChunks(buffer: ArrayBuffer, cuts: Uint32Array<ArrayBuffer>): Promise<ChunkDigests> {
    if (this.#inline) {
      this.#checkOpen();
      return { buffer, digests: hashCuts(this.#inline.chunks, new Uint8Array(buffer), cuts) };
    }
    let slot = this.#slots[0];
    for (const candidate of this.#slots) {
      if (candidate.pending.size < slot.pending.size) slot = candidate;
    }
    const reply = await this.#send(
      slot,
      (id) => ({ kind: "chunks", id, buffer, cuts }),
      [buffer], // not the cuts: they are copied, the caller keeps them
    );
    return { buffer: reply.buffer!, digests: reply.digests! };
  }

  /** Adds `buffer[0..length)` to the running stream hash; resolves with the buffer back. */
  async streamUpdate(buffer: ArrayBuffer, length: number): Promise<ArrayBuffer> {
    if (this.#inline) {
      this.#checkOpen();
      this.#inline.stream.update(new Uint8Array(buffer, 0, length));
      return buffer;
    }
    const reply = await this.#send(
      this.#slots[0],
      (id) => ({ kind: "stream", id, buffer, length }),
      [buffer],
    );
    return reply.buffer!;
  }

  /** The BLAKE3 of everything streamed so far (after every earlier update); starts the stream over. */
  async streamDigest(): Promise<Uint8Array> {
    if (this.#inline) {
      this.#checkOpen();
      return this.#inline.stream.digest();
    }
    const reply = await this.#send(this.#slots[0], (id) => ({ kind: "digest", id }), []);
    return reply.digests!;
  }

  /** Stops every Worker; jobs still outstanding fail. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = new Error("hash pool closed");
    for (const slot of this.#slots) {
      slot.worker.terminate();
      for (const pending of slot.pending.values()) pending.reject(err);
      slot.pending.clear();
    }
  }

  #checkOpen(): void {
    if (this.#closed) throw new Error("hash pool closed");
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #send(
    slot: Slot,
    request: (id: number) => HashRequest,
    transfer: Transferable[],
  ): Promise<Extract<HashReply, { kind: "done" }>> {
    if (this.#closed) return Promise.reject(new Error("hash pool closed"));
    if (slot.failure) return Promise.reject(slot.failure);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage(request(id), transfer);
    });
  }
}

function settle(slot: Slot, reply: HashReply): void {
  if (reply.kind === "ready") return;
  const pending = slot.pending.get(reply.id);
  if (!pending) return;
  slot.pending.delete(reply.id);
  if (reply.kind === "done") pending.resolve(reply);
  else pending.reject(new Error(`hashing thread failed: ${reply.message}`));
}
