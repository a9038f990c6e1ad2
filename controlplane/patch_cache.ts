/**
 * The control plane's patch cache: the patch from one stored version to
 * another, computed once (codec/encoder.ts) and kept in the blob store by its
 * BLAKE3, its (base, target) → patch mapping in the database. Computations
 * are serialized (one encode at a time keeps the control plane's memory flat)
 * and deduplicated (asking twice waits for the same work).
 *
 * @module
 */

import { fromHex, toHex } from "../kernel/blake3.ts";
import { encodeFile } from "../codec/encoder.ts";
import type { BlobStore } from "../transfer/blob_store.ts";
import type { StateDb } from "./state_db.ts";

/** A patch in the store. */
export interface CachedPatch {
  readonly digest: string;
  readonly size: number;
}

/** Computes and remembers patches between stored versions. */
export class PatchCache {
  readonly #store: BlobStore;
  readonly #db: StateDb;
  readonly #inFlight = new Map<string, Promise<CachedPatch>>();
  #queue: Promise<unknown> = Promise.resolve();
  /** Hashing Workers per encode. */
  readonly #threads: number;

  constructor(store: BlobStore, db: StateDb, threads = 1) {
    this.#store = store;
    this.#db = db;
    this.#threads = threads;
  }

  /** The cached patch base → target, if it has been computed. */
  cached(base: string, target: string): CachedPatch | undefined {
    return this.#db.patch(base, target);
  }

  /** The patch base → target (hex digests of stored blobs), computing it if needed. */
  ensure(base: string, target: string): Promise<CachedPatch> {
    const hit = this.#db.patch(base, target);
    if (hit) return Promise.resolve(hit);
    const key = `${base}>${target}`;
    const running = this.#inFlight.get(key);
    if (running) return running;
    const work = this.#queue.then(() => this.#compute(base, target)).finally(() =>
      this.#inFlight.delete(key)
    );
    this.#queue = work.catch(() => {});
    this.#inFlight.set(key, work);
    return work;
  }

  async #compute(base: string, target: string): Promise<CachedPatch> {
    const temporary = `${this.#store.pathOf(fromHex(target))}.from-${base.slice(0, 16)}.patch`;
    try {
      await encodeFile(
        this.#store.pathOf(fromHex(base)),
        this.#store.pathOf(fromHex(target)),
        temporary,
        { threads: this.#threads, format: 2 },
      );
      const { digest, size } = await this.#store.importFile(temporary);
      const patch = { digest: toHex(digest), size };
      this.#db.putPatch(base, target, patch.digest, patch.size);
      return patch;
    } finally {
      await Deno.remove(temporary).catch(() => {});
    }
  }
}
