/**
 * A fixed set of equal `ArrayBuffer`s handed out and taken back: the memory of
 * the Worker pipeline. Buffers are allocated lazily, at most `count` of them;
 * `acquire` waits while all are out, which is how a fast reader is held back
 * by slow hashers or a slow writer (backpressure, with nothing queued but
 * buffers).
 *
 * @module
 */

/** The pool was cancelled while a caller waited for a buffer. */
export class PoolCancelledError extends Error {
  constructor() {
    super("buffer pool cancelled");
    this.name = "PoolCancelledError";
  }
}

/** At most `count` buffers of `size` bytes. */
export class BufferPool {
  readonly count: number;
  readonly size: number;
  readonly #free: ArrayBuffer[] = [];
  readonly #waiters: { resolve(buffer: ArrayBuffer): void; reject(err: Error): void }[] = [];
  #allocated = 0;
  #cancelled = false;

  constructor(count: number, size: number) {
    if (!Number.isSafeInteger(count) || count < 2) {
      throw new RangeError(`a buffer pool needs at least 2 buffers, got ${count}`);
    }
    if (!Number.isSafeInteger(size) || size < 1) {
      throw new RangeError(`buffer size must be a positive whole number, got ${size}`);
    }
    this.count = count;
    this.size = size;
  }

  /** How many buffers exist so far (allocated ones, out or free). */
  get allocated(): number {
    return this.#allocated;
  }

  /** A buffer of `size` bytes with unspecified content; waits while all are out. */
  acquire(): Promise<ArrayBuffer> {
    if (this.#cancelled) return Promise.reject(new PoolCancelledError());
    const free = this.#free.pop();
    if (free) return Promise.resolve(free);
    if (this.#allocated < this.count) {
      this.#allocated++;
      return Promise.resolve(new ArrayBuffer(this.size));
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Gives a buffer back (to the longest waiter, if any). */
  release(buffer: ArrayBuffer): void {
    if (buffer.byteLength !== this.size) {
      throw new RangeError(`released a ${buffer.byteLength}-byte buffer to a pool of ${this.size}`);
    }
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(buffer);
    else this.#free.push(buffer);
  }

  /** Fails every current and future `acquire` with `PoolCancelledError`. */
  cancel(): void {
    this.#cancelled = true;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(new PoolCancelledError());
  }
}
