/**
 * The control plane's patch cache: the patch from one stored version to
 * another, computed once (codec/encoder.ts) and kept in the blob store by its
 * BLAKE3, its (base, target) → patch mapping in the state store (and in
 * memory, loaded at start, so `cached` answers at once). Computations
 * are serialized (one encode at a time keeps the control plane's memory flat)
 * and deduplicated (asking twice waits for the same work).
 *
 * @module
 */

import { fromHex, toHex } from "../kernel/blake3.ts";
import { encodeFile } from "../codec/encoder.ts";
import type { BlobStore } from "../transfer/blob_store.ts";
import type { PatchRecord, StateStore } from "./state_store.ts";

/** Patch formats the control plane can make (docs/spec/patch-v2.md to patch-v4.md). */
export type ControlPlanePatchFormat = 2 | 3 | 4;

/**
 * The format of the patches the control plane makes unless told otherwise:
 * 4, whose header lets a device check its base from a few sampled ranges and
 * then read it once (format 2 reads the whole base twice). Agents before
 * 0.17 read formats 1 and 2 only: a fleet that still runs them needs 2.
 */
export const DEFAULT_PATCH_FORMAT: ControlPlanePatchFormat = 4;

/** A patch in the store. */
export interface CachedPatch {
  readonly digest: string;
  readonly size: number;
}

/** Computes and remembers patches between stored versions. */
export class PatchCache {
  readonly #store: BlobStore;
  readonly #state: StateStore;
  /** Known patches by `base>target`. */
  readonly #known = new Map<string, CachedPatch>();
  readonly #inFlight = new Map<string, Promise<CachedPatch>>();
  #queue: Promise<unknown> = Promise.resolve();
  /** Hashing Workers per encode. */
  readonly #threads: number;
  /** The format of the patches computed from now on. */
  readonly format: ControlPlanePatchFormat;

  /**
   * `known`: the patches the state store holds (whatever their format: every
   * agent since 0.17 reads formats 1 to 4, and a cached patch is kept).
   */
  constructor(
    store: BlobStore,
    state: StateStore,
    known: readonly PatchRecord[],
    threads = 1,
    format: ControlPlanePatchFormat = DEFAULT_PATCH_FORMAT,
  ) {
    this.#store = store;
    this.#state = state;
    this.#threads = threads;
    this.format = format;
    for (const p of known) {
      this.#known.set(`${p.base}>${p.target}`, { digest: p.digest, size: p.size });
    }
  }

  /** The cached patch base → target, if it has been computed. */
  cached(base: string, target: string): CachedPatch | undefined {
    return this.#known.get(`${base}>${target}`);
  }

  /** Whether some cached patch is the blob `digest`. */
  isPatch(digest: string): boolean {
    for (const p of this.#known.values()) if (p.digest === digest) return true;
    return false;
  }

  /** The patch base → target (hex digests of stored blobs), computing it if needed. */
  ensure(base: string, target: string): Promise<CachedPatch> {
    const key = `${base}>${target}`;
    const hit = this.#known.get(key);
    if (hit) return Promise.resolve(hit);
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
        { threads: this.#threads, format: this.format },
      );
      const { digest, size } = await this.#store.importFile(temporary);
      const patch = { digest: toHex(digest), size };
      await this.#state.putPatch({ base, target, ...patch });
      this.#known.set(`${base}>${target}`, patch);
      return patch;
    } finally {
      await Deno.remove(temporary).catch(() => {});
    }
  }
}
