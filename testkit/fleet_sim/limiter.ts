/**
 * Small concurrency helpers of the fleet simulator's worker processes: a
 * counting semaphore (bounded waiters) and a sleep that an abort signal cuts
 * short, for jittered back-off.
 *
 * @module
 */

/**
 * Who gets a freed slot: the longest waiter, or any waiter at random — as
 * independent devices contending for one server would be served, rather than
 * in the order their datagrams reached this process.
 */
export type WaitOrder = "fifo" | "random";

/** At most `slots` holders at once; waiters beyond `maxWaiters` are refused. */
export class Semaphore {
  readonly slots: number;
  readonly maxWaiters: number;
  readonly order: WaitOrder;
  #held = 0;
  readonly #waiters: (() => void)[] = [];

  constructor(slots: number, order: WaitOrder = "fifo", maxWaiters = 100_000) {
    this.slots = slots;
    this.order = order;
    this.maxWaiters = maxWaiters;
  }

  /** Runs `work` holding a slot. */
  async run<T>(work: () => Promise<T>): Promise<T> {
    await this.#acquire();
    try {
      return await work();
    } finally {
      this.#release();
    }
  }

  #acquire(): Promise<void> {
    if (this.#held < this.slots) {
      this.#held++;
      return Promise.resolve();
    }
    if (this.#waiters.length >= this.maxWaiters) {
      return Promise.reject(new RangeError(`more than ${this.maxWaiters} waiters`));
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #release(): void {
    let next: (() => void) | undefined;
    if (this.order === "fifo" || this.#waiters.length < 2) next = this.#waiters.shift();
    else {
      const i = Math.floor(Math.random() * this.#waiters.length);
      next = this.#waiters[i];
      this.#waiters[i] = this.#waiters[this.#waiters.length - 1];
      this.#waiters.pop();
    }
    if (next) next(); // the slot passes on
    else this.#held--;
  }
}

/** Waits `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A back-off delay for attempt `n` (1-based): `base · 2^(n-1)` capped at `max`, with full jitter. */
export function backoff(n: number, base = 100, max = 2000): number {
  const ceiling = Math.min(max, base * 2 ** Math.min(20, n - 1));
  return Math.round(ceiling / 2 + Math.random() * ceiling / 2);
}
