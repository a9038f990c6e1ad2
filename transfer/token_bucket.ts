/**
 * A token bucket: at most `capacity + rate × t` bytes pass in any interval of
 * `t` seconds. A blob server shares one among all its uploads
 * (`uploadBytesPerSecond`, issue 15) so that serving peers never takes more
 * than the device's configured share of its uplink. Waiters are served in
 * order (first come, first served), each wait is bounded by `capacity / rate`.
 *
 * @module
 */

/** Smallest and largest bucket capacity, in bytes. */
export const MIN_BUCKET_CAPACITY = 4 * 1024;
export const MAX_BUCKET_CAPACITY = 256 * 1024;

/** The capacity of a bucket of `bytesPerSecond`: an eighth of a second's worth, within [4 KiB, 256 KiB]. */
export function bucketCapacityFor(bytesPerSecond: number): number {
  return Math.max(
    MIN_BUCKET_CAPACITY,
    Math.min(MAX_BUCKET_CAPACITY, Math.floor(bytesPerSecond / 8)),
  );
}

/** Hands out up to `rate` bytes per second, with bursts of at most `capacity` bytes. */
export class TokenBucket {
  /** Bytes per second (> 0). */
  readonly rate: number;
  /** Most bytes available at once; `take` never hands out more than this per call. */
  readonly capacity: number;
  #tokens: number;
  #last = performance.now();
  #queue: Promise<void> = Promise.resolve();

  /** A full bucket. Throws `RangeError` unless `bytesPerSecond` is a positive number. */
  constructor(bytesPerSecond: number, capacity: number = bucketCapacityFor(bytesPerSecond)) {
    if (!(bytesPerSecond > 0) || !Number.isFinite(bytesPerSecond)) {
      throw new RangeError(`a token bucket needs a positive rate, got ${bytesPerSecond}`);
    }
    if (!(capacity >= 1)) throw new RangeError(`bad bucket capacity ${capacity}`);
    this.rate = bytesPerSecond;
    this.capacity = Math.floor(capacity);
    this.#tokens = this.capacity;
  }

  /**
   * Waits until `min(n, capacity)` bytes may pass and takes them; returns how
   * many were taken (send at most that many). Waiters are served in order.
   */
  take(n: number): Promise<number> {
    const want = Math.max(1, Math.min(Math.floor(n), this.capacity));
    const turn = this.#queue.then(() => this.#takeNow(want));
    this.#queue = turn.then(() => {}, () => {});
    return turn;
  }

  #refill(): void {
    const now = performance.now();
    this.#tokens = Math.min(this.capacity, this.#tokens + (now - this.#last) * this.rate / 1000);
    this.#last = now;
  }

  async #takeNow(want: number): Promise<number> {
    this.#refill();
    // Each round adds tokens, so this ends; a round waits at most capacity / rate.
    while (this.#tokens < want) {
      const ms = Math.max(1, Math.ceil((want - this.#tokens) * 1000 / this.rate));
      await new Promise((resolve) => setTimeout(resolve, ms));
      this.#refill();
    }
    this.#tokens -= want;
    return want;
  }
}
