/**
 * A mutex per key (a promise chain per key): holders of one key run one after
 * the other, in the order they asked; holders of different keys do not wait
 * for each other. The agent holds one per model around "check the release
 * again → remember it in trust.json → switch → health check, then commit or
 * roll back", so two updates of one model never interleave there: the second
 * checks its release against the memory the first one wrote.
 *
 * @module
 */

/** Gives a held lock back; calling it again does nothing. */
export type Release = () => void;

export class KeyedMutex {
  /** Per key, the promise that settles when its last holder (or waiter) releases. */
  readonly #tails = new Map<string, Promise<void>>();

  /** Waits until `key` is free, then holds it until the returned function is called. */
  async acquire(key: string): Promise<Release> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const held = Promise.withResolvers<void>();
    const tail = previous.then(() => held.promise);
    this.#tails.set(key, tail);
    await previous;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      held.resolve();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    };
  }

  /** Runs `fn` holding `key`; the key is released however `fn` ends. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(key);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Whether `key` is held or waited for (for tests). */
  isLocked(key: string): boolean {
    return this.#tails.has(key);
  }
}
